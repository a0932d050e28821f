//! `cargo xtask bench`: the in-kernel cost per hit of the sensor's programs, next to
//! an equivalent `bpftrace` one-liner attached to the same tracepoint at the same
//! time, so both see exactly the same hits. Cost comes from the kernel's own BPF
//! stats (`kernel.bpf_stats_enabled`): `run_time_ns` and `run_cnt`, read from each
//! process's `/proc/<pid>/fdinfo` of its program fds.
use std::{
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
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

pub fn run(args: &BenchArgs, agent: &Path, workload: &Path) -> Result<()> {
    setup::ensure_apt(&["bpftrace"])?;
    let split = declared_split()?;
    let previous = fs::read_to_string(BPF_STATS).context("reading kernel.bpf_stats_enabled")?;
    fs::write(BPF_STATS, "1").context("enabling kernel.bpf_stats_enabled (needs root)")?;
    let result = rounds(args, agent, workload, &split);
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
    let before = (prog_stats(agent.id())?, prog_stats(bpftrace.id())?);
    let mut flip = Command::new(workload);
    flip.args(["flip", "--no-wait", "--flips", &flips.to_string()])
        .stdout(Stdio::null());
    run_checked(flip)?;
    let after = (prog_stats(agent.id())?, prog_stats(bpftrace.id())?);
    stop(&mut agent)?;
    stop(&mut bpftrace)?;
    Ok((after.0.since(before.0), after.1.since(before.1)))
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

/// Sum of the stats of every tracepoint program (`prog_type: 5`,
/// BPF_PROG_TYPE_TRACEPOINT) whose fd `pid` holds.
fn prog_stats(pid: u32) -> Result<ProgStats> {
    let mut total = ProgStats::default();
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if field("prog_type:") != Some(5) {
            continue;
        }
        total.run_time_ns += field("run_time_ns:").unwrap_or(0);
        total.run_cnt += field("run_cnt:").unwrap_or(0);
    }
    Ok(total)
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
