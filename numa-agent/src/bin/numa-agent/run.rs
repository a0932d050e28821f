//! `numa-agent run`: load, attach, then stream records until SIGINT/SIGTERM.
use std::{
    io::{self, BufWriter},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, RingBuf};
use numa_agent::{
    access::{self, AccessThreshold, AccessWindows, WorkloadAccess, window_verdict},
    alloc_storm::{self, AllocStorm},
    balancing::{self, BalancingCollector, HintFaultReporter},
    cgroup::IdPaths,
    errors::NumaAccessError,
    events::{AccessEvent, BootClock, EventWriter, StealEvent},
    events_file::RotatingFile,
    metrics::{self, Metrics},
    operator_metrics::{self, BpfProgramCollector},
    policy::evaluate::{AccessSample, ResourceType},
    policy::service::{self as policy_service, PolicyService},
    privileges,
    sampled_faults::{SampledCollector, SampledFaults},
    sensors::{SensorOptions, Sensors, page_alloc, page_fault, sched_migrate},
    steal::{StealClassifier, StealReport},
    topology::{HwlocCheck, Topology, refresh::Refresher},
    tracefs::Tracefs,
    workload::{self, WorkloadMetrics, WorkloadResolver},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{EventsFormat, RunArgs};

/// Longest a record waits in the ring buffer before the agent reads it.
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<()> {
    if let Some(message) = privileges::check_tracing() {
        bail!(message);
    }
    let loaded = Topology::load(
        &args.host.sysfs_root,
        &HwlocCheck::On {
            helper: std::env::current_exe().ok(),
        },
    )
    .with_context(|| {
        format!(
            "reading the NUMA topology under {}",
            args.host.sysfs_root.display()
        )
    })?;
    for w in loaded.warnings() {
        log::warn!("topology: {w}");
    }
    let topology = loaded.topology;
    log::info!(
        "topology from {}: {} node(s), {} possible CPU(s)",
        topology.source,
        topology.nodes.len(),
        topology.possible_cpus
    );
    let tracefs = match &args.host.tracefs {
        Some(dir) => Tracefs::at(dir),
        None => Tracefs::discover().context("locating tracefs")?,
    };
    let attribution = workload::attribution_setup(&args.host.proc_root)
        .context("setting up workload attribution")?;
    let (mut sensors, ring) = Sensors::load_with(
        &topology,
        &tracefs,
        &args.host.sysfs_root,
        &args.host.proc_root,
        &attribution,
        SensorOptions {
            fault_sample_rate: (args.fault_sample_rate > 0).then_some(args.fault_sample_rate),
            fault_variants: args.fault_variant.clone(),
            page_alloc_variants: args.page_alloc_variant.clone(),
        },
    )
    .context("loading the eBPF sensors")?;
    for p in &sensors.probes {
        match &p.unavailable {
            None => log::info!(
                "attached {} as {} ({})",
                p.probe.label(),
                p.variant,
                p.target
            ),
            Some(why) => log::warn!("{} unavailable ({}): {why}", p.probe.label(), p.target),
        }
    }
    let (level, text) = balancing::mode_message(
        numa_agent::sensors::balancing::numa_balancing_mode(&args.host.proc_root),
    );
    log::log!(level, "{text}");
    if let Some(logger) = sensors.logger.take() {
        tokio::spawn(forward_ebpf_logs(logger));
    }
    let metrics = Arc::new(
        Metrics::new(sensors.counters.clone(), &topology, &sensors.probes)
            .context("registering metrics")?,
    );
    let workload_metrics = WorkloadMetrics::new(
        attribution
            .tracked
            .mode
            .unwrap_or(numa_agent::cgroup::CgroupMode::None),
        args.workload_grace,
    )
    .context("registering workload metrics")?;
    metrics
        .register(Box::new(workload_metrics.clone()))
        .context("registering workload metrics")?;
    // Sampled page faults (x86): counted only while their probe is attached.
    let sampled = sensors
        .probes
        .iter()
        .any(|p| p.probe == numa_common::Probe::PageFaultUser && p.is_active())
        .then(SampledFaults::default);
    if let Some(s) = &sampled {
        metrics
            .register(Box::new(
                SampledCollector::new(
                    s.totals(),
                    topology.nodes.iter().map(|n| n.id).collect(),
                    args.fault_sample_rate,
                    sampler_duty(&args),
                )
                .context("registering sampled-fault metrics")?,
            ))
            .context("registering sampled-fault metrics")?;
    }
    metrics
        .register(Box::new(
            BalancingCollector::new(
                sensors.balancing.clone(),
                topology.nodes.iter().map(|n| n.id).collect(),
                &args.host.proc_root,
            )
            .context("registering NUMA-balancing metrics")?,
        ))
        .context("registering NUMA-balancing metrics")?;

    // Policy engine (issue 6): only with --policy.
    let policy = if args.policy.is_empty() {
        None
    } else {
        let svc = PolicyService::start(
            args.policy.clone(),
            &args.host.sysfs_root,
            args.host.proc_root.clone(),
            &topology,
            metrics.registry(),
            args.audit_log.as_ref(),
        )?;
        Some(svc)
    };

    // Held until the function returns: the kernel keeps statistics on while it lives.
    let _bpf_stats = if args.bpf_stats {
        Some(operator_metrics::enable_bpf_stats().context(
            "enabling eBPF run statistics (--bpf-stats; BPF_ENABLE_STATS needs kernel 5.8+ and CAP_SYS_ADMIN)",
        )?)
    } else {
        None
    };
    metrics
        .register(Box::new(
            BpfProgramCollector::new(sensors.program_fds(), _bpf_stats.is_some())
                .context("registering eBPF program statistics")?,
        ))
        .context("registering eBPF program statistics")?;
    let events_file = match &args.events_file {
        Some(path) => Some(EventWriter::new(
            RotatingFile::open(path, args.events_file_max_bytes, args.events_file_keep)
                .context("opening --events-file")?,
        )),
        None => None,
    };

    let listener = TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", args.metrics_addr))?;
    let bound = listener
        .local_addr()
        .context("reading the bound metrics address")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(metrics::serve(
        listener,
        metrics.clone(),
        wait_stop(stop_rx.clone()),
    ));
    if let Some(svc) = &policy {
        let counters = sensors.counters.clone();
        let lost = move || {
            counters
                .lost()
                .map(|l| l.iter().map(|(_, n)| n).sum())
                .unwrap_or(0)
        };
        tokio::spawn(policy_service::drive(svc.clone(), lost, stop_rx.clone()));
    }
    log::info!(
        "ready: serving metrics on http://{bound}/metrics, events: {:?}",
        args.events
    );

    let mut pipeline = Pipeline {
        classifier: StealClassifier::new(args.host.proc_root.clone())
            .with_self_tgid(attribution.agent_tgid),
        proc_root: args.host.proc_root.clone(),
        agent_tgid: attribution.agent_tgid,
        resolver: WorkloadResolver::new(
            IdPaths::new(attribution.tracked.clone()),
            args.host.proc_root.clone(),
        ),
        workloads: workload_metrics,
        clock: BootClock::new(),
        metrics,
        topology,
        policy: policy.clone(),
        refresher: Refresher::new(args.host.sysfs_root.clone(), Refresher::DEFAULT_INTERVAL),
        refreshed: false,
        sampled,
        writer: (args.events == EventsFormat::Json)
            .then(|| EventWriter::new(BufWriter::new(io::stdout().lock()))),
        file: events_file,
    };
    pipeline.metrics.set_ready(true);

    // SAFETY: the RingBuf owns its map fd, which stays open until `into_inner` below.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .context("polling the ring buffer")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    // The programs wake us only when a backlog builds (numa-ebpf maps.rs
    // `submit_flags`); otherwise records are drained on this tick.
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut access_tick = tokio::time::interval(args.access_window);
    access_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The duty cycle: the page-fault sampler, and the page-alloc probe during an
    // allocation storm, are attached for the first part of each access window and
    // detached for the rest (README "Cost"); `None` keeps them attached.
    let duty_on =
        (args.fault_sample_duty < 100).then(|| args.access_window.mul_f64(sampler_duty(&args)));
    match (pipeline.sampled.is_some(), duty_on) {
        (true, Some(on)) => log::info!(
            "page-fault sampler: attached for the first {on:?} of every {:?} access window \
             (--fault-sample-duty {}%)",
            args.access_window,
            args.fault_sample_duty
        ),
        (true, None) => {
            log::info!("page-fault sampler: attached all the time (--fault-sample-duty 100)")
        }
        (false, _)
            if args.fault_sample_rate == 0
                && args.fault_sample_duty
                    != numa_agent::sensors::page_fault::DEFAULT_SAMPLE_DUTY =>
        {
            log::warn!(
                "--fault-sample-duty has no effect on the sampler: --fault-sample-rate 0 turns it \
                 off (it still sets the page-alloc probe's share during allocation storms)"
            )
        }
        (false, _) => {}
    }
    let storm_rate = if duty_on.is_some() {
        args.alloc_storm_rate
    } else {
        0
    };
    if storm_rate > 0 {
        log::info!(
            "page-alloc probe: counts every page while no CPU allocates more than {storm_rate}/s \
             (--alloc-storm-rate); above, it follows the duty cycle until the storm passes"
        );
    } else {
        log::info!(
            "page-alloc probe: counts every page, whatever the allocation rate ({})",
            if args.alloc_storm_rate == 0 {
                "--alloc-storm-rate 0"
            } else {
                "--fault-sample-duty 100"
            }
        );
    }
    let mut storm = AllocStorm::new(storm_rate, std::time::Instant::now());
    let mut storm_check = tokio::time::interval(alloc_storm::CHECK_INTERVAL);
    storm_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pause_at: Option<tokio::time::Instant> = None;
    let mut windows = AccessWindows::default();
    let mut hint_faults = HintFaultReporter::default();
    let threshold = AccessThreshold {
        max_cross_access: args.max_cross_access,
        min_pages: args.min_access_pages,
    };
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                pipeline.drain(guard.get_inner_mut())?;
                guard.clear_ready();
            }
            _ = tick.tick() => pipeline.drain(ring.get_mut())?,
            _ = storm_check.tick(), if storm_rate > 0 && !storm.in_storm() => {
                let now = std::time::Instant::now();
                if let Some(change) = measure_storm(&sensors, &mut storm, now) {
                    report_storm(change, &args, &pipeline.metrics);
                    // Off until the next window puts it on for its first part.
                    switch_page_alloc(&mut sensors, &mut storm, &pipeline.metrics, now, false);
                }
            }
            _ = tokio::time::sleep_until(pause_at.unwrap_or_else(tokio::time::Instant::now)),
                if pause_at.is_some() => {
                pause_at = None;
                if let Err(e) = sensors.set_fault_sampling(false) {
                    log::warn!("pausing the page-fault sampler: {}", anyhow::Error::from(e));
                }
                if storm.in_storm() {
                    let now = std::time::Instant::now();
                    match measure_storm(&sensors, &mut storm, now) {
                        Some(ended) => report_storm(ended, &args, &pipeline.metrics),
                        None => {
                            switch_page_alloc(&mut sensors, &mut storm, &pipeline.metrics, now, false)
                        }
                    }
                }
            }
            _ = access_tick.tick() => {
                let now = std::time::Instant::now();
                let page_alloc_share = storm.take_window_share(now);
                if storm.in_storm() {
                    switch_page_alloc(&mut sensors, &mut storm, &pipeline.metrics, now, true);
                }
                if duty_on.is_some()
                    && let Err(e) = sensors.set_fault_sampling(true)
                {
                    log::warn!(
                        "re-attaching the page-fault sampler, no samples this window: {}",
                        anyhow::Error::from(e)
                    );
                    pipeline.metrics.count_reattach_failure(numa_common::Probe::PageFaultUser);
                }
                // Both go off at the end of the window's first part.
                let switching = pipeline.sampled.is_some() || storm.in_storm();
                if let Some(on) = duty_on.filter(|_| switching) {
                    pause_at = Some(tokio::time::Instant::now() + on);
                }
                // Memory hot-added or removed since the last window: pages from now on
                // are placed with the new ranges (memory blocks in sysfs).
                match sensors.refresh_memory_ranges(&args.host.sysfs_root) {
                    Ok(Some(n)) => log::info!(
                        "node memory ranges changed: the page-alloc probe now scans {n} range(s)"
                    ),
                    Ok(None) => {}
                    Err(e) => log::warn!(
                        "re-reading node memory ranges, keeping the previous ones: {}",
                        anyhow::Error::from(e)
                    ),
                }
                let counts = page_alloc::read_workload_allocs(&sensors.workload_allocs)
                    .context("reading per-workload page counts")?;
                let sampled = pipeline
                    .sampled
                    .as_mut()
                    .map(|s| access::from_deltas(&s.take_window()));
                for (window, faults) in pair_windows(windows.advance(counts), sampled) {
                    if let Some(policy) = &policy {
                        for (&(source_node, target_node), &count) in &window.pairs {
                            policy.record_access(AccessSample {
                                pid: window.tgid,
                                source_node,
                                target_node,
                                resource: ResourceType::Memory,
                                count,
                            });
                        }
                    }
                    if let Some((error, source)) = window_verdict(
                        Some(&window),
                        faults.as_ref(),
                        threshold,
                        args.min_access_samples,
                        &pipeline.topology,
                    ) {
                        let report = AccessReport {
                            error: &error,
                            source,
                            pages: &window,
                            faults: faults.as_ref(),
                            sampling: pipeline.sampled.is_some(),
                            page_alloc_share,
                        };
                        pipeline.report_access(&report, args.access_window)?;
                    }
                }
                pipeline.report_hint_faults(&sensors, &mut hint_faults)?;
            }
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
        }
        // A drain that met a CPU of no node re-read the topology: follow it in the kernel.
        if std::mem::take(&mut pipeline.refreshed) {
            sensors
                .update_topology(&pipeline.topology)
                .context("rewriting the cpu->node map")?;
        }
    }

    pipeline.metrics.set_ready(false);
    pipeline.report_hint_faults(&sensors, &mut hint_faults)?;
    // Detach first so nothing new arrives, then read what is left: no record lost.
    drop(sensors);
    let mut ring = ring.into_inner();
    pipeline.drain(&mut ring)?;
    let _ = stop_tx.send(true);
    if let Some(svc) = &policy {
        svc.shutdown();
    }
    server
        .await
        .context("metrics server task")?
        .context("metrics server")?;
    log::info!("stopped: every program detached");
    Ok(())
}

/// The busiest CPU's page allocations per second since the last measurement, and
/// whether a storm begins or ends with it.
fn measure_storm(
    sensors: &Sensors,
    storm: &mut AllocStorm,
    now: std::time::Instant,
) -> Option<alloc_storm::Change> {
    match sensors.page_alloc_hits() {
        Ok(hits) => storm.measure(now, hits),
        Err(e) => {
            log::warn!("reading the page-alloc run counts: {e}");
            None
        }
    }
}

/// Put the page-alloc probe on its hook (measuring from now) or take it off. A failure
/// is logged and leaves it as it was; the next window tries again.
fn switch_page_alloc(
    sensors: &mut Sensors,
    storm: &mut AllocStorm,
    metrics: &Metrics,
    now: std::time::Instant,
    on: bool,
) {
    if let Err(e) = sensors.set_page_alloc_counting(on) {
        log::warn!(
            "{} the page-alloc probe: {}",
            if on {
                "re-attaching (no pages counted this window)"
            } else {
                "detaching"
            },
            anyhow::Error::from(e)
        );
        if on {
            metrics.count_reattach_failure(numa_common::Probe::MmPageAlloc);
        }
        return;
    }
    storm.set_attached(now, on);
    if on {
        match sensors.page_alloc_hits() {
            Ok(hits) => storm.rebase(now, hits),
            Err(e) => log::warn!("reading the page-alloc run counts: {e}"),
        }
    }
}

fn report_storm(change: alloc_storm::Change, args: &RunArgs, metrics: &Metrics) {
    match change {
        alloc_storm::Change::Began { cpu, per_second } => {
            log::info!(
                "allocation storm: CPU {cpu} made {per_second:.0} page allocations/s (over \
                 --alloc-storm-rate {}): the page-alloc probe now counts the first {}% of each \
                 window",
                args.alloc_storm_rate,
                args.fault_sample_duty
            );
            metrics.set_page_alloc_duty(sampler_duty(args));
        }
        alloc_storm::Change::Ended { cpu, per_second } => {
            log::info!(
                "allocation storm over (busiest CPU {cpu}: {per_second:.0} allocations/s): the \
                 page-alloc probe counts every page again"
            );
            metrics.set_page_alloc_duty(1.0);
        }
    }
}

/// The share of each access window the page-fault sampler is attached.
fn sampler_duty(args: &RunArgs) -> f64 {
    f64::from(args.fault_sample_duty) / 100.0
}

/// One workload's window: its placement and, when sampled, its resolved faults.
struct AccessReport<'a> {
    error: &'a NumaAccessError,
    source: access::AccessSource,
    pages: &'a WorkloadAccess,
    faults: Option<&'a WorkloadAccess>,
    /// The page-fault probe is attached (else the sampled counts are `null`).
    sampling: bool,
    /// The share of the window the page-alloc probe was attached.
    page_alloc_share: f64,
}

/// Each thread group's placement window next to its sampled-fault window. A group
/// with samples but no allocation gets an empty placement window.
fn pair_windows(
    placement: Vec<WorkloadAccess>,
    sampled: Option<Vec<WorkloadAccess>>,
) -> Vec<(WorkloadAccess, Option<WorkloadAccess>)> {
    let mut by_tgid: std::collections::BTreeMap<u32, (WorkloadAccess, Option<WorkloadAccess>)> =
        placement.into_iter().map(|w| (w.tgid, (w, None))).collect();
    for f in sampled.into_iter().flatten() {
        let tgid = f.tgid;
        by_tgid
            .entry(tgid)
            .or_insert_with(|| {
                (
                    WorkloadAccess {
                        tgid,
                        ..WorkloadAccess::default()
                    },
                    None,
                )
            })
            .1 = Some(f);
    }
    by_tgid.into_values().collect()
}

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

struct Pipeline<'a> {
    classifier: StealClassifier,
    proc_root: std::path::PathBuf,
    agent_tgid: u32,
    resolver: WorkloadResolver,
    workloads: WorkloadMetrics,
    clock: BootClock,
    metrics: Arc<Metrics>,
    topology: Topology,
    policy: Option<Arc<PolicyService>>,
    /// Re-reads the topology when a CPU shows up in no node (hot-plug).
    refresher: Refresher,
    /// Set when `topology` was re-read; the loop then rewrites the BPF map.
    refreshed: bool,
    /// Sampled page faults waiting for `move_pages`, and this window's counts; `None`
    /// when the page-fault probe is not attached.
    sampled: Option<SampledFaults>,
    writer: Option<EventWriter<BufWriter<io::StdoutLock<'a>>>>,
    /// `--events-file`: the same stream, to a rotated file.
    file: Option<EventWriter<RotatingFile>>,
}

impl Pipeline<'_> {
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> anyhow::Result<()> {
        while let Some(item) = ring.next() {
            if let Some(sample) = page_fault::decode(&item) {
                if let Some(s) = &mut self.sampled {
                    s.push(sample);
                }
                continue;
            }
            let Some(migration) = sched_migrate::decode(&item) else {
                log::warn!(
                    "ignoring a ring-buffer record of {} bytes with an unknown tag",
                    item.len()
                );
                continue;
            };
            drop(item);
            self.refresh_for(&migration);
            if let Ok(report) = self.classifier.classify(migration, &self.topology) {
                self.report(&report)?;
            }
        }
        // One move_pages query per process for this drain's samples.
        if let Some(s) = &mut self.sampled {
            s.resolve();
        }
        if let Some(w) = &mut self.writer {
            w.flush().context("writing events to stdout")?;
        }
        if let Some(w) = &mut self.file {
            w.flush().context("writing events to --events-file")?;
        }
        Ok(())
    }

    fn report_access(&mut self, report: &AccessReport<'_>, length: Duration) -> anyhow::Result<()> {
        let (error, window) = (report.error, report.pages);
        // The kernel counts kernel threads' allocations too (cheaper than asking);
        // they are not workloads.
        let kernel_thread = numa_agent::procfs::thread_info(&self.proc_root, window.tgid)
            .is_some_and(|t| t.kernel_thread);
        if window.tgid == self.agent_tgid || kernel_thread {
            return Ok(());
        }
        self.metrics.record_access(error);
        if self.writer.is_none() && self.file.is_none() {
            return Ok(());
        }
        let comm =
            std::fs::read_to_string(self.proc_root.join(window.tgid.to_string()).join("comm"))
                .ok()
                .map(|c| c.trim_end().to_owned());
        let event = AccessEvent {
            kind: NumaAccessError::TYPE,
            timestamp: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
            error,
            pid: window.tgid,
            comm,
            workload: format!("pid:{}", window.tgid),
            source: report.source,
            local_pages: window.local,
            remote_pages: window.remote,
            sampled_local: report
                .sampling
                .then(|| report.faults.map_or(0, |f| f.local)),
            sampled_remote: report
                .sampling
                .then(|| report.faults.map_or(0, |f| f.remote)),
            window_seconds: length.as_secs_f64(),
            page_alloc_share: report.page_alloc_share,
            message: error.to_string(),
        };
        if let Some(writer) = &mut self.writer {
            writer.write(&event).context("writing events to stdout")?;
            writer.flush().context("writing events to stdout")?;
        }
        if let Some(file) = &mut self.file {
            file.write(&event)
                .context("writing events to --events-file")?;
        }
        Ok(())
    }

    /// Per-process hinting-fault records (only with fentry on task_numa_fault and an
    /// event stream); the agent's own process is never reported.
    fn report_hint_faults(
        &mut self,
        sensors: &Sensors,
        reporter: &mut HintFaultReporter,
    ) -> anyhow::Result<()> {
        let Some(map) = &sensors.task_hint_faults else {
            return Ok(());
        };
        if self.writer.is_none() && self.file.is_none() {
            return Ok(());
        }
        let counts = numa_agent::sensors::balancing::read_task_hint_faults(map)
            .context("reading per-process hinting faults")?;
        let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        for record in reporter.changed(counts, &now, &self.proc_root) {
            if let Some(writer) = &mut self.writer {
                writer.write(&record).context("writing events to stdout")?;
            }
            if let Some(file) = &mut self.file {
                file.write(&record)
                    .context("writing events to --events-file")?;
            }
        }
        if let Some(writer) = &mut self.writer {
            writer.flush().context("writing events to stdout")?;
        }
        Ok(())
    }

    /// A CPU the kernel map placed in no node: re-read the topology (rate-limited).
    fn refresh_for(&mut self, m: &sched_migrate::Migration) {
        for (cpu, node) in [(m.src_cpu, m.src_node), (m.dst_cpu, m.dst_node)] {
            if node.is_some() {
                continue;
            }
            let now = std::time::Instant::now();
            match self.refresher.on_cpu(cpu, &self.topology, now) {
                Some(Ok(fresh)) => {
                    log::info!(
                        "topology re-read: CPU {cpu} is now on node {} ({})",
                        fresh
                            .node_of_cpu(cpu)
                            .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
                        fresh.source
                    );
                    self.topology = fresh;
                    self.refreshed = true;
                }
                Some(Err(e)) => log::warn!("re-reading the topology: {e}"),
                None => {}
            }
        }
    }

    fn report(&mut self, report: &StealReport) -> anyhow::Result<()> {
        self.metrics.record_steal(&report.error);
        if let Some(policy) = &self.policy {
            policy.record_steal(report.pid, &report.error);
        }
        let m = &report.migration;
        let workload = self.resolver.resolve(m, report.pid);
        self.workloads
            .record_steal(&workload, self.resolver.liveness_dir(&workload));
        if self.writer.is_none() && self.file.is_none() {
            return Ok(());
        }
        let event = StealEvent::new(report, &workload, self.clock.rfc3339(m.boot_ns));
        if let Some(writer) = &mut self.writer {
            writer.write(&event).context("writing events to stdout")?;
        }
        if let Some(file) = &mut self.file {
            file.write(&event)
                .context("writing events to --events-file")?;
        }
        Ok(())
    }
}

/// Forward the programs' aya-log records (error paths only) to the agent's log.
async fn forward_ebpf_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring-buffer fd, which stays open until it is dropped.
    let Ok(mut fd) = (unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) })
    else {
        return;
    };
    while let Ok(mut guard) = fd.readable_mut().await {
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
