//! Metrics for operating the sensor itself: what each eBPF program costs, from the
//! kernel's own per-program statistics, and the topology the agent works with.
//!
//! Prometheus conventions: base units (seconds), `_total` on counters, bounded labels
//! (program names from our object, node ids).
use std::{
    fs,
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

use prometheus::{
    CounterVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use crate::{bpf_sys, topology::Topology};

/// The sysctl an administrator sets to collect per-program run statistics
/// (Documentation/admin-guide/sysctl/kernel.rst, `bpf_stats_enabled`). It reads back
/// only what was written to it: a `BPF_ENABLE_STATS` fd turns the same static key on
/// (kernel/bpf/syscall.c bpf_enable_runtime_stats()) without changing it (seen on 6.18).
const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Keeps `BPF_ENABLE_STATS` (kernel 5.8+) in force for as long as it lives; the kernel
/// turns statistics back off when the last holder closes its fd, so an agent that
/// crashes leaves no global setting behind (unlike writing the sysctl).
pub struct BpfStatsGuard {
    _fd: OwnedFd,
}

/// Turn on the kernel's per-program run-time accounting for the life of the guard.
/// It costs two clock reads per program run on every program of the host, which is
/// why it is opt-in (`run --bpf-stats`).
pub fn enable_bpf_stats() -> Result<BpfStatsGuard, aya::sys::SyscallError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map(|fd| BpfStatsGuard { _fd: fd })
}

/// Whether the kernel is collecting run statistics now (`None`: unreadable).
pub fn bpf_stats_enabled() -> Option<bool> {
    let text = fs::read_to_string(Path::new(BPF_STATS_SYSCTL)).ok()?;
    Some(text.trim() != "0")
}

/// Reads `run_time_ns` and `run_cnt` of each of our programs at scrape time.
pub struct BpfProgramCollector {
    programs: Vec<(String, OwnedFd)>,
    /// The agent holds a [`BpfStatsGuard`].
    agent_enabled: bool,
    descs: Vec<Desc>,
}

fn run_seconds_vec() -> Result<CounterVec, prometheus::Error> {
    CounterVec::new(
        Opts::new(
            "numa_bpf_program_run_seconds_total",
            "Time the kernel spent running each eBPF program of the sensor, from bpf_prog_info.run_time_ns; \
             only advances while kernel.bpf_stats_enabled is 1 (run --bpf-stats)",
        ),
        &["program"],
    )
}

fn runs_vec() -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(
        Opts::new(
            "numa_bpf_program_runs_total",
            "Times each eBPF program of the sensor ran, from bpf_prog_info.run_cnt; only advances \
             while kernel.bpf_stats_enabled is 1",
        ),
        &["program"],
    )
}

fn recursion_vec() -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(
        Opts::new(
            "numa_bpf_program_recursion_misses_total",
            "Times the kernel skipped a program because it was already running on that CPU \
             (bpf_prog_info.recursion_misses): events the sensor did not see",
        ),
        &["program"],
    )
}

fn stats_enabled_gauge() -> Result<IntGauge, prometheus::Error> {
    IntGauge::new(
        "numa_bpf_stats_enabled",
        "1 while the kernel collects per-program run statistics: the agent holds a \
         BPF_ENABLE_STATS fd (run --bpf-stats) or kernel.bpf_stats_enabled is 1",
    )
}

impl BpfProgramCollector {
    /// `programs`: each program's name and a duplicate of its fd (the fd keeps the
    /// program object alive for reading only; detaching does not depend on it).
    pub fn new(
        programs: Vec<(String, OwnedFd)>,
        agent_enabled: bool,
    ) -> Result<Self, prometheus::Error> {
        let descs = [
            run_seconds_vec()?.desc(),
            runs_vec()?.desc(),
            recursion_vec()?.desc(),
            stats_enabled_gauge()?.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        Ok(Self {
            programs,
            agent_enabled,
            descs,
        })
    }

    fn gather(&self) -> Result<Vec<MetricFamily>, prometheus::Error> {
        let seconds = run_seconds_vec()?;
        let runs = runs_vec()?;
        let misses = recursion_vec()?;
        for (name, fd) in &self.programs {
            match bpf_sys::program_stats(fd.as_fd()) {
                Ok(s) => {
                    seconds
                        .with_label_values(&[name])
                        .inc_by(s.run_time_ns as f64 / 1e9);
                    runs.with_label_values(&[name]).inc_by(s.run_count);
                    misses.with_label_values(&[name]).inc_by(s.recursion_misses);
                }
                Err(e) => log::warn!("reading bpf_prog_info of {name} for /metrics failed: {e}"),
            }
        }
        let enabled = stats_enabled_gauge()?;
        enabled.set(i64::from(
            self.agent_enabled || bpf_stats_enabled().unwrap_or(false),
        ));
        Ok([
            seconds.collect(),
            runs.collect(),
            misses.collect(),
            enabled.collect(),
        ]
        .concat())
    }
}

collector_from_gather!(BpfProgramCollector, "eBPF program statistics");

/// Register the topology the agent uses: `numa_topology_nodes` and `numa_node_cpus{node}`
/// (constant for the agent's life: the agent reads sysfs once at start).
pub fn register_topology(
    registry: &Registry,
    topology: &Topology,
) -> Result<(), prometheus::Error> {
    let nodes = IntGauge::new(
        "numa_topology_nodes",
        "NUMA nodes in the topology the agent uses (sysfs devices/system/node, or the declared split)",
    )?;
    nodes.set(topology.nodes.len() as i64);
    registry.register(Box::new(nodes))?;
    let cpus = IntGaugeVec::new(
        Opts::new(
            "numa_node_cpus",
            "CPUs of each NUMA node in the topology the agent uses",
        ),
        &["node"],
    )?;
    for node in &topology.nodes {
        cpus.with_label_values(&[node.id.to_string()])
            .set(node.cpus.len() as i64);
    }
    registry.register(Box::new(cpus))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::topology::Node;

    #[test]
    fn topology_gauges() {
        let t = Topology::from_parts(
            vec![Node::new(0, vec![0, 1, 2]), Node::new(2, vec![])],
            BTreeMap::new(),
            "test",
        );
        let r = Registry::new();
        register_topology(&r, &t).expect("registers");
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut text)
            .expect("encodes");
        let text = String::from_utf8(text).expect("utf8");
        assert!(text.contains("numa_topology_nodes 2\n"), "{text}");
        assert!(text.contains("numa_node_cpus{node=\"0\"} 3\n"), "{text}");
        // A memory-only node is listed with zero CPUs, not dropped.
        assert!(text.contains("numa_node_cpus{node=\"2\"} 0\n"), "{text}");
    }
}
