//! Workload attribution on the real kernel: real cgroups in the shapes kubelet and the
//! runtimes create, a process moved into them that migrates across the declared node
//! split, and the agent's events and metrics checked against the kernel's ftrace
//! record of the same threads.
use std::{
    collections::HashSet,
    thread,
    time::{Duration, Instant},
};

use numa_tests::{
    agent::{Agent, sample},
    cgroups::{TestCgroup, mount_of, random_container_id, random_uuid},
    ftrace, require_privileges, split,
    workload::Flipper,
};
use serde_json::Value;

fn start_agent(split: &tempfile::TempDir, extra: &[&str]) -> Agent {
    let mut args = vec![
        "run",
        "--events",
        "json",
        "--sysfs-root",
        split.path().to_str().expect("utf-8 path"),
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Agent::start(&args).expect("agent starts")
}

fn events(stdout: &[String]) -> Vec<Value> {
    stdout
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `numa_workload_steal_errors_total` of one workload, labels as the agent sorts them.
fn workload_series(uid: &str, id: &str, qos: &str) -> String {
    format!(
        r#"numa_workload_steal_errors_total{{container_id="{id}",kind="pod_container",pod_uid="{uid}",qos="{qos}",workload="{uid}/{}"}}"#,
        &id[..12]
    )
}

/// Cross-node migrations ftrace saw of these threads (CPU n is node n in the split).
fn kernel_count(trace: &ftrace::Instance, tids: &[u32]) -> usize {
    tids.iter()
        .map(|&t| {
            trace
                .migrations_of(t)
                .expect("read ftrace")
                .iter()
                .filter(|l| l.orig_cpu != l.dest_cpu && l.orig_cpu < 2 && l.dest_cpu < 2)
                .count()
        })
        .sum()
}

/// Prometheus's own linter on the exposition text, labels included.
fn promtool_check(metrics: &str) {
    use std::{io::Write as _, process::Stdio};
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("promtool not installed: exposition format not checked");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What every event of the workload's thread must say.
struct Expected<'a> {
    uid: &'a str,
    id: &'a str,
    qos: &'a str,
    runtime: Value,
    hierarchy: &'a str,
    path: &'a str,
}

/// Check every event of `tid` names the pod, container and QoS, from the kernel's record.
fn assert_attributed(all: &[Value], (pid, tid): (u32, u32), x: &Expected<'_>) -> usize {
    let mine: Vec<&Value> = all
        .iter()
        .filter(|v| v["tid"].as_u64() == Some(u64::from(tid)))
        .collect();
    assert!(!mine.is_empty(), "no event of thread {tid}");
    for e in &mine {
        let w = &e["workload"];
        assert_eq!(w["pid"].as_u64(), Some(u64::from(pid)), "{e}");
        assert_eq!(w["kind"], "pod_container", "{e}");
        assert_eq!(w["pod_uid"], x.uid, "{e}");
        assert_eq!(w["container_id"], x.id, "{e}");
        assert_eq!(w["qos"], x.qos, "{e}");
        assert_eq!(w["runtime"], x.runtime, "{e}");
        assert_eq!(w["cgroup_source"], "kernel", "{e}");
        let cg = w["cgroups"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["hierarchy"] == x.hierarchy))
            .unwrap_or_else(|| panic!("no {} cgroup in {e}", x.hierarchy));
        assert_eq!(cg["path"], x.path, "{e}");
    }
    mine.len()
}

#[test]
fn kubelet_cgroupfs_shape_on_v1_hierarchies() {
    require_privileges!();
    let (Some(memory), Some(cpu)) = (mount_of(Some("memory")), mount_of(Some("cpu"))) else {
        eprintln!("SKIPPED: no v1 memory and cpu hierarchies mounted (pure v2 host)");
        return;
    };
    let (uid, id) = (
        random_uuid().expect("uuid"),
        random_container_id().expect("id"),
    );
    // A unique --cgroup-root-style prefix keeps concurrent test runs apart.
    let rel = format!(
        "numa-test-{}-v1/kubepods/burstable/pod{uid}/{id}",
        std::process::id()
    );
    // kubelet's cgroupfs driver creates the tree in every controller; attribution reads memory.
    let mem_cg = TestCgroup::create(&memory, &rel).expect("memory cgroup");
    let cpu_cg = TestCgroup::create(&cpu, &rel).expect("cpu cgroup");
    let split = split::two_nodes().expect("split");
    let agent = start_agent(&split, &[]);

    let flipper = Flipper::spawn(100, None).expect("workload");
    let (pid, tid) = (flipper.pid, flipper.tid);
    mem_cg.add_process(pid).expect("move to memory cgroup");
    cpu_cg.add_process(pid).expect("move to cpu cgroup");
    let trace = ftrace::Instance::migrations(&format!("numa-attr-v1-{}", std::process::id()))
        .expect("ftrace");
    flipper.run_to_exit().expect("workload runs");
    trace.stop().expect("stop ftrace");
    thread::sleep(Duration::from_millis(300));
    let metrics = agent.http_get("/metrics").expect("scrape");
    let stopped = agent.stop().expect("agent stops");
    assert!(stopped.status.success(), "{}", stopped.stderr.join("\n"));

    assert!(
        metrics.contains(r#"numa_cgroup_mode{mode="hybrid"} 1"#)
            || metrics.contains(r#"numa_cgroup_mode{mode="v1"} 1"#),
        "{metrics}"
    );
    promtool_check(&metrics);
    let all = events(&stopped.stdout);
    let n = assert_attributed(
        &all,
        (pid, tid),
        &Expected {
            uid: &uid,
            id: &id,
            qos: "Burstable",
            // The cgroupfs driver's bare id does not name the runtime.
            runtime: Value::Null,
            hierarchy: "memory",
            path: &mem_cg.path,
        },
    );
    let kernel_tid = kernel_count(&trace, &[tid]);
    assert_eq!(n, kernel_tid, "events of {tid} vs ftrace");
    let charged = sample(&metrics, &workload_series(&uid, &id, "Burstable"))
        .unwrap_or_else(|| panic!("no series for the container in:\n{metrics}"));
    assert_eq!(
        charged as usize,
        kernel_count(&trace, &[pid, tid]),
        "the container is charged every cross-node migration of its process"
    );
}

#[test]
fn kubelet_systemd_shape_on_the_unified_hierarchy() {
    require_privileges!();
    let Some(unified) = mount_of(None) else {
        eprintln!("SKIPPED: no cgroup2 mounted");
        return;
    };
    if mount_of(Some("memory")).is_none() {
        eprintln!("SKIPPED: pure v2 host: controllers make the unified tree not writable here");
        return;
    }
    let (uid, id) = (
        random_uuid().expect("uuid"),
        random_container_id().expect("id"),
    );
    let uid_ = uid.replace('-', "_");
    let rel = format!(
        "numa-test-{}.slice/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{id}.scope",
        std::process::id()
    );
    let cg = TestCgroup::create(&unified, &rel).expect("unified cgroup");
    let split = split::two_nodes().expect("split");
    let agent = start_agent(&split, &[]);
    let flipper = Flipper::spawn(60, None).expect("workload");
    let (pid, tid) = (flipper.pid, flipper.tid);
    cg.add_process(pid).expect("move");
    let trace = ftrace::Instance::migrations(&format!("numa-attr-v2-{}", std::process::id()))
        .expect("ftrace");
    flipper.run_to_exit().expect("workload runs");
    trace.stop().expect("stop ftrace");
    thread::sleep(Duration::from_millis(300));
    let metrics = agent.http_get("/metrics").expect("scrape");
    let stopped = agent.stop().expect("agent stops");
    assert!(stopped.status.success(), "{}", stopped.stderr.join("\n"));
    let all = events(&stopped.stdout);
    // The memory line names no pod here, so the unified line decides.
    let n = assert_attributed(
        &all,
        (pid, tid),
        &Expected {
            uid: &uid,
            id: &id,
            qos: "BestEffort",
            runtime: Value::from("containerd"),
            hierarchy: "unified",
            path: &cg.path,
        },
    );
    assert_eq!(n, kernel_count(&trace, &[tid]), "events of {tid} vs ftrace");
    let charged = sample(&metrics, &workload_series(&uid, &id, "BestEffort"))
        .unwrap_or_else(|| panic!("no series for the container in:\n{metrics}"));
    assert_eq!(charged as usize, kernel_count(&trace, &[pid, tid]));
}

/// The agent is stopped (SIGSTOP) while the process migrates 50 times and exits, so
/// every record is read after the process is gone: nothing can come from /proc.
#[test]
fn a_process_that_exits_at_once_is_charged_every_migration() {
    require_privileges!();
    let Some(memory) = mount_of(Some("memory")) else {
        eprintln!("SKIPPED: no v1 memory hierarchy (pure v2 host)");
        return;
    };
    let (uid, id) = (
        random_uuid().expect("uuid"),
        random_container_id().expect("id"),
    );
    let rel = format!(
        "numa-test-{}-exit/kubepods/pod{uid}/{id}",
        std::process::id()
    );
    let cg = TestCgroup::create(&memory, &rel).expect("cgroup");
    let split = split::two_nodes().expect("split");
    let agent = start_agent(&split, &[]);
    let series = workload_series(&uid, &id, "Guaranteed");

    let mut charged_so_far = 0.0;
    let mut expected = 0;
    let mut tids = Vec::new();
    for (round, flips) in [(1, 50), (2, 30)] {
        let flipper = Flipper::spawn(flips, None).expect("workload");
        let (pid, tid) = (flipper.pid, flipper.tid);
        tids.extend([pid, tid]);
        cg.add_process(pid).expect("move");
        // From the move on (the process sleeps on stdin until `go`): moves before it
        // belong to the cgroup it was spawned in, and are charged there.
        let trace =
            ftrace::Instance::migrations(&format!("numa-attr-exit-{}-{round}", std::process::id()))
                .expect("ftrace");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(agent.pid() as i32, libc::SIGSTOP) };
        let ran = flipper.run_to_exit();
        let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists();
        // SAFETY: as above.
        unsafe { libc::kill(agent.pid() as i32, libc::SIGCONT) };
        ran.expect("workload runs");
        assert!(gone, "process {pid} still in /proc after it was reaped");
        trace.stop().expect("stop ftrace");
        assert!(
            kernel_count(&trace, &[tid]) >= flips,
            "ftrace saw fewer than {flips} moves of {tid}"
        );
        expected += kernel_count(&trace, &[pid, tid]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let charged = loop {
            let m = agent.http_get("/metrics").expect("scrape");
            let v = sample(&m, &series).unwrap_or(0.0);
            if v as usize >= expected || Instant::now() > deadline {
                break v;
            }
            thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(
            charged as usize, expected,
            "round {round}: container charged {charged}, ftrace saw {expected} cross-node moves of its processes"
        );
        assert!(charged >= charged_so_far, "the counter went down");
        charged_so_far = charged;
        eprintln!(
            "round {round}: process {pid} exited, container charged {charged} (ftrace {expected})"
        );
    }
    let stopped = agent.stop().expect("stops");
    let all = events(&stopped.stdout);
    let charged: Vec<&Value> = all
        .iter()
        .filter(|v| v["workload"]["container_id"] == id.as_str())
        .collect();
    assert_eq!(charged.len(), expected, "events charged to the container");
    for e in charged {
        assert!(
            tids.contains(&(e["tid"].as_u64().unwrap_or(0) as u32)),
            "another thread charged to the container: {e}"
        );
        // Read after the process was reaped: only the kernel's record can say this.
        assert_eq!(e["workload"]["cgroup_source"], "kernel", "{e}");
    }
}

/// Thousands of short-lived processes with random names, in three containers of one
/// pod: the exported series stay bounded by the workloads, the agent's memory flat,
/// and once the cgroups are gone their series are removed after the grace period.
#[test]
fn churn_keeps_series_bounded_and_memory_flat() {
    require_privileges!();
    let Some(memory) = mount_of(Some("memory")) else {
        eprintln!("SKIPPED: no v1 memory hierarchy (pure v2 host)");
        return;
    };
    let processes: usize = std::env::var("NUMA_CHURN_PROCESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let uid = random_uuid().expect("uuid");
    let ids: Vec<String> = (0..3).map(|_| random_container_id().expect("id")).collect();
    let mut cgs: Vec<TestCgroup> = ids
        .iter()
        .map(|id| {
            TestCgroup::create(
                &memory,
                &format!(
                    "numa-test-{}-churn/kubepods/besteffort/pod{uid}/{id}",
                    std::process::id()
                ),
            )
            .expect("cgroup")
        })
        .collect();
    // A Vec drops front to back: the one that created the shared pod level goes last.
    cgs.reverse();
    let split = split::two_nodes().expect("split");
    let agent = start_agent(&split, &["--workload-grace", "2s"]);
    let rss = |agent: &Agent| -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    };
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let mut names = HashSet::new();
    for i in 0..processes {
        // xorshift: random 15-byte command names, never repeated on purpose.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let name = format!("c{seed:014x}");
        names.insert(name.clone());
        let f = Flipper::spawn(2, Some(&name)).expect("workload");
        cgs[i % 3].add_process(f.pid).expect("move");
        f.run_to_exit().expect("runs");
        if i == 300 || (i > 0 && i % 500 == 0) || i + 1 == processes {
            let m = agent.http_get("/metrics").expect("scrape");
            let ours = m
                .lines()
                .filter(|l| l.starts_with("numa_workload_steal_errors_total{") && l.contains(&uid))
                .count();
            let all = m
                .lines()
                .filter(|l| l.starts_with("numa_workload_steal_errors_total{"))
                .count();
            let kb = rss(&agent);
            eprintln!(
                "churn: {} processes after {:.1?}: agent VmRSS {kb} kB, series of our pod {ours}, all workload series {all}",
                i + 1,
                start.elapsed()
            );
            assert!(ours <= 3, "{ours} series for 3 containers:\n{m}");
            assert!(!m.contains("comm="), "comm in labels");
            samples.push((i + 1, kb, all));
        }
    }
    let m = agent.http_get("/metrics").expect("scrape");
    let total: f64 = ids
        .iter()
        .map(|id| sample(&m, &workload_series_q(&uid, id)).unwrap_or(0.0))
        .sum();
    assert!(
        total >= processes as f64,
        "{processes} processes that each moved at least once across nodes, charged {total}"
    );
    for name in names.iter().take(50) {
        assert!(
            !m.contains(name.as_str()),
            "command name {name} in /metrics"
        );
    }
    // Memory flat: from the first sample (warm) to the last, growth within 2 MiB.
    let (_, warm, _) = samples[0];
    let (_, last, _) = *samples.last().expect("samples");
    assert!(
        last <= warm + 2048,
        "agent VmRSS grew from {warm} kB to {last} kB over {processes} processes: {samples:?}"
    );
    // All series bounded: other developers' workloads may add some, ours add 3.
    let (_, _, first_all) = samples[0];
    let (_, _, last_all) = *samples.last().expect("samples");
    assert!(
        last_all <= first_all + 10,
        "series grew {first_all} -> {last_all}"
    );

    // The cgroups go; after the grace period their series are removed.
    drop(cgs);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let m = agent.http_get("/metrics").expect("scrape");
        if !m.contains(&uid) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "series of removed cgroups still exported:\n{m}"
        );
        thread::sleep(Duration::from_millis(500));
    }
    let stopped = agent.stop().expect("stops");
    assert!(stopped.status.success(), "{}", stopped.stderr.join("\n"));
}

fn workload_series_q(uid: &str, id: &str) -> String {
    workload_series(uid, id, "BestEffort")
}

/// In its own pid namespace with its own /proc, the agent refuses to start; given the
/// host's /proc (bind-mounted before the new one is mounted) it runs and never reports
/// itself.
#[test]
fn proc_root_of_another_pid_namespace_is_refused() {
    require_privileges!();
    if std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: unshare (util-linux) not installed");
        return;
    }
    let agent = numa_tests::agent::agent_bin();
    let split = split::two_nodes().expect("split");
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(&agent)
        .args(["run", "--metrics-addr", "127.0.0.1:0", "--sysfs-root"])
        .arg(split.path())
        .output()
        .expect("unshare runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started in a foreign pid namespace:\n{stderr}"
    );
    assert!(
        stderr.contains("other than the host's") && stderr.contains("--proc-root /host/proc"),
        "unclear refusal:\n{stderr}"
    );

    // The same namespace with the host's /proc at a second mount point: accepted.
    let host_proc = tempfile::tempdir().expect("tempdir");
    let script = format!(
        "mount --bind /proc {hp} && mount -t proc proc /proc && exec timeout -s INT 3 {agent} run --metrics-addr 127.0.0.1:0 --sysfs-root {sys} --proc-root {hp}",
        hp = host_proc.path().display(),
        agent = agent.display(),
        sys = split.path().display()
    );
    let out = std::process::Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .expect("unshare runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ready:") && stderr.contains("every program detached"),
        "with --proc-root at the host's /proc it should run:\n{stderr}"
    );
}

/// A test that fails with a process still inside its cgroups leaves nothing behind.
#[test]
fn cgroups_are_removed_when_a_test_panics() {
    require_privileges!();
    let Some(memory) = mount_of(Some("memory")).or_else(|| mount_of(None)) else {
        eprintln!("SKIPPED: no cgroup filesystem mounted");
        return;
    };
    let top = memory.join(format!("numa-test-{}-panic", std::process::id()));
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    let pid = child.id();
    let result = std::panic::catch_unwind(|| {
        let cg = TestCgroup::create(
            &memory,
            &format!(
                "numa-test-{}-panic/kubepods/pod{}/{}",
                std::process::id(),
                random_uuid().expect("uuid"),
                random_container_id().expect("id")
            ),
        )
        .expect("cgroup");
        cg.add_process(pid).expect("move");
        assert!(top.exists());
        panic!("a failing test");
    });
    assert!(result.is_err());
    assert!(!top.exists(), "{} left behind", top.display());
    // The cleanup killed what was inside.
    let status = child.wait().expect("reap");
    assert!(!status.success(), "sleep was not killed: {status}");
}
