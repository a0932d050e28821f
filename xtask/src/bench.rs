//! `cargo xtask bench`: the in-kernel cost per hit of the sensor's programs, next to
//! an equivalent `bpftrace` one-liner attached to the same tracepoint at the same
//! time, so both see exactly the same hits. Cost comes from the kernel's own BPF
//! stats (`kernel.bpf_stats_enabled`): `run_time_ns` and `run_cnt`, read from each
//! process's `/proc/<pid>/fdinfo` of its program fds.
use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{run_checked, setup};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Migrations the workload causes per round.
    #[arg(long, default_value_t = 20_000)]
    flips: usize,
    /// Rounds; each reports its own numbers and the ratio.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const BPFTRACE_ONE_LINER: &str =
    "tracepoint:sched:sched_migrate_task { @[args->orig_cpu, args->dest_cpu] = count(); }";
const BPFTRACE_PAGE_ALLOC: &str = "tracepoint:kmem:mm_page_alloc { @[cpu] = count(); }";
/// The agent's default page-fault variant: the software page-fault counter, one
/// program run per 64 faults per CPU (`--fault-sample-rate` 64).
const BPFTRACE_PAGE_FAULT: &str = "software:page-faults:64 { @[cpu] = count(); }";
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

pub fn run(args: &BenchArgs, agent: &Path, workload: &Path) -> Result<()> {
    setup::ensure_apt(&["bpftrace"])?;
    let split = declared_split()?;
    let previous = fs::read_to_string(BPF_STATS).context("reading kernel.bpf_stats_enabled")?;
    fs::write(BPF_STATS, "1").context("enabling kernel.bpf_stats_enabled (needs root)")?;
    let result = rounds(args, agent, workload, &split).and_then(|()| {
        fs::write(BPF_STATS, "0").context("disabling kernel.bpf_stats_enabled")?;
        page_fault_rounds(args, agent, workload, &split)
    });
    let _ = fs::write(BPF_STATS, previous.trim());
    let _ = fs::remove_dir_all(&split);
    result
}

fn rounds(args: &BenchArgs, agent: &Path, workload: &Path, split: &Path) -> Result<()> {
    println!(
        "sched_migrate_task cost per hit: numa-agent vs `bpftrace -e '{BPFTRACE_ONE_LINER}'`, \
         both attached at once, {} flips per round",
        args.flips
    );
    println!(
        "topology `split`: node0 = CPU 0, node1 = CPU 1, so every flip is cross-node and sends a \
         record (the agent's most expensive path); `host`: this machine's own nodes"
    );
    println!(
        "{:>5} {:>8} {:>10} {:>12} {:>12} {:>8}",
        "round", "topology", "hits", "agent ns", "bpftrace ns", "ratio"
    );
    for round in 1..=args.rounds {
        for (label, root) in [("split", split), ("host", Path::new("/sys"))] {
            let (ours, theirs) = one_round(root, args.flips, agent, workload)?;
            println!(
                "{round:>5} {label:>8} {:>10} {:>12.1} {:>12.1} {:>8.2}",
                ours.run_cnt,
                ours.ns_per_hit(),
                theirs.ns_per_hit(),
                ours.ns_per_hit() / theirs.ns_per_hit()
            );
        }
    }
    Ok(())
}

/// Attach both, cause `flips` migrations, and return each side's stats over them.
fn one_round(
    sysfs_root: &Path,
    flips: usize,
    agent: &Path,
    workload: &Path,
) -> Result<(ProgStats, ProgStats)> {
    let mut agent = spawn_until(
        Command::new(agent)
            .args(["run", "--metrics-addr", "127.0.0.1:0", "--sysfs-root"])
            .arg(sysfs_root),
        "ready:",
        Stream::Stderr,
    )?;
    let mut bpftrace = spawn_until(
        Command::new("bpftrace").args(["-e", BPFTRACE_ONE_LINER]),
        "Attaching",
        Stream::Stdout,
    )?;
    thread::sleep(Duration::from_millis(500));
    let stats = |agent: &Child, bpftrace: &Child| -> Result<(ProgStats, ProgStats)> {
        Ok((
            total(&prog_stats(agent.id())?, "sched_migrate_t"),
            total(&prog_stats(bpftrace.id())?, ""),
        ))
    };
    let before = stats(&agent, &bpftrace)?;
    let mut flip = Command::new(workload);
    flip.args(["flip", "--no-wait", "--flips", &flips.to_string()])
        .stdout(Stdio::null());
    run_checked(flip)?;
    let after = stats(&agent, &bpftrace)?;
    stop(&mut agent)?;
    stop(&mut bpftrace)?;
    Ok((after.0.since(before.0), after.1.since(before.1)))
}

/// Cost per hit of the page-alloc and page-fault programs next to a bpftrace counter
/// on the same tracepoint, and the slowdown of a page-fault-heavy workload (touching
/// 256 MiB page by page) with the agent attached vs detached. The workload times its
/// own write loop (`touch_ns`), so process start-up and the agent's start are not in
/// the figure; conditions rotate from round to round.
fn page_fault_rounds(args: &BenchArgs, agent: &Path, workload: &Path, split: &Path) -> Result<()> {
    // (wall, CPU time of the touching thread): CPU time leaves out time the workload
    // spent preempted (by the agent's own threads on this small host, among others)
    // and is much steadier here; wall is what a user sees.
    let touch = || -> Result<[Duration; 2]> {
        let out = Command::new(workload)
            .args(["touch", "--mib", "256", "--cpu", "1", "--hold", "0ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running numa-workload touch")?;
        let text = String::from_utf8_lossy(&out.stderr);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .map(Duration::from_nanos)
                .with_context(|| format!("no {name} from numa-workload touch: {text}"))
        };
        Ok([field("touch_ns")?, field("touch_cpu_ns")?])
    };
    // The machine is shared and noisy: each condition's time is the median of
    // TOUCHES runs, and the order of the conditions rotates from round to round.
    const TOUCHES: usize = 15;
    let median_touch = || -> Result<[Duration; 2]> {
        let runs = (0..TOUCHES).map(|_| touch()).collect::<Result<Vec<_>>>()?;
        Ok(std::array::from_fn(|i| {
            let mut t: Vec<Duration> = runs.iter().map(|r| r[i]).collect();
            t.sort();
            t[TOUCHES / 2]
        }))
    };
    println!();
    println!(
        "page faults: `numa-workload touch --mib 256` (65536 first-touch faults); cost per hit \
         of mm_page_alloc (variant as the agent picks it) vs `bpftrace -e '{BPFTRACE_PAGE_ALLOC}'` \
         and of the page-fault sampler (default --fault-sample-rate, variant as the agent picks \
         it: with perf_event, n counts the sampled faults only) vs `bpftrace -e \
         '{BPFTRACE_PAGE_FAULT}'`, with kernel.bpf_stats_enabled=1 only while the cost is read"
    );
    println!(
        "time of the touch loop, CPU time of the touching thread (and wall time): detached (A), \
         attached with defaults (B), with --fault-sample-rate 0 (C), with defaults but page \
         faults sampled through the tp_btf tracepoint (D); each the median of {TOUCHES} runs, \
         conditions in rotating order"
    );
    println!(
        "{:>5} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>15}",
        "round",
        "alloc n",
        "alloc ns",
        "bpft ns",
        "fault n",
        "fault ns",
        "bpft ns",
        "A ms",
        "B ms",
        "C ms",
        "D ms",
        "B/A",
        "C/A",
        "D/A",
        "wall B/A C/A D/A"
    );
    let start_agent = |extra: &[&str]| {
        spawn_until(
            Command::new(agent)
                .args(["run", "--metrics-addr", "127.0.0.1:0", "--sysfs-root"])
                .arg(split)
                .args(extra),
            "ready:",
            Stream::Stderr,
        )
    };
    const CONDITIONS: [Option<&[&str]>; 4] = [
        None,
        Some(&[]),
        Some(&["--fault-sample-rate", "0"]),
        Some(&["--fault-variant", "tp_btf"]),
    ];
    // [cpu, wall] x [B, C, D]
    let mut ratios: [[Vec<f64>; 3]; 2] = Default::default();
    for round in 1..=args.rounds.max(5) {
        let mut agent = start_agent(&[])?;
        let mut bpftrace_alloc = spawn_until(
            Command::new("bpftrace").args(["-e", BPFTRACE_PAGE_ALLOC]),
            "Attaching",
            Stream::Stdout,
        )?;
        let mut bpftrace_fault = spawn_until(
            Command::new("bpftrace").args(["-e", BPFTRACE_PAGE_FAULT]),
            "Attaching",
            Stream::Stdout,
        )?;
        let stats = || -> Result<[ProgStats; 4]> {
            let ours = prog_stats(agent.id())?;
            Ok([
                total(&ours, "mm_page_alloc"),
                total(&prog_stats(bpftrace_alloc.id())?, ""),
                // Kernel program names are cut at 15 bytes (`page_fault_samp`).
                total(&ours, "page_fault"),
                total(&prog_stats(bpftrace_fault.id())?, ""),
            ])
        };
        // Statistics cost two clock reads per program run: on only while measuring
        // cost, off while timing the workload (as the agent runs by default).
        fs::write(BPF_STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
        let before = stats()?;
        let _ = touch()?;
        let after = stats()?;
        fs::write(BPF_STATS, "0").context("disabling kernel.bpf_stats_enabled")?;
        stop(&mut bpftrace_alloc)?;
        stop(&mut bpftrace_fault)?;
        let [alloc, alloc_bt, fault, fault_bt] = std::array::from_fn(|i| after[i].since(before[i]));
        stop(&mut agent)?;
        // The slowdown is measured with the agent alone attached (or nothing).
        let mut times = [[Duration::ZERO; 2]; CONDITIONS.len()];
        for i in 0..CONDITIONS.len() {
            let condition = (i + round) % CONDITIONS.len();
            let mut agent = CONDITIONS[condition].map(start_agent).transpose()?;
            times[condition] = median_touch()?;
            if let Some(a) = &mut agent {
                stop(a)?;
            }
        }
        let ms = |i: usize| times[i][1].as_secs_f64() * 1e3;
        let ratio = |i: usize, k: usize| times[i][k].as_secs_f64() / times[0][k].as_secs_f64();
        for (k, per_kind) in ratios.iter_mut().enumerate() {
            for (i, r) in per_kind.iter_mut().enumerate() {
                r.push(ratio(i + 1, 1 - k));
            }
        }
        println!(
            "{round:>5} {:>8} {:>9.1} {:>9.1} {:>8} {:>9.1} {:>9.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>7.3} {:>7.3} {:>7.3} {:>5.3} {:>5.3} {:>5.3}",
            alloc.run_cnt,
            alloc.ns_per_hit(),
            alloc_bt.ns_per_hit(),
            fault.run_cnt,
            fault.ns_per_hit(),
            fault_bt.ns_per_hit(),
            ms(0),
            ms(1),
            ms(2),
            ms(3),
            ratio(1, 1),
            ratio(2, 1),
            ratio(3, 1),
            ratio(1, 0),
            ratio(2, 0),
            ratio(3, 0)
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2] - 1.0) * 100.0
    };
    for (kind, [b, c, d]) in ["CPU time", "wall time"].into_iter().zip(&mut ratios) {
        println!(
            "median slowdown ({kind}) with the agent attached: {:+.1}% (defaults), {:+.1}% \
             (page-fault probe off), {:+.1}% (page faults sampled through the tp_btf tracepoint)",
            median(b),
            median(c),
            median(d)
        );
    }
    Ok(())
}

enum Stream {
    Stdout,
    Stderr,
}

/// Start `cmd` and wait until a line of its output contains `marker`.
fn spawn_until(cmd: &mut Command, marker: &'static str, stream: Stream) -> Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let (out, other): (Box<dyn std::io::Read + Send>, Box<dyn std::io::Read + Send>) = match stream
    {
        Stream::Stdout => (
            Box::new(child.stdout.take().context("stdout")?),
            Box::new(child.stderr.take().context("stderr")?),
        ),
        Stream::Stderr => (
            Box::new(child.stderr.take().context("stderr")?),
            Box::new(child.stdout.take().context("stdout")?),
        ),
    };
    thread::spawn(move || std::io::copy(&mut BufReader::new(other), &mut std::io::sink()));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if !sent && line.contains(marker) {
                sent = tx.send(()).is_ok();
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        bail!("{cmd:?} did not print `{marker}` within 60 s");
    }
    Ok(child)
}

fn stop(child: &mut Child) -> Result<()> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait()?;
    Ok(())
}

#[derive(Clone, Copy, Debug, Default)]
struct ProgStats {
    run_time_ns: u64,
    run_cnt: u64,
}

impl ProgStats {
    fn since(self, earlier: Self) -> Self {
        Self {
            run_time_ns: self.run_time_ns - earlier.run_time_ns,
            run_cnt: self.run_cnt - earlier.run_cnt,
        }
    }

    fn ns_per_hit(self) -> f64 {
        self.run_time_ns as f64 / self.run_cnt.max(1) as f64
    }
}

/// Stats of every BPF program whose fd `pid` holds, by program name: ids from
/// `/proc/<pid>/fdinfo` (`prog_id:`), names and counters from the kernel's program
/// list (BPF_OBJ_GET_INFO_BY_FD: `run_time_ns`, `run_cnt`).
fn prog_stats(pid: u32) -> Result<BTreeMap<String, ProgStats>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            ids.push(id);
        }
    }
    let mut out = BTreeMap::new();
    for info in aya::programs::loaded_programs().filter_map(Result::ok) {
        if !ids.contains(&info.id()) {
            continue;
        }
        let name = info.name_as_str().unwrap_or("?").to_owned();
        let stats: &mut ProgStats = out.entry(name).or_default();
        stats.run_time_ns += info.run_time().as_nanos() as u64;
        stats.run_cnt += info.run_count();
    }
    Ok(out)
}

/// Sum over every program whose name starts with `prefix` (all when empty).
fn total(stats: &BTreeMap<String, ProgStats>, prefix: &str) -> ProgStats {
    stats
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .fold(ProgStats::default(), |acc, (_, s)| ProgStats {
            run_time_ns: acc.run_time_ns + s.run_time_ns,
            run_cnt: acc.run_cnt + s.run_cnt,
        })
}

/// node0 = CPU 0, node1 = CPU 1: every flip is a cross-node migration, the agent's
/// most expensive path (ring-buffer record).
fn declared_split() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("numa-bench-split-{}", std::process::id()));
    let node = dir.join("devices/system/node");
    for (rel, text) in [
        ("online", "0-1"),
        ("node0/cpulist", "0"),
        ("node1/cpulist", "1"),
        ("node0/distance", "10 21"),
        ("node1/distance", "21 10"),
    ] {
        let path = node.join(rel);
        fs::create_dir_all(path.parent().context("parent")?)?;
        fs::write(&path, text)?;
    }
    Ok(dir)
}
