//! `numa-agent check` against oracles it does not share code with: statfs(2) of the
//! cgroup mounts (coreutils `stat -f`), tracefs's own `kprobe_events` file, the agent
//! actually starting, and a run without privileges.
use std::{os::unix::process::CommandExt as _, path::Path, process::Command};

use numa_tests::{
    agent::{Agent, agent_bin},
    require_privileges,
};
use serde_json::Value;

fn check_json(args: &[&str]) -> (i32, Value) {
    let out = Command::new(agent_bin())
        .args(["check", "--json"])
        .args(args)
        .output()
        .expect("runs");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn fs_type(path: &str) -> String {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T", path])
        .output()
        .expect("stat");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn fact<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["facts"]
        .as_array()
        .expect("facts")
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no fact {name}: {report:#}"))
}

fn variant<'a>(report: &'a Value, probe: &str, variant: &str) -> &'a Value {
    report["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .find(|p| p["probe"] == probe)
        .and_then(|p| {
            p["variants"]
                .as_array()?
                .iter()
                .find(|v| v["variant"] == variant)
        })
        .unwrap_or_else(|| panic!("no {probe}/{variant}: {report:#}"))
}

#[test]
fn check_agrees_with_the_host() {
    require_privileges!();
    let (code, report) = check_json(&[]);

    // Exit code vs reality: `run` does start here.
    assert_eq!(code, 0, "check says run cannot work: {report:#}");
    assert_eq!(report["run_can_work"], true);
    let agent = Agent::start(&["run", "--metrics-addr", "127.0.0.1:0"]).expect("run works");
    let metrics = agent.http_get("/metrics").expect("metrics");
    agent.stop().expect("stops");

    // The variant check says the agent uses is the one the agent attached.
    for probe in ["mm_page_alloc", "page_fault_user"] {
        let uses = report["probes"]
            .as_array()
            .expect("probes")
            .iter()
            .find(|p| p["probe"] == probe)
            .unwrap_or_else(|| panic!("{probe} not in the report: {report:#}"))["uses"]
            .as_str()
            .unwrap_or_else(|| panic!("check says no {probe} variant works: {report:#}"))
            .to_owned();
        let attached = format!(r#"numa_probe_attached{{probe="{probe}",variant="{uses}"}}"#);
        assert_eq!(
            numa_tests::agent::sample(&metrics, &attached),
            Some(1.0),
            "check says {probe} uses {uses}; the agent reports:\n{metrics}"
        );
    }

    // cgroup mode vs statfs: hybrid = tmpfs at /sys/fs/cgroup with cgroup2 at unified/.
    let mode = fact(&report, "cgroup mode")["value"]
        .as_str()
        .expect("value")
        .to_owned();
    let (root, unified) = (fs_type("/sys/fs/cgroup"), fs_type("/sys/fs/cgroup/unified"));
    match (root.as_str(), unified.as_str()) {
        ("tmpfs", "cgroup2fs") => assert!(mode.starts_with("hybrid"), "{mode} ({root}/{unified})"),
        ("cgroup2fs", _) => assert!(mode.starts_with("unified"), "{mode} ({root})"),
        ("tmpfs", _) => assert!(mode.starts_with("legacy"), "{mode} ({root}/{unified})"),
        _ => eprintln!("cgroup layout {root}/{unified} not classified by this test"),
    }

    // Classic tracepoints: what the agent just attached, check calls attachable.
    for probe in ["sched_migrate_task", "task_newtask"] {
        assert_eq!(
            variant(&report, probe, "tracepoint")["attachable"],
            true,
            "{probe}"
        );
    }

    // kprobes vs tracefs's own interface file: no kprobe_events, no kprobes.
    let kprobe = variant(&report, "task_numa_fault", "kprobe");
    let has_kprobes = Path::new("/sys/kernel/tracing/kprobe_events").exists();
    assert_eq!(kprobe["attachable"], has_kprobes, "{kprobe}");
    if !has_kprobes {
        let why = kprobe["why_not"].as_str().expect("why");
        assert!(why.contains("no kprobe PMU"), "{why}");
        assert!(
            kprobe["advice"]
                .as_str()
                .expect("advice")
                .contains("CONFIG_KPROBES")
        );
    }

    // This workplace's host (ARCHITECTURE.md section 4): fentry loads fail with EPERM,
    // tracepoints of every kind attach, cgroups are hybrid.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if release.starts_with("6.18.") && release.contains("-fc-") {
        let fentry = variant(&report, "task_numa_fault", "fentry");
        assert_eq!(fentry["attachable"], false, "{fentry}");
        assert!(
            fentry["why_not"]
                .as_str()
                .expect("why")
                .contains("Operation not permitted"),
            "{fentry}"
        );
        assert!(fentry["advice"].is_string(), "{fentry}");
        for v in ["tp_btf", "raw_tracepoint", "tracepoint"] {
            assert_eq!(
                variant(&report, "sched_migrate_task", v)["attachable"],
                true,
                "{v}"
            );
        }
        assert!(mode.starts_with("hybrid"), "{mode}");
    } else {
        eprintln!(
            "not the documented 6.18 host ({}): host-specific asserts skipped",
            release.trim()
        );
    }

    // Every failure says what to do.
    for f in report["facts"].as_array().expect("facts") {
        if f["status"] != "ok" {
            assert!(f["advice"].is_string(), "no advice: {f}");
        }
    }
    for p in report["probes"].as_array().expect("probes") {
        for v in p["variants"].as_array().expect("variants") {
            if v["attachable"] == false {
                assert!(v["advice"].is_string() && v["why_not"].is_string(), "{v}");
            }
        }
    }
}

#[test]
fn check_text_and_exit_code_without_privileges() {
    require_privileges!();
    let mut cmd = Command::new(agent_bin());
    cmd.arg("check");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let caps = text
        .lines()
        .position(|l| l.starts_with("FAIL capabilities"))
        .unwrap_or_else(|| panic!("no FAIL capabilities line:\n{text}"));
    let advice = text.lines().nth(caps + 1).unwrap_or("");
    assert!(advice.contains("-> missing CAP_BPF"), "{text}");
    assert!(text.contains("run cannot work here"), "{text}");
    // Every FAIL line is followed by what to do.
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("FAIL") && !l.contains(" probe ") {
            assert!(
                lines.get(i + 1).is_some_and(|n| n.contains("->")),
                "{l}\n{text}"
            );
        }
    }
}
