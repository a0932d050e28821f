//! `cargo xtask <task>`: everything beyond a plain `cargo build`, installing what it
//! needs first, so the README's two commands work on a machine with only Rust.
mod bench;
mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "numa-sensor developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent, quiet when all is there):
    /// apt packages, nightly rust-src, bpf-linker against the nightly's own LLVM.
    Setup,
    /// Build the agent with its eBPF programs.
    Build,
    /// Build, then run the agent on this machine (`numa-agent run` with safe
    /// defaults: monitor only, metrics on 127.0.0.1:9477). Arguments after `--` go to
    /// `numa-agent run`, e.g. `cargo xtask run -- --events json`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Every test: unit tests, the privileged integration tests against the running
    /// kernel (root required), then the scenarios in multi-node QEMU guests.
    Test,
    /// Boot Debian's 6.1 and 6.12 kernels in 2- and 4-node QEMU guests (TCG) and run
    /// the scenarios inside; part of `test`.
    Vm(vm::VmArgs),
    /// In-kernel cost of the sensor's programs next to an equivalent bpftrace
    /// one-liner, and the slowdown of a page-fault-heavy workload with the agent
    /// attached vs detached, measured side by side (root required).
    Bench(bench::BenchArgs),
    /// Time loading the NUMA topology from every real-machine sysfs snapshot (sysfs
    /// alone, and with the hwloc cross-check). Arguments after `--` go to the timing
    /// binary: `--rounds N`, or tarballs to time instead of all.
    BenchTopology {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Build => build_agent(Profile::Debug).map(drop),
        Task::Run { args } => {
            let agent = build_agent(Profile::Debug)?;
            let mut cmd = Command::new(&agent);
            cmd.arg("run").args(args);
            exec(cmd)
        }
        Task::Test => test(),
        Task::Vm(args) => {
            let agent = build_agent(Profile::Debug)?;
            let guest = build_test_bin("numa-vm-guest", Profile::Debug)?;
            vm::run(&args, &agent, &guest, &build_workload(Profile::Debug)?)
        }
        Task::Bench(args) => {
            // Timed as users run it: optimised, agent and workload alike.
            let agent = build_agent(Profile::Release)?;
            let workload = build_workload(Profile::Release)?;
            bench::run(&args, &agent, &workload)
        }
        Task::BenchTopology { args } => {
            // Needs hwloc and bzip2 but not the eBPF programs: no `cargo()` here.
            setup::ensure_apt(setup::APT_PACKAGES)?;
            let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            cmd.current_dir(workspace_root())
                .args([
                    "run",
                    "--locked",
                    "--release",
                    "--package",
                    "numa-agent",
                    "--example",
                    "topology_load_time",
                    "--",
                ])
                .args(args);
            run_checked(cmd)
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `cargo` with the eBPF build made mandatory (no silent empty object).
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root())
        .env("NUMA_EBPF_REQUIRED", "1");
    cmd
}

pub fn run_checked(mut cmd: Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Profile {
    Debug,
    Release,
}

/// `cargo build` of one binary of `package`; returns its path.
fn build_bin(package: &str, name: &str, profile: Profile) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--locked", "--package", package, "--bin", name]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    run_checked(cmd)?;
    let dir = match profile {
        Profile::Debug => "target/debug",
        Profile::Release => "target/release",
    };
    Ok(workspace_root().join(dir).join(name))
}

fn build_agent(profile: Profile) -> Result<PathBuf> {
    setup::run()?;
    build_bin("numa-agent", "numa-agent", profile)
}

fn build_workload(profile: Profile) -> Result<PathBuf> {
    build_test_bin("numa-workload", profile)
}

/// One of the `numa-tests` binaries (test workloads, the VM scenario runner).
fn build_test_bin(name: &str, profile: Profile) -> Result<PathBuf> {
    build_bin("numa-tests", name, profile)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn test() -> Result<()> {
    let agent = build_agent(Profile::Debug)?;
    let workload = build_workload(Profile::Debug)?;

    println!("== unit tests (default members)");
    let mut unit = cargo();
    unit.args(["test", "--locked"]);
    run_checked(unit)?;

    println!("== privileged integration tests against the running kernel");
    if !is_root() {
        bail!(
            "the integration tests load eBPF programs and need root; run `sudo -E cargo xtask test`"
        );
    }
    let mut integration = cargo();
    integration
        .args(["test", "--locked", "--package", "numa-tests"])
        .env("NUMA_AGENT_BIN", &agent)
        .env("NUMA_WORKLOAD_BIN", &workload)
        // The tests share one kernel: each watches its own threads, but keep them
        // sequential so their workloads do not compete for the two CPUs.
        .args(["--", "--test-threads=1"]);
    run_checked(integration)?;

    println!("== multi-node QEMU guests (Debian 6.1 and 6.12 kernels)");
    let guest = build_test_bin("numa-vm-guest", Profile::Debug)?;
    vm::run(&vm::VmArgs::all(), &agent, &guest, &workload)
}

fn exec(mut cmd: Command) -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    let err = cmd.exec();
    Err(err).with_context(|| format!("executing {cmd:?}"))
}
