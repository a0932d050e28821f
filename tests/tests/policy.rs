//! NUMAPolicy enforcement on the real kernel with real processes, on the declared
//! two-node split (node N = CPU N). Oracles are the kernel's own files: the cgroup's
//! `cpu.cfs_quota_us` (or `cpu.max`) and `/proc/<pid>/status` `Cpus_allowed_list`.
//! Each test owns its cgroups (`numa-test-<pid>-<name>`) and removes them.
use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use numa_tests::{
    agent::{Agent, Stopped, sample},
    require_privileges, split,
};
use serde_json::Value;

/// A cgroup with the cpu controller, created for one test and removed on drop (its
/// processes are moved back to the root first).
struct TestCgroup {
    dir: PathBuf,
    root: PathBuf,
    v2: bool,
    /// As `/proc/<pid>/cgroup` shows it.
    path: String,
}

impl TestCgroup {
    fn create(name: &str) -> Result<Self, String> {
        let path = format!("/numa-test-{}-{name}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        let (root, v2) = if v1.join("cpu.cfs_period_us").exists() {
            (v1.to_path_buf(), false)
        } else if fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control")
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu"))
        {
            (PathBuf::from("/sys/fs/cgroup"), true)
        } else {
            return Err("no cgroup v1 cpu hierarchy at /sys/fs/cgroup/cpu and no cpu controller in a cgroup2 root".into());
        };
        let dir = root.join(path.trim_start_matches('/'));
        let _ = fs::remove_dir(&dir);
        fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        Ok(Self {
            dir,
            root,
            v2,
            path,
        })
    }

    fn add(&self, pid: u32) {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .expect("move into the test cgroup");
    }

    /// `None` = unlimited, else the quota in microseconds, read from the kernel's file.
    fn quota(&self) -> Option<u64> {
        if self.v2 {
            let text = fs::read_to_string(self.dir.join("cpu.max")).expect("cpu.max");
            text.split_whitespace().next().and_then(|q| q.parse().ok())
        } else {
            let text =
                fs::read_to_string(self.dir.join("cpu.cfs_quota_us")).expect("cpu.cfs_quota_us");
            text.trim()
                .parse::<i64>()
                .ok()
                .and_then(|q| u64::try_from(q).ok())
        }
    }

    fn period(&self) -> u64 {
        if self.v2 {
            let text = fs::read_to_string(self.dir.join("cpu.max")).expect("cpu.max");
            text.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("period")
        } else {
            fs::read_to_string(self.dir.join("cpu.cfs_period_us"))
                .expect("period")
                .trim()
                .parse()
                .expect("period")
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(procs) = fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// A `numa-workload flip` child that waits for a line on stdin before flipping between
/// CPU 0 and CPU 1 every `pause_ms`.
struct Flipper {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Flipper {
    fn spawn(pause_ms: u64) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_numa-workload"))
            .args([
                "flip",
                "--flips",
                "100000",
                "--pause-ms",
                &pause_ms.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("numa-workload");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("tid line");
        assert!(line.starts_with("tid "), "{line}");
        let stdin = child.stdin.take();
        Self { child, stdin }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn go(&mut self) -> Instant {
        let mut stdin = self.stdin.take().expect("not started yet");
        writeln!(stdin).expect("start line");
        Instant::now()
    }
}

impl Drop for Flipper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sleep 60` pinned to `cpu` from before exec.
struct Sleeper(Child);

impl Sleeper {
    fn pinned(cpu: usize) -> Self {
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Self(cmd.spawn().expect("sleep"))
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cpus_allowed(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| {
            l.strip_prefix("Cpus_allowed_list:")
                .map(|v| v.trim().to_owned())
        })
        .expect("Cpus_allowed_list")
}

fn audit(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line not JSON ({e}): {l}"))
        })
        .collect()
}

fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<(T, Instant)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(v) = f() {
            return Some((v, Instant::now()));
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

fn parse_time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().expect("timestamp string")).expect("rfc3339")
}

struct Setup {
    _split: tempfile::TempDir,
    dir: tempfile::TempDir,
    agent: Agent,
}

impl Setup {
    fn start(policy: &str) -> Self {
        let split = split::two_nodes().expect("declared split");
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("policy.yaml"), policy).expect("policy file");
        let agent = Agent::start(&[
            "run",
            "--sysfs-root",
            split.path().to_str().expect("utf-8"),
            "--metrics-addr",
            "127.0.0.1:0",
            "--policy",
            dir.path().join("policy.yaml").to_str().expect("utf-8"),
            "--audit-log",
            dir.path().join("audit.jsonl").to_str().expect("utf-8"),
        ])
        .expect("agent starts");
        Self {
            _split: split,
            dir,
            agent,
        }
    }

    fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    fn stop(self) -> (Stopped, Vec<Value>) {
        let path = self.audit_path();
        let stopped = self.agent.stop().expect("agent stops");
        assert!(
            stopped.status.success(),
            "agent exit {}: {}",
            stopped.status,
            stopped.stderr.join("\n")
        );
        (stopped, audit(&path))
    }
}

const WINDOW_MS: u64 = 500;
const DEBOUNCE: u64 = 2;

fn steal_policy(name: &str, mode: &str, cgroup: &str) -> String {
    format!(
        "apiVersion: concurrency.gokore.io/v1alpha1
kind: NUMAPolicy
metadata: {{name: {name}}}
spec:
  mode: {mode}
  selector: {{cgroupPaths: [\"{cgroup}\"]}}
  qosClasses:
    - {{name: default, stealAllowed: true, maxSteals: 5}}
  failurePolicies:
    - {{errorType: StealLimitExceeded, action: throttleWorker, cooldown: 3s, cpuQuota: 20%}}
  evaluation: {{window: {WINDOW_MS}ms, debounce: {DEBOUNCE}, maxActionsPerMinute: 10}}
"
    )
}

#[test]
fn enforce_throttles_a_stealing_workload_then_restores_it_and_spares_the_rest() {
    require_privileges!();
    let (target, bystander) = match (
        TestCgroup::create("throttle"),
        TestCgroup::create("bystander"),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let setup = Setup::start(&steal_policy("steal-enforce", "enforce", &target.path));
    // ~20 cross-node moves per 500 ms window each, against an allowance of 5.
    let mut worker = Flipper::spawn(25);
    let mut other = Flipper::spawn(25);
    target.add(worker.pid());
    bystander.add(other.pid());
    let period = target.period();
    assert_eq!(target.quota(), None, "test cgroup starts unlimited");
    other.go();
    let started = worker.go();

    let (quota, acted) =
        wait_for(Duration::from_secs(10), || target.quota()).expect("throttled within 10 s");
    let latency = acted.duration_since(started);
    assert_eq!(
        quota,
        period / 5,
        "20% of one CPU, read back from the cgroup"
    );
    let bound = Duration::from_millis(WINDOW_MS * DEBOUNCE) + Duration::from_secs(1);
    eprintln!(
        "MEASURED: first cross-node move -> quota changed in the cgroup file: {latency:?} (bound: window x debounce + 1 s = {bound:?})"
    );
    // The first window may have started up to a window before the first move, so the
    // first violating window can be the one after: one extra window at most.
    assert!(
        latency <= bound + Duration::from_millis(WINDOW_MS),
        "action took {latency:?}"
    );

    // Restored after the 3 s cooldown.
    // Generous: the restore runs on the agent's policy timer, which a loaded machine
    // (QEMU guests of other tests, builds) can delay by seconds.
    let (_, restored) = wait_for(Duration::from_secs(12), || {
        target.quota().is_none().then_some(())
    })
    .expect("quota restored after the cooldown");
    let held = restored.duration_since(acted);
    eprintln!("MEASURED: throttle held for {held:?} (cooldown 3 s)");
    assert!(
        held >= Duration::from_millis(2900),
        "restored too early: {held:?}"
    );
    assert_eq!(
        bystander.quota(),
        None,
        "a process outside the selector is never throttled"
    );

    let metrics = setup.agent.http_get("/metrics").expect("scrape");
    let errors = sample(
        &metrics,
        r#"numa_errors_total{policy="steal-enforce",type="NUMAStealError"}"#,
    )
    .unwrap_or_else(|| panic!("no numa_errors_total in:\n{metrics}"));
    assert!(errors >= DEBOUNCE as f64, "{errors}");
    // Still violating after the restore, it may be throttled again: at least one each.
    for result in ["ok", "restore_ok"] {
        let key = format!(
            r#"numa_policy_actions_total{{action="throttleWorker",policy="steal-enforce",result="{result}"}}"#
        );
        assert!(
            sample(&metrics, &key).is_some_and(|n| n >= 1.0),
            "{key} in:\n{metrics}"
        );
    }
    assert_eq!(
        sample(
            &metrics,
            r#"numa_policy_active{mode="enforce",policy="steal-enforce"}"#
        ),
        Some(1.0)
    );

    let worker_pid = worker.pid();
    let other_pid = other.pid();
    drop(worker);
    drop(other);
    let (stopped, records) = setup.stop();
    let did: Vec<&Value> = records.iter().filter(|r| r["decision"] == "did").collect();
    assert!(
        !did.is_empty(),
        "no enforce record: {records:#?}\n{}",
        stopped.stderr.join("\n")
    );
    let r = did[0];
    assert_eq!(
        (r["action"].as_str(), r["result"].as_str()),
        (Some("throttleWorker"), Some("ok")),
        "{r}"
    );
    assert_eq!(r["pid"].as_u64(), Some(u64::from(worker_pid)));
    assert_eq!(r["policy"], "steal-enforce");
    assert_eq!(r["workload"], target.path.as_str());
    assert_eq!(r["error"]["type"], "NUMAStealError");
    assert!(
        r["error"]["steals_in_window"]
            .as_u64()
            .is_some_and(|n| n > 5),
        "{r}"
    );
    assert!(
        r["before"]
            .as_str()
            .is_some_and(|b| b.starts_with("unlimited")),
        "{r}"
    );
    let in_audit = parse_time(&r["timestamp"])
        .duration_since(parse_time(&r["first_violating_window_start"]))
        .expect("action after its first violating window");
    eprintln!("MEASURED: first violating window start -> action (audit timestamps): {in_audit:?}");
    assert!(in_audit <= bound, "{in_audit:?} > {bound:?}");
    assert!(
        records
            .iter()
            .any(|r| r["decision"] == "restore" && r["result"] == "ok"),
        "{records:#?}"
    );
    assert!(
        records
            .iter()
            .all(|r| r["pid"].as_u64() != Some(u64::from(other_pid))),
        "the bystander appears in the audit: {records:#?}"
    );
}

#[test]
fn monitor_mode_only_records_would_throttle() {
    require_privileges!();
    let target = match TestCgroup::create("monitor") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let setup = Setup::start(&steal_policy("steal-monitor", "monitor", &target.path));
    let mut worker = Flipper::spawn(25);
    target.add(worker.pid());
    worker.go();
    let audit_path = setup.audit_path();
    let (record, _) = wait_for(Duration::from_secs(10), || {
        audit(&audit_path)
            .into_iter()
            .find(|r| r["decision"] == "would")
    })
    .expect("a would-throttle record");
    // Keep flipping for a few more windows: still nothing changes.
    thread::sleep(Duration::from_millis(3 * WINDOW_MS));
    assert_eq!(target.quota(), None, "monitor mode changed the cgroup");

    // An invalid edit is rejected whole; the previous version stays in force.
    let file = setup.dir.path().join("policy.yaml");
    let good = fs::read_to_string(&file).expect("policy");
    fs::write(&file, good.replace("maxSteals: 5", "maxSteals: 05")).expect("edit");
    let file_label = format!("numa_policy_file_valid{{file=\"{}\"}}", file.display());
    let (metrics, _) = wait_for(Duration::from_secs(6), || {
        let m = setup.agent.http_get("/metrics").ok()?;
        (sample(&m, &file_label) == Some(0.0)).then_some(m)
    })
    .expect("the invalid version is reported as rejected");
    assert_eq!(
        sample(
            &metrics,
            r#"numa_policy_active{mode="monitor",policy="steal-monitor"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(sample(&metrics, r#"numa_policy_actions_total{action="throttleWorker",policy="steal-monitor",result="would"}"#).is_some_and(|n| n >= 1.0));
    let pid = worker.pid();
    drop(worker);
    let (stopped, records) = setup.stop();
    assert!(
        stopped
            .stderr
            .iter()
            .any(|l| l.contains("spec.qosClasses[0].maxSteals") && l.contains("leading zero")),
        "the rejection names the field: {}",
        stopped.stderr.join("\n")
    );
    assert_eq!(
        (record["action"].as_str(), record["result"].as_str()),
        (Some("throttleWorker"), Some("would"))
    );
    assert_eq!(record["pid"].as_u64(), Some(u64::from(pid)));
    assert!(
        records.iter().all(|r| r["decision"] == "would"),
        "{records:#?}"
    );
}

#[test]
fn enforce_relocates_a_workload_outside_allowed_nodes_only() {
    require_privileges!();
    // Both run on node 1 (CPU 1); only `inside` is selected, and the policy allows node 0.
    let inside = Sleeper::pinned(1);
    let outside = Sleeper::pinned(1);
    let (pin, pout) = (inside.0.id(), outside.0.id());
    thread::sleep(Duration::from_millis(50));
    assert_eq!(cpus_allowed(pin), "1");
    let policy = format!(
        "apiVersion: concurrency.gokore.io/v1alpha1
kind: NUMAPolicy
metadata: {{name: placement-enforce}}
spec:
  mode: enforce
  selector: {{pids: [{pin}]}}
  numaTopology: {{allowedNodes: [0]}}
  failurePolicies:
    - {{errorType: NUMAPolicyViolation, action: relocatePod}}
  evaluation: {{window: 200ms, debounce: 2}}
"
    );
    let started = Instant::now();
    let setup = Setup::start(&policy);
    let (_, moved) = wait_for(Duration::from_secs(10), || {
        (cpus_allowed(pin) == "0").then_some(())
    })
    .expect("relocated to node 0's CPUs");
    eprintln!(
        "MEASURED: agent start (workload already violating) -> Cpus_allowed_list 0: {:?}",
        moved.duration_since(started)
    );
    thread::sleep(Duration::from_millis(600));
    assert_eq!(
        cpus_allowed(pout),
        "1",
        "a process outside the selector is never touched"
    );
    let (_, records) = setup.stop();
    let r = records
        .iter()
        .find(|r| r["decision"] == "did" && r["action"] == "relocatePod")
        .unwrap_or_else(|| panic!("no relocation record: {records:#?}"));
    eprintln!("AUDIT: {r}");
    assert_eq!(r["pid"].as_u64(), Some(u64::from(pin)));
    assert_eq!(r["adjusted_node"].as_u64(), Some(0));
    assert_eq!(r["error"]["type"], "NUMAPolicyError");
    assert!(
        r["error"]["violation_type"]
            .as_str()
            .is_some_and(|v| v.contains("cpusOutsideAllowedNodes")),
        "{r}"
    );
    assert_eq!(r["error"]["actual_placement"]["cpus_allowed"], "1");
    assert!(
        matches!(r["result"].as_str(), Some("ok" | "partial")),
        "{r}"
    );
    assert!(
        r["after"]
            .as_str()
            .is_some_and(|a| a.starts_with("cpus 0 ")),
        "{r}"
    );
    assert!(
        records
            .iter()
            .all(|r| r["pid"].as_u64() != Some(u64::from(pout))),
        "{records:#?}"
    );
}

#[test]
fn invalid_policy_refuses_to_start_naming_every_field() {
    require_privileges!();
    let split = split::two_nodes().expect("split");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    fs::write(
        &file,
        "apiVersion: concurrency.gokore.io/v1alpha1\nkind: NUMAPolicy\nmetadata: {name: bad}\nspec:\n  numaTopology: {allowedNodes: [08], maxCrossAccess: \"0.15\"}\n",
    )
    .expect("write");
    let out = Command::new(numa_tests::agent::agent_bin())
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--sysfs-root",
            split.path().to_str().expect("utf-8"),
            "--policy",
            file.to_str().expect("utf-8"),
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.numaTopology.allowedNodes[0]")
            && stderr.contains("spec.numaTopology.maxCrossAccess"),
        "{stderr}"
    );
    let v = Command::new(numa_tests::agent::agent_bin())
        .args([
            "policy",
            "validate",
            "--sysfs-root",
            split.path().to_str().expect("utf-8"),
            file.to_str().expect("utf-8"),
        ])
        .output()
        .expect("runs");
    assert!(!v.status.success());
    let stderr = String::from_utf8_lossy(&v.stderr);
    assert!(
        stderr.contains(
            "bad.yaml:5: error: spec.numaTopology.allowedNodes[0]: `08` has a leading zero"
        ),
        "{stderr}"
    );
}
