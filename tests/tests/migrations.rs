//! Cross-node task migrations seen by the agent on the real kernel, checked against
//! the kernel's own ftrace text output for the same thread over the same interval.
use std::{thread, time::Duration};

use numa_tests::{agent::Agent, require_privileges, scenarios, split};

const FLIPS: usize = 400;

#[test]
fn every_cross_node_migration_of_a_thread_matches_ftrace() {
    require_privileges!();
    let split = split::two_nodes().expect("declared split");
    let root = split.path().to_str().expect("utf-8 path");
    let outcome = scenarios::steal_matches_ftrace(
        &["--sysfs-root", root],
        root,
        &[(0, 0), (1, 1)],
        [0, 1],
        FLIPS,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{outcome:?}");
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
