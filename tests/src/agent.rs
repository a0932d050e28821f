//! The agent as a child process, the way an operator runs it.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The agent binary: `NUMA_AGENT_BIN` (set by `cargo xtask test`), else the
/// workspace's debug build.
pub fn agent_bin() -> PathBuf {
    std::env::var_os("NUMA_AGENT_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/numa-agent"),
        PathBuf::from,
    )
}

pub struct Agent {
    child: Child,
    stdout: thread::JoinHandle<Vec<String>>,
    stderr_rx: mpsc::Receiver<String>,
    stderr_lines: Vec<String>,
    pub metrics_addr: String,
}

pub struct Stopped {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Agent {
    /// Start `numa-agent <args>` and wait until it logs `ready:`.
    pub fn start(args: &[&str]) -> Result<Self> {
        let mut child = Command::new(agent_bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", agent_bin().display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let stdout = thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect()
        });
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, stderr_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = Self {
            child,
            stdout,
            stderr_rx,
            stderr_lines: Vec::new(),
            metrics_addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match agent.stderr_rx.recv_timeout(left) {
                Ok(line) => {
                    let ready = line
                        .split_once("serving metrics on http://")
                        .and_then(|(_, rest)| rest.split_once("/metrics"))
                        .map(|(addr, _)| addr.to_owned());
                    agent.stderr_lines.push(line);
                    if let Some(addr) = ready {
                        agent.metrics_addr = addr;
                        return Ok(agent);
                    }
                }
                Err(_) => {
                    let _ = agent.child.kill();
                    let stopped = agent.wait()?;
                    bail!(
                        "agent did not become ready ({}); stderr:\n{}",
                        stopped.status,
                        stopped.stderr.join("\n")
                    );
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET `path` from the agent's HTTP server; returns the body.
    pub fn http_get(&self, path: &str) -> Result<String> {
        let mut stream =
            TcpStream::connect(&self.metrics_addr).context("connecting to the agent")?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.metrics_addr
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("no HTTP header end")?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {head}");
        }
        Ok(body.to_owned())
    }

    /// SIGTERM, then wait for a clean exit and collect everything it printed.
    pub fn stop(self) -> Result<Stopped> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait()
    }

    /// SIGINT (Ctrl-C), then as [`Agent::stop`].
    pub fn interrupt(self) -> Result<Stopped> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait()
    }

    fn wait(mut self) -> Result<Stopped> {
        let status = self.child.wait()?;
        let stdout = self
            .stdout
            .join()
            .map_err(|_| anyhow::anyhow!("stdout reader panicked"))?;
        self.stderr_lines.extend(self.stderr_rx.try_iter());
        Ok(Stopped {
            status,
            stdout,
            stderr: self.stderr_lines,
        })
    }
}

/// Value of the sample `name{labels}` in Prometheus text, labels written exactly as
/// the agent renders them (sorted, `k="v"` joined by commas).
pub fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name_and_labels)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
