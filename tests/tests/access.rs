//! Remote memory placement seen by the kmem:mm_page_alloc probe on the real kernel,
//! with a declared split: node0 = CPU 0 and all of this host's memory blocks,
//! node1 = CPU 1 and no memory. A workload on CPU 1 places everything remotely.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use numa_tests::{
    agent::{Agent, sample},
    require_privileges,
    scenarios::{self, AccessCase, TOUCH_MIB},
    split,
};

fn workload_bin() -> String {
    std::env::var("NUMA_WORKLOAD_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/numa-workload").to_owned()
    })
}

/// Both attach variants of the page-alloc probe: the raw tracepoint (pfn computed from
/// the page pointer with the calibrated layout) and the classic one (pfn from the
/// kernel's trace record) must each see the placement numa_maps shows.
#[test]
fn remote_placement_is_reported_and_local_is_not() {
    require_privileges!();
    let split = split::two_nodes_with_host_memory_on_node0().expect("declared split");
    let root = split.path().to_str().expect("utf-8 path");
    let workload = workload_bin();
    let case = |label: &str, cpu: &str, remote| AccessCase {
        label: label.to_owned(),
        command: vec![
            workload.clone(),
            "touch".into(),
            "--cpu".into(),
            cpu.into(),
            "--hold".into(),
            "1500ms".into(),
        ],
        remote,
    };
    for variant in ["raw_tracepoint", "tracepoint"] {
        let report = scenarios::access_placement(
            &["--sysfs-root", root, "--page-alloc-variant", variant],
            root,
            &[
                case("remote (CPU 1, memory on node 0)", "1", Some((1, 0))),
                case("local (CPU 0)", "0", None),
            ],
        )
        .unwrap_or_else(|e| panic!("{variant}: {e:#}"));
        eprintln!("{variant}: {report}");
        assert!(
            report.contains(&format!("attached mm_page_alloc as {variant}")),
            "{variant} was not the variant that counted: {report}"
        );
    }
}

/// Memory hot-added to node0 (its blocks appear under the node in sysfs) while the
/// agent runs: pages that were of unknown node are placed on node0 from the next
/// access window on, and back to unknown after a hot-remove; then the same memory
/// comes up on node 2, a node that was possible but not online at start (a CXL
/// expander's memory-only node), which the maps were sized for. The fixture tree
/// stands in for the kernel's memory-block sysfs; the pages and their pfns are real.
#[test]
fn memory_hotplug_moves_placement_with_the_next_window() {
    require_privileges!();
    let split = split::two_nodes().expect("declared split");
    split::declare_host_memory(split.path(), None).expect("no memory on any node");
    std::fs::write(split.path().join("devices/system/node/possible"), "0-2\n")
        .expect("node 2 possible");
    let root = split.path().to_str().expect("utf-8 path");
    let agent = Agent::start(&[
        "run",
        "--metrics-addr",
        "127.0.0.1:0",
        "--access-window",
        "300ms",
        "--sysfs-root",
        root,
    ])
    .expect("agent");
    let result = (|| -> Result<Vec<String>> {
        let pages = (TOUCH_MIB << 20) as f64 / 4096.0;
        let mut report = Vec::new();
        for (step, node) in [
            ("before", None),
            ("hot-added", Some(0)),
            ("hot-removed", None),
            ("hot-added on a new node", Some(2)),
        ] {
            split::declare_host_memory(split.path(), node)?;
            let label = node.map_or("unknown".to_owned(), |n| n.to_string());
            let series =
                format!("numa_memory_accesses_total{{cpu_node=\"1\",mem_node=\"{label}\"}}");
            // Two windows: the agent re-reads the ranges at each window start.
            std::thread::sleep(Duration::from_millis(700));
            let before = sample(&agent.http_get("/metrics")?, &series).unwrap_or(0.0);
            touch_on_cpu1()?;
            // A CPU's last run of pages is written after 256 pages or a key change.
            let deadline = Instant::now() + Duration::from_secs(5);
            let counted = loop {
                let now = sample(&agent.http_get("/metrics")?, &series).unwrap_or(0.0) - before;
                if now >= pages * 0.9 || Instant::now() > deadline {
                    break now;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            ensure!(
                counted >= pages * 0.9,
                "{step}: {series} grew by {counted}, want >= 90% of {pages} pages"
            );
            report.push(format!("{step}: {series} +{counted}"));
        }
        Ok(report)
    })();
    let stopped = agent.stop().expect("stop");
    let report = result.unwrap_or_else(|e| panic!("{e:#}\n{}", stopped.stderr.join("\n")));
    let changes = stopped
        .stderr
        .iter()
        .filter(|l| l.contains("node memory ranges changed"))
        .count();
    // At least one change per hotplug step. The fixture adds or removes blocks one
    // by one, as the kernel onlines them, so a window may start half-way and log a
    // partial set first (a real hotplug looks the same); the counts above prove the
    // set each step ends with.
    assert!(
        changes >= 3,
        "one change per hotplug step at least: {:?}",
        stopped.stderr
    );
    eprintln!("{}", report.join("; "));
}

fn touch_on_cpu1() -> Result<()> {
    let out = std::process::Command::new(workload_bin())
        .args(["touch", "--cpu", "1", "--hold", "0ms"])
        .output()
        .context("running numa-workload touch")?;
    ensure!(
        out.status.success(),
        "touch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// An allocation storm: a workload allocating pages without pause for ~7 s, far over
/// `--alloc-storm-rate` on its CPU, puts the page-alloc probe on the duty cycle
/// (`--fault-sample-duty 25`, 1 s windows) within a check, so the agent counts about
/// a quarter of the kernel's own count of its faults (getrusage minflt, one page
/// allocated each) after the first second, which is counted whole; the storm's
/// windows say so in `page_alloc_share`, still see the placement remote, and the probe
/// counts every page again once the workload stops. A probe that never detached
/// would count ~1 of the faults, one that never came back ~1/7.
#[test]
fn an_allocation_storm_counts_only_the_duty_share_and_ends_with_it() {
    require_privileges!();
    let split = split::two_nodes_with_host_memory_on_node0().expect("declared split");
    let root = split.path().to_str().expect("utf-8 path");
    let agent = Agent::start(&[
        "run",
        "--metrics-addr",
        "127.0.0.1:0",
        "--sysfs-root",
        root,
        "--access-window",
        "1s",
        "--fault-sample-rate",
        "0",
        "--fault-sample-duty",
        "25",
        "--alloc-storm-rate",
        "20000",
        "--events",
        "json",
    ])
    .expect("agent");
    let series = "numa_memory_accesses_total{cpu_node=\"1\",mem_node=\"0\"}";
    let duty = "numa_page_alloc_duty";
    let result = (|| -> Result<String> {
        let before = sample(&agent.http_get("/metrics")?, series).unwrap_or(0.0);
        let mut churn = std::process::Command::new(workload_bin())
            .args(["churn", "--mib", "8", "--duration", "7s", "--cpu", "1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("numa-workload churn")?;
        let mut duties = Vec::new();
        while churn.try_wait()?.is_none() {
            duties.extend(sample(&agent.http_get("/metrics")?, duty));
            std::thread::sleep(Duration::from_millis(250));
        }
        let out = churn.wait_with_output()?;
        ensure!(out.status.success(), "churn: {out:?}");
        let minflt = numa_tests::workload::churn_minflt(&out.stdout)
            .context("minflt from numa-workload churn")?;
        // The counters lag by at most one run of 256 pages per CPU: nothing here.
        let counted = sample(&agent.http_get("/metrics")?, series).unwrap_or(0.0) - before;
        let share = counted / minflt;
        ensure!(
            duties.contains(&0.25),
            "{duty} never showed the storm's 0.25 while the workload ran: {duties:?}"
        );
        ensure!(
            (0.2..0.6).contains(&share),
            "counted {counted} of {minflt} faulted pages ({share:.3}); a storm at duty 25% after \
             the first second wants 0.2..0.6"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while sample(&agent.http_get("/metrics")?, duty) != Some(1.0) {
            ensure!(
                Instant::now() < deadline,
                "{duty} stayed below 1 after the storm"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(format!(
            "counted {share:.3} of {minflt} faulted pages; {duty} seen {duties:?}"
        ))
    })();
    let stopped = agent.stop().expect("stop");
    let report = result.unwrap_or_else(|e| panic!("{e:#}\n{}", stopped.stderr.join("\n")));
    let log = stopped.stderr.join("\n");
    assert!(
        log.contains("allocation storm: CPU 1") && log.contains("allocation storm over"),
        "the storm's start (on CPU 1) and end are logged: {log}"
    );
    // Events of the storm's windows: remote, with the share the probe counted.
    let shares: Vec<(f64, f64)> = stopped
        .stdout
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "NUMAAccessError" && e["source_node"] == 1)
        .filter_map(|e| Some((e["page_alloc_share"].as_f64()?, e["ratio"].as_f64()?)))
        .collect();
    // Whole storm windows carry 0.25; the window the storm began in carries the part
    // before the check (any share), the one it ended in a quarter or more.
    let storm_windows = shares
        .iter()
        .filter(|(s, _)| (0.2..0.3).contains(s))
        .count();
    let odd = shares
        .iter()
        .filter(|(s, _)| !(0.2..0.3).contains(s) && *s < 0.999)
        .count();
    assert!(
        storm_windows >= 3 && odd <= 2 && shares.iter().all(|(_, r)| *r >= 0.9),
        "storm windows with page_alloc_share ~0.25 (at most the first and the last \
         otherwise), every one with a remote ratio: {shares:?}"
    );
    eprintln!("{report}");
}
