//! Sampled user page faults (the software page-fault counter, or
//! exceptions:page_fault_user on x86) on the real kernel, with
//! a declared split: node0 = CPU 0 and all of this host's memory, node1 = CPU 1 and no
//! memory. A workload pinned to CPU 1 takes every fault remotely; the agent's samples
//! for it, resolved by move_pages, must be remote 1->0 and number about its kernel-
//! counted faults / rate, with each of the four attach variants.
use numa_tests::{
    fault_scenarios::{FaultCase, sampled_faults_match},
    require_privileges, split,
};

#[test]
fn sampled_remote_faults_match_the_kernels_fault_count_for_every_variant() {
    require_privileges!();
    if !std::path::Path::new("/sys/kernel/tracing/events/exceptions/page_fault_user").exists()
        && !std::path::Path::new("/sys/kernel/debug/tracing/events/exceptions/page_fault_user")
            .exists()
    {
        eprintln!("SKIPPED: no exceptions:page_fault_user tracepoint here (x86 only)");
        return;
    }
    let split = split::two_nodes_with_host_memory_on_node0().expect("declared split");
    let root = split.path().to_str().expect("utf-8 path");
    let workload = numa_tests::workload::workload_bin()
        .to_str()
        .expect("utf-8 path")
        .to_owned();
    let case = FaultCase {
        label: "CPU 1, memory on node 0".into(),
        command: vec![
            workload,
            "touch".into(),
            "--cpu".into(),
            "1".into(),
            "--hold".into(),
            "1500ms".into(),
        ],
        cpu_node: 1,
        mem_node: 0,
    };
    for variant in ["perf_event", "tp_btf", "raw_tracepoint", "tracepoint"] {
        let outcome = sampled_faults_match(&["--sysfs-root", root], 16, Some(variant), &case)
            .unwrap_or_else(|e| panic!("{variant}: {e:#}"));
        eprintln!("{outcome}");
    }
}

/// A kernel without `exceptions:page_fault_user` (arm64), simulated with a tracefs
/// copy that lacks it: the perf-event variant, which needs no tracepoint, still
/// samples; restricted to the tracepoint variants, the agent still runs, says the
/// probe is unavailable, and exports no sampled-fault series (absent, not a measured
/// zero).
/// The duty cycle takes the sampler off the fault path for the rest of each window: a
/// workload that faults without pause for about 6 s (1 s windows) gets one sample per
/// 16 of its kernel-counted faults (getrusage) with the sampler held attached, and
/// about a quarter of that with `--fault-sample-duty 25`. A sampler that never
/// detached would give the first; one that never came back, under 0.05.
#[test]
fn the_duty_cycle_samples_only_the_share_of_each_window_it_is_attached() {
    require_privileges!();
    let split = split::two_nodes_with_host_memory_on_node0().expect("declared split");
    let root = split.path().to_str().expect("utf-8 path");
    // Every sample, resolved or not: the churn unmaps its pages soon after the fault.
    let samples = |metrics: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("numa_sampled_faults_total{")
                    || l.starts_with("numa_sampled_faults_unresolved_total{")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    for (duty, band) in [("100", 0.9..1.15), ("25", 0.15..0.35)] {
        let agent = numa_tests::agent::Agent::start(&[
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--sysfs-root",
            root,
            "--access-window",
            "1s",
            "--fault-sample-rate",
            "16",
            "--fault-sample-duty",
            duty,
        ])
        .expect("agent starts");
        let before = samples(&agent.http_get("/metrics").expect("metrics"));
        let out = std::process::Command::new(numa_tests::workload::workload_bin())
            .args(["churn", "--mib", "8", "--duration", "6s", "--cpu", "1"])
            .output()
            .expect("numa-workload churn");
        assert!(out.status.success(), "{out:?}");
        let minflt = numa_tests::workload::churn_minflt(&out.stdout)
            .expect("minflt from numa-workload churn");
        // Two drain ticks: every sample taken is in the ring buffer's reader by then.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let metrics = agent.http_get("/metrics").expect("metrics");
        let stopped = agent.stop().expect("agent stops");
        assert!(stopped.status.success(), "{}", stopped.stderr.join("\n"));
        let share = (samples(&metrics) - before) / (minflt / 16.0);
        eprintln!("duty {duty}%: {minflt} faults, sampled share {share:.3} of 1/16");
        assert!(
            band.contains(&share),
            "--fault-sample-duty {duty}: {share:.3} of the faults/16 were sampled, expected {band:?}"
        );
    }
}

#[test]
fn without_the_tracepoint_the_probe_is_unavailable_not_zero() {
    require_privileges!();
    let real = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.join("events/sched").exists())
        .expect("tracefs mounted");
    let fake = tempfile::tempdir().expect("tempdir");
    for event in [
        "sched/sched_migrate_task",
        "task/task_newtask",
        "kmem/mm_page_alloc",
        "cgroup/cgroup_attach_task",
    ] {
        let dir = fake.path().join("events").join(event);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::copy(
            real.join("events").join(event).join("format"),
            dir.join("format"),
        )
        .expect("copy format");
    }
    let tracefs = fake.path().to_str().expect("utf-8");
    // One scrape of an agent run on the fake tracefs, and its log.
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--metrics-addr", "127.0.0.1:0", "--tracefs", tracefs];
        args.extend_from_slice(extra);
        let agent = numa_tests::agent::Agent::start(&args)
            .expect("agent starts without the page-fault tracepoint");
        let metrics = agent.http_get("/metrics").expect("metrics");
        let stopped = agent.stop().expect("stops");
        assert!(stopped.status.success(), "{}", stopped.stderr.join("\n"));
        (metrics, stopped)
    };
    let (metrics, _) = run(&[]);
    assert_eq!(
        numa_tests::agent::sample(
            &metrics,
            r#"numa_probe_attached{probe="page_fault_user",variant="perf_event"}"#
        ),
        Some(1.0),
        "the perf-event variant needs no tracepoint:\n{metrics}"
    );

    let (metrics, stopped) = run(&[
        "--fault-variant",
        "tp_btf",
        "--fault-variant",
        "raw_tracepoint",
        "--fault-variant",
        "tracepoint",
    ]);
    assert_eq!(
        numa_tests::agent::sample(
            &metrics,
            r#"numa_probe_unavailable{probe="page_fault_user",reason="no_event"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"numa_probe_attached{probe="page_fault_user""#),
        "an unavailable probe is not listed as attached:
{metrics}"
    );
    assert!(
        !metrics.contains("numa_sampled_faults_total"),
        "sampled-fault series exported without the probe:\n{metrics}"
    );
    assert!(
        stopped
            .stderr
            .iter()
            .any(|l| l.contains("page_fault_user unavailable")),
        "no warning in the log:\n{}",
        stopped.stderr.join("\n")
    );
}
