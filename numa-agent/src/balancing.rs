//! NUMA balancing, as exported: the kernel's decisions, page migrations and hinting
//! faults as Prometheus counters read from the BPF maps at scrape time, the state of
//! `kernel.numa_balancing`, and per-process hinting-fault records for the event stream.
//!
//! Series of a probe that is not attached are left out (its `numa_probe_attached`
//! says why it is `none`), never exported as zeros that would look measured.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use numa_common::{HintFaultCounts, balancing_kind};
use prometheus::{
    IntCounterVec, IntGauge, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use serde::Serialize;

use crate::{
    errors::node_label,
    sensors::balancing::{BalancingCounters, kind_label, numa_balancing_mode},
    topology::NodeId,
};

fn decisions_vec() -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(
        Opts::new(
            "numa_balancing_decisions_total",
            "NUMA-balancing task placement decisions (sched:sched_move_numa = move attempted, \
             sched_swap_numa = two tasks swapped, sched_stick_numa = task stays; dst_node \"none\" \
             when the kernel found no destination, dst_nid -1). Only while kernel.numa_balancing is on",
        ),
        &["kind", "src_node", "dst_node"],
    )
}

fn migrations_vec() -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(
        Opts::new(
            "numa_page_migrations_total",
            "Pages migrate_pages() moved (result=succeeded) or failed to move, by the kernel's \
             migrate reason (migrate:mm_migrate_pages; names from its format). Sum over reasons = \
             /proc/vmstat pgmigrate_success / pgmigrate_fail; reason numa_misplaced = numa_pages_migrated",
        ),
        &["reason", "result"],
    )
}

fn hint_faults_vec(pages: bool) -> Result<IntCounterVec, prometheus::Error> {
    let (name, help) = if pages {
        (
            "numa_hint_fault_pages_total",
            "Pages of NUMA hinting faults (fentry task_numa_fault; a huge page counts its size)",
        )
    } else {
        (
            "numa_hint_faults_total",
            "NUMA hinting faults (fentry task_numa_fault) by the faulting CPU's node, the page's \
             node after the fault, and the kernel's own TNF_FAULT_LOCAL verdict. Sum = /proc/vmstat \
             numa_hint_faults; locality=local = numa_hint_faults_local. Only while kernel.numa_balancing is on",
        )
    };
    IntCounterVec::new(Opts::new(name, help), &["cpu_node", "mem_node", "locality"])
}

fn mode_gauge() -> Result<IntGauge, prometheus::Error> {
    IntGauge::new(
        "numa_balancing_mode",
        "kernel.numa_balancing as read at scrape time: 0 off (no balancing signal fires), 1 normal, \
         2 memory tiering, 3 both; absent without CONFIG_NUMA_BALANCING",
    )
}

/// Reads the balancing maps and the sysctl when scraped.
pub struct BalancingCollector {
    counters: Arc<BalancingCounters>,
    nodes: Vec<NodeId>,
    proc_root: PathBuf,
    descs: Vec<Desc>,
}

impl BalancingCollector {
    pub fn new(
        counters: Arc<BalancingCounters>,
        nodes: Vec<NodeId>,
        proc_root: &Path,
    ) -> Result<Self, prometheus::Error> {
        let descs = [
            decisions_vec()?.desc(),
            migrations_vec()?.desc(),
            hint_faults_vec(false)?.desc(),
            hint_faults_vec(true)?.desc(),
            mode_gauge()?.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        Ok(Self {
            counters,
            nodes,
            proc_root: proc_root.to_path_buf(),
            descs,
        })
    }

    fn gather(&self) -> Result<Vec<MetricFamily>, Box<dyn std::error::Error>> {
        let mut out = Vec::new();
        if let Some(cells) = self.counters.decisions()? {
            let v = decisions_vec()?;
            // Known pairs exist from the start so rate() sees zeros.
            for kind in 0..balancing_kind::COUNT {
                for src in &self.nodes {
                    for dst in &self.nodes {
                        v.with_label_values(&[
                            kind_label(kind),
                            &src.to_string(),
                            &dst.to_string(),
                        ]);
                    }
                }
            }
            for c in cells {
                let dst = c
                    .dst_node
                    .map_or_else(|| "none".to_owned(), |n| n.to_string());
                v.with_label_values(&[kind_label(c.kind), &node_label(c.src_node), &dst])
                    .inc_by(c.count);
            }
            out.extend(v.collect());
        }
        if let Some(rows) = self.counters.migrated_pages()? {
            let v = migrations_vec()?;
            for row in rows {
                v.with_label_values(&[row.reason.as_str(), "succeeded"])
                    .inc_by(row.succeeded);
                v.with_label_values(&[row.reason.as_str(), "failed"])
                    .inc_by(row.failed);
            }
            // numa_misplaced is what balancing moves; keep it present for rate().
            v.with_label_values(&["numa_misplaced", "succeeded"]);
            out.extend(v.collect());
        }
        if let Some(cells) = self.counters.hint_faults()? {
            let (faults, pages) = (hint_faults_vec(false)?, hint_faults_vec(true)?);
            for cpu in &self.nodes {
                for mem in &self.nodes {
                    for locality in ["local", "remote"] {
                        let labels = [cpu.to_string(), mem.to_string(), locality.to_owned()];
                        faults.with_label_values(&labels);
                        pages.with_label_values(&labels);
                    }
                }
            }
            for c in cells {
                let labels = [
                    node_label(c.cpu_node),
                    node_label(c.mem_node),
                    (if c.local { "local" } else { "remote" }).to_owned(),
                ];
                faults.with_label_values(&labels).inc_by(c.faults);
                pages.with_label_values(&labels).inc_by(c.pages);
            }
            out.extend(faults.collect());
            out.extend(pages.collect());
        }
        if let Some(mode) = numa_balancing_mode(&self.proc_root) {
            let g = mode_gauge()?;
            g.set(i64::from(mode));
            out.extend(g.collect());
        }
        Ok(out)
    }
}

collector_from_gather!(BalancingCollector, "NUMA-balancing counters");

/// The operator-facing line about `kernel.numa_balancing` at start.
pub fn mode_message(mode: Option<u32>) -> (log::Level, String) {
    match mode {
        None => (
            log::Level::Warn,
            "kernel.numa_balancing is absent (kernel without CONFIG_NUMA_BALANCING): no \
             NUMA-balancing decisions, misplaced-page migrations or hinting faults exist here"
                .to_owned(),
        ),
        Some(0) => (
            log::Level::Warn,
            "kernel.numa_balancing is 0: sched_*_numa decisions, numa_misplaced page migrations \
             and hinting faults only fire when it is enabled (sysctl kernel.numa_balancing=1); \
             their counters stay flat until then"
                .to_owned(),
        ),
        Some(m) => (log::Level::Info, format!("kernel.numa_balancing is {m}")),
    }
}

/// One process's NUMA hinting faults since the agent attached, as the kernel flagged
/// them (`TNF_FAULT_LOCAL`): an NDJSON measurement record, not a NUMA error.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HintFaultRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: String,
    pub pid: u32,
    /// `null` if the process has exited.
    pub comm: Option<String>,
    pub local_faults: u64,
    pub remote_faults: u64,
    pub local_pages: u64,
    pub remote_pages: u64,
    pub migrated_pages: u64,
    pub migrate_failed_pages: u64,
    /// remote / (local + remote) faults; what `numa_hint_faults_local / numa_hint_faults`
    /// is for the whole machine, here for this process.
    pub remote_ratio: f64,
}

impl HintFaultRecord {
    pub const TYPE: &'static str = "NUMAHintFaults";
}

/// Remembers what was last reported per process so only changes are written.
#[derive(Default)]
pub struct HintFaultReporter {
    last: BTreeMap<u32, HintFaultCounts>,
}

impl HintFaultReporter {
    /// Records for every process whose counts changed since the last call (cumulative
    /// values). Processes no longer in `now` (evicted from the LRU map) are forgotten.
    pub fn changed(
        &mut self,
        now: BTreeMap<u32, HintFaultCounts>,
        timestamp: &str,
        proc_root: &Path,
    ) -> Vec<HintFaultRecord> {
        let mut out = Vec::new();
        for (&pid, c) in &now {
            if self.last.get(&pid) == Some(c) {
                continue;
            }
            let total = c.local_faults + c.remote_faults;
            let comm = std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
                .ok()
                .map(|s| s.trim_end().to_owned());
            out.push(HintFaultRecord {
                kind: HintFaultRecord::TYPE,
                timestamp: timestamp.to_owned(),
                pid,
                comm,
                local_faults: c.local_faults,
                remote_faults: c.remote_faults,
                local_pages: c.local_pages,
                remote_pages: c.remote_pages,
                migrated_pages: c.migrated_pages,
                migrate_failed_pages: c.migrate_failed_pages,
                remote_ratio: if total == 0 {
                    0.0
                } else {
                    c.remote_faults as f64 / total as f64
                },
            });
        }
        self.last = now;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_processes_are_reported() {
        let mut r = HintFaultReporter::default();
        let counts = |local, remote| HintFaultCounts {
            local_faults: local,
            remote_faults: remote,
            local_pages: local,
            remote_pages: remote,
            ..HintFaultCounts::default()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let first = r.changed(
            BTreeMap::from([(7, counts(1, 3)), (8, counts(2, 0))]),
            "t0",
            dir.path(),
        );
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].remote_ratio, 0.75);
        assert_eq!(first[0].comm, None);
        let second = r.changed(
            BTreeMap::from([(7, counts(1, 3)), (8, counts(2, 5))]),
            "t1",
            dir.path(),
        );
        assert_eq!(second.len(), 1);
        assert_eq!((second[0].pid, second[0].remote_faults), (8, 5));
        let json = serde_json::to_string(&second[0]).expect("json");
        assert!(json.starts_with(r#"{"type":"NUMAHintFaults","#), "{json}");
    }

    #[test]
    fn the_off_state_is_explained() {
        let (level, text) = mode_message(Some(0));
        assert_eq!(level, log::Level::Warn);
        assert!(text.contains("only fire when it is enabled"), "{text}");
        assert_eq!(mode_message(Some(1)).0, log::Level::Info);
        assert!(mode_message(None).1.contains("CONFIG_NUMA_BALANCING"));
    }
}
