//! `relocatePod` on a host: every thread's CPU affinity to the target node's CPUs
//! (sched_setaffinity(2) per tid: affinity is per thread, kernel/sched/core.c), then the
//! process's pages to that node (migrate_pages(2), mm/mempolicy.c
//! `kernel_migrate_pages`). In Kubernetes this becomes an eviction (a later issue);
//! this module never pretends to do that.
use std::{fs, io, path::Path};

use crate::topology::NodeId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelocateOutcome {
    /// Threads whose affinity was set.
    pub threads_moved: usize,
    /// Threads that failed, with why (a thread that exited meanwhile is not a failure).
    pub thread_errors: Vec<(u32, String)>,
    /// Pages migrate_pages(2) could not move (its return value), or its error.
    pub pages: Result<u64, String>,
}

impl Default for RelocateOutcome {
    fn default() -> Self {
        Self {
            threads_moved: 0,
            thread_errors: Vec::new(),
            pages: Ok(0),
        }
    }
}

impl RelocateOutcome {
    pub fn result(&self) -> &'static str {
        match (
            self.threads_moved > 0 && self.thread_errors.is_empty(),
            &self.pages,
        ) {
            (true, Ok(0)) => "ok",
            (true, _) => "partial",
            (false, _) => "failed",
        }
    }

    pub fn detail(&self) -> String {
        let pages = match &self.pages {
            Ok(0) => "migrate_pages left no page behind".to_owned(),
            Ok(n) => format!("migrate_pages could not move {n} page(s)"),
            Err(e) => format!("migrate_pages failed: {e}"),
        };
        format!(
            "affinity set on {} thread(s){}; {pages}",
            self.threads_moved,
            if self.thread_errors.is_empty() {
                String::new()
            } else {
                format!(", failed on {:?}", self.thread_errors)
            }
        )
    }
}

fn set_affinity(tid: u32, cpus: &[u32]) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET is bounded by the set's size below.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if (c as usize) < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(c as usize, &mut set);
            }
        }
        libc::sched_setaffinity(tid as libc::pid_t, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Move process `pid` to `cpus` (the target node's) and its memory from every node in
/// `from_nodes` to `to_node`.
pub fn relocate(
    proc_root: &Path,
    pid: u32,
    cpus: &[u32],
    from_nodes: &[NodeId],
    to_node: NodeId,
) -> RelocateOutcome {
    let mut out = RelocateOutcome::default();
    let mut moved = std::collections::BTreeSet::new();
    // Threads created while this runs inherit the affinity of their creator, which is
    // moved too (or already was); a second pass catches one started in between.
    for _pass in 0..2 {
        let Ok(tasks) = fs::read_dir(proc_root.join(pid.to_string()).join("task")) else {
            break;
        };
        for tid in tasks.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
            match set_affinity(tid, cpus) {
                Ok(()) => {
                    moved.insert(tid);
                }
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => out.thread_errors.push((tid, e.to_string())),
            }
        }
        if !out.thread_errors.is_empty() {
            break;
        }
    }
    out.threads_moved = moved.len();
    out.pages = migrate_pages(pid, from_nodes, to_node);
    out
}

/// migrate_pages(2): returns the number of pages that could not be moved.
fn migrate_pages(pid: u32, from: &[NodeId], to: NodeId) -> Result<u64, String> {
    let bits = 64usize;
    let words = (from.iter().copied().chain([to]).max().unwrap_or(0) as usize / bits) + 1;
    let mut old = vec![0u64; words];
    let mut new = vec![0u64; words];
    for &n in from {
        old[n as usize / bits] |= 1 << (n as usize % bits);
    }
    new[to as usize / bits] |= 1 << (to as usize % bits);
    // SAFETY: both masks hold `maxnode` bits; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_migrate_pages,
            pid as libc::c_long,
            (words * bits) as libc::c_ulong,
            old.as_ptr(),
            new.as_ptr(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        Err(if e.raw_os_error() == Some(libc::EINVAL) {
            format!("{e} (node {to} has no memory in the running kernel?)")
        } else {
            e.to_string()
        })
    } else {
        Ok(rc as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_results() {
        let ok = RelocateOutcome {
            threads_moved: 2,
            thread_errors: vec![],
            pages: Ok(0),
        };
        assert_eq!(ok.result(), "ok");
        let partial = RelocateOutcome {
            pages: Err("EINVAL".into()),
            ..ok.clone()
        };
        assert_eq!(partial.result(), "partial");
        assert!(partial.detail().contains("migrate_pages failed"));
        assert_eq!(RelocateOutcome::default().result(), "failed");
    }
}
