//! The machine a report was measured on, and who used its CPU during a phase (the load
//! generator shares the cores with the services, PostgreSQL and the emulator: reports say so).

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub mem_total_mib: u64,
    pub cpu_model: String,
    pub kernel: String,
    pub hostname: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn describe() -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let mem_total_mib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024);
    Machine {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_total_mib,
        cpu_model,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        hostname: read("/proc/sys/kernel/hostname").trim().to_owned(),
    }
}

/// CPU time counters (clock ticks) at one instant.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    total: u64,
    busy: u64,
    groups: BTreeMap<String, u64>,
    /// Resident memory of each named pid (the services), KiB.
    rss_kib: BTreeMap<String, u64>,
}

/// Clock ticks per second of `/proc/<pid>/stat`'s utime and stime (USER_HZ: 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Which processes to account for, besides the load generator itself: named pids (the
/// services), every `postgres` process and the Pub/Sub emulator's JVM.
#[derive(Debug, Clone, Default)]
pub struct CpuWatch {
    pub pids: Vec<(String, u32)>,
}

fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

impl CpuWatch {
    pub fn sample(&self) -> CpuSample {
        let stat = read("/proc/stat");
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total: u64 = cpu.iter().sum();
        let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
        let mut groups = BTreeMap::new();
        let rss_kib = self
            .pids
            .iter()
            .filter_map(|(name, pid)| Some((name.clone(), rss_kib(*pid)?)))
            .collect();
        groups.insert(
            "loadtest".to_owned(),
            process_ticks("self").unwrap_or_default(),
        );
        for (name, pid) in &self.pids {
            if let Some(t) = process_ticks(&pid.to_string()) {
                *groups.entry(name.clone()).or_default() += t;
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let pid = entry.file_name().to_string_lossy().into_owned();
                if !pid.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let comm = read(&format!("/proc/{pid}/comm"));
                let group = match comm.trim() {
                    "postgres" => "postgres",
                    "java" if read(&format!("/proc/{pid}/cmdline")).contains("pubsub-emulator") => {
                        "pubsub-emulator"
                    }
                    _ => continue,
                };
                if let Some(t) = process_ticks(&pid) {
                    *groups.entry(group.to_owned()).or_default() += t;
                }
            }
        }
        CpuSample {
            total,
            busy: total.saturating_sub(idle),
            groups,
            rss_kib,
        }
    }
}

/// Shares of the whole machine (100 % = every core busy) between two samples.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuShare {
    pub machine_busy_pct: f64,
    /// Per process group: `loadtest` (this process: the load generator, and in `drain` the in-process worker), the named services, `postgres`,
    /// `pubsub-emulator`.
    pub by_process_pct: BTreeMap<String, f64>,
    /// CPU time each process group used between the samples (user + system), ms; 10 ms
    /// resolution.
    pub by_process_cpu_ms: BTreeMap<String, f64>,
    /// Resident memory of each service at the second sample, MiB.
    pub rss_mib_after: BTreeMap<String, f64>,
}

pub fn share(before: &CpuSample, after: &CpuSample) -> CpuShare {
    let total = after.total.saturating_sub(before.total).max(1) as f64;
    let pct = |v: u64| (v as f64 / total * 1000.0).round() / 10.0;
    CpuShare {
        machine_busy_pct: pct(after.busy.saturating_sub(before.busy)),
        by_process_pct: after
            .groups
            .iter()
            .map(|(name, t)| {
                let b = before.groups.get(name).copied().unwrap_or(0);
                (name.clone(), pct(t.saturating_sub(b)))
            })
            .collect(),
        by_process_cpu_ms: after
            .groups
            .iter()
            .map(|(name, t)| {
                let b = before.groups.get(name).copied().unwrap_or(0);
                (
                    name.clone(),
                    t.saturating_sub(b) as f64 * 1000.0 / TICKS_PER_SECOND,
                )
            })
            .collect(),
        rss_mib_after: after
            .rss_kib
            .iter()
            .map(|(name, kib)| (name.clone(), (*kib as f64 / 1024.0 * 10.0).round() / 10.0))
            .collect(),
    }
}

impl CpuShare {
    /// CPU time of `process` per `votes`, µs (None without the process or the votes).
    pub fn cpu_us_per(&self, process: &str, votes: usize) -> Option<f64> {
        let ms = self.by_process_cpu_ms.get(process)?;
        (votes > 0).then(|| ms * 1000.0 / votes as f64)
    }

    /// The services' resident memory at the end of the phase, e.g. `ingest 31.2 MiB, ...`.
    pub fn describe_rss(&self) -> String {
        if self.rss_mib_after.is_empty() {
            return "– (no --pid given)".into();
        }
        let parts: Vec<String> = self
            .rss_mib_after
            .iter()
            .map(|(k, v)| format!("{k} {v:.1} MiB"))
            .collect();
        parts.join(", ")
    }

    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .by_process_pct
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}%"))
            .collect();
        format!(
            "machine {:.0}% busy ({})",
            self.machine_busy_pct,
            parts.join(", ")
        )
    }
}

/// The Pub/Sub emulator's JVM on this machine, if one runs.
pub fn emulator_pid() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            (read(&format!("/proc/{pid}/comm")).trim() == "java"
                && read(&format!("/proc/{pid}/cmdline")).contains("pubsub-emulator"))
            .then_some(pid)
        })
}
