//! `numa-agent attach`: load the sensor, keep only the target's records, and show
//! them live (or stream NDJSON) until the target exits, the duration ends, or the
//! operator quits.
use std::{
    collections::BTreeSet,
    io::{self, BufWriter},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, RingBuf};
use numa_agent::{
    access::AccessWindows,
    attach::{AttachState, CpuSampler, target, view},
    cgroup::IdPaths,
    events::{BootClock, EventWriter, StealEvent},
    privileges,
    sensors::{Sensors, page_alloc, sched_migrate},
    steal::StealClassifier,
    topology::Topology,
    tracefs::Tracefs,
    workload::{self, WorkloadResolver},
};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::AttachArgs;

/// Set by SIGINT/SIGTERM in `--json` mode (in the live view Ctrl-C is a key).
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

const TICK: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(50);

/// Restores the terminal however `attach` ends (error, panic, quit).
struct TerminalGuard(ratatui::DefaultTerminal);

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

enum Output<'a> {
    Json(EventWriter<BufWriter<io::StdoutLock<'a>>>),
    View(TerminalGuard),
}

pub fn attach(args: AttachArgs) -> anyhow::Result<()> {
    if let Some(message) = privileges::check_tracing() {
        bail!(message);
    }
    let proc_root = args.host.proc_root.clone();
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let t = &args.target;
    let target = if let Some(pid) = t.pid {
        target::pid(&proc_root, pid)?
    } else if let Some(name) = &t.comm {
        target::comm_target(&proc_root, name)?
    } else if let Some(path) = &t.cgroup {
        target::cgroup(path, &mounts)?
    } else if let Some(id) = &t.container {
        target::container(id, &mounts)?
    } else {
        bail!("give one of --pid, --comm, --cgroup, --container");
    };

    let topology = Topology::from_sysfs(&args.host.sysfs_root).with_context(|| {
        format!(
            "reading the NUMA topology under {}",
            args.host.sysfs_root.display()
        )
    })?;
    let tracefs = match &args.host.tracefs {
        Some(dir) => Tracefs::at(dir),
        None => Tracefs::discover().context("locating tracefs")?,
    };
    let attribution =
        workload::attribution_setup(&proc_root).context("setting up workload attribution")?;
    let (mut sensors, mut ring) = Sensors::load(
        &topology,
        &tracefs,
        &args.host.sysfs_root,
        &proc_root,
        &attribution,
    )
    .context("loading the eBPF sensors")?;
    // The program's own log lines would tear the full-screen view; they only report
    // error paths, which the lost-record counters also show.
    drop(sensors.logger.take());

    let mut state = AttachState::new(target.describe(), &topology);
    state.pids = target.tgids(&proc_root);
    let mut seen: BTreeSet<u32> = state.pids.clone();
    let mut sampler = CpuSampler::new(proc_root.clone());
    sampler.sample(&state.pids, &topology);
    let mut classifier = Classifier {
        steals: StealClassifier::new(proc_root.clone()).with_self_tgid(attribution.agent_tgid),
        workloads: WorkloadResolver::new(
            IdPaths::new(attribution.tracked.clone()),
            proc_root.clone(),
        ),
    };
    let clock = BootClock::new();
    let mut windows = AccessWindows::default();
    log::info!(
        "attached to {} ({} process(es)) on {} node(s)",
        target.describe(),
        state.pids.len(),
        topology.nodes.len()
    );

    let mut output = if args.json {
        // SAFETY: installing an async-signal-safe handler (an atomic store).
        unsafe {
            libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        }
        Output::Json(EventWriter::new(BufWriter::new(io::stdout().lock())))
    } else {
        Output::View(TerminalGuard(ratatui::try_init().context(
            "starting the live view (is stdout a terminal? use --json)",
        )?))
    };
    if let Output::View(term) = &mut output {
        term.0.draw(|f| view::draw(f, &state))?;
    }

    let started = Instant::now();
    let mut last_tick = started;
    let reason = loop {
        drain(
            &mut ring,
            &mut classifier,
            &topology,
            &clock,
            &target,
            &proc_root,
            &mut seen,
            &mut state,
            &mut output,
        )?;
        let now = Instant::now();
        if now.duration_since(last_tick) >= TICK {
            let elapsed = now.duration_since(last_tick).as_secs_f64();
            last_tick = now;
            state.accesses = target_accesses(&sensors, &mut windows, &state.pids);
            tick(
                &mut sampler,
                &topology,
                &mut state,
                &mut output,
                elapsed,
                started,
            )?;
            state.pids = target.tgids(&proc_root);
            seen.extend(&state.pids);
            if state.pids.is_empty() {
                break "the target exited";
            }
        }
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break "--duration elapsed";
        }
        if STOP.load(Ordering::SeqCst) {
            break "stopped by signal";
        }
        match &mut output {
            Output::Json(_) => std::thread::sleep(POLL),
            Output::View(term) => {
                if event::poll(POLL)?
                    && let Event::Key(key) = event::read()?
                {
                    if key.kind != KeyEventKind::Press {
                        continue;
                    }
                    match key.code {
                        KeyCode::Char('q') | KeyCode::Esc => break "quit",
                        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                            break "quit";
                        }
                        KeyCode::Char('s') => {
                            state.sort = state.sort.next();
                            term.0.draw(|f| view::draw(f, &state))?;
                        }
                        _ => {}
                    }
                }
            }
        }
    };

    // Detach first so nothing new arrives, then read what is left and close the
    // last (partial) interval: no record of the target is lost.
    state.accesses = target_accesses(&sensors, &mut windows, &state.pids);
    drop(sensors);
    drain(
        &mut ring,
        &mut classifier,
        &topology,
        &clock,
        &target,
        &proc_root,
        &mut seen,
        &mut state,
        &mut output,
    )?;
    let elapsed = last_tick.elapsed().as_secs_f64();
    tick(
        &mut sampler,
        &topology,
        &mut state,
        &mut output,
        elapsed,
        started,
    )?;
    drop(output);
    log::info!(
        "{reason}: detached ({} NUMA errors seen)",
        state.errors_total
    );
    Ok(())
}

/// Pages placed for `pids` since the last call, (local, remote); `None` if the
/// kernel's counters could not be read.
fn target_accesses(
    sensors: &Sensors,
    windows: &mut AccessWindows,
    pids: &BTreeSet<u32>,
) -> Option<(u64, u64)> {
    let counts = page_alloc::read_workload_allocs(&sensors.workload_allocs)
        .inspect_err(|e| log::warn!("reading page placement counts: {e}"))
        .ok()?;
    Some(
        windows
            .advance(counts)
            .iter()
            .filter(|w| pids.contains(&w.tgid))
            .fold((0, 0), |(l, r), w| (l + w.local, r + w.remote)),
    )
}

fn tick(
    sampler: &mut CpuSampler,
    topology: &Topology,
    state: &mut AttachState,
    output: &mut Output<'_>,
    elapsed: f64,
    started: Instant,
) -> anyhow::Result<()> {
    let cpu = sampler.sample(&state.pids, topology);
    state.elapsed_seconds = started.elapsed().as_secs();
    let timestamp = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
    let record = state.end_interval(&cpu, elapsed, timestamp);
    match output {
        Output::Json(w) => {
            w.write(&record).context("writing to stdout")?;
            w.flush().context("writing to stdout")?;
        }
        Output::View(term) => {
            term.0.draw(|f| view::draw(f, state))?;
        }
    }
    Ok(())
}

/// Turns records into reports naming their workload, as `run` does.
struct Classifier {
    steals: StealClassifier,
    workloads: WorkloadResolver,
}

#[expect(
    clippy::too_many_arguments,
    reason = "the loop's state, passed explicitly"
)]
fn drain(
    ring: &mut RingBuf<MapData>,
    classifier: &mut Classifier,
    topology: &Topology,
    clock: &BootClock,
    target: &target::Target,
    proc_root: &std::path::Path,
    seen: &mut BTreeSet<u32>,
    state: &mut AttachState,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let mut wrote = false;
    while let Some(item) = ring.next() {
        let Some(migration) = sched_migrate::decode(&item) else {
            continue;
        };
        drop(item);
        let Ok(report) = classifier.steals.classify(migration, topology) else {
            continue;
        };
        let Some(pid) = report.pid else { continue };
        if !seen.contains(&pid) {
            // A process that joined the target since the last refresh.
            if !target.admits(proc_root, pid) {
                continue;
            }
            seen.insert(pid);
        }
        let timestamp = clock.rfc3339(report.migration.boot_ns);
        state.record_steal(&report, &timestamp);
        if let Output::Json(w) = output {
            let workload = classifier.workloads.resolve(&report.migration, report.pid);
            w.write(&StealEvent::new(&report, &workload, timestamp))
                .context("writing to stdout")?;
            wrote = true;
        }
    }
    if wrote && let Output::Json(w) = output {
        w.flush().context("writing to stdout")?;
    }
    Ok(())
}
