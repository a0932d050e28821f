//! `numa-agent attach` on real processes that migrate across the declared two-node
//! split: `--json` against the kernel's own ftrace record, `--comm`, and the live
//! view in a real terminal (tmux at 80x24: start, send keys, capture the pane).
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use numa_tests::{agent::agent_bin, ftrace, pin, require_privileges, split};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_numa-workload");

/// `numa-workload flip` waiting on stdin; returns the child and its flipping thread id.
fn workload(bin: &Path, flips: usize) -> (Child, u32) {
    let mut child = Command::new(bin)
        .args(["flip", "--flips", &flips.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("workload starts");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("tid line");
    let tid = line
        .strip_prefix("tid ")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("workload said {line:?}"));
    (child, tid)
}

struct Attach {
    child: Child,
    stderr: mpsc::Receiver<String>,
    /// Read while it runs: a full pipe would stall the agent.
    stdout: thread::JoinHandle<String>,
}

/// Start `numa-agent attach <args> --json`, wait until it has attached.
fn attach_json(args: &[&str]) -> Attach {
    let mut child = Command::new(agent_bin())
        .arg("attach")
        .args(args)
        .arg("--json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("attach starts");
    let mut out = child.stdout.take().expect("stdout");
    let stdout = thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut text);
        text
    });
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let status = child.wait();
            panic!("attach did not attach ({status:?}): {seen:?}");
        };
        let done = line.contains("attached to");
        seen.push(line);
        if done {
            return Attach {
                child,
                stderr: rx,
                stdout,
            };
        }
    }
}

/// Wait for `child` to exit by itself within `limit`; its stdout as JSON values.
fn finish(attach: Attach, limit: Duration) -> Vec<Value> {
    let Attach {
        mut child,
        stderr,
        stdout,
    } = attach;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            // The reader thread may still be forwarding the last lines: read until it
            // hits EOF (the channel closes), with a bound in case something holds the pipe.
            let mut err = Vec::new();
            let until = Instant::now() + Duration::from_secs(5);
            while let Ok(line) =
                stderr.recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                err.push(line);
            }
            assert!(status.success(), "attach failed ({status}): {err:?}");
            assert!(
                err.iter().any(|l| l.contains("the target exited")),
                "attach did not end because the target exited: {err:?}"
            );
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("attach still running {limit:?} after its target exited");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = stdout.join().expect("stdout reader");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn attach_pid_json_shows_every_migration_ftrace_saw() {
    require_privileges!();
    let split = split::two_nodes().expect("split");
    let (mut work, tid) = workload(Path::new(WORKLOAD), 200);
    let pid = work.id();
    let attach = attach_json(&[
        "--pid",
        &pid.to_string(),
        "--sysfs-root",
        split.path().to_str().expect("utf-8"),
    ]);
    // Both threads of the workload are blocked (stdin, join) until "go": blocked tasks
    // do not migrate, so the kernel's trace and attach cover the same moves from here.
    let trace = ftrace::Instance::migrations(&format!("numa-attach-{}", std::process::id()))
        .expect("ftrace");
    writeln!(work.stdin.take().expect("stdin")).expect("go");
    assert!(work.wait().expect("workload").success());
    let lines = finish(attach, Duration::from_secs(10));
    trace.stop().expect("stop ftrace");
    let kernel = trace.migrations_of(tid).expect("ftrace lines");
    assert_eq!(
        trace.overruns().expect("overruns"),
        0,
        "ftrace dropped lines"
    );
    assert!(
        kernel.len() >= 200,
        "ftrace saw only {} moves",
        kernel.len()
    );

    let steals: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "NUMAStealError")
        .collect();
    assert!(
        steals
            .iter()
            .all(|v| v["pid"].as_u64() == Some(u64::from(pid))),
        "attach reported another process"
    );
    let ours: Vec<&&Value> = steals
        .iter()
        .filter(|v| v["tid"].as_u64() == Some(u64::from(tid)))
        .collect();
    assert_eq!(
        ours.len(),
        kernel.len(),
        "attach vs ftrace for thread {tid}"
    );
    for (e, k) in ours.iter().zip(&kernel) {
        let cpus = (e["src_cpu"].as_u64(), e["dst_cpu"].as_u64());
        assert_eq!(
            cpus,
            (Some(u64::from(k.orig_cpu)), Some(u64::from(k.dest_cpu))),
            "{e}"
        );
        // node N holds CPU N in the declared split
        assert_eq!(
            (e["stolen_from_node"].as_u64(), e["current_node"].as_u64()),
            cpus,
            "{e}"
        );
    }

    // The per-second records add up to the same moves, from -> to.
    let intervals: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "AttachInterval")
        .collect();
    assert!(!intervals.is_empty());
    let mut sum = std::collections::BTreeMap::new();
    for i in &intervals {
        // The declared split lists no memory blocks, so every page is of unknown node:
        // counted as neither local nor remote, and no ratio rather than a made-up one.
        assert!(
            i["local_accesses"].is_u64() && i["remote_accesses"].is_u64(),
            "page placement read each interval: {i}"
        );
        assert_eq!(i["remote_accesses"].as_u64(), Some(0), "{i}");
        assert!(i["remote_access_ratio"].is_null(), "{i}");
        for m in i["migrations"].as_array().expect("migrations") {
            *sum.entry((m["from_node"].as_u64(), m["to_node"].as_u64()))
                .or_insert(0) += m["count"].as_u64().expect("count");
        }
    }
    // Oracle: ftrace's cross-node moves of both threads of the workload (its main
    // thread and the flipper).
    let mut whole = trace.migrations_of(pid).expect("ftrace main thread");
    whole.extend(kernel.iter().copied());
    let to_1 = whole
        .iter()
        .filter(|k| k.orig_cpu == 0 && k.dest_cpu == 1)
        .count() as u64;
    let to_0 = whole
        .iter()
        .filter(|k| k.orig_cpu == 1 && k.dest_cpu == 0)
        .count() as u64;
    assert_eq!(sum.get(&(Some(0), Some(1))).copied(), Some(to_1), "{sum:?}");
    assert_eq!(sum.get(&(Some(1), Some(0))).copied(), Some(to_0), "{sum:?}");
    assert_eq!(
        steals.len() as u64,
        to_1 + to_0,
        "events vs per-second sums"
    );
    assert_eq!(
        intervals[0]["pids"].as_array().expect("pids")[0].as_u64(),
        Some(u64::from(pid))
    );
}

#[test]
fn attach_comm_follows_the_named_process() {
    require_privileges!();
    let split = split::two_nodes().expect("split");
    // A command name no other test uses: a copy of the workload named after this test.
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("nwc{}", std::process::id() % 1_000_000);
    let bin = dir.path().join(&name);
    std::fs::copy(WORKLOAD, &bin).expect("copy workload");
    let (mut work, tid) = workload(&bin, 40);
    let attach = attach_json(&[
        "--comm",
        &name,
        "--sysfs-root",
        split.path().to_str().expect("utf-8"),
    ]);
    writeln!(work.stdin.take().expect("stdin")).expect("go");
    assert!(work.wait().expect("workload").success());
    let lines = finish(attach, Duration::from_secs(10));
    let ours = lines
        .iter()
        .filter(|v| v["type"] == "NUMAStealError" && v["tid"].as_u64() == Some(u64::from(tid)))
        .count();
    assert!(ours >= 40, "only {ours} of 40 moves of {name} reported");
    assert!(
        lines
            .iter()
            .filter(|v| v["type"] == "NUMAStealError")
            .all(|v| v["pid"].as_u64() == Some(u64::from(work.id()))),
        "another process reported"
    );
}

#[test]
fn attach_unknown_targets_are_refused_by_name() {
    require_privileges!();
    for (args, expect) in [
        (vec!["--pid", "4294967"], "process 4294967 does not exist"),
        (
            vec!["--comm", "no-such-comm-x"],
            "no running process is named",
        ),
        (
            vec!["--cgroup", "/no/such/cgroup"],
            "cgroup /no/such/cgroup not found",
        ),
        (vec!["--container", "abc"], "at least 12 hex digits"),
    ] {
        let out = Command::new(agent_bin())
            .arg("attach")
            .args(&args)
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn capture(&self) -> Vec<String> {
        self.run(&["capture-pane", "-p", "-t", "view"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Capture until `pred` holds (the view redraws every second).
    fn wait_for(&self, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.capture();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}; screen:\n{}",
                screen.join("\n")
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Our own tmux server only (its private socket), never anyone else's.
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
fn live_view_in_a_real_80x24_terminal() {
    require_privileges!();
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("SKIPPED: tmux not installed (Debian package `tmux`; `cargo xtask setup`)");
        return;
    }
    let split = split::two_nodes().expect("split");
    let tmux = Tmux {
        socket: format!("numa-attach-{}", std::process::id()),
    };
    // A thread of this test flips between CPU 0 and 1 every 20 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut cpu = 0;
            while !stop.load(Ordering::SeqCst) {
                pin::pin_self(cpu).expect("pin");
                cpu = 1 - cpu;
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let command = format!(
        "{} attach --pid {} --sysfs-root {}; echo ATTACH-EXIT=$?; sleep 60",
        agent_bin().display(),
        std::process::id(),
        split.path().display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "view",
        "-x",
        "80",
        "-y",
        "24",
        &command,
    ]);

    let screen = tmux.wait_for("no migrations shown", |s| {
        s.iter().any(|l| l.contains("0 -> 1")) && s.iter().any(|l| l.contains("NUMAStealError"))
    });
    let text = screen.join("\n");
    assert_eq!(screen.len(), 24, "pane is 24 rows:\n{text}");
    assert!(screen.iter().all(|l| l.chars().count() <= 80), "{text}");
    assert!(
        screen[0].contains(&format!("numa-agent attach: pid {}", std::process::id())),
        "title on the first row:\n{text}"
    );
    assert!(
        screen[23].contains("q quit | s sort (by node)"),
        "footer on the last row:\n{text}"
    );
    for want in [
        "node 0",
        "node 1",
        "CPU s/s",
        "from -> to",
        "1 -> 0",
        "remote ratio n/a",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }

    tmux.run(&["send-keys", "-t", "view", "s"]);
    tmux.wait_for("sort key ignored", |s| s[23].contains("sort (by CPU time)"));
    tmux.run(&["send-keys", "-t", "view", "q"]);
    let screen = tmux.wait_for("q did not quit", |s| {
        s.iter().any(|l| l.contains("ATTACH-EXIT="))
    });
    assert!(
        screen.iter().any(|l| l.contains("ATTACH-EXIT=0")),
        "attach did not exit cleanly:\n{}",
        screen.join("\n")
    );
    stop.store(true, Ordering::SeqCst);
    flipper.join().expect("flipper");
}

/// A cgroup2 directory of this test, removed (once empty) when dropped.
struct TestCgroup {
    dirs: Vec<PathBuf>,
}

impl TestCgroup {
    /// `<cgroup2 mount>/<rel>`, creating each level.
    fn create(rel: &str) -> Option<(Self, PathBuf)> {
        let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
        let root = mounts.lines().find_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(c[1]))
        })?;
        let mut dirs = Vec::new();
        let mut dir = root;
        for part in rel.split('/') {
            dir = dir.join(part);
            std::fs::create_dir(&dir).ok()?;
            dirs.push(dir.clone());
        }
        Some((Self { dirs }, dir))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Run the workload inside cgroup `dir`, attach with `args`, check the reported moves.
fn attach_in_cgroup(dir: &Path, rel: &str, args: &[&str]) {
    let split = split::two_nodes().expect("split");
    let (mut work, tid) = workload(Path::new(WORKLOAD), 40);
    std::fs::write(dir.join("cgroup.procs"), work.id().to_string()).expect("move into cgroup");
    // Oracle: the kernel's own view of the process's cgroup.
    let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", work.id())).expect("cgroup");
    assert!(
        cg.lines().any(|l| l.starts_with("0::") && l.ends_with(rel)),
        "workload not in {rel}: {cg}"
    );
    let mut all = args.to_vec();
    all.extend(["--sysfs-root", split.path().to_str().expect("utf-8")]);
    let attach = attach_json(&all);
    writeln!(work.stdin.take().expect("stdin")).expect("go");
    assert!(work.wait().expect("workload").success());
    // The cgroup empties when the workload exits: attach ends on its own.
    let lines = finish(attach, Duration::from_secs(10));
    let ours = lines
        .iter()
        .filter(|v| v["type"] == "NUMAStealError" && v["tid"].as_u64() == Some(u64::from(tid)))
        .count();
    assert!(ours >= 40, "only {ours} of 40 moves reported via {args:?}");
    assert!(
        lines
            .iter()
            .filter(|v| v["type"] == "NUMAStealError")
            .all(|v| v["pid"].as_u64() == Some(u64::from(work.id()))),
        "a process outside the cgroup was reported"
    );
}

#[test]
fn attach_cgroup_by_its_proc_path() {
    require_privileges!();
    let rel = format!("numa-attach-{}", std::process::id());
    let Some((_guard, dir)) = TestCgroup::create(&rel) else {
        eprintln!("SKIPPED: cannot create a cgroup2 directory here");
        return;
    };
    // The form /proc/PID/cgroup prints, resolved under the cgroup2 mount.
    attach_in_cgroup(&dir, &rel, &["--cgroup", &format!("/{rel}")]);
}

#[test]
fn attach_container_by_its_cgroup_name() {
    require_privileges!();
    // No container runtime runs here: a cgroup named the way docker's systemd driver
    // names a container's (docker-<64 hex>.scope) stands in for one.
    let id = format!(
        "{:016x}",
        0xc0de_0000_0000u64 + u64::from(std::process::id())
    )
    .repeat(4);
    let rel = format!("numa-attach-{}.slice/docker-{id}.scope", std::process::id());
    let Some((_guard, dir)) = TestCgroup::create(&rel) else {
        eprintln!("SKIPPED: cannot create a cgroup2 directory here");
        return;
    };
    attach_in_cgroup(&dir, &rel, &["--container", &id[..12]]);
}
