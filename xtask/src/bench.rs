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

/// numa-agent's default `--fault-sample-duty` (numa-agent/src/sensors/page_fault.rs).
const DEFAULT_SAMPLE_DUTY: u8 = 10;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Migrations the workload causes per round.
    #[arg(long, default_value_t = 20_000)]
    flips: usize,
    /// Rounds of each per-hit cost measurement (each reports its own numbers); the
    /// slowdown measurement runs five times as many.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const BPFTRACE_ONE_LINER: &str =
    "tracepoint:sched:sched_migrate_task { @[args->orig_cpu, args->dest_cpu] = count(); }";
const BPFTRACE_PAGE_ALLOC: &str = "tracepoint:kmem:mm_page_alloc { @[cpu] = count(); }";
/// The agent's default page-fault variant here: the software page-fault counter, one
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
/// on the same tracepoint, then the slowdown of a page-fault-heavy workload with the
/// agent attached vs detached.
fn page_fault_rounds(args: &BenchArgs, agent: &Path, workload: &Path, split: &Path) -> Result<()> {
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
    println!();
    println!(
        "cost per hit, kernel.bpf_stats_enabled=1 only while it is read, over one `numa-workload \
         churn` (614400 first-touch faults): mm_page_alloc (variant as the agent picks it) vs \
         `bpftrace -e '{BPFTRACE_PAGE_ALLOC}'`; the page-fault sampler (default rate, held \
         attached, variant as the agent picks it: with perf_event, n counts the sampled faults \
         only) vs `bpftrace -e '{BPFTRACE_PAGE_FAULT}'`"
    );
    println!(
        "{:>5} {:>8} {:>9} {:>9} {:>8} {:>9} {:>9}",
        "round", "alloc n", "alloc ns", "bpft ns", "fault n", "fault ns", "bpft ns"
    );
    for round in 1..=args.rounds {
        // Duty 100 holds both probes attached, through the storm churn makes too.
        let mut agent = start_agent(&["--fault-sample-duty", "100"])?;
        let mut bpftrace = [BPFTRACE_PAGE_ALLOC, BPFTRACE_PAGE_FAULT].map(|prog| {
            spawn_until(
                Command::new("bpftrace").args(["-e", prog]),
                "Attaching",
                Stream::Stdout,
            )
        });
        let [Ok(alloc_bt), Ok(fault_bt)] = &mut bpftrace else {
            for b in bpftrace.iter_mut().flatten() {
                let _ = stop(b);
            }
            let _ = stop(&mut agent);
            bail!("bpftrace did not start: {:?}", bpftrace.map(|b| b.err()));
        };
        let stats = || -> Result<[ProgStats; 4]> {
            let ours = prog_stats(agent.id())?;
            Ok([
                total(&ours, "mm_page_alloc"),
                total(&prog_stats(alloc_bt.id())?, ""),
                // Kernel program names are cut at 15 bytes (`page_fault_samp`).
                total(&ours, "page_fault"),
                total(&prog_stats(fault_bt.id())?, ""),
            ])
        };
        // Statistics cost two clock reads per program run: on only while measuring
        // cost, off while timing the workload (as the agent runs by default).
        fs::write(BPF_STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
        let before = stats()?;
        let _ = churn_stats(workload, REPS)?;
        let after = stats()?;
        fs::write(BPF_STATS, "0").context("disabling kernel.bpf_stats_enabled")?;
        stop(alloc_bt)?;
        stop(fault_bt)?;
        stop(&mut agent)?;
        let [alloc, alloc_bt, fault, fault_bt] = std::array::from_fn(|i| after[i].since(before[i]));
        println!(
            "{round:>5} {:>8} {:>9.1} {:>9.1} {:>8} {:>9.1} {:>9.1}",
            alloc.run_cnt,
            alloc.ns_per_hit(),
            alloc_bt.ns_per_hit(),
            fault.run_cnt,
            fault.ns_per_hit(),
            fault_bt.ns_per_hit(),
        );
    }

    // The slowdown. Each measurement is one `churn` run, in CPU time of the touching
    // thread per repetition (the wall time carries the shared host's steal), summed up
    // two ways: its 10th percentile, steady on this host but blind to a cost that
    // changes within the run (the defaults' probes are attached for part of each
    // window, and the percentile comes from the rest), and its mean without the
    // repetitions over 1.5 x the median (ones the host disturbed; the probes slow one
    // by ~1.15 x at most), which is what the workload pays over time but spreads more.
    // Each condition's run sits between two detached runs of its length and is divided
    // by their mean, so drift of the host cancels; conditions rotate from round to
    // round. The agent is started before and stopped after its run, so its start-up is
    // not timed.
    const CONDITIONS: [(&str, &[&str], usize); 3] = [
        (
            "defaults, a run of ~10 s (two 5 s windows of the duty cycle; the allocation \
             storm the workload makes puts the page-alloc probe on it after its first second)",
            &[],
            LONG_REPS,
        ),
        (
            "both probes attached all the time (--fault-sample-duty 100)",
            &["--fault-sample-duty", "100"],
            REPS,
        ),
        (
            "page-alloc probe alone, attached all the time (--fault-sample-rate 0 \
             --alloc-storm-rate 0)",
            &["--fault-sample-rate", "0", "--alloc-storm-rate", "0"],
            REPS,
        ),
    ];
    let rounds = args.rounds.max(3) * 5;
    println!();
    println!(
        "slowdown of `numa-workload churn --mib 8 --cpu 1` (8 MiB mapped and touched page by \
         page, {REPS} times, or {LONG_REPS} for A: every page a first-touch fault and a page \
         allocation; each repetition timed from mmap to its last write, in CPU time of the \
         touching thread), agent attached vs detached: per run its 10th-percentile repetition \
         (p10) and its mean one without those over 1.5 x its median (mean), each attached \
         run over the detached runs of the same length just before and after it; {rounds} \
         rounds, conditions rotating"
    );
    for (i, (label, _, _)) in CONDITIONS.iter().enumerate() {
        println!("  {}: {label}", (b'A' + i as u8) as char);
    }
    println!(
        "{:>5} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "round", "detached", "A p10", "A mean", "B p10", "B mean", "C p10", "C mean"
    );
    let mut ratios: [[Vec<f64>; 2]; CONDITIONS.len()] = Default::default();
    for round in 0..rounds {
        // The detached run before the next condition, if it has the same length: a
        // run of 3000 repetitions is compared with detached runs of 3000, since run
        // length alone moves these figures by a few percent here.
        let mut before: Option<(usize, [f64; 2])> = None;
        let mut row = [[0.0; 2]; CONDITIONS.len()];
        for k in 0..CONDITIONS.len() {
            let c = (k + round) % CONDITIONS.len();
            let (_, flags, reps) = CONDITIONS[c];
            let before_run = match before.take() {
                Some((n, stats)) if n == reps => stats,
                _ => churn_stats(workload, reps)?,
            };
            let mut agent = start_agent(flags)?;
            let attached = churn_stats(workload, reps);
            stop(&mut agent)?;
            let after = churn_stats(workload, reps)?;
            let attached = attached?;
            for (s, ratio) in row[c].iter_mut().enumerate() {
                *ratio = attached[s] / ((before_run[s] + after[s]) / 2.0);
                ratios[c][s].push(*ratio);
            }
            before = Some((reps, after));
        }
        let detached = before.map_or(0.0, |(_, stats)| stats[1]);
        print!("{:>5} {:>7.2}ms", round + 1, detached / 1e6);
        for [p10, mean] in row {
            print!(" {p10:>7.3} {mean:>7.3}");
        }
        println!();
    }
    let mut medians = [[0.0; 2]; CONDITIONS.len()];
    for (i, condition) in ratios.iter_mut().enumerate() {
        for (s, r) in condition.iter_mut().enumerate() {
            r.sort_by(f64::total_cmp);
            let at = |q: f64| (r[((r.len() - 1) as f64 * q).round() as usize] - 1.0) * 100.0;
            medians[i][s] = at(0.5);
            println!(
                "median slowdown, {} {}: {:+.1}% (quartiles {:+.1}% .. {:+.1}%)",
                (b'A' + i as u8) as char,
                ["p10", "mean"][s],
                at(0.5),
                at(0.25),
                at(0.75)
            );
        }
    }
    // In a storm both probes are attached for the duty's share of each window, at B's
    // cost, and detached for the rest, where A's p10 comes from and which costs
    // nothing if detaching works (the figure is then at the method's floor).
    let duty = f64::from(DEFAULT_SAMPLE_DUTY) / 100.0;
    println!(
        "defaults in a long storm: {duty} x B = {:+.1}% (p10) / {:+.1}% (mean), the detached \
         part taken as free (A p10: {:+.1}%); measured as A's mean over its whole ~10 s run, \
         its start included: {:+.1}%",
        duty * medians[1][0],
        duty * medians[1][1],
        medians[0][0],
        medians[0][1]
    );
    Ok(())
}

/// Repetitions of a `churn` run (~1 s here), and of the defaults' longer run.
const REPS: usize = 300;
const LONG_REPS: usize = 3000;

/// One `churn` run of `reps` repetitions on CPU 1 (node1 of the declared split: a
/// remote first touch for every page), in ns of CPU time per repetition: its 10th
/// percentile, and its mean without those over 1.5 x the median.
fn churn_stats(workload: &Path, reps: usize) -> Result<[f64; 2]> {
    let out = Command::new(workload)
        .args(["churn", "--mib", "8", "--cpu", "1", "--reps"])
        .arg(reps.to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("running numa-workload churn")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Sorted by the workload.
    let reps: Vec<f64> = text
        .lines()
        .find_map(|l| l.strip_prefix("rep_cpu_ns "))
        .map(|t| {
            t.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if !out.status.success() || reps.len() < 10 {
        bail!("numa-workload churn: {}\n{text}", out.status);
    }
    let median = reps[reps.len() / 2];
    let kept: Vec<f64> = reps
        .iter()
        .copied()
        .filter(|&r| r <= 1.5 * median)
        .collect();
    Ok([
        reps[reps.len() / 10],
        kept.iter().sum::<f64>() / kept.len() as f64,
    ])
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
