//! Cross-node task migrations seen by the agent on the real kernel, checked against
//! the kernel's own ftrace text output for the same thread over the same interval.
use std::{sync::mpsc, thread, time::Duration};

use numa_tests::{
    agent::{Agent, sample},
    ftrace, pin, require_privileges, split,
};
use serde_json::Value;

const FLIPS: usize = 400;

#[test]
fn every_cross_node_migration_of_a_thread_matches_ftrace() {
    require_privileges!();
    let split = split::two_nodes().expect("declared split");
    let sysfs_root = split.path().to_str().expect("utf-8 path");
    let agent = Agent::start(&[
        "run",
        "--events",
        "json",
        "--sysfs-root",
        sysfs_root,
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .expect("agent starts");

    // The kernel's trace runs from before the thread exists until after it exits, so
    // both sides see its whole life.
    let trace = ftrace::Instance::migrations(&format!("numa-test-{}", std::process::id()))
        .expect("ftrace instance");
    // A thread of this test process flips between CPU 0 (node 0) and CPU 1 (node 1).
    let (tid_tx, tid_rx) = mpsc::channel();
    let flipper = thread::spawn(move || {
        tid_tx.send(pin::gettid()).expect("send tid");
        pin::flip_between([0, 1], FLIPS)
    });
    let tid = tid_rx.recv().expect("tid");
    flipper
        .join()
        .expect("flipper thread")
        .expect("flipping between CPU 0 and 1");
    trace.stop().expect("stop ftrace");

    let metrics = agent.http_get("/metrics").expect("scrape");
    let agent_pid = agent.pid();
    let stopped = agent.stop().expect("agent stops");
    assert!(
        stopped.status.success(),
        "agent exit {}: {}",
        stopped.status,
        stopped.stderr.join("\n")
    );
    assert!(
        stopped
            .stderr
            .iter()
            .any(|l| l.contains("every program detached")),
        "no clean detach in stderr:\n{}",
        stopped.stderr.join("\n")
    );

    let kernel = trace.migrations_of(tid).expect("read ftrace");
    assert_eq!(
        trace.overruns().expect("overruns"),
        0,
        "ftrace dropped lines: the oracle is incomplete"
    );
    assert!(
        kernel.len() >= FLIPS,
        "ftrace saw {} migrations of {tid}, expected >= {FLIPS}",
        kernel.len()
    );

    let all: Vec<Value> = stopped
        .stdout
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        all.iter()
            .all(|v| v["pid"].as_u64() != Some(u64::from(agent_pid))),
        "the agent reported its own threads"
    );
    let events: Vec<&Value> = all
        .iter()
        .filter(|v| v["tid"].as_u64() == Some(u64::from(tid)))
        .collect();
    assert_eq!(
        events.len(),
        kernel.len(),
        "agent reported {} cross-node migrations of thread {tid}, the kernel's ftrace {}",
        events.len(),
        kernel.len()
    );
    for (i, (event, line)) in events.iter().zip(&kernel).enumerate() {
        assert_eq!(event["type"], "NUMAStealError", "event {i}: {event}");
        let cpus = (event["src_cpu"].as_u64(), event["dst_cpu"].as_u64());
        assert_eq!(
            cpus,
            (
                Some(u64::from(line.orig_cpu)),
                Some(u64::from(line.dest_cpu))
            ),
            "event {i}: {event}"
        );
        // The declared split: node N holds CPU N.
        let nodes = (
            event["stolen_from_node"].as_u64(),
            event["current_node"].as_u64(),
        );
        assert_eq!(nodes, cpus, "event {i} names the wrong nodes: {event}");
        assert_eq!(event["distance"].as_u64(), Some(21), "event {i}: {event}");
        assert_eq!(
            event["pid"].as_u64(),
            Some(u64::from(std::process::id())),
            "event {i}: {event}"
        );
        assert_eq!(
            event["resource_id"],
            format!("task:{tid}"),
            "event {i}: {event}"
        );
        assert!(
            event["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "event {i}: {event}"
        );
        assert!(event["steal_type"].is_string(), "event {i}: {event}");
    }
    // sched_setaffinity on a running thread moves it through the CPU stopper.
    let forced = events
        .iter()
        .filter(|e| e["steal_type"] == "forced")
        .count();
    assert!(
        forced >= FLIPS / 2,
        "only {forced} of {} moves classified as forced",
        events.len()
    );

    // The kernel-side matrix counts every migration, ours included.
    let to_1 = kernel
        .iter()
        .filter(|l| l.orig_cpu == 0 && l.dest_cpu == 1)
        .count() as f64;
    let counted = sample(
        &metrics,
        r#"numa_task_migrations_total{dst_node="1",src_node="0"}"#,
    )
    .unwrap_or_else(|| panic!("no 0->1 migration counter in:\n{metrics}"));
    assert!(
        counted >= to_1,
        "numa_task_migrations_total 0->1 = {counted} < {to_1} seen by ftrace"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"numa_events_lost_total{probe="sched_migrate_task"}"#
        ),
        Some(0.0)
    );
}

#[test]
fn sigint_stops_cleanly_too() {
    require_privileges!();
    let split = split::two_nodes().expect("declared split");
    let agent = Agent::start(&[
        "run",
        "--sysfs-root",
        split.path().to_str().expect("utf-8"),
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .expect("agent starts");
    assert_eq!(agent.http_get("/healthz").expect("healthz"), "ok\n");
    thread::sleep(Duration::from_millis(100));
    let stopped = agent.interrupt().expect("stops");
    assert!(
        stopped.status.success(),
        "exit {}: {}",
        stopped.status,
        stopped.stderr.join("\n")
    );
    assert!(
        stopped.stderr.iter().any(|l| l.contains("SIGINT")),
        "{}",
        stopped.stderr.join("\n")
    );
}
