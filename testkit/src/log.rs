//! `TEST_LOG=1`: the in-process services' logs in the test's output, so a failing test can be
//! read. Off by default (a passing suite stays quiet); `RUST_LOG` picks the levels (default
//! `info`). Cargo's test harness shows the output of failing tests only, unless
//! `-- --nocapture` is given.

use std::sync::Once;

/// Installs the log subscriber once per test binary if `TEST_LOG` is set (to anything but `0`
/// or empty). Every spawn in this crate calls it; a test may too.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let wanted = std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty() && v != "0");
        if !wanted {
            return;
        }
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // A test that installed its own global subscriber keeps it.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
