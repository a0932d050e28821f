//! The `numa-workload` binary as a child process.
use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// `NUMA_WORKLOAD_BIN` (set by `cargo xtask test`), else the workspace's debug build.
pub fn workload_bin() -> PathBuf {
    std::env::var_os("NUMA_WORKLOAD_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/numa-workload"),
        PathBuf::from,
    )
}

/// The `minflt <n>` line of `numa-workload churn`'s output: the faults the kernel
/// counted for the process (getrusage).
pub fn churn_minflt(stdout: &[u8]) -> Option<f64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .find_map(|l| l.strip_prefix("minflt ")?.trim().parse().ok())
}

/// `numa-workload flip`, waiting for a line on stdin before it flips.
pub struct Flipper {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The process (thread group) id.
    pub pid: u32,
    /// The flipping thread.
    pub tid: u32,
}

impl Flipper {
    pub fn spawn(flips: usize, comm: Option<&str>) -> Result<Self> {
        let mut cmd = Command::new(workload_bin());
        cmd.args(["flip", "--flips", &flips.to_string()]);
        if let Some(c) = comm {
            cmd.args(["--comm", c]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", workload_bin().display()))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let tid = line
            .trim()
            .strip_prefix("tid ")
            .and_then(|t| t.parse().ok())
            .with_context(|| format!("unexpected first line {line:?}"))?;
        let pid = child.id();
        Ok(Self {
            child,
            stdin,
            stdout,
            pid,
            tid,
        })
    }

    /// Let it flip, and wait until it has exited (reaped).
    pub fn run_to_exit(mut self) -> Result<()> {
        let mut stdin = self.stdin.take().context("stdin")?;
        stdin.write_all(b"go\n")?;
        drop(stdin);
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let status = self.child.wait()?;
        if !status.success() || line.trim() != "done" {
            bail!("workload {} ended with {status}, said {line:?}", self.pid);
        }
        Ok(())
    }
}

impl Drop for Flipper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
