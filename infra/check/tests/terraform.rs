//! The deployment (`infra/terraform`) checked against the code.
//!
//! The services' configurations tell which variables they read: each `Settings` is built from an
//! [`Env`] holding the variables its Cloud Run service sets, and the `Env` records every name the
//! code asked for and whether it is required. So a variable the code starts to require fails here
//! until the deployment sets it, whatever the variable is. The rest is read from the HCL:
//! secrets, the Pub/Sub subscriptions against `Topology::for_settings`, probes, and each
//! service account's grants against the minimal list documented in docs/deploy.md.
//!
//! Only the shapes this Terraform uses are understood (literals, traversals, `each.key` over a
//! literal set or a local object, `dynamic "env"` over a map); anything else fails loudly, so a
//! change of shape is a change of this test too.

#![allow(
    clippy::too_many_lines,
    reason = "a scenario test reads top to bottom: its steps are the story it tells"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use hcl::expr::{Expression, ObjectKey, TraversalOperator};
use hcl::template::{Element, Template};
use hcl::{Block, Body};
use shared::config::{Env, Request, SECRET_VARIABLES};
use shared::pubsub::Topology;

// --- reading the Terraform ----------------------------------------------------------------------

struct Terraform {
    blocks: Vec<Block>,
}

impl Terraform {
    fn load() -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../terraform");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|ext| ext == "tf"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no .tf files in {}", dir.display());
        let mut blocks = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable .tf file");
            let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            blocks.extend(body.into_blocks());
        }
        Self { blocks }
    }

    fn resources(&self, ty: &str) -> Vec<(&str, &Body)> {
        self.blocks
            .iter()
            .filter(|b| b.identifier() == "resource" && label(b, 0) == Some(ty))
            .map(|b| (label(b, 1).expect("resource name"), b.body()))
            .collect()
    }

    fn resource(&self, ty: &str, name: &str) -> &Body {
        self.resources(ty)
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, body)| body)
            .unwrap_or_else(|| panic!("no resource {ty}.{name}"))
    }

    fn local(&self, name: &str) -> &Expression {
        self.blocks
            .iter()
            .filter(|b| b.identifier() == "locals")
            .find_map(|b| attr(b.body(), name))
            .unwrap_or_else(|| panic!("no local.{name}"))
    }

    fn variable_default(&self, name: &str) -> &Expression {
        self.blocks
            .iter()
            .find(|b| b.identifier() == "variable" && label(b, 0) == Some(name))
            .and_then(|b| attr(b.body(), "default"))
            .unwrap_or_else(|| panic!("no default for var.{name}"))
    }

    /// A string built from literals and `local.X` string literals (names of things).
    fn render(&self, expr: &Expression) -> String {
        match expr {
            Expression::String(s) => s.clone(),
            Expression::TemplateExpr(t) => {
                let template = Template::from_expr(t).expect("template");
                template
                    .elements()
                    .iter()
                    .map(|element| match element {
                        Element::Literal(s) => s.clone(),
                        Element::Interpolation(i) => self.render(&i.expr),
                        Element::Directive(_) => panic!("template directive in {expr}"),
                    })
                    .collect()
            }
            Expression::Traversal(_) => match path(expr).as_slice() {
                [root, name] if root == "local" => self.render(self.local(name)),
                _ => panic!("cannot render {expr}"),
            },
            other => panic!("cannot render {other}"),
        }
    }

    /// The keys `for_each` iterates over, for the shapes used here: `toset([...])`, `local.X`
    /// (an object literal) or `google_secret_manager_secret.X` (one per tenant: one key).
    fn for_each_keys(&self, body: &Body) -> Option<Vec<String>> {
        let expr = attr(body, "for_each")?;
        Some(match expr {
            Expression::FuncCall(call) if call.name.name.as_str() == "toset" => {
                match &call.args[..] {
                    [Expression::Array(items)] => items.iter().map(|i| self.render(i)).collect(),
                    _ => panic!("unexpected toset(...) in for_each"),
                }
            }
            _ => match path(expr).as_slice() {
                [root, name] if root == "local" => object_keys(self.local(name)),
                [ty, _] if ty == "google_secret_manager_secret" => vec!["<tenant>".into()],
                _ => panic!("unexpected for_each {expr}"),
            },
        })
    }
}

fn label(block: &Block, i: usize) -> Option<&str> {
    block.labels().get(i).map(|l| l.as_str())
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

fn blocks<'a>(body: &'a Body, ident: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks().filter(move |b| b.identifier() == ident)
}

fn block<'a>(body: &'a Body, ident: &str) -> &'a Body {
    body.blocks()
        .find(|b| b.identifier() == ident)
        .map(|b| b.body())
        .unwrap_or_else(|| panic!("no {ident} block"))
}

fn string(expr: &Expression) -> Option<&str> {
    match expr {
        Expression::String(s) => Some(s),
        _ => None,
    }
}

fn number(expr: &Expression) -> Option<i64> {
    match expr {
        Expression::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// `a.b["c"].d` as ["a", "b", "c", "d"]; `each.key` as an index stays "each.key".
fn path(expr: &Expression) -> Vec<String> {
    let Expression::Traversal(t) = expr else {
        return match expr {
            Expression::Variable(v) => vec![v.as_str().to_owned()],
            _ => Vec::new(),
        };
    };
    let mut out = path(&t.expr);
    for op in &t.operators {
        match op {
            TraversalOperator::GetAttr(ident) => out.push(ident.as_str().to_owned()),
            TraversalOperator::Index(Expression::String(key)) => out.push(key.clone()),
            TraversalOperator::Index(Expression::Number(n)) => out.push(n.to_string()),
            TraversalOperator::Index(index) => out.push(path(index).join(".")),
            _ => out.push("*".into()),
        }
    }
    out
}

fn object_keys(expr: &Expression) -> Vec<String> {
    let Expression::Object(object) = expr else {
        panic!("not an object literal: {expr}");
    };
    object
        .keys()
        .map(|k| match k {
            ObjectKey::Identifier(i) => i.as_str().to_owned(),
            ObjectKey::Expression(Expression::String(s)) => s.clone(),
            other => panic!("unexpected object key {other:?}"),
        })
        .collect()
}

fn object_get<'a>(expr: &'a Expression, key: &str) -> &'a Expression {
    let Expression::Object(object) = expr else {
        panic!("not an object literal: {expr}");
    };
    object
        .iter()
        .find(|(k, _)| match k {
            ObjectKey::Identifier(i) => i.as_str() == key,
            ObjectKey::Expression(Expression::String(s)) => s == key,
            _ => false,
        })
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no key {key} in {expr}"))
}

// --- the Cloud Run services ---------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// A plain value (its expression, printed).
    Plain(String),
    /// From Secret Manager: the `google_secret_manager_secret` resource's name.
    Secret(String),
}

#[derive(Debug)]
struct EnvVar {
    /// The variable's name; for one variable per tenant (`dynamic "env"`), `NAME__<TENANT>`.
    name: String,
    /// `NAME` when this is one tenant's part of a list variable (`NAME__<TENANT>`).
    list_of: Option<String>,
    value: Value,
}

const PER_TENANT: &str = "<TENANT>";

fn env_value(body: &Body, for_each: Option<&Expression>) -> Value {
    if let Some(value) = attr(body, "value") {
        return Value::Plain(value.to_string());
    }
    let secret = attr(
        block(block(body, "value_source"), "secret_key_ref"),
        "secret",
    )
    .expect("secret_key_ref.secret");
    match path(secret).as_slice() {
        [ty, name, attr] if ty == "google_secret_manager_secret" && attr == "secret_id" => {
            Value::Secret(name.clone())
        }
        [var, value, attr] if var == "env" && value == "value" && attr == "secret_id" => {
            match for_each.map(path).as_deref() {
                Some([ty, name]) if ty == "google_secret_manager_secret" => {
                    Value::Secret(name.clone())
                }
                other => panic!("dynamic env over {other:?} takes a secret from it"),
            }
        }
        other => panic!("a secret must be a google_secret_manager_secret's secret_id: {other:?}"),
    }
}

/// The variables a container sets, plain or from Secret Manager.
fn container_env(container: &Body) -> Vec<EnvVar> {
    let mut vars = Vec::new();
    for env in blocks(container, "env") {
        let name = string(attr(env.body(), "name").expect("env name"))
            .expect("env names are literals")
            .to_owned();
        vars.push(EnvVar {
            name,
            list_of: None,
            value: env_value(env.body(), None),
        });
    }
    for dynamic in blocks(container, "dynamic").filter(|b| label(b, 0) == Some("env")) {
        let for_each = attr(dynamic.body(), "for_each");
        let content = block(dynamic.body(), "content");
        let Some(Expression::TemplateExpr(name)) = attr(content, "name") else {
            panic!("a dynamic env's name is a template NAME__${{...}}");
        };
        let template = Template::from_expr(name).expect("template");
        let Some(Element::Literal(prefix)) = template.elements().first() else {
            panic!("a dynamic env's name starts with NAME__");
        };
        let list = prefix
            .strip_suffix("__")
            .unwrap_or_else(|| panic!("{prefix}: one variable per tenant is NAME__<TENANT>"));
        vars.push(EnvVar {
            name: format!("{list}__{PER_TENANT}"),
            list_of: Some(list.to_owned()),
            value: env_value(content, for_each),
        });
    }
    vars
}

/// The container that serves (the one with `ports`), not the sidecars.
fn serving_container(service: &Body) -> &Body {
    let template = block(service, "template");
    let mut serving = blocks(template, "containers")
        .filter(|c| c.body().blocks().any(|b| b.identifier() == "ports"));
    let container = serving.next().expect("a container with ports").body();
    assert!(serving.next().is_none(), "one serving container");
    container
}

/// The first container of a job's task template (the job's own; the proxy comes after it).
fn job_container(job: &Body) -> &Body {
    let task = block(block(job, "template"), "template");
    blocks(task, "containers")
        .next()
        .expect("a job container")
        .body()
}

#[derive(Clone, Copy, Debug)]
enum Config {
    Ingest,
    Worker,
    Events,
    Members,
}

struct Service {
    resource: &'static str,
    account: &'static str,
    config: Config,
}

const SERVICES: &[Service] = &[
    Service {
        resource: "ingest",
        account: "ingest",
        config: Config::Ingest,
    },
    Service {
        resource: "ingest_internal",
        account: "ingest-internal",
        config: Config::Ingest,
    },
    Service {
        resource: "worker",
        account: "worker",
        config: Config::Worker,
    },
    Service {
        resource: "events_svc",
        account: "events-svc",
        config: Config::Events,
    },
    Service {
        resource: "members_fn",
        account: "members-fn",
        config: Config::Members,
    },
];

/// What the service's code asks for when it starts with these variables set (values are
/// stand-ins: only which names are read, and which are required, matters). Cloud Run adds `PORT`.
fn requested(config: Config, vars: &[EnvVar]) -> BTreeMap<String, Request> {
    let mut map: BTreeMap<String, String> = vars
        .iter()
        .map(|v| (v.name.replace(PER_TENANT, "PARTY_A"), "x".to_owned()))
        .collect();
    map.insert("PORT".into(), "8080".into());
    let env = Env::from_map(map);
    let requests = env.requests();
    // Settings fail to build from stand-in values; what they asked for is what counts.
    match config {
        Config::Ingest => drop(ingest::configuration::Settings::from(env)),
        Config::Worker => drop(worker::configuration::Settings::from(env)),
        Config::Events => drop(events_svc::Settings::from(env)),
        Config::Members => drop(members_fn::Settings::from(env)),
    }
    requests.snapshot()
}

/// Every variable `requested` requires is set (a list variable: itself or a per-tenant part),
/// and every variable set is one the code reads.
fn deployment_problems(
    what: &str,
    vars: &[EnvVar],
    asked: &BTreeMap<String, Request>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let set: BTreeSet<&str> = vars.iter().map(|v| v.name.as_str()).collect();
    let lists: BTreeSet<&str> = vars.iter().filter_map(|v| v.list_of.as_deref()).collect();
    for (name, request) in asked {
        let present =
            set.contains(name.as_str()) || (request.list && lists.contains(name.as_str()));
        if request.required && !present {
            problems.push(format!(
                "{what}: the code requires {name}, the deployment does not set it"
            ));
        }
    }
    for var in vars {
        let read = match &var.list_of {
            Some(list) => asked.get(list).is_some_and(|r| r.list),
            None => asked.contains_key(&var.name),
        };
        if !read {
            problems.push(format!(
                "{what}: sets {}, which the code never reads",
                var.name
            ));
        }
    }
    problems
}

fn service_account_of(body: &Body, attribute: &str) -> String {
    let expr = attr(body, attribute).unwrap_or_else(|| panic!("no {attribute}"));
    match path(expr).as_slice() {
        [ty, group, key, _] if ty == "google_service_account" => format!("{group}/{key}"),
        other => panic!("{attribute} is not a service account of this Terraform: {other:?}"),
    }
}

#[test]
fn every_variable_each_service_requires_is_set_on_its_cloud_run_service() {
    let tf = Terraform::load();
    let mut problems = Vec::new();
    for service in SERVICES {
        let body = tf.resource("google_cloud_run_v2_service", service.resource);
        let vars = container_env(serving_container(body));
        let asked = requested(service.config, &vars);
        assert!(
            asked.get("DATABASE_URL").is_some_and(|r| r.required),
            "the recording sees {:?} ask for nothing: {asked:?}",
            service.config
        );
        problems.extend(deployment_problems(service.resource, &vars, &asked));
        assert_eq!(
            service_account_of(block(body, "template"), "service_account"),
            format!("runtime/{}", service.account),
            "{} runs as its own service account",
            service.resource
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_forgotten_required_variable_is_reported() {
    // The check itself: a required variable missing from the deployment is a problem.
    let tf = Terraform::load();
    let body = tf.resource("google_cloud_run_v2_service", "worker");
    let vars: Vec<EnvVar> = container_env(serving_container(body))
        .into_iter()
        .filter(|v| v.name != "VOTE_KEYS")
        .collect();
    let asked = requested(Config::Worker, &vars);
    let problems = deployment_problems("worker", &vars, &asked);
    assert_eq!(
        problems,
        ["worker: the code requires VOTE_KEYS, the deployment does not set it"]
    );
}

#[test]
fn the_jobs_set_what_their_binaries_read() {
    let tf = Terraform::load();
    // migrate reads DATABASE_URL itself (shared/src/bin/migrate.rs).
    let migrate = container_env(job_container(
        tf.resource("google_cloud_run_v2_job", "migrate"),
    ));
    assert!(
        migrate.iter().any(|v| v.name == "DATABASE_URL"),
        "{migrate:?}"
    );
    // members-import reads the database settings and PLATFORM_ORG
    // (members-fn/src/bin/members-import.rs).
    let import = container_env(job_container(
        tf.resource("google_cloud_run_v2_job", "members_import"),
    ));
    let names: Vec<_> = import.iter().map(|v| v.name.clone()).collect();
    let mut env = Env::from_map(names.iter().map(|n| (n.clone(), "x")));
    let _ = shared::config::DatabaseSettings::from_env(&mut env);
    let _ = env.string_or("PLATFORM_ORG", "platform");
    for (name, request) in env.requested() {
        assert!(
            !request.required || names.contains(&name),
            "members-import requires {name}"
        );
    }
    assert!(names.contains(&"PLATFORM_ORG".to_owned()), "{names:?}");
    // Both stop their proxy sidecar when done, and the sidecar serves /quitquitquit.
    for job in [&migrate, &import] {
        assert!(
            job.iter().any(|v| v.name == shared::db::PROXY_QUIT_URL_VAR),
            "{job:?}"
        );
    }
    let Expression::FuncCall(args) = tf.local("job_proxy_args") else {
        panic!("job_proxy_args is concat([...], local.proxy_args)");
    };
    assert!(args.args[0].to_string().contains("--quitquitquit"));
}

// --- secrets ------------------------------------------------------------------------------------

/// A name that looks like it holds a secret (a key, a password, a secret) and is not a public key.
fn looks_secret(name: &str) -> bool {
    let name = name.split("__").next().unwrap_or(name);
    (name.contains("SECRET")
        || name.contains("PASSWORD")
        || name.ends_with("_KEY")
        || name.ends_with("_KEYS"))
        && !name.contains("PUBLIC")
}

#[test]
fn every_secret_comes_from_secret_manager_and_nothing_secret_is_a_plain_value() {
    let tf = Terraform::load();
    let secrets: BTreeSet<&str> = tf
        .resources("google_secret_manager_secret")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut problems = Vec::new();
    for service in SERVICES {
        let body = tf.resource("google_cloud_run_v2_service", service.resource);
        let vars = container_env(serving_container(body));
        let asked = requested(service.config, &vars);
        // The code's own list of secrets covers every name that looks like one.
        for name in asked.keys().filter(|n| looks_secret(n)) {
            if !SECRET_VARIABLES.contains(&name.as_str()) {
                problems.push(format!(
                    "{name} looks secret: list it in shared::config::SECRET_VARIABLES (or name it PUBLIC)"
                ));
            }
        }
        for var in &vars {
            let base = var.list_of.as_deref().unwrap_or(&var.name);
            match &var.value {
                Value::Plain(value) => {
                    if SECRET_VARIABLES.contains(&base) || looks_secret(base) {
                        problems.push(format!(
                            "{}: {} is a plain value",
                            service.resource, var.name
                        ));
                    }
                    if value.contains("password") {
                        problems.push(format!(
                            "{}: {} holds a password",
                            service.resource, var.name
                        ));
                    }
                }
                Value::Secret(secret) => {
                    if !secrets.contains(secret.as_str()) {
                        problems.push(format!(
                            "{}: {} from an unknown secret {secret}",
                            service.resource, var.name
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // DATABASE_URL is a plain value because it holds no password: IAM login through the proxy.
    let Expression::ForExpr(urls) = tf.local("database_urls") else {
        panic!("database_urls is a for expression");
    };
    let Expression::TemplateExpr(url) = &urls.value_expr else {
        panic!("the database URL is a template");
    };
    let shape: String = Template::from_expr(url)
        .expect("template")
        .elements()
        .iter()
        .map(|e| match e {
            Element::Literal(s) => s.as_str(),
            _ => "USER",
        })
        .collect();
    let authority = shape
        .strip_prefix("postgres://")
        .and_then(|rest| rest.split('/').next())
        .expect("postgres://authority/...");
    let userinfo = authority.split('@').next().unwrap_or_default();
    assert!(
        authority.contains('@') && !userinfo.contains(':'),
        "DATABASE_URL must name a user and no password: {shape}"
    );
    assert!(authority.ends_with("@127.0.0.1:5432"), "{shape}");
}

// --- IAM ----------------------------------------------------------------------------------------

/// Who may do what where, as "scope role" per principal.
fn grants(tf: &Terraform) -> BTreeMap<String, BTreeSet<String>> {
    let scoped: &[(&str, &str, &str)] = &[
        ("google_project_iam_member", "project", ""),
        ("google_pubsub_topic_iam_member", "topic", "topic"),
        (
            "google_pubsub_subscription_iam_member",
            "subscription",
            "subscription",
        ),
        (
            "google_secret_manager_secret_iam_member",
            "secret",
            "secret_id",
        ),
        ("google_storage_bucket_iam_member", "bucket", "bucket"),
        ("google_cloud_run_v2_service_iam_member", "run", "name"),
        ("google_cloud_run_v2_job_iam_member", "job", "name"),
        (
            "google_service_account_iam_member",
            "sa",
            "service_account_id",
        ),
    ];
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (ty, kind, target_attr) in scoped {
        for (name, body) in tf.resources(ty) {
            let scope = if target_attr.is_empty() {
                (*kind).to_owned()
            } else {
                let target = attr(body, target_attr).expect("iam target");
                match path(target).as_slice() {
                    [var, value, _] if var == "each" && value == "value" => {
                        match path(attr(body, "for_each").expect("for_each")).as_slice() {
                            [_, resource] => format!("{kind}:{resource}"),
                            other => panic!("{ty}.{name}: for_each {other:?}"),
                        }
                    }
                    // `count` (one or none): the resource itself.
                    [_, resource, key, _] if key == "0" => format!("{kind}:{resource}"),
                    [_, resource, key, _] => format!("{kind}:{resource}/{key}"),
                    [_, resource, _] => format!("{kind}:{resource}"),
                    other => panic!("{ty}.{name}: target {other:?}"),
                }
            };
            let role_expr = attr(body, "role").expect("role");
            let role = match string(role_expr) {
                Some(role) => role.to_owned(),
                None => match path(role_expr).as_slice() {
                    [ty, custom, _] if ty == "google_project_iam_custom_role" => {
                        format!("custom:{custom}")
                    }
                    other => panic!("{ty}.{name}: role {other:?}"),
                },
            };
            let member = attr(body, "member").expect("member");
            let principals = match path(member).as_slice() {
                [ty, group, key, _] if ty == "google_service_account" && key == "each.key" => tf
                    .for_each_keys(body)
                    .expect("for_each")
                    .into_iter()
                    .map(|k| format!("{group}/{k}"))
                    .collect(),
                [ty, group, key, _] if ty == "google_service_account" => {
                    vec![format!("{group}/{key}")]
                }
                [local, agent] if local == "local" && agent == "pubsub_service_agent" => {
                    vec!["pubsub-service-agent".to_owned()]
                }
                other => panic!("{ty}.{name}: member {other:?}"),
            };
            for principal in principals {
                out.entry(principal)
                    .or_default()
                    .insert(format!("{scope} {role}"));
            }
        }
    }
    out
}

#[test]
fn each_service_account_holds_the_documented_minimal_roles() {
    let tf = Terraform::load();
    let db = [
        "project roles/cloudsql.client",
        "project roles/cloudsql.instanceUser",
    ];
    let accessor = |secret: &str| format!("secret:{secret} roles/secretmanager.secretAccessor");
    // docs/deploy.md, "Service accounts": keep the two in step.
    let expected: BTreeMap<&str, Vec<String>> = BTreeMap::from([
        (
            "runtime/ingest",
            vec![
                "topic:votes roles/pubsub.publisher".to_owned(),
                accessor("vote_keys"),
                accessor("receipt_key"),
                accessor("audit_key"),
            ],
        ),
        (
            "runtime/ingest-internal",
            vec![
                accessor("vote_keys"),
                accessor("receipt_key"),
                accessor("s2s_keys"),
                accessor("audit_key"),
            ],
        ),
        (
            "runtime/worker",
            vec![
                "project roles/monitoring.metricWriter".to_owned(),
                "subscription:worker roles/pubsub.subscriber".to_owned(),
                "subscription:dead_letter roles/pubsub.subscriber".to_owned(),
                accessor("vote_keys"),
            ],
        ),
        (
            "runtime/events-svc",
            vec![
                accessor("s2s_keys"),
                accessor("voting_token_signing_keys"),
                accessor("token_slot_keys"),
                accessor("audit_key"),
            ],
        ),
        (
            "runtime/members-fn",
            vec![
                accessor("session_signing_keys"),
                accessor("oidc_client_secret"),
            ],
        ),
        (
            "runtime/members-import",
            vec!["bucket:imports roles/storage.objectViewer".to_owned()],
        ),
        ("runtime/migrate", vec![]),
        (
            "scheduler/prewarm",
            vec![
                "run:ingest custom:ingest_scaling".to_owned(),
                "sa:runtime/ingest roles/iam.serviceAccountUser".to_owned(),
            ],
        ),
        (
            "scheduler/db-tier",
            vec!["project custom:sql_tier".to_owned()],
        ),
        (
            "scheduler/soak",
            vec!["job:soak roles/run.invoker".to_owned()],
        ),
        (
            "pubsub-service-agent",
            vec![
                "topic:votes_dead_letter roles/pubsub.publisher".to_owned(),
                "subscription:worker roles/pubsub.subscriber".to_owned(),
            ],
        ),
    ]);
    let mut expected: BTreeMap<String, BTreeSet<String>> = expected
        .into_iter()
        .map(|(who, roles)| {
            let mut roles: BTreeSet<String> = roles.into_iter().collect();
            if who.starts_with("runtime/") {
                roles.extend(db.iter().map(|r| (*r).to_owned()));
            }
            (who.to_owned(), roles)
        })
        .collect();
    let actual = grants(&tf);
    for who in actual.keys() {
        expected.entry(who.clone()).or_default();
    }
    for (who, roles) in &expected {
        let granted = actual.get(who).cloned().unwrap_or_default();
        assert_eq!(&granted, roles, "grants of {who}");
    }

    // The custom roles hold only what their one job needs.
    let permissions = |name: &str| -> Vec<String> {
        match attr(
            tf.resource("google_project_iam_custom_role", name),
            "permissions",
        ) {
            Some(Expression::Array(items)) => items.iter().map(|p| tf.render(p)).collect(),
            _ => panic!("{name}: permissions"),
        }
    };
    assert_eq!(
        permissions("ingest_scaling"),
        ["run.services.get", "run.services.update"]
    );
    assert_eq!(
        permissions("sql_tier"),
        ["cloudsql.instances.get", "cloudsql.instances.update"]
    );
    assert!(
        tf.resource("google_project_iam_member", "db_tier")
            .blocks()
            .any(|b| b.identifier() == "condition"),
        "the tier switch is bound to the one instance"
    );
}

#[test]
fn each_secret_is_readable_by_exactly_the_services_that_use_it() {
    let tf = Terraform::load();
    let actual = grants(&tf);
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for service in SERVICES {
        let body = tf.resource("google_cloud_run_v2_service", service.resource);
        for var in container_env(serving_container(body)) {
            if let Value::Secret(secret) = var.value {
                users
                    .entry(secret)
                    .or_default()
                    .insert(format!("runtime/{}", service.account));
            }
        }
    }
    for (secret, _) in tf.resources("google_secret_manager_secret") {
        let readers: BTreeSet<String> = actual
            .iter()
            .filter(|(_, roles)| {
                roles.contains(&format!(
                    "secret:{secret} roles/secretmanager.secretAccessor"
                ))
            })
            .map(|(who, _)| who.clone())
            .collect();
        assert_eq!(
            readers,
            users.get(secret).cloned().unwrap_or_default(),
            "who may read {secret} is who uses it"
        );
    }
}

// --- Pub/Sub ------------------------------------------------------------------------------------

#[test]
fn the_subscriptions_are_what_the_worker_assumes() {
    let tf = Terraform::load();
    let topic = tf.render(attr(tf.resource("google_pubsub_topic", "votes"), "name").unwrap());
    let settings = shared::config::PubSubSettings {
        emulator_host: None,
        project: "p".into(),
        topic: topic.clone(),
        subscription: "unused".into(),
    };
    let expected = Topology::for_settings(&settings);
    let seconds = |d: std::time::Duration| format!("{}s", d.as_secs());

    let dead_letter_topic = tf.resource("google_pubsub_topic", "votes_dead_letter");
    assert_eq!(
        tf.render(attr(dead_letter_topic, "name").unwrap()),
        expected.dead_letter_topic
    );

    for (name, dead_letter) in [("worker", true), ("dead_letter", false)] {
        let sub = tf.resource("google_pubsub_subscription", name);
        let what = format!("subscription {name}");
        assert_eq!(
            attr(sub, "ack_deadline_seconds").and_then(number),
            Some(i64::from(expected.ack_deadline_seconds)),
            "{what}"
        );
        assert_eq!(
            attr(sub, "message_retention_duration").and_then(string),
            Some(seconds(expected.retention).as_str()),
            "{what}"
        );
        assert_eq!(
            attr(sub, "retain_acked_messages").map(|e| e.to_string()),
            Some(expected.retain_acked_messages.to_string()),
            "{what}"
        );
        let retry = block(sub, "retry_policy");
        assert_eq!(
            attr(retry, "minimum_backoff").and_then(string),
            Some(seconds(expected.minimum_backoff).as_str()),
            "{what}"
        );
        assert_eq!(
            attr(retry, "maximum_backoff").and_then(string),
            Some(seconds(expected.maximum_backoff).as_str()),
            "{what}"
        );
        let policy = sub
            .blocks()
            .find(|b| b.identifier() == "dead_letter_policy");
        if dead_letter {
            let policy = policy.expect("the vote subscription dead-letters").body();
            assert_eq!(
                attr(policy, "max_delivery_attempts").and_then(number),
                Some(i64::from(expected.max_delivery_attempts))
            );
            assert_eq!(
                path(attr(policy, "dead_letter_topic").unwrap()),
                ["google_pubsub_topic", "votes_dead_letter", "id"]
            );
        } else {
            assert!(
                policy.is_none(),
                "the dead-letter subscription has no dead-letter policy"
            );
            assert_eq!(
                tf.render(attr(sub, "name").unwrap()),
                expected.dead_letter_subscription
            );
        }
    }

    // The worker reads the subscriptions Terraform makes, ingest publishes to its topic.
    let worker = container_env(serving_container(
        tf.resource("google_cloud_run_v2_service", "worker"),
    ));
    let plain = |vars: &[EnvVar], name: &str| {
        vars.iter()
            .find(|v| v.name == name)
            .map(|v| v.value.clone())
            .unwrap_or_else(|| panic!("{name} not set"))
    };
    assert_eq!(
        plain(&worker, "PUBSUB_SUBSCRIPTION"),
        Value::Plain("google_pubsub_subscription.worker.name".into())
    );
    assert_eq!(
        plain(&worker, "PUBSUB_DEAD_LETTER_SUBSCRIPTION"),
        Value::Plain("google_pubsub_subscription.dead_letter.name".into())
    );
    for service in ["ingest", "worker"] {
        let vars = container_env(serving_container(
            tf.resource("google_cloud_run_v2_service", service),
        ));
        assert_eq!(
            plain(&vars, "PUBSUB_TOPIC"),
            Value::Plain("google_pubsub_topic.votes.name".into())
        );
        assert_eq!(
            plain(&vars, "PUBSUB_PROJECT_ID"),
            Value::Plain("var.project_id".into())
        );
    }
}

// --- probes, listeners, sizes -------------------------------------------------------------------

#[test]
fn each_service_is_probed_on_readyz_and_healthz_of_its_port() {
    let tf = Terraform::load();
    for service in SERVICES {
        let container =
            serving_container(tf.resource("google_cloud_run_v2_service", service.resource));
        let port = attr(block(container, "ports"), "container_port").and_then(number);
        for (probe, expected) in [("startup_probe", "/readyz"), ("liveness_probe", "/healthz")] {
            let get = block(block(container, probe), "http_get");
            assert_eq!(
                attr(get, "path").and_then(string),
                Some(expected),
                "{} {probe}",
                service.resource
            );
            assert_eq!(
                attr(get, "port").and_then(number),
                port,
                "{} {probe}",
                service.resource
            );
        }
    }
}

#[test]
fn ingest_serves_one_listener_per_service_and_trusts_cloud_runs_front_end() {
    let tf = Terraform::load();
    let value = |resource: &str, name: &str| {
        container_env(serving_container(
            tf.resource("google_cloud_run_v2_service", resource),
        ))
        .into_iter()
        .find(|v| v.name == name)
        .map(|v| v.value)
    };
    assert_eq!(
        value("ingest", "INGEST_SERVE"),
        Some(Value::Plain("\"public\"".into()))
    );
    assert_eq!(
        value("ingest_internal", "INGEST_SERVE"),
        Some(Value::Plain("\"internal\"".into()))
    );
    assert_eq!(
        value("ingest", "TRUSTED_PROXY_HOPS"),
        Some(Value::Plain("\"1\"".into()))
    );
    // Only the internal listener verifies S2S calls: it needs the keys, the public one must not.
    let internal = container_env(serving_container(
        tf.resource("google_cloud_run_v2_service", "ingest_internal"),
    ));
    assert!(internal
        .iter()
        .any(|v| v.list_of.as_deref() == Some("S2S_KEYS")));
    let public = container_env(serving_container(
        tf.resource("google_cloud_run_v2_service", "ingest"),
    ));
    assert!(!public.iter().any(|v| v.name.starts_with("S2S_KEYS")));
    assert_eq!(
        value("events_svc", "ELECTIONS_URL"),
        Some(Value::Plain(
            "google_cloud_run_v2_service.ingest_internal.uri".into()
        ))
    );
    let ingress = |resource: &str| {
        attr(
            tf.resource("google_cloud_run_v2_service", resource),
            "ingress",
        )
        .and_then(string)
        .map(str::to_owned)
    };
    assert_eq!(
        ingress("ingest_internal").as_deref(),
        Some("INGRESS_TRAFFIC_INTERNAL_ONLY")
    );
    assert_eq!(
        ingress("worker").as_deref(),
        Some("INGRESS_TRAFFIC_INTERNAL_ONLY")
    );
}

#[test]
fn each_pool_and_max_instances_come_from_the_connection_budget() {
    let tf = Terraform::load();
    let pools = tf.local("db_pools");
    let mut total = 0;
    for name in object_keys(pools) {
        let entry = object_get(pools, &name);
        let pool = number(object_get(entry, "pool")).expect("pool literal");
        let max = match object_get(entry, "max_instances") {
            Expression::Number(n) => n.as_i64().expect("integer"),
            other => match path(other).as_slice() {
                [var, v] if var == "var" => number(tf.variable_default(v)).expect("default"),
                _ => panic!("{name}: max_instances {other}"),
            },
        };
        total += pool * max;
    }
    total += number(tf.local("db_reserved_connections")).expect("reserve literal");
    // The arithmetic in locals.tf and docs/deploy.md.
    assert_eq!(total, 274);

    for service in SERVICES {
        let body = tf.resource("google_cloud_run_v2_service", service.resource);
        let vars = container_env(serving_container(body));
        let pool = vars
            .iter()
            .find(|v| v.name == "DATABASE_MAX_CONNECTIONS")
            .map(|v| v.value.clone());
        assert_eq!(
            pool,
            Some(Value::Plain(format!(
                "tostring(local.db_pools[\"{}\"].pool)",
                service.account
            ))),
            "{}",
            service.resource
        );
        let max = attr(
            block(block(body, "template"), "scaling"),
            "max_instance_count",
        )
        .map(|e| e.to_string());
        assert_eq!(
            max,
            Some(format!(
                "local.db_pools[\"{}\"].max_instances",
                service.account
            )),
            "{}",
            service.resource
        );
    }
}

// --- the image and the jobs ---------------------------------------------------------------------

/// Every `command = ["/usr/local/bin/X", ...]` anywhere in a block (containers of services and
/// jobs, however deep).
fn commands(body: &Body, out: &mut BTreeSet<String>) {
    if let Some(Expression::Array(items)) = attr(body, "command") {
        let binary = items.first().and_then(string).expect("a literal command");
        let name = binary
            .strip_prefix("/usr/local/bin/")
            .unwrap_or_else(|| panic!("{binary}: the image's binaries are in /usr/local/bin"));
        out.insert(name.to_owned());
    }
    for block in body.blocks() {
        commands(block.body(), out);
    }
}

#[test]
fn the_image_holds_every_binary_the_deployment_runs() {
    let tf = Terraform::load();
    let mut used = BTreeSet::new();
    for block in tf
        .blocks
        .iter()
        .filter(|b| b.identifier() == "resource")
        .filter(|b| {
            matches!(
                label(b, 0),
                Some("google_cloud_run_v2_service" | "google_cloud_run_v2_job")
            )
        })
    {
        commands(block.body(), &mut used);
    }
    assert!(
        used.contains("loadtest") && used.contains("migrate"),
        "{used:?}"
    );

    let dockerfile =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../Dockerfile"))
            .expect("the Dockerfile");
    // The loop that copies the built binaries into the runtime stage.
    let lines: Vec<&str> = dockerfile.lines().collect();
    let copied: BTreeSet<String> = lines
        .windows(2)
        .find(|w| w[1].contains("cp \"target/release/$bin\" /out/"))
        .and_then(|w| {
            let list = w[0].split("for bin in ").nth(1)?;
            Some(
                list.split(';')
                    .next()?
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
            )
        })
        .expect("the Dockerfile's `for bin in ...; do cp \"target/release/$bin\" /out/` loop");
    let missing: Vec<_> = used.difference(&copied).collect();
    assert!(
        missing.is_empty(),
        "the deployment runs {missing:?}, which the image does not hold"
    );
}

/// A literal string as itself, anything else as HCL prints it.
fn shown(expr: &Expression) -> String {
    string(expr).map_or_else(|| expr.to_string(), str::to_owned)
}

#[test]
fn the_soak_job_runs_loadtest_soak_against_staging_the_day_before_each_large_meeting() {
    let tf = Terraform::load();
    let job = tf.resource("google_cloud_run_v2_job", "soak");
    let container = job_container(job);
    let Some(Expression::Array(command)) = attr(container, "command") else {
        panic!("the soak job's command");
    };
    assert_eq!(
        command.iter().map(shown).collect::<Vec<_>>(),
        ["/usr/local/bin/loadtest"]
    );
    assert_eq!(
        attr(container, "args").map(path),
        Some(vec!["local".to_owned(), "soak_args".to_owned()])
    );
    let Expression::Conditional(args) = tf.local("soak_args") else {
        panic!("soak_args is local.soak_enabled ? [...] : []");
    };
    let Expression::Array(args) = &args.true_expr else {
        panic!("soak_args: a list of arguments");
    };
    let args: Vec<String> = args.iter().map(shown).collect();
    // The subcommand and its flags as loadtest names them (`loadtest soak --help`).
    assert_eq!(
        args,
        [
            "soak",
            "--minutes",
            "tostring(var.soak.minutes)",
            "--ingest",
            "var.soak.ingest_url",
            "--events",
            "var.soak.events_url",
            "--members",
            "var.soak.members_url",
        ]
    );
    // No database, no secret: it only calls staging's public URLs.
    assert!(container_env(container).is_empty());
    assert_eq!(
        blocks(block(block(job, "template"), "template"), "containers").count(),
        1
    );

    let schedule = tf.resource("google_cloud_scheduler_job", "soak");
    let Some(Expression::Conditional(for_each)) = attr(schedule, "for_each") else {
        panic!("the soak schedule is per large meeting, when var.soak is set");
    };
    assert_eq!(path(&for_each.true_expr), ["local", "large_meetings"]);
    let when = attr(schedule, "schedule").expect("schedule").to_string();
    assert!(
        when.contains("timeadd(each.value.starts_at, \"-24h\")"),
        "the day before: {when}"
    );
    let target = block(schedule, "http_target");
    assert_eq!(attr(target, "http_method").and_then(string), Some("POST"));
    assert!(tf
        .render_loose(attr(target, "uri").expect("uri"))
        .ends_with(":run"));
}

// --- alerts: Cloud Monitoring against the Prometheus rules --------------------------------------

/// What makes two alerts the same: the thresholds they compare with, the range windows they
/// read, and how long the condition must hold.
#[derive(Debug, PartialEq)]
struct Shape {
    /// `op threshold`, sorted: `> 0.05`, `== 0`.
    comparisons: Vec<String>,
    /// Range windows in seconds (`[1m]`; a subquery `[2m:1m]` by its range), sorted, distinct.
    windows: Vec<u64>,
    /// `for:` / `duration`, seconds.
    hold: u64,
}

fn seconds(duration: &str) -> u64 {
    let split = duration
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or_else(|| panic!("{duration}: no unit"));
    let (n, unit) = duration.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("{duration}"));
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        other => panic!("{duration}: unit {other}"),
    }
}

fn shape(query: &str, hold: u64) -> Shape {
    let mut comparisons = Vec::new();
    let mut windows = BTreeSet::new();
    let mut rest = query;
    while let Some(c) = rest.chars().next() {
        // A comparison with a number: `> 0.05`, `== bool 0`. `=` and `=~` in label matchers
        // are not comparisons, and a matcher's value is quoted, so never a bare number.
        let op = ["==", "!=", ">=", "<=", ">", "<"]
            .into_iter()
            .find(|op| rest.starts_with(op));
        if let Some(op) = op {
            rest = &rest[op.len()..];
            let after = rest.trim_start();
            let after = after.strip_prefix("bool ").unwrap_or(after).trim_start();
            let len = after
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
                .unwrap_or(after.len());
            if let Ok(n) = after[..len].parse::<f64>() {
                comparisons.push(format!("{op} {n}"));
            }
            continue;
        }
        // A range window `[1m]`, or a subquery's `[2m:1m]` by its range.
        if c == '[' {
            if let Some(end) = rest.find(']') {
                let range = rest[1..end].split(':').next().unwrap_or_default();
                windows.insert(seconds(range));
                rest = &rest[end + 1..];
                continue;
            }
        }
        rest = &rest[c.len_utf8()..];
    }
    comparisons.sort();
    Shape {
        comparisons,
        windows: windows.into_iter().collect(),
        hold,
    }
}

struct PrometheusAlert {
    name: String,
    /// With every recording rule it uses written out.
    expr: String,
    hold: u64,
    runbook: String,
}

/// The rules in a Prometheus rules file, each as its keys (`record` or `alert`, `expr`, `for`,
/// `runbook`). Reads the shapes infra/monitoring uses -- one rule per `- record:`/`- alert:`
/// item, `expr` inline or as a `|` block -- and fails on anything else it meets in a rule.
fn rules_in(text: &str) -> Vec<BTreeMap<&'static str, String>> {
    let unquote = |v: &str| v.trim().trim_matches('"').trim_matches('\'').to_owned();
    let mut rules: Vec<BTreeMap<&'static str, String>> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let item = trimmed.strip_prefix("- ");
        if let Some(item) = item.filter(|i| i.starts_with("record:") || i.starts_with("alert:")) {
            let (key, value) = item.split_once(':').expect("key: value");
            let key = if key == "record" { "record" } else { "alert" };
            rules.push(BTreeMap::from([(key, unquote(value))]));
            continue;
        }
        let Some(rule) = rules.last_mut() else {
            continue;
        };
        for key in ["expr", "for", "runbook"] {
            let Some(value) = trimmed.strip_prefix(key).and_then(|r| r.strip_prefix(':')) else {
                continue;
            };
            let value = value.trim();
            let value = if value == "|" || value == ">" || value == "|-" || value == ">-" {
                let mut block = Vec::new();
                while let Some(next) = lines
                    .next_if(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                {
                    block.push(next.trim());
                }
                block.join("\n")
            } else {
                assert!(
                    !value.starts_with(['|', '>']),
                    "{key}: block style {value} not understood"
                );
                unquote(value)
            };
            rule.insert(key, value);
        }
    }
    rules
}

fn prometheus_alerts() -> Vec<PrometheusAlert> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../monitoring/rules");
    let mut records: Vec<(String, String)> = Vec::new();
    let mut alerts = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable rules file");
        for mut rule in rules_in(&text) {
            let what = format!("{}: {rule:?}", file.display());
            let expr = rule
                .remove("expr")
                .unwrap_or_else(|| panic!("no expr: {what}"));
            if let Some(record) = rule.remove("record") {
                records.push((record, expr));
                continue;
            }
            let name = rule.remove("alert").expect("alert or record");
            alerts.push(PrometheusAlert {
                hold: rule.get("for").map_or(0, |d| seconds(d)),
                runbook: rule
                    .remove("runbook")
                    .unwrap_or_else(|| panic!("{name}: runbook annotation")),
                name,
                expr,
            });
        }
    }
    // Recording rules may use one another: write them out until none is left.
    for alert in &mut alerts {
        for _ in 0..=records.len() {
            for (record, expr) in &records {
                alert.expr = alert.expr.replace(record, &format!("({expr})"));
            }
        }
        assert!(
            !records.iter().any(|(r, _)| alert.expr.contains(r.as_str())),
            "{}: recording rules nest too deep",
            alert.name
        );
    }
    alerts
}

impl Terraform {
    /// A string with every interpolation as `X` (thresholds and windows are literals).
    fn render_loose(&self, expr: &Expression) -> String {
        match expr {
            Expression::String(s) => s.clone(),
            Expression::TemplateExpr(t) => Template::from_expr(t)
                .expect("template")
                .elements()
                .iter()
                .map(|element| match element {
                    Element::Literal(s) => s.clone(),
                    Element::Interpolation(_) => "X".to_owned(),
                    Element::Directive(_) => panic!("template directive in {expr}"),
                })
                .collect(),
            other => panic!("not a string: {other}"),
        }
    }
}

struct Policy {
    resource: String,
    shapes: Vec<Shape>,
    documentation: String,
}

/// The alert policies that carry `user_labels.prometheus_alert`, by that label.
fn cloud_alerts(tf: &Terraform) -> BTreeMap<String, Policy> {
    let mut out = BTreeMap::new();
    for (name, body) in tf.resources("google_monitoring_alert_policy") {
        let Some(labels) = attr(body, "user_labels") else {
            continue;
        };
        let label = tf.render(object_get(labels, "prometheus_alert"));
        let shapes: Vec<Shape> = blocks(body, "conditions")
            .map(|c| {
                let promql = block(c.body(), "condition_prometheus_query_language");
                let query = tf.render_loose(attr(promql, "query").expect("query"));
                let hold = attr(promql, "duration").and_then(string).map_or(0, seconds);
                shape(&query, hold)
            })
            .collect();
        assert!(!shapes.is_empty(), "{name}: no conditions");
        let documentation = attr(block(body, "documentation"), "content")
            .map(|c| tf.render_loose(c))
            .unwrap_or_default();
        let previous = out.insert(
            label.clone(),
            Policy {
                resource: name.to_owned(),
                shapes,
                documentation,
            },
        );
        assert!(previous.is_none(), "two policies claim {label}");
    }
    out
}

#[test]
fn the_cloud_monitoring_alerts_are_the_prometheus_rules() {
    let tf = Terraform::load();
    let mut policies = cloud_alerts(&tf);
    let alerts = prometheus_alerts();
    assert!(alerts.len() >= 6, "{} alerts", alerts.len());
    let mut problems = Vec::new();
    for alert in &alerts {
        let label = alert.name.to_lowercase();
        let Some(policy) = policies.remove(&label) else {
            problems.push(format!(
                "{}: no alert policy with user_labels.prometheus_alert = \"{label}\"",
                alert.name
            ));
            continue;
        };
        let expected = shape(&alert.expr, alert.hold);
        for (i, actual) in policy.shapes.iter().enumerate() {
            if actual != &expected {
                problems.push(format!(
                    "{} condition {i} is {actual:?}, the rule {} is {expected:?}",
                    policy.resource, alert.name
                ));
            }
        }
        if !policy.documentation.contains(&alert.runbook) {
            problems.push(format!(
                "{}: its documentation does not link {}",
                policy.resource, alert.runbook
            ));
        }
    }
    for (label, policy) in policies {
        problems.push(format!(
            "{}: prometheus_alert = \"{label}\" names no Prometheus rule",
            policy.resource
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_changed_threshold_window_or_duration_is_a_different_alert() {
    let base = shape("sum(rate(x[1m])) / sum(rate(y[1m])) > 0.05", 60);
    assert_eq!(
        base,
        Shape {
            comparisons: vec!["> 0.05".into()],
            windows: vec![60],
            hold: 60
        }
    );
    assert_eq!(base, shape("(sum(rate(x[1m]))/sum(rate(y[1m])))>0.05", 60));
    assert_ne!(base, shape("sum(rate(x[1m])) / sum(rate(y[1m])) > 0.1", 60));
    assert_ne!(
        base,
        shape("sum(rate(x[5m])) / sum(rate(y[5m])) > 0.05", 60)
    );
    assert_ne!(
        base,
        shape("sum(rate(x[1m])) / sum(rate(y[1m])) > 0.05", 120)
    );
    // Label matchers are not comparisons; a subquery counts by its range.
    assert_eq!(
        shape("deriv(sum(m{code!=\"5\",le=\"0.5\"})[2m:1m]) > 0", 0).windows,
        [120]
    );
    assert_eq!(
        shape("up{job=~\"a-.*\"} == 0", 0).comparisons,
        ["== 0".to_owned()]
    );
}
