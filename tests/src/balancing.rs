//! NUMA balancing checked against the kernel's own books: `/proc/vmstat` event
//! counters (mm/vmstat.c `vmstat_text`; `all_vm_events()` sums every CPU's counter at
//! read time, so they are exact), the ftrace text of `sched:sched_*_numa`, and a
//! workload's `/proc/<pid>/sched` (`numa_pages_migrated`, kernel/sched/debug.c).
//!
//! Both sides count machine-wide, so the comparison is over the same interval: each
//! end is a *bracket* — read vmstat, scrape the agent, read vmstat again, and keep the
//! bracket only if the counters did not move in between (retried otherwise); a
//! `trace_marker` line on either side of the scrape fences off the ftrace text the
//! same way. Then the deltas must be equal, with no tolerance: the tracepoint and
//! fentry fire right where the kernel bumps the vmstat event (see numa-ebpf
//! `balancing.rs` and `hint_fault.rs`).
use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    agent::Agent,
    ftrace::{self, tracefs_root, write},
};

/// The vmstat events the agent's counters must match.
pub const VMSTAT_KEYS: [&str; 5] = [
    "pgmigrate_success",
    "pgmigrate_fail",
    "numa_pages_migrated",
    "numa_hint_faults",
    "numa_hint_faults_local",
];

/// `/proc/vmstat` as name -> value.
pub fn vmstat() -> Result<BTreeMap<String, u64>> {
    let text = fs::read_to_string("/proc/vmstat").context("reading /proc/vmstat")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect())
}

/// One sample of the Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parse `name{k="v",...} value` lines (the agent never escapes quotes in these labels).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

/// Sum of `name` over samples whose labels include every `(key, value)` of `filter`.
pub fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> u64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            filter
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value as u64)
        .sum()
}

/// A consistent reading: vmstat and the agent's metrics at one instant, as far as the
/// compared counters can tell.
pub struct Bracket {
    /// The trace markers of the accepted attempt: `<tag>-begin` / `<tag>-end`.
    pub tag: String,
    pub vmstat: BTreeMap<String, u64>,
    pub metrics: Vec<Sample>,
    pub raw_metrics: String,
    pub attempts: usize,
}

/// Read vmstat, scrape, read vmstat; retry until `keys` did not move in between.
/// With a trace, `<marker>-<attempt>-begin` / `-end` lines go into its `trace_marker`
/// around the three reads, and an attempt with a `sched_*_numa` line between them is
/// retried too: then no decision can be on the wrong side of the scrape.
pub fn bracket(agent: &Agent, keys: &[&str], trace: Option<(&Trace, &str)>) -> Result<Bracket> {
    for attempt in 1..=50 {
        let tag = format!("{}-{attempt}", trace.map_or("", |(_, m)| m));
        if let Some((t, _)) = trace {
            t.mark(&format!("{tag}-begin"))?;
        }
        let before = vmstat()?;
        let raw = agent.http_get("/metrics")?;
        let after = vmstat()?;
        let mut quiet = keys.iter().all(|k| before.get(*k) == after.get(*k));
        if let Some((t, _)) = trace {
            t.mark(&format!("{tag}-end"))?;
            quiet &= decisions_inside(&t.text()?, &tag) == 0;
        }
        if quiet {
            return Ok(Bracket {
                tag,
                vmstat: before,
                metrics: parse_metrics(&raw),
                raw_metrics: raw,
                attempts: attempt,
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
    bail!("vmstat kept moving during 50 scrapes: no consistent reading")
}

/// A private ftrace instance recording the three `sched_*_numa` events.
pub struct Trace {
    dir: PathBuf,
}

pub const DECISION_EVENTS: [(&str, &str); 3] = [
    ("sched_move_numa", "move"),
    ("sched_swap_numa", "swap"),
    ("sched_stick_numa", "stick"),
];

impl Trace {
    pub fn decisions(name: &str) -> io::Result<Self> {
        let dir = tracefs_root()?.join("instances").join(name);
        if dir.exists() {
            fs::remove_dir(&dir)?;
        }
        fs::create_dir(&dir)?;
        let t = Self { dir };
        write(&t.dir.join("buffer_size_kb"), "2048")?;
        for (event, _) in DECISION_EVENTS {
            write(&t.dir.join("events/sched").join(event).join("enable"), "1")?;
        }
        write(&t.dir.join("tracing_on"), "1")?;
        Ok(t)
    }

    pub fn mark(&self, text: &str) -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("trace_marker"))?;
        // trace_marker copies the text with page faults disabled
        // (kernel/trace/trace.c `tracing_mark_write`) and answers EFAULT when its page
        // is not mapped at that moment, which NUMA balancing's scanner does to this
        // process's pages too (PROT_NONE until the next hinting fault). Reading the
        // bytes first takes that fault; a few tries cover a scan landing in between.
        let mut tries = 0;
        loop {
            std::hint::black_box(text.as_bytes().iter().fold(0u8, |a, b| a ^ b));
            match f.write_all(text.as_bytes()) {
                Err(e) if e.raw_os_error() == Some(libc::EFAULT) && tries < 5 => tries += 1,
                other => return other,
            }
        }
    }

    pub fn stop(&self) -> io::Result<()> {
        write(&self.dir.join("tracing_on"), "0")
    }

    pub fn text(&self) -> io::Result<String> {
        fs::read_to_string(self.dir.join("trace"))
    }

    pub fn overruns(&self) -> io::Result<u64> {
        ftrace::overruns(&self.dir)
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        for (event, _) in DECISION_EVENTS {
            let _ = write(
                &self.dir.join("events/sched").join(event).join("enable"),
                "0",
            );
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// `sched_*_numa` lines between `<tag>-begin` and `<tag>-end`.
pub fn decisions_inside(text: &str, tag: &str) -> u64 {
    let (begin, end) = (
        format!("tracing_mark_write: {tag}-begin"),
        format!("tracing_mark_write: {tag}-end"),
    );
    let mut inside = false;
    let mut count = 0;
    for line in text.lines() {
        if line.trim_end().ends_with(&begin) {
            inside = true;
        } else if line.trim_end().ends_with(&end) {
            inside = false;
        } else if inside
            && DECISION_EVENTS
                .iter()
                .any(|(e, _)| line.contains(&format!(" {e}: ")))
        {
            count += 1;
        }
    }
    count
}

/// (kind, src_nid, dst_nid) as the agent labels them: dst `none` for -1.
pub type DecisionKey = (String, String, String);

/// Decisions in the trace text, split into those certainly between the two brackets
/// (after `<first>-end`, before `<second>-begin`) and those inside a bracket, where
/// the scrape may or may not have seen them.
pub fn decisions_between(
    text: &str,
    first: &str,
    second: &str,
) -> Result<(BTreeMap<DecisionKey, u64>, u64)> {
    #[derive(PartialEq)]
    enum Phase {
        Before,
        InFirst,
        Between,
        InSecond,
        After,
    }
    let mut phase = Phase::Before;
    let mut certain = BTreeMap::new();
    let mut ambiguous = 0;
    for line in text.lines() {
        if line.contains("tracing_mark_write: ") {
            let mark = line.rsplit("tracing_mark_write: ").next().unwrap_or("");
            phase = match mark.trim() {
                m if m == format!("{first}-begin") => Phase::InFirst,
                m if m == format!("{first}-end") => Phase::Between,
                m if m == format!("{second}-begin") => Phase::InSecond,
                m if m == format!("{second}-end") => Phase::After,
                _ => phase,
            };
            continue;
        }
        let Some((event, kind)) = DECISION_EVENTS
            .iter()
            .find(|(e, _)| line.contains(&format!(" {e}: ")))
        else {
            continue;
        };
        let fields = line.split_once(&format!(" {event}: ")).map_or("", |x| x.1);
        let value = |key: &str| {
            fields
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .and_then(|v| v.parse::<i64>().ok())
                .with_context(|| format!("no {key} in `{line}`"))
        };
        let (src, dst) = (value("src_nid=")?, value("dst_nid=")?);
        match phase {
            Phase::Between => {
                let dst = if dst < 0 {
                    "none".to_owned()
                } else {
                    dst.to_string()
                };
                *certain
                    .entry(((*kind).to_owned(), src.to_string(), dst))
                    .or_default() += 1;
            }
            Phase::InFirst | Phase::InSecond => ambiguous += 1,
            Phase::Before | Phase::After => {}
        }
    }
    ensure!(
        phase == Phase::After,
        "trace markers missing: the trace does not cover both brackets"
    );
    Ok((certain, ambiguous))
}

/// Agent-side decision counts per key from metric samples.
pub fn agent_decisions(samples: &[Sample]) -> BTreeMap<DecisionKey, u64> {
    let mut out = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "numa_balancing_decisions_total" && s.value > 0.0)
    {
        let get = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        out.insert(
            (get("kind"), get("src_node"), get("dst_node")),
            s.value as u64,
        );
    }
    out
}

/// Per-program cost from the agent's `numa_bpf_program_*` metrics (run with
/// `--bpf-stats`): `program: runs, ns/run` for each of `programs` that ran.
pub fn program_costs(samples: &[Sample], programs: &[&str]) -> String {
    programs
        .iter()
        .filter_map(|p| {
            let runs = sum(samples, "numa_bpf_program_runs_total", &[("program", p)]);
            let secs: f64 = samples
                .iter()
                .filter(|s| {
                    s.name == "numa_bpf_program_run_seconds_total"
                        && s.labels.get("program").map(String::as_str) == Some(*p)
                })
                .map(|s| s.value)
                .sum();
            (runs > 0).then(|| format!("{p} {runs} runs {:.0} ns/run", secs * 1e9 / runs as f64))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compare the migration counters between two brackets with vmstat, exactly.
/// Returns the succeeded-pages delta per reason.
pub fn check_migrations(a: &Bracket, b: &Bracket) -> Result<BTreeMap<String, u64>> {
    let d = |k: &str| b.vmstat[k] - a.vmstat[k];
    let agent = |filter: &[(&str, &str)]| {
        sum(&b.metrics, "numa_page_migrations_total", filter)
            - sum(&a.metrics, "numa_page_migrations_total", filter)
    };
    let succeeded = agent(&[("result", "succeeded")]);
    let failed = agent(&[("result", "failed")]);
    ensure!(
        succeeded == d("pgmigrate_success"),
        "numa_page_migrations_total{{result=succeeded}} moved by {succeeded}, vmstat pgmigrate_success by {}",
        d("pgmigrate_success")
    );
    ensure!(
        failed == d("pgmigrate_fail"),
        "numa_page_migrations_total{{result=failed}} moved by {failed}, vmstat pgmigrate_fail by {}",
        d("pgmigrate_fail")
    );
    let misplaced = agent(&[("reason", "numa_misplaced"), ("result", "succeeded")]);
    if let Some(&before) = a.vmstat.get("numa_pages_migrated") {
        let vm = b.vmstat["numa_pages_migrated"] - before;
        ensure!(
            misplaced == vm,
            "numa_page_migrations_total{{reason=numa_misplaced}} moved by {misplaced}, vmstat numa_pages_migrated by {vm}"
        );
    }
    let mut by_reason = BTreeMap::new();
    for s in b.metrics.iter().filter(|s| {
        s.name == "numa_page_migrations_total"
            && s.labels.get("result").map(String::as_str) == Some("succeeded")
    }) {
        let reason = s.labels["reason"].clone();
        let delta = agent(&[("reason", &reason), ("result", "succeeded")]);
        if delta > 0 {
            by_reason.insert(reason, delta);
        }
    }
    Ok(by_reason)
}

/// Compare the hinting-fault counters between two brackets with vmstat, exactly.
/// Returns (faults, local faults).
pub fn check_hint_faults(a: &Bracket, b: &Bracket) -> Result<(u64, u64)> {
    let d = |k: &str| b.vmstat[k] - a.vmstat[k];
    let agent = |filter: &[(&str, &str)]| {
        sum(&b.metrics, "numa_hint_faults_total", filter)
            - sum(&a.metrics, "numa_hint_faults_total", filter)
    };
    let (all, local) = (agent(&[]), agent(&[("locality", "local")]));
    ensure!(
        all == d("numa_hint_faults"),
        "numa_hint_faults_total moved by {all}, vmstat numa_hint_faults by {}",
        d("numa_hint_faults")
    );
    ensure!(
        local == d("numa_hint_faults_local"),
        "numa_hint_faults_total{{locality=local}} moved by {local}, vmstat numa_hint_faults_local by {}",
        d("numa_hint_faults_local")
    );
    Ok((all, local))
}

/// Write `value` to a sysctl-like file, returning what it held.
pub fn set_knob(path: &str, value: &str) -> Result<String> {
    let old = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    fs::write(path, value).with_context(|| format!("writing {value} to {path}"))?;
    Ok(old.trim().to_owned())
}

/// Restores knobs set for a scenario when dropped (even on failure).
#[derive(Default)]
pub struct Knobs {
    saved: Vec<(String, String)>,
}

impl Knobs {
    pub fn set(&mut self, path: &str, value: &str) -> Result<()> {
        let old = set_knob(path, value)?;
        self.saved.push((path.to_owned(), old));
        Ok(())
    }
}

impl Drop for Knobs {
    fn drop(&mut self) {
        for (path, old) in self.saved.iter().rev() {
            let _ = fs::write(path, old);
        }
    }
}

/// What the `misplaced` workload does after its first touch.
#[derive(Clone, Debug, Default)]
pub struct Misplaced {
    pub mib: usize,
    pub duration: Duration,
    /// `set_mempolicy(MPOL_DEFAULT)`: later faults follow the default (local) policy,
    /// whose `MPOL_F_MOF` lets NUMA balancing migrate the pages (mm/mempolicy.c
    /// `mpol_misplaced()`); a bound policy (`numactl --membind`) keeps them in place.
    pub reset_policy: bool,
    /// Restrict the task to this node's CPUs.
    pub pin_node: Option<u32>,
    /// Allow every online CPU (undo `numactl --cpunodebind`).
    pub unpin: bool,
    /// Allow every online CPU this long into the touch loop (pinned before, free after).
    pub unpin_after: Option<Duration>,
    /// After the last pass, print `holding` and wait for a line on stdin before exiting,
    /// touching nothing: the caller reads `/proc/<pid>/sched` while counts are still.
    pub hold: bool,
}

fn cpulist(text: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        out.extend(lo.parse::<usize>()?..=hi.parse::<usize>()?);
    }
    Ok(out)
}

fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for cpu < 1024.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `numa_pages_migrated` of this task from `/proc/self/sched` (CONFIG_SCHED_DEBUG):
/// the pages `task_numa_fault()` was told it migrated (kernel/sched/fair.c).
pub fn sched_numa_pages_migrated(pid: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/sched")).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "numa_pages_migrated").then(|| v.trim().parse().ok())?
    })
}

/// Map and touch `mib` MiB (placed by the caller's memory policy, e.g. numactl), then
/// apply `opts` and keep writing every page until `duration` is over, so the NUMA
/// scanner's hinting faults find the task touching misplaced memory. Prints
/// `pid <pid> before N<n>=<pages>..`, then `pid <pid> after N..=.. passes <n>` and
/// `sched_numa_pages_migrated <n>` (if /proc/self/sched has it).
pub fn run_misplaced(opts: &Misplaced) -> Result<()> {
    let bytes = opts.mib << 20;
    let page = 4096;
    // Base pages: one hinting fault per page, like the vmstat counts.
    let addr = crate::memory::map_base_pages(bytes)?.cast::<u8>();
    let touch = || {
        for off in (0..bytes).step_by(page) {
            // SAFETY: within the mapping.
            unsafe {
                let b = addr.add(off);
                std::ptr::write_volatile(b, std::ptr::read_volatile(b).wrapping_add(1));
            }
        }
    };
    let placement = || -> Result<String> {
        let maps = fs::read_to_string("/proc/self/numa_maps")?;
        let pages = crate::memory::numa_maps_pages(&maps, addr as usize)
            .context("mapping not in numa_maps")?;
        Ok(pages
            .iter()
            .map(|(n, p)| format!("N{n}={p}"))
            .collect::<Vec<_>>()
            .join(" "))
    };
    touch();
    let pid = std::process::id();
    println!("pid {pid} before {}", placement()?);
    io::stdout().flush()?;
    if opts.reset_policy {
        // SAFETY: MPOL_DEFAULT (0) takes no node mask.
        let rc = unsafe { libc::syscall(libc::SYS_set_mempolicy, 0, std::ptr::null::<u64>(), 0) };
        ensure!(rc == 0, "set_mempolicy: {}", io::Error::last_os_error());
    }
    if let Some(node) = opts.pin_node {
        let list = fs::read_to_string(format!("/sys/devices/system/node/node{node}/cpulist"))?;
        set_affinity(&cpulist(&list)?).context("pinning")?;
    }
    if opts.unpin {
        let list = fs::read_to_string("/sys/devices/system/cpu/online")?;
        set_affinity(&cpulist(&list)?).context("unpinning")?;
    }
    let start = std::time::Instant::now();
    let mut passes = 0u64;
    let mut unpin_at = opts.unpin_after;
    while start.elapsed() < opts.duration {
        touch();
        passes += 1;
        if unpin_at.is_some_and(|at| start.elapsed() >= at) {
            let list = fs::read_to_string("/sys/devices/system/cpu/online")?;
            set_affinity(&cpulist(&list)?).context("unpinning")?;
            unpin_at = None;
        }
    }
    println!("pid {pid} after {} passes {passes}", placement()?);
    if let Some(n) = sched_numa_pages_migrated("self") {
        println!("sched_numa_pages_migrated {n}");
    }
    if opts.hold {
        println!("holding");
        io::stdout().flush()?;
        io::stdin().read_line(&mut String::new())?;
    }
    io::stdout().flush()?;
    Ok(())
}

/// What a `misplaced` workload run printed.
#[derive(Debug, Default)]
pub struct MisplacedRun {
    pub pid: u32,
    pub before: String,
    pub after: String,
    pub passes: u64,
    /// `/proc/<pid>/sched` `numa_pages_migrated` at its end, if the kernel has it.
    pub sched_migrated: Option<u64>,
}

/// Run a `numa-workload misplaced` command line to its end.
pub fn run_workload(command: &[String]) -> Result<MisplacedRun> {
    let out = std::process::Command::new(&command[0])
        .args(&command[1..])
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{command:?}: {}; {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_run(command, &stdout)
}

/// Run a `numa-workload misplaced --hold` command line: once it holds (touching
/// nothing), wait `settle`, read its `/proc/<pid>/sched` `numa_pages_migrated`, wait
/// `settle` again (so the agent's next window has reported it), note the time, then
/// let it exit. Returns the run and the time before which the agent's records are
/// comparable with the `/proc` value.
pub fn run_held_workload(
    command: &[String],
    settle: Duration,
) -> Result<(MisplacedRun, std::time::SystemTime)> {
    use std::io::{BufRead as _, BufReader};
    let mut child = std::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line)? == 0 {
            let _ = child.wait();
            bail!("{command:?} ended before holding: {text}");
        }
        text.push_str(&line);
        if line.trim() == "holding" {
            break;
        }
    }
    let mut run = parse_run(command, &text)?;
    thread::sleep(settle);
    run.sched_migrated = sched_numa_pages_migrated(&run.pid.to_string());
    thread::sleep(settle);
    let released = std::time::SystemTime::now();
    writeln!(child.stdin.take().context("stdin")?)?;
    let status = child.wait()?;
    ensure!(status.success(), "{command:?}: {status}");
    Ok((run, released))
}

fn parse_run(command: &[String], stdout: &str) -> Result<MisplacedRun> {
    let mut run = MisplacedRun::default();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["pid", pid, "before", rest @ ..] => {
                run.pid = pid.parse()?;
                run.before = rest.join(" ");
            }
            ["pid", _, "after", rest @ ..] => {
                let (placement, passes) = rest.split_at(rest.len().saturating_sub(2));
                run.after = placement.join(" ");
                run.passes = passes.last().context("passes")?.parse()?;
            }
            ["sched_numa_pages_migrated", n] => run.sched_migrated = Some(n.parse()?),
            _ => {}
        }
    }
    ensure!(run.pid != 0, "{command:?} printed no pid: {stdout}");
    Ok(run)
}

/// Pages on `node` in a `N<n>=<pages> ...` placement.
pub fn pages_on(placement: &str, node: u32) -> u64 {
    placement
        .split_whitespace()
        .find_map(|f| {
            let (n, p) = f.strip_prefix('N')?.split_once('=')?;
            (n.parse::<u32>().ok()? == node).then(|| p.parse().ok())?
        })
        .unwrap_or(0)
}

/// The QEMU scenario: `kernel.numa_balancing=1`, a fast scanner, then two misplaced
/// workloads while the agent runs — memory on node 1 with the task pinned to node 0
/// and a default policy (the pages should migrate to node 0: `numa_misplaced`), and
/// memory bound to node 1 with the task free to move (the task should follow its
/// memory: `sched_move_numa`). Checks every counter against the kernel's books over
/// the same interval (see the module comment), the workload's own hinting-fault record
/// against its `/proc/<pid>/sched`, and reports each program's cost per run.
pub fn vm_scenario(workload: &str, duration: Duration) -> Result<String> {
    let mut knobs = Knobs::default();
    knobs.set("/proc/sys/kernel/numa_balancing", "1")?;
    // Since 5.13 the scanner's knobs live in debugfs (kernel/sched/debug.c); older
    // kernels had them as sysctls. Defaults (1 s delay, 1-60 s period) are too slow
    // for a TCG guest and a one-minute scenario.
    let debug = Path::new("/sys/kernel/debug/sched/numa_balancing");
    if !debug.is_dir() {
        let _ = std::process::Command::new("mount")
            .args(["-t", "debugfs", "debugfs", "/sys/kernel/debug"])
            .status();
    }
    let mut tuned = Vec::new();
    for (knob, value) in [
        ("scan_delay_ms", "100"),
        ("scan_period_min_ms", "100"),
        ("scan_period_max_ms", "1000"),
    ] {
        let path = if debug.is_dir() {
            debug.join(knob).display().to_string()
        } else {
            format!("/proc/sys/kernel/numa_balancing_{knob}")
        };
        if Path::new(&path).exists() {
            knobs.set(&path, value)?;
            tuned.push(format!("{knob}={value}"));
        }
    }
    let secs = format!("{}ms", duration.as_millis());
    let command = |policy: &[&str], membind: u32, cpunodebind: u32, extra: &[&str]| {
        let mut c: Vec<String> = vec!["numactl".into()];
        c.extend(policy.iter().map(|s| (*s).to_owned()));
        c.extend([
            format!("--membind={membind}"),
            format!("--cpunodebind={cpunodebind}"),
            workload.into(),
            "misplaced".into(),
            "--duration".into(),
            secs.clone(),
        ]);
        c.extend(extra.iter().map(|s| (*s).to_owned()));
        c
    };

    let trace = Trace::decisions(&format!("numa-balancing-{}", std::process::id()))
        .context("ftrace instance for sched_*_numa")?;
    let agent = Agent::start(&[&crate::scenarios::WINDOWED_RUN[..], &["--bpf-stats"]].concat())?;
    let first = bracket(&agent, &VMSTAT_KEYS, Some((&trace, "numa-b1")))?;
    let (pinned, released) = run_held_workload(
        &command(&[], 1, 1, &["--reset-policy", "--pin-node", "0", "--hold"]),
        Duration::from_millis(1500),
    )
    .context("pinned workload")?;
    // Bound to node 1's memory and pinned to node 0 for the first half: the task
    // prefers node 1 but may not go (`sched_stick_numa` with dst -1), then may.
    // `--balancing` (MPOL_F_NUMA_BALANCING, 5.12+) makes the scanner visit the bound
    // memory at all: without MPOL_F_MOF, `task_numa_work()` skips the VMA
    // (`vma_policy_mof()`, kernel/sched/fair.c) and no hinting fault happens.
    let unpin_after = format!("{}ms", duration.as_millis() / 2);
    let bound = run_workload(&command(
        &["--balancing"],
        1,
        0,
        &["--unpin-after", &unpin_after],
    ))
    .context("bound workload")?;
    let second = bracket(&agent, &VMSTAT_KEYS, Some((&trace, "numa-b2")))?;
    trace.stop()?;
    let text = trace.text()?;
    ensure!(
        trace.overruns()? == 0,
        "ftrace dropped lines: the oracle is incomplete"
    );
    let stopped = agent.stop()?;
    ensure!(
        stopped.status.success(),
        "agent exit {}: {}",
        stopped.status,
        stopped.stderr.join("\n")
    );
    let log = stopped.stderr.join("\n");
    ensure!(
        second
            .raw_metrics
            .contains(r#"numa_probe_attached{probe="task_numa_fault",variant="fentry"} 1"#),
        "fentry on task_numa_fault did not attach in this guest:\n{log}"
    );

    let by_reason = check_migrations(&first, &second)?;
    let (faults, local) = check_hint_faults(&first, &second)?;
    let d = |k: &str| second.vmstat[k] - first.vmstat[k];
    ensure!(
        d("numa_pages_migrated") > 0,
        "NUMA balancing migrated no page (vmstat numa_pages_migrated unchanged); pinned workload \
         {pinned:?}"
    );

    // Decisions: `bracket` retried until no event fell inside a reading, so this is
    // exact; the bound by `ambiguous` only documents the reasoning.
    let (certain, ambiguous) = decisions_between(&text, &first.tag, &second.tag)?;
    let before = agent_decisions(&first.metrics);
    let after = agent_decisions(&second.metrics);
    let mut agent_delta = BTreeMap::new();
    for (k, v) in &after {
        let delta = v - before.get(k).copied().unwrap_or(0);
        if delta > 0 {
            agent_delta.insert(k.clone(), delta);
        }
    }
    let mut extra = 0;
    for (k, &want) in &certain {
        let got = agent_delta.get(k).copied().unwrap_or(0);
        ensure!(
            got >= want,
            "decisions {k:?}: agent {got}, ftrace {want}; agent {agent_delta:?} ftrace {certain:?}"
        );
        extra += got - want;
    }
    for (k, &got) in &agent_delta {
        if !certain.contains_key(k) {
            extra += got;
        }
    }
    ensure!(
        extra <= ambiguous,
        "agent counted {extra} decisions more than ftrace saw between the readings (only \
         {ambiguous} fell inside a reading): agent {agent_delta:?} ftrace {certain:?}"
    );
    let decisions: u64 = certain.values().sum();
    ensure!(decisions > 0, "no sched_*_numa decision in the trace");

    // The pinned workload's own record, against its /proc/<pid>/sched.
    let records: Vec<serde_json::Value> = stopped
        .stdout
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["type"] == "NUMAHintFaults")
        .collect();
    // The last record written while the workload held still (before it was released).
    let before_release = |v: &serde_json::Value| {
        v["timestamp"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .is_some_and(|t| t < released)
    };
    let mine = records
        .iter()
        .rev()
        .filter(|v| v["pid"].as_u64() == Some(u64::from(pinned.pid)))
        .find(|v| before_release(v))
        .with_context(|| {
            format!(
                "no NUMAHintFaults record for pid {} before it was released",
                pinned.pid
            )
        })?;
    let remote = mine["remote_faults"].as_u64().unwrap_or(0);
    let migrated = mine["migrated_pages"].as_u64().unwrap_or(0);
    ensure!(
        remote > 0,
        "pinned workload's remote hinting faults are 0: {mine}"
    );
    let per_task = match pinned.sched_migrated {
        Some(sched) => {
            ensure!(
                migrated == sched,
                "agent: {migrated} pages migrated for pid {}, its /proc/<pid>/sched \
                 numa_pages_migrated {sched}",
                pinned.pid
            );
            format!("= /proc/<pid>/sched numa_pages_migrated {sched}")
        }
        None => "(/proc/<pid>/sched has no numa_pages_migrated: CONFIG_SCHED_DEBUG off)".into(),
    };
    ensure!(
        pages_on(&pinned.after, 0) > pages_on(&pinned.before, 0),
        "pinned workload's memory did not move toward node 0: before {} after {}",
        pinned.before,
        pinned.after
    );
    let costs = program_costs(
        &second.metrics,
        &[
            "task_numa_fault",
            "mm_migrate_pages",
            "sched_move_numa",
            "sched_swap_numa",
            "sched_stick_numa",
        ],
    );
    Ok(format!(
        "scanner {}; vmstat = agent exactly: pgmigrate_success +{} (by reason {by_reason:?}), \
         pgmigrate_fail +{}, numa_pages_migrated +{}, numa_hint_faults +{faults} \
         (local +{local}), still readings after {} and {} tries; sched_*_numa = ftrace: \
         {certain:?} ({ambiguous} in readings); \
         pinned pid {}: {} -> {}, remote {remote} local {} faults, {migrated} pages migrated \
         {per_task}; bound pid {}: {} -> {}; cost: {costs}",
        tuned.join(","),
        d("pgmigrate_success"),
        d("pgmigrate_fail"),
        d("numa_pages_migrated"),
        first.attempts,
        second.attempts,
        pinned.pid,
        pinned.before,
        pinned.after,
        mine["local_faults"],
        bound.pid,
        bound.before,
        bound.after,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_agents_exposition() {
        let text = "# HELP x y\nnuma_page_migrations_total{reason=\"compaction\",result=\"succeeded\"} 12\n\
                    numa_balancing_mode 1\n";
        let s = parse_metrics(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            sum(
                &s,
                "numa_page_migrations_total",
                &[("reason", "compaction")]
            ),
            12
        );
        assert_eq!(sum(&s, "numa_page_migrations_total", &[("reason", "x")]), 0);
        assert_eq!(s[1].value, 1.0);
    }

    #[test]
    fn decisions_are_split_by_the_markers() {
        let text = "\
 w-1 [000] ..... 1.0: sched_stick_numa: src_pid=5 src_tgid=5 src_ngid=0 src_cpu=0 src_nid=0 dst_pid=0 dst_tgid=0 dst_ngid=0 dst_cpu=-1 dst_nid=-1
 t-2 [000] ..... 1.1: tracing_mark_write: b1-begin
 w-1 [000] ..... 1.2: sched_move_numa: pid=5 tgid=5 ngid=0 src_cpu=0 src_nid=0 dst_cpu=1 dst_nid=1
 t-2 [000] ..... 1.3: tracing_mark_write: b1-end
 w-1 [000] ..... 1.4: sched_stick_numa: src_pid=5 src_tgid=5 src_ngid=0 src_cpu=0 src_nid=0 dst_pid=0 dst_tgid=0 dst_ngid=0 dst_cpu=-1 dst_nid=-1
 w-1 [001] ..... 1.5: sched_move_numa: pid=5 tgid=5 ngid=0 src_cpu=0 src_nid=0 dst_cpu=1 dst_nid=1
 t-2 [000] ..... 1.6: tracing_mark_write: b2-begin
 t-2 [000] ..... 1.7: tracing_mark_write: b2-end
";
        let (certain, ambiguous) = decisions_between(text, "b1", "b2").expect("parses");
        assert_eq!(ambiguous, 1);
        assert_eq!(
            certain,
            BTreeMap::from([
                (("move".into(), "0".into(), "1".into()), 1),
                (("stick".into(), "0".into(), "none".into()), 1),
            ])
        );
        assert!(decisions_between(text, "b1", "b3").is_err());
        assert_eq!(decisions_inside(text, "b1"), 1);
        assert_eq!(decisions_inside(text, "b2"), 0);
    }
}
