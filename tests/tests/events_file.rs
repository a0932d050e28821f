//! `run --events-file`: the same NDJSON stream as stdout, in size-rotated files.
use std::{sync::mpsc, thread};

use numa_tests::{agent::Agent, pin, prom::KillOnPanic, require_privileges, split};

#[test]
fn events_file_rotates_and_holds_the_stdout_stream() {
    require_privileges!();
    let split = split::two_nodes().expect("split");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events.ndjson");
    let agent = Agent::start(&[
        "run",
        "--events",
        "json",
        "--events-file",
        file.to_str().expect("utf-8"),
        "--events-file-max-bytes",
        "8192",
        "--events-file-keep",
        "2",
        "--sysfs-root",
        split.path().to_str().expect("utf-8"),
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .expect("agent starts");
    let mut guard = KillOnPanic::new(agent.pid());
    let (tx, rx) = mpsc::channel();
    let flipper = thread::spawn(move || {
        tx.send(pin::gettid()).expect("tid");
        pin::flip_between([0, 1], 150)
    });
    let _ = rx.recv();
    flipper.join().expect("flipper").expect("flips");
    guard.disarm();
    let stopped = agent.stop().expect("stops");
    assert!(stopped.status.success(), "{}", stopped.stderr.join("\n"));

    let read = |suffix: &str| {
        let path = format!("{}{suffix}", file.display());
        std::fs::read_to_string(&path).unwrap_or_default()
    };
    let (two, one, live) = (read(".2"), read(".1"), read(""));
    assert!(
        !one.is_empty() && !two.is_empty(),
        "150 events of ~350 bytes did not rotate twice"
    );
    assert!(
        !std::path::Path::new(&format!("{}.3", file.display())).exists(),
        "keep=2"
    );
    for text in [&two, &one, &live] {
        assert!(
            text.len() <= 8192,
            "a file exceeds the limit: {}",
            text.len()
        );
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "a file ends mid-line"
        );
    }
    // Oracle: the stdout stream. The files hold exactly its newest lines, in order.
    let kept: Vec<&str> = [two.as_str(), one.as_str(), live.as_str()]
        .iter()
        .flat_map(|t| t.lines())
        .collect();
    assert!(
        kept.len() < stopped.stdout.len(),
        "the oldest lines should have been dropped"
    );
    let tail = &stopped.stdout[stopped.stdout.len() - kept.len()..];
    assert_eq!(kept, tail.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn help_explains_the_operator_flags() {
    use std::process::Command;
    for (sub, flags) in [
        (
            "run",
            &[
                "--events-file",
                "--events-file-max-bytes",
                "--events-file-keep",
                "--bpf-stats",
            ][..],
        ),
        (
            "attach",
            &[
                "--pid",
                "--comm",
                "--cgroup",
                "--container",
                "--json",
                "--duration",
            ][..],
        ),
        ("check", &["--json", "--sysfs-root", "--tracefs"][..]),
    ] {
        let out = Command::new(numa_tests::agent::agent_bin())
            .args([sub, "--help"])
            .output()
            .expect("runs");
        assert!(out.status.success(), "{sub} --help");
        let help = String::from_utf8(out.stdout).expect("utf-8");
        let lines: Vec<&str> = help.lines().collect();
        for flag in flags {
            let i = lines
                .iter()
                .position(|l| l.trim_start().starts_with(flag))
                .unwrap_or_else(|| panic!("{sub}: {flag} not in help:\n{help}"));
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            assert!(
                !next.is_empty() && !next.starts_with('-'),
                "{sub}: {flag} has no explanation:\n{help}"
            );
        }
    }
}
