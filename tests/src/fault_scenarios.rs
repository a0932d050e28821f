//! Sampled user page faults (`exceptions:page_fault_user`), shared by the host test
//! and the QEMU guests' runner: a workload touches memory it placed on purpose; the
//! agent's sampled, move_pages-resolved faults for it must be about the faults the
//! kernel itself counted for it (`/proc/<pid>/stat` minflt + majflt) divided by the
//! sampling rate, and resolved to the node numa_maps shows the memory on.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::{
    agent::{Agent, sample},
    scenarios::TOUCH_MIB,
};

/// A `numa-workload touch` run whose faults are all taken on `cpu_node` and whose
/// touched memory lands on `mem_node`.
pub struct FaultCase {
    pub label: String,
    pub command: Vec<String>,
    pub cpu_node: u32,
    pub mem_node: u32,
}

/// What one run measured.
#[derive(Debug)]
pub struct FaultOutcome {
    pub variant: String,
    pub rate: u64,
    /// Pages the workload touched (one first-touch user fault each).
    pub touched: u64,
    /// minflt + majflt of the workload from /proc/<pid>/stat once it had touched.
    pub kernel_faults: u64,
    /// Resolved samples the agent reported for the workload, (cpu_node, mem_node) pair
    /// of the case, and any other pair.
    pub sampled_pair: u64,
    pub sampled_other: u64,
}

impl std::fmt::Display for FaultOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} sampled faults on the pair (+{} elsewhere) at 1/{}; touched {} pages, \
             kernel counted {} faults: expected {:.0}..{:.0}",
            self.variant,
            self.sampled_pair,
            self.sampled_other,
            self.rate,
            self.touched,
            self.kernel_faults,
            self.touched as f64 / self.rate as f64,
            self.kernel_faults as f64 / self.rate as f64
        )
    }
}

/// minflt + majflt (fields 10 and 12 of /proc/<pid>/stat, proc(5)).
fn kernel_faults(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after `comm`, which may hold spaces and ends at the last ')'.
    let rest = &stat[stat.rfind(')').context("no ) in stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): minflt is f[7], majflt f[9].
    Ok(f.get(7).context("short stat")?.parse::<u64>()?
        + f.get(9).context("short stat")?.parse::<u64>()?)
}

/// Run the agent sampling 1 in `rate` faults (`variant`: force one attach variant),
/// run the case's workload, and check the agent's sampled faults for it:
/// - the probe reports the variant that won (`numa_probe_attached`);
/// - at least 90% of the workload's samples are on the case's (cpu node, mem node);
/// - their number is within `[0.9 * touched / rate - 2, 1.1 * kernel_faults / rate + 2]`.
///
/// Why that tolerance: every page touched is one user fault (no huge pages), and the
/// kernel's minflt + majflt bounds the user faults from above (it also counts faults
/// taken in kernel mode on user memory). The countdown is per CPU and shared with
/// every process faulting there, so each uninterrupted run of L faults gets
/// floor(L/rate) or ceil(L/rate) samples, and a run's phase is arbitrary: the error
/// is below one sample per interruption, in either direction; 10% of ~1000 samples
/// leaves room for hundreds of interruptions. Samples whose page has no node (the
/// zero page, an exited process) are not counted, which only lowers the count below
/// the upper bound.
pub fn sampled_faults_match(
    agent_args: &[&str],
    rate: u32,
    variant: Option<&str>,
    case: &FaultCase,
) -> Result<FaultOutcome> {
    let rate_text = rate.to_string();
    // 1-page / 1-sample evidence: every window of the workload yields an event that
    // carries its sampled counts, so the test sees all of them.
    let mut args = crate::scenarios::WINDOWED_RUN.to_vec();
    args.extend_from_slice(&[
        "--max-cross-access",
        "0.1",
        "--min-access-pages",
        "1",
        "--min-access-samples",
        "1",
        "--fault-sample-rate",
        &rate_text,
        // Counted against every fault the workload takes: the sampler stays attached.
        "--fault-sample-duty",
        "100",
    ]);
    if let Some(v) = variant {
        args.extend_from_slice(&["--fault-variant", v]);
    }
    args.extend_from_slice(agent_args);
    let agent = Agent::start(&args)?;
    let metrics = agent.http_get("/metrics")?;
    let won = metrics
        .lines()
        .filter_map(|l| l.strip_prefix(r#"numa_probe_attached{probe="page_fault_user",variant=""#))
        .find_map(|rest| {
            let (v, value) = rest.split_once("\"} ")?;
            (value.trim() == "1").then(|| v.to_owned())
        });
    let Some(won) = won else {
        let stopped = agent.stop()?;
        bail!(
            "{}: page_fault_user not attached; metrics:\n{}\nstderr:\n{}",
            case.label,
            metrics
                .lines()
                .filter(|l| l.contains("probe_attached"))
                .collect::<Vec<_>>()
                .join("\n"),
            stopped.stderr.join("\n")
        );
    };
    if let Some(v) = variant {
        ensure!(won == v, "{}: asked for {v}, {won} attached", case.label);
    }

    let mut child = Command::new(&case.command[0])
        .args(&case.command[1..])
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("{}: starting {:?}", case.label, case.command))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = lines.next().context("workload printed nothing")??;
    let mut words = line.split_whitespace();
    ensure!(
        words.next() == Some("pid"),
        "{}: unexpected line {line}",
        case.label
    );
    let pid: u32 = words.next().context("pid")?.parse()?;
    // The workload holds its memory after this line: its faults are all counted now.
    let kernel = kernel_faults(pid)?;
    let placement: Vec<(u32, u64)> = words
        .skip(1)
        .filter_map(|f| {
            let (n, p) = f.strip_prefix('N')?.split_once('=')?;
            Some((n.parse().ok()?, p.parse().ok()?))
        })
        .collect();
    let status = child.wait()?;
    ensure!(status.success(), "{}: workload {status}", case.label);
    thread::sleep(Duration::from_millis(1500)); // one more window
    // Under TCG the agent can still be resolving the last samples: scrape until the
    // sampled-fault counters stop moving, so the scrape covers what the events will.
    let mut metrics = agent.http_get("/metrics")?;
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(500));
        let again = agent.http_get("/metrics")?;
        let settled = sampled_lines(&again) == sampled_lines(&metrics);
        metrics = again;
        if settled {
            break;
        }
    }
    let stopped = agent.stop()?;
    ensure!(
        stopped.status.success(),
        "agent exit {}: {}",
        stopped.status,
        stopped.stderr.join("\n")
    );

    let touched = (TOUCH_MIB << 20) as u64 / 4096;
    let on_node = placement
        .iter()
        .find(|&&(n, _)| n == case.mem_node)
        .map_or(0, |&(_, p)| p);
    ensure!(
        on_node * 10 >= touched * 9,
        "{}: numa_maps {placement:?}: the kernel did not put 90% on node {}",
        case.label,
        case.mem_node
    );
    let events: Vec<Value> = stopped
        .stdout
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).with_context(|| format!("not JSON: {l}")))
        .collect::<Result<_>>()?;
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "NUMAAccessError" && e["pid"].as_u64() == Some(u64::from(pid)))
        .collect();
    ensure!(
        !mine.is_empty(),
        "{}: no NUMAAccessError for pid {pid}: {events:?}",
        case.label
    );
    let remote = case.cpu_node != case.mem_node;
    let (mut pair, mut other) = (0, 0);
    for e in &mine {
        let field = |name: &str| {
            e[name]
                .as_u64()
                .with_context(|| format!("{}: `{name}` missing or null: {e}", case.label))
        };
        let (l, r) = (field("sampled_local")?, field("sampled_remote")?);
        if remote {
            ensure!(
                e["source_node"].as_u64() == Some(u64::from(case.cpu_node))
                    && e["target_node"].as_u64() == Some(u64::from(case.mem_node)),
                "{}: want {}->{}: {e}",
                case.label,
                case.cpu_node,
                case.mem_node
            );
            (pair, other) = (pair + r, other + l);
        } else {
            (pair, other) = (pair + l, other + r);
        }
    }
    let outcome = FaultOutcome {
        variant: won,
        rate: u64::from(rate),
        touched,
        kernel_faults: kernel,
        sampled_pair: pair,
        sampled_other: other,
    };
    let total = pair + other;
    ensure!(
        pair * 10 >= total * 9,
        "{}: under 90% of the samples on the pair: {outcome}",
        case.label
    );
    let low = 0.9 * touched as f64 / f64::from(rate) - 2.0;
    let high = 1.1 * kernel as f64 / f64::from(rate) + 2.0;
    ensure!(
        (low..=high).contains(&(total as f64)),
        "{}: {total} samples outside [{low:.0}, {high:.0}]: {outcome}",
        case.label
    );
    // Every remote counter from the workload's CPU node (a few samples land on pages
    // of other nodes, e.g. shared libraries in the page cache); for a local case, the
    // local one. The counters include every process's samples, the workload's among
    // them.
    let counted: f64 = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("numa_sampled_faults_total{")?;
            let (labels, value) = rest.split_once("} ")?;
            let label = |k: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix("=\"")?.strip_suffix('"'))
            };
            let cpu = label("cpu_node")?;
            let mem = label("mem_node")?;
            let wanted =
                cpu == case.cpu_node.to_string() && if remote { mem != cpu } else { mem == cpu };
            wanted.then(|| value.trim().parse::<f64>().ok()).flatten()
        })
        .sum();
    // Against the lower end of the band rather than the events' exact sum: the last
    // window's event can include samples resolved after the final scrape.
    ensure!(
        counted >= low,
        "{}: numa_sampled_faults_total from node {} ({}) = {counted} < {low:.0}",
        case.label,
        case.cpu_node,
        if remote { "remote" } else { "local" }
    );
    ensure!(
        sample(
            &metrics,
            r#"numa_events_lost_total{probe="page_fault_user"}"#
        ) == Some(0.0),
        "{}: samples were lost",
        case.label
    );
    Ok(outcome)
}

/// The `numa_sampled_faults_total` lines of a scrape.
fn sampled_lines(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|l| l.starts_with("numa_sampled_faults_total{"))
        .collect()
}
