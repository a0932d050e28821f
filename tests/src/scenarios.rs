//! Scenarios shared by the host's integration tests and the QEMU guests' runner
//! (`numa-vm-guest`): each causes events on purpose and checks the agent's output
//! against the kernel's own record of them. Failures are errors with the evidence.
use std::{fs, sync::mpsc, thread};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use crate::{
    agent::{Agent, sample},
    ftrace, pin,
};

/// What a steal scenario saw, for reports.
#[derive(Debug)]
pub struct StealOutcome {
    pub migrations: usize,
    pub forced: usize,
}

/// Distance from node `from` to node `to` as this kernel's sysfs gives it (the row
/// of `from`, column = position of `to` among the online nodes).
pub fn sysfs_distance(sysfs_root: &str, from: u32, to: u32) -> Result<u32> {
    let node = format!("{sysfs_root}/devices/system/node");
    let online = fs::read_to_string(format!("{node}/online"))?;
    let mut ids = Vec::new();
    for part in online.trim().split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        ids.extend(lo.parse::<u32>()?..=hi.parse::<u32>()?);
    }
    let row = fs::read_to_string(format!("{node}/node{from}/distance"))?;
    let column = ids
        .iter()
        .position(|&id| id == to)
        .context("target node not online")?;
    Ok(row
        .split_whitespace()
        .nth(column)
        .context("short distance row")?
        .parse()?)
}

/// Run the agent with `agent_args` (plus `--events json`), move one thread of this
/// process between `cpus[0]` and `cpus[1]` `flips` times, and check the agent
/// reported exactly the migrations the kernel's ftrace recorded for that thread, with
/// the nodes `cpu_nodes` gives and the distance `sysfs_root` gives.
pub fn steal_matches_ftrace(
    agent_args: &[&str],
    sysfs_root: &str,
    cpu_nodes: &[(usize, u32)],
    cpus: [usize; 2],
    flips: usize,
) -> Result<StealOutcome> {
    let node_of = |cpu: u32| {
        cpu_nodes
            .iter()
            .find(|(c, _)| *c == cpu as usize)
            .map(|&(_, n)| n)
            .with_context(|| format!("CPU {cpu} is in no node"))
    };
    let nodes = [node_of(cpus[0] as u32)?, node_of(cpus[1] as u32)?];
    let mut args = vec!["run", "--events", "json", "--metrics-addr", "127.0.0.1:0"];
    args.extend_from_slice(agent_args);
    let agent = Agent::start(&args)?;

    // The kernel's trace runs from before the thread exists until after it exits, so
    // both sides see its whole life.
    let trace = ftrace::Instance::migrations(&format!("numa-steal-{}", std::process::id()))
        .context("creating the ftrace instance")?;
    let (tid_tx, tid_rx) = mpsc::channel();
    let flipper = thread::spawn(move || {
        let _ = tid_tx.send(pin::gettid());
        pin::flip_between(cpus, flips)
    });
    let tid = tid_rx.recv().context("flipping thread died")?;
    flipper
        .join()
        .map_err(|_| anyhow::anyhow!("flipping thread panicked"))?
        .context("flipping between CPUs")?;
    trace.stop()?;

    let metrics = agent.http_get("/metrics")?;
    let agent_pid = agent.pid();
    let stopped = agent.stop()?;
    ensure!(
        stopped.status.success(),
        "agent exit {}: {}",
        stopped.status,
        stopped.stderr.join("\n")
    );
    ensure!(
        stopped
            .stderr
            .iter()
            .any(|l| l.contains("every program detached")),
        "no clean detach in stderr:\n{}",
        stopped.stderr.join("\n")
    );

    let kernel = trace.migrations_of(tid)?;
    ensure!(
        trace.overruns()? == 0,
        "ftrace dropped lines: the oracle is incomplete"
    );
    ensure!(
        kernel.len() >= flips,
        "ftrace saw {} migrations of {tid}, expected >= {flips}",
        kernel.len()
    );

    let all: Vec<Value> = stopped
        .stdout
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).with_context(|| format!("not JSON: {l}")))
        .collect::<Result<_>>()?;
    ensure!(
        all.iter()
            .all(|v| v["pid"].as_u64() != Some(u64::from(agent_pid))),
        "the agent reported its own threads"
    );
    let events: Vec<&Value> = all
        .iter()
        .filter(|v| v["tid"].as_u64() == Some(u64::from(tid)))
        .collect();
    ensure!(
        events.len() == kernel.len(),
        "agent reported {} cross-node migrations of thread {tid}, the kernel's ftrace {}",
        events.len(),
        kernel.len()
    );
    for (i, (event, line)) in events.iter().zip(&kernel).enumerate() {
        ensure!(event["type"] == "NUMAStealError", "event {i}: {event}");
        let got = (event["src_cpu"].as_u64(), event["dst_cpu"].as_u64());
        let want = (u64::from(line.orig_cpu), u64::from(line.dest_cpu));
        ensure!(
            got == (Some(want.0), Some(want.1)),
            "event {i} {event} vs ftrace {line:?}"
        );
        let (from, to) = (node_of(line.orig_cpu)?, node_of(line.dest_cpu)?);
        let nodes_got = (
            event["stolen_from_node"].as_u64(),
            event["current_node"].as_u64(),
        );
        ensure!(
            nodes_got == (Some(u64::from(from)), Some(u64::from(to))),
            "event {i} names the wrong nodes, want {from}->{to}: {event}"
        );
        // Row = the node it left (initiator), as sysfs gives it; never the transpose.
        let distance = sysfs_distance(sysfs_root, from, to)?;
        ensure!(
            event["distance"].as_u64() == Some(u64::from(distance)),
            "event {i}: distance, want {distance}: {event}"
        );
        ensure!(
            event["pid"].as_u64() == Some(u64::from(std::process::id())),
            "event {i}: pid: {event}"
        );
        ensure!(
            event["resource_id"] == format!("task:{tid}"),
            "event {i}: {event}"
        );
        ensure!(
            event["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "event {i}: {event}"
        );
    }
    // sched_setaffinity on a running thread moves it through the CPU stopper.
    let forced = events
        .iter()
        .filter(|e| e["steal_type"] == "forced")
        .count();
    ensure!(
        forced >= flips / 2,
        "only {forced} of {} moves classified as forced",
        events.len()
    );

    // The kernel-side matrix counts every migration, the test's included.
    let forward = kernel
        .iter()
        .filter(|l| l.orig_cpu as usize == cpus[0] && l.dest_cpu as usize == cpus[1])
        .count() as f64;
    let label = format!(
        r#"numa_task_migrations_total{{dst_node="{}",src_node="{}"}}"#,
        nodes[1], nodes[0]
    );
    let counted = sample(&metrics, &label).with_context(|| format!("no {label} in:\n{metrics}"))?;
    ensure!(
        counted >= forward,
        "{label} = {counted} < {forward} seen by ftrace"
    );
    ensure!(
        sample(
            &metrics,
            r#"numa_events_lost_total{probe="sched_migrate_task"}"#
        ) == Some(0.0),
        "records were lost"
    );
    Ok(StealOutcome {
        migrations: events.len(),
        forced,
    })
}

/// One workload of [`access_placement`].
pub struct AccessCase {
    pub label: String,
    /// Full command line of a `numa-workload touch` run (possibly behind numactl).
    pub command: Vec<String>,
    /// `Some((cpu node, memory node))` when the placement is remote, `None` when local.
    pub remote: Option<(u32, u32)>,
}

/// `numa-agent run` with JSON events on stdout, metrics on a free port and 1 s access
/// windows: the start of every scenario that reads events per window.
pub const WINDOWED_RUN: [&str; 7] = [
    "run",
    "--events",
    "json",
    "--metrics-addr",
    "127.0.0.1:0",
    "--access-window",
    "1s",
];

/// Pages the `touch` workload maps.
pub const TOUCH_MIB: usize = 64;

/// Run the agent (1 s windows, threshold 0.1) while each case's workload touches
/// [`TOUCH_MIB`] MiB; check the kernel really placed it as the case says
/// (`/proc/<pid>/numa_maps`), that a remote case yields `NUMAAccessError`s with the
/// right nodes, the sysfs distance and a ratio >= 0.9, and that a local one yields
/// none (so its ratio stayed <= 0.1).
pub fn access_placement(
    agent_args: &[&str],
    sysfs_root: &str,
    cases: &[AccessCase],
) -> Result<String> {
    let mut args = WINDOWED_RUN.to_vec();
    args.extend_from_slice(&["--max-cross-access", "0.1"]);
    args.extend_from_slice(agent_args);
    let agent = Agent::start(&args)?;
    let mut pids = Vec::new();
    for case in cases {
        let out = std::process::Command::new(&case.command[0])
            .args(&case.command[1..])
            .output()
            .with_context(|| format!("{}: starting {:?}", case.label, case.command))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "{}: workload failed: {}",
            case.label,
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("pid "))
            .context("workload printed no pid line")?;
        let mut words = line.split_whitespace();
        let pid: u32 = words.nth(1).context("pid")?.parse()?;
        let placement: Vec<(u32, u64)> = words
            .skip(1)
            .filter_map(|f| {
                let (n, p) = f.strip_prefix('N')?.split_once('=')?;
                Some((n.parse().ok()?, p.parse().ok()?))
            })
            .collect();
        pids.push((pid, placement));
    }
    thread::sleep(std::time::Duration::from_millis(1500)); // one more window
    let stopped = agent.stop()?;
    ensure!(
        stopped.status.success(),
        "agent exit {}: {}",
        stopped.status,
        stopped.stderr.join("\n")
    );
    let events: Vec<Value> = stopped
        .stdout
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).with_context(|| format!("not JSON: {l}")))
        .collect::<Result<_>>()?;

    let pages = (TOUCH_MIB << 20) as u64 / 4096;
    let mut report = Vec::new();
    for (case, (pid, placement)) in cases.iter().zip(&pids) {
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| {
                e["type"] == "NUMAAccessError" && e["pid"].as_u64() == Some(u64::from(*pid))
            })
            .collect();
        let (on_node, most) = placement
            .iter()
            .copied()
            .max_by_key(|&(_, p)| p)
            .context("no placement")?;
        ensure!(
            most * 10 >= pages * 9,
            "{}: numa_maps {placement:?}: the kernel did not place 90% on one node",
            case.label
        );
        match case.remote {
            None => ensure!(
                mine.is_empty(),
                "{}: local workload reported: {mine:?}",
                case.label
            ),
            Some((cpu_node, mem_node)) => {
                ensure!(
                    on_node == mem_node,
                    "{}: numa_maps puts it on node {on_node}, not {mem_node}",
                    case.label
                );
                ensure!(
                    !mine.is_empty(),
                    "{}: no NUMAAccessError for pid {pid}; events: {events:?}",
                    case.label
                );
                let distance = sysfs_distance(sysfs_root, cpu_node, mem_node)?;
                for e in &mine {
                    ensure!(
                        e["source_node"].as_u64() == Some(u64::from(cpu_node))
                            && e["target_node"].as_u64() == Some(u64::from(mem_node))
                            && e["distance"].as_u64() == Some(u64::from(distance))
                            && e["resource_type"] == "memory",
                        "{}: want {cpu_node}->{mem_node} distance {distance}: {e}",
                        case.label
                    );
                }
                // The workload's ratio over its run: a window boundary can fall just
                // after its start-up, which allocates a few pages on the CPU it began
                // on before it pins itself, so one window may hold those and only the
                // first part of the touch.
                let total =
                    |field: &str| -> u64 { mine.iter().filter_map(|e| e[field].as_u64()).sum() };
                let (remote, local) = (total("remote_pages"), total("local_pages"));
                let ratio = remote as f64 / (remote + local).max(1) as f64;
                ensure!(
                    ratio >= 0.9,
                    "{}: ratio {ratio} < 0.9 over {} windows: {mine:?}",
                    case.label,
                    mine.len()
                );
                ensure!(
                    remote * 10 >= pages * 9,
                    "{}: agent counted {remote} remote pages of the {pages} touched",
                    case.label
                );
                report.push(format!(
                    "{}: {} remote pages, {} errors",
                    case.label,
                    remote,
                    mine.len()
                ));
            }
        }
    }
    // Which page-alloc variant did the counting (the agent logs the one that won),
    // and why a cheaper one did not.
    for line in stopped.stderr.iter().filter(|l| {
        l.contains("attached mm_page_alloc as") || l.contains("mm_page_alloc as raw_tracepoint:")
    }) {
        report.push(line.chars().take(600).collect());
    }
    Ok(report.join("; "))
}
