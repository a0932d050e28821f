//! Turns a cross-node migration record into a `NUMAStealError`, for tasks in scope.
//!
//! Scope without a policy: every user task except the agent's own threads. Kernel
//! threads are not workloads. The kernel already drops both when it knows the
//! thread (TASKS map); for a thread it did not know, /proc decides here. The node
//! pair always comes from the kernel, which read the agent's cpu->node map.
use std::path::PathBuf;

use crate::{
    errors::NumaStealError, procfs, sensors::sched_migrate::Migration, topology::Topology,
};

/// A steal to report, with what the event stream needs besides the error.
#[derive(Clone, Debug)]
pub struct StealReport {
    pub error: NumaStealError,
    pub migration: Migration,
    /// Thread group of the moved thread, `None` if it exited before the lookup.
    pub pid: Option<u32>,
    pub distance: Option<u32>,
}

/// Why a record is not reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Source and destination are the same known node (the kernel sends none of
    /// these; kept so the decision is total).
    SameNode,
    OwnThread,
    KernelThread,
}

pub struct StealClassifier {
    proc_root: PathBuf,
    self_tgid: u32,
}

impl StealClassifier {
    pub fn new(proc_root: PathBuf) -> Self {
        Self {
            proc_root,
            self_tgid: std::process::id(),
        }
    }

    /// The agent's own tgid as the host numbers it (differs from `std::process::id()`
    /// in a container's pid namespace).
    pub fn with_self_tgid(mut self, tgid: u32) -> Self {
        self.self_tgid = tgid;
        self
    }

    pub fn classify(&self, migration: Migration, topology: &Topology) -> Result<StealReport, Skip> {
        if migration.src_node.is_some() && migration.src_node == migration.dst_node {
            return Err(Skip::SameNode);
        }
        let pid = match migration.tgid {
            Some(tgid) => Some(tgid),
            None => match procfs::thread_info(&self.proc_root, migration.tid) {
                Some(info) if info.kernel_thread => return Err(Skip::KernelThread),
                Some(info) => Some(info.tgid),
                None => None,
            },
        };
        if pid == Some(self.self_tgid) {
            return Err(Skip::OwnThread);
        }
        let distance = match (migration.src_node, migration.dst_node) {
            (Some(a), Some(b)) => topology.distance(a, b),
            _ => None,
        };
        Ok(StealReport {
            error: NumaStealError {
                stolen_from_node: migration.src_node,
                current_node: migration.dst_node,
                resource_id: format!("task:{}", migration.tid),
                steal_type: migration.steal_type,
            },
            pid,
            distance,
            migration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::sched_migrate::StealType;

    fn topology() -> Topology {
        Topology::two_nodes_for_tests()
    }

    fn migration(tid: u32, src: Option<u32>, dst: Option<u32>) -> Migration {
        Migration {
            boot_ns: 1,
            tid,
            src_cpu: 0,
            dst_cpu: 1,
            src_node: src,
            dst_node: dst,
            steal_type: StealType::Forced,
            actor_tid: 5,
            actor_tgid: 5,
            tgid: None,
            comm: "t".into(),
            cgroup_ids: [0; numa_common::CGROUP_SLOTS],
        }
    }

    #[test]
    fn decisions() {
        let c = StealClassifier::new("/proc".into());
        let t = topology();
        assert_eq!(
            c.classify(migration(1, Some(0), Some(0)), &t).err(),
            Some(Skip::SameNode)
        );
        let own = own_tid();
        assert_eq!(
            c.classify(migration(own, Some(0), Some(1)), &t).err(),
            Some(Skip::OwnThread)
        );
        assert_eq!(
            c.classify(migration(2, Some(0), Some(1)), &t).err(),
            Some(Skip::KernelThread)
        );
        // A thread id no process holds: reported, with its thread group unknown.
        let gone = c
            .classify(migration(u32::MAX - 1, Some(0), Some(1)), &t)
            .expect("reported");
        assert_eq!((gone.pid, gone.distance), (None, Some(21)));
        assert_eq!(gone.error.resource_id, format!("task:{}", u32::MAX - 1));
        let unknown = c
            .classify(migration(u32::MAX - 1, None, Some(1)), &t)
            .expect("reported");
        assert_eq!(unknown.distance, None);
        // The kernel's record of the thread group wins over /proc.
        let recorded = Migration {
            tgid: Some(77),
            ..migration(2, Some(0), Some(1))
        };
        assert_eq!(c.classify(recorded, &t).expect("reported").pid, Some(77));
        let own = Migration {
            tgid: Some(std::process::id()),
            ..migration(1, Some(0), Some(1))
        };
        assert_eq!(c.classify(own, &t).err(), Some(Skip::OwnThread));
    }

    fn own_tid() -> u32 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() as u32 }
    }
}
