//! `numa-agent`: the numa-sensor agent's command line.
mod attach;
mod check;
mod policy_cmd;
mod run;
mod topology_cmd;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "numa-agent",
    version,
    about = "eBPF sensor for NUMA machines: cross-node task migrations and remote memory accesses",
    long_about = "eBPF sensor for NUMA machines. Loads tracepoint programs into the running \
                  kernel, classifies what they see against the machine's NUMA topology, and \
                  reports NUMA errors as Prometheus metrics and NDJSON events.\n\n\
                  Needs Linux with BTF and root, or CAP_BPF + CAP_PERFMON. Log verbosity \
                  follows RUST_LOG (default: info)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and attach the sensor, serve metrics, and optionally stream events.
    ///
    /// Monitor only: without a policy every user process is in scope (the agent's own
    /// threads and kernel threads are not), and nothing is acted on. Stops cleanly on
    /// SIGINT/SIGTERM, detaching every program.
    Run(RunArgs),

    /// Work with NUMAPolicy documents (`concurrency.gokore.io/v1alpha1`).
    #[command(subcommand)]
    Policy(PolicyCommand),

    /// Print the NUMA topology the agent uses: nodes, their CPUs and memory, the
    /// distance matrix. Read from sysfs and cross-checked with hwloc; disagreements
    /// are warned about on stderr and sysfs wins.
    Topology(TopologyArgs),

    /// Internal: print hwloc's view of the root named by HWLOC_FSROOT as JSON (run
    /// by `topology` and `run` in a child process; see topology/hwloc.rs).
    #[command(name = "hwloc-probe", hide = true)]
    HwlocProbe,

    /// Preflight: can `run` work on this kernel, and what will it not see?
    ///
    /// Reports kernel version, BTF, tracefs, lockdown, capabilities held vs needed,
    /// cgroup mode, numa_balancing and NUMA nodes, then loads and attaches a trivial
    /// program for every probe variant (detaching at once) and says which attach, which
    /// the agent uses, and for each that does not, why and what to change. Changes
    /// nothing. Exit code 0: `run` can work; 1: it cannot (see the FAIL lines).
    Check(CheckArgs),

    /// Watch one workload live, without Kubernetes or a running daemon.
    ///
    /// Loads the sensor, keeps only the target's records and shows, refreshed every
    /// second: CPU time per NUMA node, cross-node migrations per second from -> to,
    /// local vs remote memory accesses (n/a: not sensed yet), and the recent NUMA
    /// errors. Keys: q/Esc/Ctrl-C quit, s cycles the sort. Ends when the target exits,
    /// after --duration, or on quit; detaches every program.
    Attach(AttachArgs),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate NUMAPolicy files: print every error (file:line: field path: problem)
    /// and every warning about this machine; exit non-zero if any file is invalid.
    Validate(ValidateArgs),
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// Policy files or directories (every *.yaml, *.yml, *.json in them).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Check node ids against the topology under this directory (warnings only).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/sys",
        env = "NUMA_SYSFS_ROOT"
    )]
    sysfs_root: PathBuf,
}

#[derive(Debug, clap::Args)]
struct TopologyArgs {
    /// Read sysfs under this directory instead of /sys (`/host/sys` in a container,
    /// or an unpacked snapshot). hwloc reads the directory above it (HWLOC_FSROOT).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/sys",
        env = "NUMA_SYSFS_ROOT"
    )]
    sysfs_root: PathBuf,

    /// `table` for people, `json` for programs (schema in README.md).
    #[arg(short = 'o', long, value_name = "FORMAT", value_enum, default_value_t = TopologyFormat::Table)]
    output: TopologyFormat,

    /// Skip the hwloc cross-check.
    #[arg(long)]
    no_hwloc: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TopologyFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    /// Watch this process (all its threads).
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,

    /// Watch every process whose command name (/proc/PID/comm, 15 bytes) is NAME,
    /// including ones that start later; ends when none is left.
    #[arg(long, value_name = "NAME")]
    comm: Option<String>,

    /// Watch the processes of this cgroup: a directory under a cgroup mount, or the
    /// path as /proc/PID/cgroup prints it (looked up under every hierarchy, cgroup2 first).
    #[arg(long, value_name = "PATH")]
    cgroup: Option<PathBuf>,

    /// Watch a container's processes, found by its cgroup's name (docker, containerd,
    /// CRI-O, podman); at least 12 hex digits of the id.
    #[arg(long, value_name = "ID")]
    container: Option<String>,
}

#[derive(Debug, clap::Args)]
struct AttachArgs {
    #[command(flatten)]
    target: TargetArgs,

    /// Stream NDJSON to stdout instead of the live view: every NUMAStealError of the
    /// target (the `run --events json` schema) and one `AttachInterval` per second.
    #[arg(long)]
    json: bool,

    /// Stop after this long (e.g. `30s`, `5m`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,

    #[command(flatten)]
    host: HostPaths,
}

/// Where the agent reads the machine: shared by `run` and `attach`.
#[derive(Debug, clap::Args)]
struct HostPaths {
    /// Read the NUMA topology (devices/system/node) under this directory instead of
    /// /sys: `/host/sys` in a container, or a fixture tree that declares a node split.
    /// Kernel events stay real; only the cpu->node map changes.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/sys",
        env = "NUMA_SYSFS_ROOT"
    )]
    sysfs_root: PathBuf,

    /// Resolve thread ids under this proc mount (`/host/proc` in a container). It must
    /// show the host's pid namespace (the kernel reports host pids): the agent refuses
    /// to start otherwise.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/proc",
        env = "NUMA_PROC_ROOT"
    )]
    proc_root: PathBuf,

    /// Use tracefs at this path instead of finding it in /proc/mounts (and mounting
    /// it on /sys/kernel/tracing when absent).
    #[arg(long, value_name = "DIR")]
    tracefs: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Print the report as one JSON document instead of lines.
    #[arg(long)]
    json: bool,

    /// Read the NUMA topology under this directory (as `run --sysfs-root`).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/sys",
        env = "NUMA_SYSFS_ROOT"
    )]
    sysfs_root: PathBuf,

    /// Check tracefs at this path instead of the one in /proc/mounts (as `run --tracefs`).
    #[arg(long, value_name = "DIR")]
    tracefs: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Serve Prometheus metrics on this address (`/metrics`, `/healthz`, `/readyz`). Loopback by
    /// default; use 0.0.0.0:9477 to let a remote Prometheus scrape it.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9477",
        env = "NUMA_METRICS_ADDR"
    )]
    metrics_addr: SocketAddr,

    /// Stream NUMA errors to stdout: `json` writes one JSON object per line
    /// (schema in README.md); `none` writes nothing.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = EventsFormat::None)]
    events: EventsFormat,

    #[command(flatten)]
    host: HostPaths,

    /// Length of the window over which each workload's cross-node memory ratio is
    /// computed, e.g. `5s`, `500ms`.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    access_window: std::time::Duration,

    /// Cross-node memory ratio (remote / (local + remote) pages allocated in a window,
    /// 0-1) above which a workload's window is reported as a NUMAAccessError.
    #[arg(long, value_name = "RATIO", default_value_t = 0.15, value_parser = parse_ratio)]
    max_cross_access: f64,

    /// Windows with fewer classified pages than this are too little evidence and never
    /// reported.
    #[arg(long, value_name = "PAGES", default_value_t = 256)]
    min_access_pages: u64,

    /// Sample one user page fault in N per CPU (the kernel's software page-fault
    /// counter, else `exceptions:page_fault_user` on x86) and resolve each sample's
    /// page to its node with move_pages(2); 0 turns the probe off (see
    /// --fault-sample-duty for what it costs while on). Counted in
    /// numa_sampled_faults_total and used for a workload's access ratio when its
    /// window has too few allocated pages (README).
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          default_value_t = numa_agent::sensors::page_fault::DEFAULT_SAMPLE_RATE)]
    fault_sample_rate: u32,

    /// Keep the page-fault sampler attached for this percentage (`10` or `10%`) of every
    /// --access-window, its first part, and detached for the rest. While attached, the
    /// hook costs every user fault on the host, whatever the rate (several percent on
    /// fault-heavy workloads here); detached, nothing (README "Cost"). Faults in the
    /// detached part are not sampled: faults ~= samples x rate x 100 / PERCENT for a
    /// steady workload, and a window's sampled verdict needs --min-access-samples x rate
    /// faults within the attached part. The page-alloc probe keeps the same share
    /// during an allocation storm (--alloc-storm-rate). 100 keeps both attached;
    /// --fault-sample-rate 0 turns the sampler off.
    #[arg(long, value_name = "PERCENT", allow_negative_numbers = true, env = "NUMA_FAULT_SAMPLE_DUTY",
          default_value_t = numa_agent::sensors::page_fault::DEFAULT_SAMPLE_DUTY,
          value_parser = parse_percent)]
    fault_sample_duty: u8,

    /// Count every page allocation (kmem:mm_page_alloc) until one CPU makes more than
    /// this many allocations per second, measured over about a second; then, for the
    /// whole host, the probe follows the sampler's duty cycle (attached for the first
    /// --fault-sample-duty of each window) until an attached part sees every CPU below
    /// half of it. The probe costs each allocation a fixed ~100 ns here (README
    /// "Cost"), so the default holds it to about 1% of any CPU; a burst of fewer than
    /// 0.9 x this many allocations on one CPU is always counted whole. During a storm
    /// ratios are those of the attached parts and page counts cover only them
    /// (numa_page_alloc_duty, `page_alloc_share` in events). 0 counts every page,
    /// always.
    #[arg(long, value_name = "PER_SECOND", env = "NUMA_ALLOC_STORM_RATE", allow_negative_numbers = true,
          default_value_t = numa_agent::alloc_storm::DEFAULT_STORM_RATE)]
    alloc_storm_rate: u64,

    /// Internal (tests): try only these page-fault attach variants (`perf_event`,
    /// `tp_btf`, `raw_tracepoint`, `tracepoint`); the default tries all, cheapest first.
    #[arg(long, value_name = "VARIANT", hide = true,
          value_parser = ["perf_event", "tp_btf", "raw_tracepoint", "tracepoint"])]
    fault_variant: Vec<String>,

    /// Internal (tests): try only these page-allocation attach variants
    /// (`raw_tracepoint`, `tracepoint`); the default tries both, cheapest first.
    #[arg(long, value_name = "VARIANT", hide = true,
          value_parser = ["raw_tracepoint", "tracepoint"])]
    page_alloc_variant: Vec<String>,

    /// Windows decided by sampled faults need at least this many resolved samples.
    #[arg(long, value_name = "SAMPLES", default_value_t = 16)]
    min_access_samples: u64,

    /// NUMAPolicy file or directory (repeatable); re-read every 2 s, an invalid version
    /// is rejected and the previous valid one stays in force. At start every file must
    /// be valid. Without a policy nothing is evaluated or acted on.
    #[arg(long, value_name = "PATH")]
    policy: Vec<PathBuf>,

    /// Append the policy audit trail (one JSON object per decision) to this file;
    /// without it audit lines go to the log (target `audit`).
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,

    /// Keep a workload's metric series this long after its cgroup is removed (so the
    /// last increments are scraped), then drop them. E.g. `30s`, `5m`.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    workload_grace: std::time::Duration,

    /// Also write the event stream (NDJSON, same schema as `--events json`) to this
    /// file, rotated by size: FILE.1 is the newest full file, up to FILE.<keep>.
    #[arg(long, value_name = "FILE", env = "NUMA_EVENTS_FILE")]
    events_file: Option<PathBuf>,

    /// Rotate --events-file before a line would take it past this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    events_file_max_bytes: u64,

    /// Rotated --events-file copies to keep (0: truncate instead).
    #[arg(long, value_name = "N", default_value_t = 5)]
    events_file_keep: u32,

    /// Turn on the kernel's per-program run statistics (kernel.bpf_stats_enabled) while
    /// the agent runs, so numa_bpf_program_run_seconds_total and _runs_total advance.
    /// Costs two clock reads per run of every eBPF program on the host; off by default.
    #[arg(long)]
    bpf_stats: bool,
}

/// A whole percentage from 1 to 100, with or without a `%` sign.
fn parse_percent(text: &str) -> Result<u8, String> {
    let digits = text.trim().strip_suffix('%').unwrap_or(text.trim());
    match digits.parse::<u8>() {
        Ok(n @ 1..=100) => Ok(n),
        _ => Err(format!(
            "`{text}`: a whole percentage from 1 to 100, e.g. 10 or 10% (--fault-sample-rate 0 \
             turns the sampler off)"
        )),
    }
}

/// A ratio between 0 and 1 inclusive.
fn parse_ratio(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|e| format!("`{text}` is not a number: {e}"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("`{text}` is not between 0 and 1"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EventsFormat {
    None,
    Json,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Policy(PolicyCommand::Validate(args)) => policy_cmd::validate(&args),
        Command::Topology(args) => topology_cmd::run(args),
        Command::HwlocProbe => topology_cmd::hwloc_probe(),
        Command::Check(args) => return check::check(args),
        Command::Attach(args) => attach::attach(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("numa-agent: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_percent;

    #[test]
    fn percentages_take_an_optional_sign_and_stay_in_range() {
        assert_eq!(parse_percent("10"), Ok(10));
        assert_eq!(parse_percent("10%"), Ok(10));
        assert_eq!(parse_percent("100%"), Ok(100));
        for bad in ["0", "101", "abc", "%", "-5", "10.5"] {
            let err = parse_percent(bad).expect_err(bad);
            assert!(err.contains(bad) && err.contains("1 to 100"), "{err}");
        }
    }
}
