//! Holds no code: its test (`tests/terraform.rs`) parses `infra/terraform` and checks it against
//! the services' configuration. A crate of its own because it is the only one that needs every
//! service and the HCL parser together, and because it is about the deployment, not any one
//! service (nor the load-test harness).
