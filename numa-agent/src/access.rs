//! Per-workload memory placement over a window: local vs remote pages, the
//! cross-node ratio, and `NUMAAccessError` when it is over the threshold.
//!
//! What counts: every page the kernel allocated for a user thread group
//! (`kmem:mm_page_alloc` in the allocating task's context, `2^order` pages per
//! event), classified by the node of the CPU it ran on and the node the page lives
//! on. `local` = same node, `remote` = another node; pages of unknown node on either
//! side count in neither. The ratio is `remote / (local + remote)` over the window.
//! It measures *placement* of newly allocated memory (first touch), not every load:
//! numatop's RMA/LMA count memory accesses by hardware counters, and the kernel's
//! `numa_hint_faults_local / numa_hint_faults` counts sampled NUMA-balancing faults;
//! a workload whose memory is all remote scores near 1 on all three, but a workload
//! that allocated locally and then migrated shows here only in its new allocations.
//!
//! A second, separate source: *sampled user page faults* (`exceptions:page_fault_user`,
//! x86, one in `--fault-sample-rate` per CPU), each resolved to the node its page is on
//! by `move_pages(2)` (see `sampled_faults`). A sample counts when the query named a
//! node and the faulting CPU is in a known node; it is `local` or `remote` like a page.
//! Faults cover what placement does not: faults on memory that already exists (page
//! cache, shared libraries, copy-on-write, swap-in, and with `numa_balancing=1` the
//! NUMA hinting faults themselves), not only first touches. The two sources are never
//! added together (pages are counted exactly, faults 1 in N); per window and workload
//! [`window_verdict`] takes placement when it has `min_pages` pages, else sampled
//! faults when they have `min_samples` samples, and says which it used.
use std::collections::BTreeMap;

use crate::{
    errors::NumaAccessError,
    sensors::page_alloc::AllocKey,
    topology::{NodeId, Topology},
};

/// One thread group's pages in one window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadAccess {
    pub tgid: u32,
    pub local: u64,
    pub remote: u64,
    pub unknown: u64,
    /// Classified pages per (CPU node, memory node), local pairs included.
    pub pairs: BTreeMap<(NodeId, NodeId), u64>,
}

impl WorkloadAccess {
    /// `remote / (local + remote)`, or `None` with no classified page.
    pub fn ratio(&self) -> Option<f64> {
        let total = self.local + self.remote;
        (total > 0).then(|| self.remote as f64 / total as f64)
    }

    /// The (CPU node, memory node) pair with the most remote pages.
    pub fn dominant_remote(&self) -> Option<(NodeId, NodeId)> {
        self.pairs
            .iter()
            .filter(|((c, m), _)| c != m)
            .max_by_key(|&(pair, count)| (*count, std::cmp::Reverse(*pair)))
            .map(|(pair, _)| *pair)
    }
}

/// Turns the kernel's cumulative counts into per-window deltas.
#[derive(Debug, Default)]
pub struct AccessWindows {
    previous: BTreeMap<AllocKey, u64>,
}

impl AccessWindows {
    /// Deltas since the last call, per thread group. A key the kernel evicted (LRU)
    /// simply stops contributing; a counter that went backwards (evicted and
    /// re-created) counts from zero.
    pub fn advance(&mut self, now: BTreeMap<AllocKey, u64>) -> Vec<WorkloadAccess> {
        let deltas = now.iter().map(|(key, &count)| {
            let before = self.previous.get(key).copied().unwrap_or(0);
            let delta = if count >= before {
                count - before
            } else {
                count
            };
            (*key, delta)
        });
        let out = group(deltas);
        self.previous = now;
        out
    }
}

/// Per-thread-group windows from counts that already are one window's deltas (the
/// sampled faults the agent resolved itself).
pub fn from_deltas(deltas: &BTreeMap<AllocKey, u64>) -> Vec<WorkloadAccess> {
    group(deltas.iter().map(|(k, &v)| (*k, v)))
}

fn group(deltas: impl Iterator<Item = (AllocKey, u64)>) -> Vec<WorkloadAccess> {
    let mut per_tgid: BTreeMap<u32, WorkloadAccess> = BTreeMap::new();
    for (key, delta) in deltas {
        if delta == 0 {
            continue;
        }
        let w = per_tgid.entry(key.tgid).or_insert_with(|| WorkloadAccess {
            tgid: key.tgid,
            ..WorkloadAccess::default()
        });
        match (key.cpu_node, key.mem_node) {
            (Some(c), Some(m)) => {
                if c == m {
                    w.local += delta;
                } else {
                    w.remote += delta;
                }
                *w.pairs.entry((c, m)).or_default() += delta;
            }
            _ => w.unknown += delta,
        }
    }
    per_tgid.into_values().collect()
}

/// When a window's ratio makes a `NUMAAccessError`.
#[derive(Clone, Copy, Debug)]
pub struct AccessThreshold {
    /// Ratio above which the window is an error (0-1).
    pub max_cross_access: f64,
    /// Fewer classified pages than this: too little evidence, never an error.
    pub min_pages: u64,
}

/// Which evidence a window's verdict rests on (`source` in the event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessSource {
    /// Pages allocated (`kmem:mm_page_alloc`), counted exactly.
    PageAlloc,
    /// Sampled user page faults resolved with `move_pages(2)`.
    SampledFaults,
}

/// The error for one workload's window from its two sources: placement decides when
/// it has at least `threshold.min_pages` classified pages; otherwise sampled faults
/// decide when they have at least `min_samples` classified samples; otherwise there
/// is too little evidence. Never both, so one window makes at most one error.
pub fn window_verdict(
    placement: Option<&WorkloadAccess>,
    sampled: Option<&WorkloadAccess>,
    threshold: AccessThreshold,
    min_samples: u64,
    topology: &Topology,
) -> Option<(NumaAccessError, AccessSource)> {
    if let Some(p) = placement.filter(|p| p.local + p.remote >= threshold.min_pages) {
        return access_error(p, threshold, topology).map(|e| (e, AccessSource::PageAlloc));
    }
    let s = sampled?;
    let by_samples = AccessThreshold {
        min_pages: min_samples,
        ..threshold
    };
    access_error(s, by_samples, topology).map(|e| (e, AccessSource::SampledFaults))
}

/// The error for `w`, if its window is over the threshold with enough evidence.
pub fn access_error(
    w: &WorkloadAccess,
    threshold: AccessThreshold,
    topology: &Topology,
) -> Option<NumaAccessError> {
    if w.local + w.remote < threshold.min_pages || w.ratio()? <= threshold.max_cross_access {
        return None;
    }
    let (source, target) = w.dominant_remote()?;
    Some(NumaAccessError {
        source_node: source,
        target_node: target,
        resource_type: "memory".to_owned(),
        distance: topology.distance(source, target),
        qos_class: None,
        allowed_nodes: None,
        ratio: w.ratio()?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap as Map;

    use super::*;
    use crate::topology::Node;

    fn key(tgid: u32, cpu: Option<u32>, mem: Option<u32>) -> AllocKey {
        AllocKey {
            tgid,
            cpu_node: cpu,
            mem_node: mem,
        }
    }

    fn topology() -> Topology {
        Topology::from_parts(
            vec![Node::new(0, vec![0]), Node::new(3, vec![1])],
            Map::from([
                (0, Map::from([(0, 10), (3, 31)])),
                (3, Map::from([(0, 41), (3, 10)])),
            ]),
            "test",
        )
    }

    #[test]
    fn windows_are_deltas_and_classify_pairs() {
        let mut w = AccessWindows::default();
        let first = w.advance(Map::from([
            (key(7, Some(0), Some(3)), 900),
            (key(7, Some(0), Some(0)), 100),
        ]));
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].local, first[0].remote), (100, 900));
        assert_eq!(first[0].ratio(), Some(0.9));
        let second = w.advance(Map::from([
            (key(7, Some(0), Some(3)), 950),
            (key(7, Some(0), Some(0)), 100),
            (key(8, None, Some(0)), 5),
        ]));
        assert_eq!(
            second
                .iter()
                .map(|a| (a.tgid, a.remote, a.unknown))
                .collect::<Vec<_>>(),
            vec![(7, 50, 0), (8, 0, 5)]
        );
        assert_eq!(second[1].ratio(), None, "unknown pages are in neither side");
    }

    #[test]
    fn placement_decides_with_enough_pages_else_sampled_faults() {
        let t = topology();
        let th = AccessThreshold {
            max_cross_access: 0.15,
            min_pages: 256,
        };
        let w = |local, remote, pair| WorkloadAccess {
            tgid: 1,
            local,
            remote,
            unknown: 0,
            pairs: Map::from([(pair, remote), ((0, 0), local)]),
        };
        let placed_local = w(1000, 0, (0, 3));
        let sampled_remote = w(0, 40, (0, 3));
        assert!(
            window_verdict(Some(&placed_local), Some(&sampled_remote), th, 16, &t).is_none(),
            "placement has the evidence and is local: the samples do not override it"
        );
        let (e, source) =
            window_verdict(Some(&w(10, 20, (0, 3))), Some(&sampled_remote), th, 16, &t)
                .expect("too few pages: samples decide");
        assert_eq!(
            (source, e.target_node, e.ratio),
            (AccessSource::SampledFaults, 3, 1.0)
        );
        let (_, source) =
            window_verdict(Some(&w(0, 300, (0, 3))), None, th, 16, &t).expect("placement remote");
        assert_eq!(source, AccessSource::PageAlloc);
        assert!(
            window_verdict(None, Some(&w(0, 15, (0, 3))), th, 16, &t).is_none(),
            "15 samples < 16"
        );
        let fresh = from_deltas(&Map::from([
            (key(5, Some(0), Some(3)), 3),
            (key(5, Some(0), Some(0)), 1),
            (key(6, None, Some(0)), 2),
        ]));
        assert_eq!(
            fresh
                .iter()
                .map(|a| (a.tgid, a.local, a.remote, a.unknown))
                .collect::<Vec<_>>(),
            vec![(5, 1, 3, 0), (6, 0, 0, 2)]
        );
    }

    #[test]
    fn errors_need_evidence_and_use_the_row_of_the_cpu_node() {
        let t = topology();
        let th = AccessThreshold {
            max_cross_access: 0.15,
            min_pages: 256,
        };
        let remote = WorkloadAccess {
            tgid: 1,
            local: 10,
            remote: 990,
            unknown: 0,
            pairs: Map::from([((0, 3), 990), ((0, 0), 10)]),
        };
        let e = access_error(&remote, th, &t).expect("over threshold");
        assert_eq!(
            (e.source_node, e.target_node, e.distance),
            (0, 3, Some(31)),
            "row 0, not the transpose 41"
        );
        assert_eq!(
            e.to_string(),
            "NUMA node 0 cannot access memory on node 3 (distance 31)"
        );
        let few = WorkloadAccess {
            local: 0,
            remote: 100,
            ..remote.clone()
        };
        assert!(
            access_error(&few, th, &t).is_none(),
            "100 pages < min_pages"
        );
        let local = WorkloadAccess {
            local: 900,
            remote: 100,
            ..remote.clone()
        };
        assert!(access_error(&local, th, &t).is_none(), "ratio 0.1 <= 0.15");
        let edge = WorkloadAccess {
            local: 850,
            remote: 150,
            ..remote
        };
        assert!(
            access_error(&edge, th, &t).is_none(),
            "exactly at the threshold is allowed"
        );
    }
}
