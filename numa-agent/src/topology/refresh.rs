//! Re-reading the topology when a CPU turns up in no node.
//!
//! A CPU brought online by hot-plug can fire tracepoints before the agent's topology
//! (read at start) knows its node: the BPF map says "unknown" for it and events count
//! it under the unknown node. The first such CPU triggers a re-read of sysfs (at most
//! once per interval, so a CPU that stays nodeless costs one cheap read per interval,
//! ~0.3 ms on a 256-CPU machine); a changed topology replaces the old one and the
//! caller rewrites the BPF cpu->node map from it.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use super::{Topology, TopologyError, sysfs};

#[derive(Debug)]
pub struct Refresher {
    sysfs_root: PathBuf,
    min_interval: Duration,
    last: Option<Instant>,
}

impl Refresher {
    /// Default spacing between re-reads triggered by nodeless CPUs.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

    pub fn new(sysfs_root: PathBuf, min_interval: Duration) -> Self {
        Self {
            sysfs_root,
            min_interval,
            last: None,
        }
    }

    /// `cpu` was seen by a sensor. If `current` places it in no node and the last
    /// re-read is old enough, read sysfs again; `Some` is the result when it differs
    /// from `current` (or the error), `None` when there is nothing to do.
    pub fn on_cpu(
        &mut self,
        cpu: u32,
        current: &Topology,
        now: Instant,
    ) -> Option<Result<Topology, TopologyError>> {
        if current.node_of_cpu(cpu).is_some() {
            return None;
        }
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.min_interval)
        {
            return None;
        }
        self.last = Some(now);
        let read = match sysfs::read(&self.sysfs_root) {
            Ok(read) => read,
            Err(e) => return Some(Err(e)),
        };
        let mut fresh = read.topology;
        fresh.source = format!("{} (re-read: CPU {cpu} was in no node)", fresh.source);
        let changed = fresh.nodes != current.nodes
            || fresh.distances != current.distances
            || fresh.online_cpus != current.online_cpus
            || fresh.possible_cpus != current.possible_cpus;
        if !changed {
            return None;
        }
        for w in &read.warnings {
            log::warn!("topology: {w}");
        }
        Some(Ok(fresh))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn hot_plugged_cpu_is_placed_after_a_re_read_rate_limited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let w = |rel: &str, text: &str| {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, text).expect("write");
        };
        w("devices/system/cpu/online", "0-2\n");
        w("devices/system/node/online", "0\n");
        w("devices/system/node/node0/cpulist", "0-1\n");
        w("devices/system/node/node0/distance", "10\n");
        let t0 = Topology::from_sysfs(root).expect("topology");
        assert_eq!(t0.node_of_cpu(2), None);

        let mut r = Refresher::new(root.to_path_buf(), Duration::from_secs(10));
        let start = Instant::now();
        assert!(r.on_cpu(0, &t0, start).is_none(), "placed CPU: no re-read");
        assert!(
            r.on_cpu(2, &t0, start).is_none(),
            "re-read, nothing changed yet"
        );

        // The kernel finishes onlining CPU 2 into node 0.
        w("devices/system/node/node0/cpulist", "0-2\n");
        assert!(
            r.on_cpu(2, &t0, start + Duration::from_secs(1)).is_none(),
            "within the interval: no re-read"
        );
        let t1 = r
            .on_cpu(2, &t0, start + Duration::from_secs(11))
            .expect("re-read")
            .expect("topology");
        assert_eq!(t1.node_of_cpu(2), Some(0));
        assert_eq!(t1.cpu_to_node(), [Some(0), Some(0), Some(0)]);
        assert!(t1.source.contains("CPU 2 was in no node"), "{}", t1.source);
    }
}
