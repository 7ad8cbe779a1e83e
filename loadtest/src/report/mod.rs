//! Reports: `report.json` (everything, machine-readable), `report.md` (the summary, also
//! printed) and `chart.svg`, in one directory per run.
//!
//! [`targets`] holds the goals from the issues a run is measured against, [`tables`] the
//! Markdown of each kind of run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::drain::DrainReport;
use crate::machine::Machine;
use crate::scenario::{Check, Mode, ModeRun, StressReport, TokensReport, VotesReport};
use crate::soak::SoakReport;

pub mod tables;
pub mod targets;

/// A target from the issue, and where this run stands (never asserted by tests).
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub name: String,
    pub goal: String,
    pub measured: String,
    /// `None` when this run cannot tell.
    pub met: Option<bool>,
}

fn goal(name: &str, goal: &str, measured: String, met: Option<bool>) -> Goal {
    Goal {
        name: name.to_owned(),
        goal: goal.to_owned(),
        measured,
        met,
    }
}

/// One per run, so the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    Votes(VotesReport),
    Stress(StressReport),
    Drain(DrainReport),
    Tokens(TokensReport),
    Soak(SoakReport),
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub started_at: DateTime<Utc>,
    pub seconds: f64,
    /// How this run was invoked (arguments only; secrets come from the environment).
    pub command: String,
    pub machine: Machine,
    pub notes: Vec<String>,
    pub targets: Vec<Goal>,
    /// Every invariant and validity check passed.
    pub checks_passed: bool,
    pub result: Body,
}

pub const SHARED_CPU_NOTE: &str = "The load generator runs on the same machine as the services, PostgreSQL and the Pub/Sub emulator and competes with them for its cores: absolute figures understate what the services alone can do, and vary between runs. Compare figures within one run (queue vs direct, worker vs ceiling), not across runs.";

impl Report {
    pub fn new(
        scenario: &str,
        started_at: DateTime<Utc>,
        command: String,
        mut notes: Vec<String>,
        result: Body,
    ) -> Self {
        notes.insert(0, SHARED_CPU_NOTE.to_owned());
        let checks_passed = checks(&result).iter().all(|c| c.1.ok);
        Self {
            scenario: scenario.to_owned(),
            started_at,
            seconds: (Utc::now() - started_at).num_milliseconds() as f64 / 1000.0,
            command,
            machine: crate::machine::describe(),
            notes,
            targets: targets::targets(scenario, &result),
            checks_passed,
            result,
        }
    }

    /// Writes `report.json`, `report.md` and `chart.svg` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the report directory {}", dir.display()))?;
        let json = dir.join("report.json");
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", json.display()))?;
        let md = dir.join("report.md");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("writing {}", md.display()))?;
        let svg = dir.join("chart.svg");
        crate::chart::draw(self, &svg).with_context(|| format!("drawing {}", svg.display()))?;
        Ok(vec![json, md, svg])
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        self.header_md(&mut md);
        targets_md(&mut md, &self.targets);
        match &self.result {
            Body::Votes(v) => tables::votes_md(&mut md, v),
            Body::Stress(s) => tables::stress_md(&mut md, s),
            Body::Drain(d) => tables::drain_md(&mut md, d),
            Body::Tokens(t) => tables::tokens_md(&mut md, t),
            Body::Soak(s) => tables::soak_md(&mut md, s),
        }
        self.checks_md(&mut md);
        md
    }

    /// The title, when, how and where it ran, and the notes.
    fn header_md(&self, md: &mut String) {
        let _ = writeln!(md, "# Load test `{}`\n", self.scenario);
        let m = &self.machine;
        let _ = writeln!(
            md,
            "{} · {:.1} s · `{}`  \nMachine: {} × {}, {} MiB RAM, Linux {}\n",
            self.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.seconds,
            self.command,
            m.nproc,
            m.cpu_model,
            m.mem_total_mib,
            m.kernel
        );
        for note in &self.notes {
            let _ = writeln!(md, "> {note}\n");
        }
    }

    fn checks_md(&self, md: &mut String) {
        let _ = writeln!(md, "## Checks\n");
        for (scope, c) in checks(&self.result) {
            let _ = writeln!(
                md,
                "- {} {}{}: {}",
                if c.ok { "PASS" } else { "**FAIL**" },
                if scope.is_empty() {
                    String::new()
                } else {
                    format!("{scope}: ")
                },
                c.name,
                c.detail
            );
        }
        let _ = writeln!(
            md,
            "\nOverall: {}",
            if self.checks_passed {
                "every check passed"
            } else {
                "**A CHECK FAILED**"
            }
        );
    }
}

fn targets_md(md: &mut String, targets: &[Goal]) {
    if targets.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Targets (reported, not asserted)\n");
    let _ = writeln!(md, "| target | goal | measured | met |\n|---|---|---|---|");
    for t in targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "n/a",
        };
        let _ = writeln!(md, "| {} | {} | {} | {met} |", t.name, t.goal, t.measured);
    }
    md.push('\n');
}

/// Every check of a result, with its scope (mode or phase).
pub fn checks(body: &Body) -> Vec<(String, &Check)> {
    let mut out = Vec::new();
    match body {
        Body::Votes(v) => {
            for run in &v.modes {
                out.extend(run.checks.iter().map(|c| (run.mode.name().to_owned(), c)));
            }
        }
        Body::Stress(s) => {
            for run in &s.modes {
                out.extend(run.checks.iter().map(|c| (run.mode.name().to_owned(), c)));
            }
        }
        Body::Drain(d) => out.extend(d.checks.iter().map(|c| (String::new(), c))),
        Body::Tokens(t) => {
            out.extend(t.checks.iter().map(|c| ("tokens".to_owned(), c)));
            if let Some(v) = &t.vote {
                out.extend(v.checks.iter().map(|c| ("votes".to_owned(), c)));
            }
        }
        Body::Soak(s) => {
            for c in &s.cycles {
                let scope = format!("cycle {} ({})", c.index, c.mode.name());
                out.extend(c.checks.iter().map(|k| (scope.clone(), k)));
            }
            out.extend(s.checks.iter().map(|c| ("whole run".to_owned(), c)));
        }
    }
    out
}

fn run_of(v: &VotesReport, mode: Mode) -> Option<&ModeRun> {
    v.modes.iter().find(|r| r.mode == mode)
}

fn pct(x: f64) -> String {
    format!("{:.0} %", x * 100.0)
}
