//! The agent's metrics as a real Prometheus sees them: Debian's `prometheus` scrapes
//! the agent over loopback, loads the shipped alert rules, and is queried back through
//! its HTTP API; `promtool check metrics` lints the scraped text.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use numa_tests::{
    agent::Agent,
    pin,
    prom::{KillOnPanic, PROMETHEUS, Prometheus, value},
    require_privileges, split,
};

const FLIPS: usize = 200;

fn one(samples: &[serde_json::Value], what: &str) -> f64 {
    assert_eq!(samples.len(), 1, "{what}: {samples:?}");
    value(&samples[0])
}

#[test]
fn prometheus_scrapes_the_agent_and_promtool_finds_nothing_to_fix() {
    require_privileges!();
    if !Path::new(PROMETHEUS).exists() {
        eprintln!(
            "SKIPPED: {PROMETHEUS} missing (Debian package `prometheus`; `cargo xtask setup`)"
        );
        return;
    }
    let split = split::two_nodes().expect("declared split");
    let agent = Agent::start(&[
        "run",
        "--sysfs-root",
        split.path().to_str().expect("utf-8"),
        "--metrics-addr",
        "127.0.0.1:0",
        "--bpf-stats",
    ])
    .expect("agent starts");
    let mut guard = KillOnPanic::new(agent.pid());
    assert_eq!(agent.http_get("/readyz").expect("readyz"), "ready\n");

    // One thread of this test moves between CPU 0 (node 0) and CPU 1 (node 1).
    let (tid_tx, tid_rx) = mpsc::channel();
    let flipper = thread::spawn(move || {
        tid_tx.send(pin::gettid()).expect("tid");
        pin::flip_between([0, 1], FLIPS)
    });
    let _tid = tid_rx.recv().expect("tid");
    flipper.join().expect("flipper").expect("flipping");

    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - numa-alerts.rules.yml\n\
         scrape_configs:\n  - job_name: numa-agent\n    static_configs:\n      - targets: ['{}']\n",
        agent.metrics_addr
    );
    let prom = Prometheus::start(&config, Some(&rules)).expect("prometheus starts");
    let wait = Duration::from_secs(30);

    let up = prom
        .wait_for(r#"up{job="numa-agent"}"#, wait)
        .expect("scraped");
    assert_eq!(one(&up, "up"), 1.0, "agent not up: {up:?}\n{}", prom.log());

    let attached = prom
        .wait_for(r#"numa_probe_attached{probe="sched_migrate_task"}"#, wait)
        .expect("probes");
    assert_eq!(one(&attached, "attached"), 1.0);
    assert_eq!(attached[0]["metric"]["variant"], "tracepoint");
    let page_alloc = prom
        .wait_for(r#"numa_probe_attached{probe="mm_page_alloc"}"#, wait)
        .expect("probes");
    assert_eq!(one(&page_alloc, "page-alloc attached"), 1.0);

    let nodes = prom.wait_for("numa_topology_nodes", wait).expect("nodes");
    assert_eq!(
        one(&nodes, "nodes"),
        2.0,
        "the declared split has two nodes"
    );
    for node in ["0", "1"] {
        let cpus = prom
            .wait_for(&format!(r#"numa_node_cpus{{node="{node}"}}"#), wait)
            .expect("cpus");
        assert_eq!(one(&cpus, "cpus"), 1.0, "node {node} holds one CPU");
    }

    // Every second flip moves the thread 0 -> 1; the in-kernel matrix counts each.
    let to_1 = prom
        .wait_for(
            r#"numa_task_migrations_total{src_node="0",dst_node="1"}"#,
            wait,
        )
        .expect("migrations");
    let to_1 = one(&to_1, "0->1");
    assert!(
        to_1 >= (FLIPS / 2) as f64,
        "0->1 migrations {to_1} < {}",
        FLIPS / 2
    );

    // --bpf-stats: the kernel's own accounting of our programs advances.
    let enabled = prom
        .wait_for("numa_bpf_stats_enabled", wait)
        .expect("stats");
    assert_eq!(one(&enabled, "stats enabled"), 1.0);
    let runs = prom
        .wait_for(
            r#"numa_bpf_program_runs_total{program="sched_migrate_task"}"#,
            wait,
        )
        .expect("runs");
    let runs = one(&runs, "runs");
    assert!(
        runs >= FLIPS as f64,
        "program ran {runs} times for {FLIPS} flips"
    );
    let secs = prom
        .wait_for(
            r#"numa_bpf_program_run_seconds_total{program="sched_migrate_task"}"#,
            wait,
        )
        .expect("seconds");
    let secs = one(&secs, "seconds");
    assert!(
        secs > 0.0 && secs < 1.0,
        "run time {secs}s for {runs} runs is implausible"
    );

    // The shipped rules load and evaluate cleanly against real data; nothing fires
    // for a healthy agent. (An evaluation before the first scrape legitimately sees
    // no `up` and puts NumaAgentDown in `pending`; it must clear once scraped.)
    let shipped = numa_tests::prom::shipped_alerts().len();
    let deadline = std::time::Instant::now() + wait;
    loop {
        let groups = prom.api("rules").expect("rules");
        let rules: Vec<serde_json::Value> = groups["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules").clone())
            .collect();
        assert_eq!(rules.len(), shipped, "every shipped rule loaded: {groups}");
        for r in &rules {
            assert_eq!(r["health"], "ok", "rule unhealthy: {r}");
            assert_ne!(
                r["state"], "firing",
                "alert firing for a healthy agent: {r}"
            );
        }
        if rules.iter().all(|r| r["state"] == "inactive") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alerts still pending for a healthy agent: {rules:?}"
        );
        thread::sleep(Duration::from_millis(500));
    }

    // promtool's linter (naming, units, _total, help) on exactly what was scraped.
    let text = agent.http_get("/metrics").expect("scrape");
    let mut lint = Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    lint.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = lint.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics: {report}\n--- scraped:\n{text}"
    );
    drop(prom);
    guard.disarm();
    let stopped = agent.stop().expect("stops");
    assert!(stopped.status.success(), "{}", stopped.stderr.join("\n"));
}
