//! Process metrics from `/proc`: CPU time (utime + stime) per process group and resident
//! memory of our services, sampled in the background.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on every Linux we target).
pub const TICKS_PER_S: f64 = 100.0;
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// `utime + stime` of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields after it may not.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in MiB.
pub fn status_mib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line[key.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Which processes make up a group.
#[derive(Debug, Clone)]
pub enum Members {
    /// Fixed pids (our services, the bench itself).
    Pids(Vec<u32>),
    /// Every process of a process group (a Python worker and its subprocesses).
    ProcessGroup(u32),
    /// Every process with this `comm`; for `postgres`, `db` restricts client backends to
    /// that database (other databases' sessions on a shared server are not ours).
    Comm {
        comm: &'static str,
        db: Option<String>,
    },
}

/// Named process groups whose CPU time is measured.
#[derive(Debug, Clone, Default)]
pub struct Groups {
    groups: Vec<(String, Members)>,
}

fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

fn comm(pid: u32) -> Option<String> {
    Some(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim()
            .to_owned(),
    )
}

/// Postgres retitles its processes `postgres: 15/main: user db host(port) state`;
/// background processes (checkpointer, walwriter, …) carry no `host(port)`.
fn postgres_belongs(pid: u32, db: &str) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let title = String::from_utf8_lossy(&raw).replace('\0', " ");
    let words: Vec<&str> = title.split_whitespace().collect();
    if words.contains(&db) {
        return true;
    }
    !words.iter().any(|w| w.contains('(') || *w == "[local]")
        && !title.contains("autovacuum worker")
}

impl Groups {
    /// Adds a group.
    pub fn add(&mut self, name: impl Into<String>, members: Members) {
        self.groups.push((name.into(), members));
    }

    /// Current CPU ticks of every member, by group then pid.
    pub fn snapshot(&self) -> HashMap<String, HashMap<u32, u64>> {
        let pids = all_pids();
        let mut out = HashMap::new();
        for (name, members) in &self.groups {
            let members: Vec<u32> = match members {
                Members::Pids(p) => p.clone(),
                Members::ProcessGroup(g) => pids
                    .iter()
                    .copied()
                    .filter(|p| process_group(*p) == Some(*g))
                    .collect(),
                Members::Comm { comm: c, db } => pids
                    .iter()
                    .copied()
                    .filter(|pid| comm(*pid).as_deref() == Some(*c))
                    .filter(|pid| db.as_deref().is_none_or(|db| postgres_belongs(*pid, db)))
                    .collect(),
            };
            let ticks = members
                .into_iter()
                .filter_map(|p| Some((p, cpu_ticks(p)?)))
                .collect();
            out.insert(name.clone(), ticks);
        }
        out
    }

    /// CPU seconds per group between two snapshots (a process born in between counts
    /// whole; one that died in between is lost, which pooled connections make rare).
    pub fn cpu_seconds(
        before: &HashMap<String, HashMap<u32, u64>>,
        after: &HashMap<String, HashMap<u32, u64>>,
    ) -> BTreeMap<String, f64> {
        after
            .iter()
            .map(|(name, pids)| {
                let old = before.get(name);
                let ticks: u64 = pids
                    .iter()
                    .map(|(pid, t)| {
                        t.saturating_sub(old.and_then(|o| o.get(pid)).copied().unwrap_or(0))
                    })
                    .sum();
                (
                    name.clone(),
                    crate::stats::round3(ticks as f64 / TICKS_PER_S),
                )
            })
            .collect()
    }
}

/// Peak resident memory of named processes, sampled every 250 ms, per open window
/// (windows may nest: the backlog probes run inside the drain window).
#[derive(Default)]
pub struct RssWatch {
    pids: Vec<(String, u32)>,
    windows: Mutex<HashMap<u64, BTreeMap<String, f64>>>,
    next_window: AtomicU64,
}

impl RssWatch {
    /// Watches `pids` (name, pid) until `stop`.
    pub fn spawn(
        pids: Vec<(String, u32)>,
        stop: CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Arc<Self> {
        let watch = Arc::new(RssWatch {
            pids,
            ..Default::default()
        });
        let sampler = watch.clone();
        // Best effort: a failed read only leaves a gap in the samples.
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => sampler.sample(),
                }
            }
        });
        watch
    }

    fn sample(&self) {
        let now: Vec<(String, f64)> = self
            .pids
            .iter()
            .filter_map(|(name, pid)| Some((name.clone(), status_mib(*pid, "VmRSS")?)))
            .collect();
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        for peaks in windows.values_mut() {
            for (name, mib) in &now {
                let peak = peaks.entry(name.clone()).or_insert(0.0);
                *peak = peak.max(*mib);
            }
        }
    }

    /// Starts collecting peaks; returns the window id for [`RssWatch::close`].
    pub fn open(&self) -> u64 {
        let id = self.next_window.fetch_add(1, Ordering::Relaxed);
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, BTreeMap::new());
        self.sample();
        id
    }

    /// Peak RSS per process during the window, in MiB.
    pub fn close(&self, window: u64) -> BTreeMap<String, f64> {
        self.sample();
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let peaks = windows.remove(&window).unwrap_or_default();
        peaks
            .into_iter()
            .map(|(k, v)| (k, crate::stats::round3(v)))
            .collect()
    }

    /// Lifetime high-water mark (`VmHWM`) per process, in MiB.
    pub fn high_water(&self) -> BTreeMap<String, f64> {
        self.pids
            .iter()
            .filter_map(|(name, pid)| {
                Some((
                    name.clone(),
                    crate::stats::round3(status_mib(*pid, "VmHWM")?),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(status_mib(me, "VmRSS").is_some_and(|m| m > 0.0));
    }
}
