//! Scenario runner inside the QEMU guests (`cargo xtask vm`): runs as a child of the
//! guest's init, on a kernel with real NUMA nodes, and prints one
//! `NUMA-SCENARIO <name> PASS|FAIL <detail>` line per scenario for the host to read.
use std::{fs, panic};

use anyhow::{Context as _, Result};
use numa_tests::{fault_scenarios, scenarios};

const SCENARIOS: &[&str] = &["steal", "access", "faults", "balancing"];

fn main() {
    let requested: Vec<String> = std::env::args()
        .skip(1)
        .flat_map(|a| a.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter(|a| !a.is_empty())
        .collect();
    let names: Vec<String> = if requested.is_empty() {
        SCENARIOS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        requested
    };
    for name in names {
        let outcome = panic::catch_unwind(|| run(&name)).unwrap_or_else(|p| {
            Err(anyhow::anyhow!(
                "panicked: {}",
                p.downcast_ref::<String>().cloned().unwrap_or_default()
            ))
        });
        match outcome {
            Ok(detail) => println!("NUMA-SCENARIO {name} PASS {detail}"),
            Err(e) => println!(
                "NUMA-SCENARIO {name} FAIL {}",
                format!("{e:#}").replace('\n', " | ")
            ),
        }
    }
}

fn run(name: &str) -> Result<String> {
    match name {
        "steal" => steal(),
        "access" => access(),
        "faults" => faults(),
        "balancing" => balancing(),
        other => anyhow::bail!(
            "unknown scenario `{other}` (known: {})",
            SCENARIOS.join(", ")
        ),
    }
}

/// CPUs with their node, from this kernel's sysfs.
fn cpus_with_nodes() -> Result<Vec<(usize, u32)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/sys/devices/system/node")? {
        let entry = entry?;
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("node")?.parse::<u32>().ok())
        else {
            continue;
        };
        let list = fs::read_to_string(entry.path().join("cpulist"))?;
        for part in list.trim().split(',').filter(|p| !p.is_empty()) {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            for cpu in lo.parse::<usize>()?..=hi.parse::<usize>()? {
                out.push((cpu, id));
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Cross-node migrations between the first and the last CPU, which sit on different
/// nodes in every guest shape, against the kernel's own ftrace.
fn steal() -> Result<String> {
    let cpus = cpus_with_nodes()?;
    let (first, last) = (
        cpus.first().context("no CPUs")?,
        cpus.last().context("no CPUs")?,
    );
    anyhow::ensure!(
        first.1 != last.1,
        "first and last CPU share node {}",
        first.1
    );
    let outcome = scenarios::steal_matches_ftrace(&[], "/sys", &cpus, [first.0, last.0], 200)?;
    Ok(format!(
        "{} cross-node migrations between CPU {} (node {}) and CPU {} (node {}) match ftrace; {} forced",
        outcome.migrations, first.0, first.1, last.0, last.1, outcome.forced
    ))
}

/// Memory bound with numactl: remote from node 0's CPUs to node 1, local on node 0,
/// and (4-node guest) to the memory-only node, whose distance row differs from its
/// column.
fn access() -> Result<String> {
    let memory_only = memory_only_nodes()?;
    let case = |label: &str, mem: u32, remote: Option<(u32, u32)>| scenarios::AccessCase {
        label: label.to_owned(),
        command: touch_on_node0_cpus(mem),
        remote,
    };
    let mut cases = vec![
        case("remote 0->1", 1, Some((0, 1))),
        case("local 0->0", 0, None),
    ];
    if let Some(&m) = memory_only.first() {
        cases.push(case(&format!("memory-only 0->{m}"), m, Some((0, m))));
    }
    let report = scenarios::access_placement(&[], "/sys", &cases)?;
    // Debian's x86_64 kernels have a virtual memory map: the raw variant, with its
    // page layout calibrated against pagemap, must be the one that counted.
    anyhow::ensure!(
        report.contains("attached mm_page_alloc as raw_tracepoint"),
        "the raw page-alloc variant did not win: {report}"
    );
    Ok(report)
}

/// Sampled page faults: CPUs of node 0, memory bound to node 1 (and, on the 4-node
/// guest, to the memory-only node) with numactl; the agent's samples for the
/// workload, resolved with move_pages, are 0 -> that node and about its
/// kernel-counted faults / 16. The attach variant is left to the agent's preference
/// (the perf-event counter must win), and for node 1 also forced to `tp_btf`, the
/// tracepoint variant that carries the error code.
fn faults() -> Result<String> {
    if !std::path::Path::new("/sys/kernel/tracing/events/exceptions/page_fault_user").exists() {
        anyhow::bail!("no exceptions:page_fault_user in this x86 guest's tracefs");
    }
    let mut targets = vec![1];
    targets.extend(memory_only_nodes()?.first());
    let mut report = Vec::new();
    for mem in targets {
        let case = fault_scenarios::FaultCase {
            label: format!("numactl --cpunodebind=0 --membind={mem}"),
            command: touch_on_node0_cpus(mem),
            cpu_node: 0,
            mem_node: mem,
        };
        let outcome = fault_scenarios::sampled_faults_match(&[], 16, None, &case)?;
        anyhow::ensure!(
            outcome.variant == "perf_event",
            "the perf-event sampler did not win: {outcome}"
        );
        report.push(format!("0->{mem} {outcome}"));
        if mem == 1 {
            let outcome = fault_scenarios::sampled_faults_match(&[], 16, Some("tp_btf"), &case)?;
            report.push(format!("0->{mem} {outcome}"));
        }
    }
    Ok(report.join("; "))
}

/// `numa-workload touch` under numactl: node 0's CPUs, memory bound to node `mem`.
fn touch_on_node0_cpus(mem: u32) -> Vec<String> {
    vec![
        "numactl".into(),
        "--cpunodebind=0".into(),
        format!("--membind={mem}"),
        guest_workload(),
        "touch".into(),
        "--hold".into(),
        "1500ms".into(),
    ]
}

/// Online nodes without CPUs, ascending.
fn memory_only_nodes() -> Result<Vec<u32>> {
    let cpu_nodes: std::collections::BTreeSet<u32> =
        cpus_with_nodes()?.into_iter().map(|(_, n)| n).collect();
    Ok(online_nodes()?
        .into_iter()
        .filter(|n| !cpu_nodes.contains(n))
        .collect())
}

fn online_nodes() -> Result<Vec<u32>> {
    let text = fs::read_to_string("/sys/devices/system/node/online")?;
    let mut out = Vec::new();
    for part in text.trim().split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        out.extend(lo.parse::<u32>()?..=hi.parse::<u32>()?);
    }
    Ok(out)
}

/// NUMA balancing turned on in the guest, with misplaced workloads; every counter
/// against /proc/vmstat and ftrace (numa_tests::balancing::vm_scenario).
fn balancing() -> Result<String> {
    numa_tests::balancing::vm_scenario(&guest_workload(), std::time::Duration::from_secs(10))
}

/// The workload binary in the guest's initramfs (`NUMA_WORKLOAD_BIN` overrides).
fn guest_workload() -> String {
    std::env::var("NUMA_WORKLOAD_BIN").unwrap_or_else(|_| "/usr/bin/numa-workload".into())
}
