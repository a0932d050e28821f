//! A real Prometheus server (Debian's `prometheus` package) as the oracle for the
//! agent's metrics: it scrapes the agent and is queried back through its HTTP API.
//! Bound to 127.0.0.1 on a port picked per test, killed when dropped.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use tempfile::TempDir;

pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// The shipped alert rules file (deploy/prometheus/numa-alerts.rules.yml).
pub fn rules_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/numa-alerts.rules.yml")
}

/// The names of the alerts the shipped rules file declares, in its order: what the
/// tests check against, so a new rule needs no edit there.
pub fn shipped_alerts() -> Vec<String> {
    std::fs::read_to_string(rules_file())
        .expect("deploy/prometheus/numa-alerts.rules.yml")
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

/// GET `path` from `addr` (`host:port`) over HTTP/1.0; returns status code and body.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_owned()))
}

/// Percent-encode a query parameter value (RFC 3986 unreserved characters stay).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub struct Prometheus {
    child: Child,
    pub addr: String,
    _dir: TempDir,
}

impl Prometheus {
    /// Start Prometheus with `config` (prometheus.yml text; `rule_files` resolve
    /// against `rules_dir`) and wait until it reports ready.
    pub fn start(config: &str, rules_dir: Option<&Path>) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("numa-prom-").tempdir()?;
        if let Some(rules) = rules_dir {
            for entry in std::fs::read_dir(rules)? {
                let entry = entry?;
                std::fs::copy(entry.path(), dir.path().join(entry.file_name()))?;
            }
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log"))?)
            .spawn()
            .context("starting prometheus")?;
        let mut prom = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http_get(&prom.addr, "/-/ready") {
                return Ok(prom);
            }
            if let Some(status) = prom.child.try_wait()? {
                bail!("prometheus exited ({status}):\n{}", prom.log());
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready after 60 s:\n{}", prom.log());
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<endpoint>`; returns `data` of a successful answer.
    pub fn api(&self, endpoint_and_query: &str) -> Result<Value> {
        let (status, body) = http_get(&self.addr, &format!("/api/v1/{endpoint_and_query}"))?;
        let v: Value = serde_json::from_str(&body).with_context(|| format!("not JSON: {body}"))?;
        if status != 200 || v["status"] != "success" {
            bail!("{endpoint_and_query}: HTTP {status}: {body}");
        }
        Ok(v["data"].clone())
    }

    /// Instant query; the vector result.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.api(&format!("query?query={}", encode(expr)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Poll `expr` until it returns at least one sample, up to `timeout`.
    pub fn wait_for(&self, expr: &str, timeout: Duration) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(expr)?;
            if !r.is_empty() {
                return Ok(r);
            }
            if Instant::now() > deadline {
                bail!(
                    "`{expr}` returned nothing after {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The numeric value of one instant-vector sample.
pub fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Only our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills the agent child `pid` if a test panics before stopping it (`Agent` has no
/// `Drop`); `disarm` before `Agent::stop`, which reaps the pid.
pub struct KillOnPanic {
    pid: Option<u32>,
}

impl KillOnPanic {
    pub fn new(pid: u32) -> Self {
        Self { pid: Some(pid) }
    }

    pub fn disarm(&mut self) {
        self.pid = None;
    }
}

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SAFETY: our own, not yet reaped child, by its pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}
