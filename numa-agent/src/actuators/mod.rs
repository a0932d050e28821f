//! What the policy engine may do to a workload, each reversible or bounded, and the
//! audit trail of every decision (JSON lines).
pub mod cgroup;
pub mod relocate;

use std::{
    io::{self, Write},
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

use self::cgroup::{CpuCgroup, CpuLimit};
use crate::policy::spec::Ratio;

/// One audit line: policy, workload, error, action, before/after state, result.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    pub timestamp: String,
    pub policy: String,
    pub mode: &'static str,
    pub pid: u32,
    pub comm: String,
    /// The workload's cgroup (its metrics label).
    pub workload: String,
    /// The NUMA error that led here (`null` for a restore).
    pub error: Option<serde_json::Value>,
    pub message: String,
    pub action: &'static str,
    /// `would` (monitor mode), `did` (enforce), `restore` (end of a throttle's cooldown).
    pub decision: &'static str,
    pub adjusted_node: Option<u32>,
    pub before: Option<String>,
    pub after: Option<String>,
    /// `would`, `ok`, `partial`, `failed`, `refused`, `unchanged`, `rate_limited`, `recorded`.
    pub result: &'static str,
    pub detail: String,
    /// Start of the first window of the violating streak that led to the action.
    pub first_violating_window_start: Option<String>,
    /// Windows in that streak.
    pub violating_windows: u32,
    pub window_ms: u64,
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Where audit lines go: a file (appended, flushed per line) or the log.
pub struct AuditLog {
    out: Option<Box<dyn Write + Send>>,
}

impl AuditLog {
    pub fn to_log() -> Self {
        Self { out: None }
    }

    pub fn to_file(path: &PathBuf) -> io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            out: Some(Box::new(f)),
        })
    }

    pub fn to_writer(w: Box<dyn Write + Send>) -> Self {
        Self { out: Some(w) }
    }

    pub fn write(&mut self, record: &AuditRecord) {
        let line = serde_json::to_string(record)
            .unwrap_or_else(|e| format!("{{\"audit_error\":\"{e}\"}}"));
        match &mut self.out {
            None => log::info!(target: "audit", "{line}"),
            Some(w) => {
                if let Err(e) = writeln!(w, "{line}").and_then(|()| w.flush()) {
                    log::error!("writing the audit log failed: {e}; record: {line}");
                }
            }
        }
    }
}

/// A throttle in force, to be restored when its cooldown ends.
#[derive(Clone, Debug)]
pub struct ActiveThrottle {
    pub cgroup: CpuCgroup,
    pub before: CpuLimit,
    pub set: CpuLimit,
    pub until: Instant,
    pub policy: String,
    pub pid: u32,
    pub comm: String,
}

/// How a throttle attempt went.
#[derive(Clone, Debug)]
pub struct ThrottleOutcome {
    pub result: &'static str,
    pub before: Option<String>,
    pub after: Option<String>,
    pub detail: String,
}

#[derive(Default)]
pub struct Throttles {
    pub active: Vec<ActiveThrottle>,
}

impl Throttles {
    /// Lower the CPU quota of `pid`'s cgroup to `share` of one CPU for `cooldown`.
    /// `all_in_scope` must say whether every process of that cgroup is governed by the
    /// policy: a cgroup shared with anything else is never throttled.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, every value distinct"
    )]
    pub fn throttle(
        &mut self,
        proc_root: &std::path::Path,
        pid: u32,
        comm: &str,
        policy: &str,
        share: Ratio,
        cooldown: Duration,
        all_in_scope: impl Fn(&[u32]) -> Result<(), String>,
    ) -> ThrottleOutcome {
        let refused = |detail: String| ThrottleOutcome {
            result: "refused",
            before: None,
            after: None,
            detail,
        };
        let cg = match CpuCgroup::of_process(proc_root, pid) {
            Ok(cg) => cg,
            Err(e) => return refused(e.to_string()),
        };
        if cg.path == "/" {
            return refused(
                "the process is in the root cpu cgroup, which is never throttled".into(),
            );
        }
        if self.active.iter().any(|t| t.cgroup.dir == cg.dir) {
            return ThrottleOutcome {
                result: "unchanged",
                before: None,
                after: None,
                detail: format!("{} is already throttled by the agent", cg.dir.display()),
            };
        }
        match cg.procs() {
            Ok(procs) => {
                if let Err(why) = all_in_scope(&procs) {
                    return refused(format!("{} is shared: {why}", cg.dir.display()));
                }
            }
            Err(e) => return refused(e.to_string()),
        }
        let before = match cg.read_limit() {
            Ok(l) => l,
            Err(e) => return refused(e.to_string()),
        };
        // At least 1 ms: the smallest quota the kernel accepts (kernel/sched/core.c
        // `min_cfs_quota_period`).
        let quota = (u64::from(share.ppm) * before.period_us / 1_000_000).max(1000);
        if before.quota_us.is_some_and(|q| q <= quota) {
            return ThrottleOutcome {
                result: "unchanged",
                before: Some(before.describe()),
                after: None,
                detail: format!(
                    "{} already at or below {quota}us",
                    cg.quota_file().display()
                ),
            };
        }
        if let Err(e) = cg.write_quota(Some(quota), before.period_us) {
            return ThrottleOutcome {
                result: "failed",
                before: Some(before.describe()),
                after: None,
                detail: format!(
                    "{e:#}: {}",
                    std::error::Error::source(&e)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
            };
        }
        let after = cg.read_limit().ok();
        let set = CpuLimit {
            quota_us: Some(quota),
            period_us: before.period_us,
        };
        self.active.push(ActiveThrottle {
            cgroup: cg.clone(),
            before,
            set,
            until: Instant::now() + cooldown,
            policy: policy.to_owned(),
            pid,
            comm: comm.to_owned(),
        });
        ThrottleOutcome {
            result: if after == Some(set) { "ok" } else { "partial" },
            before: Some(before.describe()),
            after: after.map(CpuLimit::describe),
            detail: format!(
                "{} lowered until the cooldown ends ({})",
                cg.quota_file().display(),
                humantime::format_duration(cooldown)
            ),
        }
    }

    /// Restore every throttle whose cooldown ended (all of them with `all`); returns
    /// each with its outcome.
    pub fn restore_due(
        &mut self,
        now: Instant,
        all: bool,
    ) -> Vec<(ActiveThrottle, ThrottleOutcome)> {
        let (due, keep): (Vec<_>, Vec<_>) =
            self.active.drain(..).partition(|t| all || t.until <= now);
        self.active = keep;
        due.into_iter()
            .map(|t| {
                let outcome = restore(&t);
                (t, outcome)
            })
            .collect()
    }
}

fn restore(t: &ActiveThrottle) -> ThrottleOutcome {
    let current = match t.cgroup.read_limit() {
        Ok(c) => c,
        Err(e) => {
            return ThrottleOutcome {
                result: "failed",
                before: None,
                after: None,
                detail: format!("{e} (the cgroup may be gone)"),
            };
        }
    };
    if current != t.set {
        // Someone else changed it since: theirs wins.
        return ThrottleOutcome {
            result: "unchanged",
            before: Some(current.describe()),
            after: None,
            detail: format!(
                "{} was changed by someone else since the throttle; left as is",
                t.cgroup.quota_file().display()
            ),
        };
    }
    match t.cgroup.write_quota(t.before.quota_us, t.before.period_us) {
        Ok(()) => ThrottleOutcome {
            result: "ok",
            before: Some(current.describe()),
            after: t.cgroup.read_limit().ok().map(CpuLimit::describe),
            detail: format!("{} restored", t.cgroup.quota_file().display()),
        },
        Err(e) => ThrottleOutcome {
            result: "failed",
            before: Some(current.describe()),
            after: None,
            detail: e.to_string(),
        },
    }
}
