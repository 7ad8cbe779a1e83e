//! The worker as a process of its own, for the tests that SIGKILL or SIGTERM it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use testkit::elections::{metric, Stack};
use testkit::eventually_every;

/// A worker process that is killed if the test ends (or fails) before it stopped it.
pub struct WorkerProcess {
    pub child: std::process::Child,
    addr: Arc<OnceLock<SocketAddr>>,
}

impl WorkerProcess {
    /// Starts the worker binary with `stack`'s worker settings and `overrides`. Its log (stdout)
    /// is read to learn where it serves /metrics, and appended to `$WORKER_LOG` if that is set.
    pub fn spawn(stack: &Stack, overrides: &[(&str, &str)]) -> Self {
        let mut env = stack.worker_env();
        env.extend(overrides.iter().copied());
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
            .envs(env.vars())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn worker");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut log = std::env::var("WORKER_LOG").ok().map(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("log file")
        });
        let addr = Arc::new(OnceLock::new());
        let found = addr.clone();
        // Read to the end (until the process exits), or the worker would block on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if found.get().is_none() {
                    if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                        if entry["message"] == "worker running" {
                            if let Some(a) = entry["addr"].as_str().and_then(|a| a.parse().ok()) {
                                let _ = found.set(a);
                            }
                        }
                    }
                }
                if let Some(file) = log.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
            }
        });
        Self { child, addr }
    }

    /// SIGKILL: no drain, no acks, no goodbye (std's `kill()` is SIGKILL on Unix).
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap the worker");
    }

    /// SIGTERM (what the platform sends before stopping an instance); returns at once.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status:?}");
    }

    /// Where it serves /metrics, as its log says.
    pub async fn addr(&self) -> SocketAddr {
        eventually_every(
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async { self.addr.get().copied() },
        )
        .await
        .expect("the worker logged its address")
    }

    /// Its `worker_votes_total` for one outcome (`recorded`, `duplicate` or a rejection reason).
    pub async fn votes(&self, outcome: &str) -> i64 {
        let addr = self.addr().await;
        metric(
            addr,
            "worker_votes_total",
            &format!("outcome=\"{outcome}\""),
        )
        .await
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
