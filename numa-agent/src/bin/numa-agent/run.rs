//! `numa-agent run`: load, attach, then stream records until SIGINT/SIGTERM.
use std::{
    io::{self, BufWriter},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, RingBuf};
use numa_agent::{
    errors::NumaStealError,
    events::{BootClock, EventWriter, StealEvent},
    events_file::RotatingFile,
    metrics::{self, Metrics},
    operator_metrics::{self, BpfProgramCollector},
    privileges,
    sensors::{Sensors, sched_migrate},
    steal::{StealClassifier, StealReport},
    topology::Topology,
    tracefs::Tracefs,
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{EventsFormat, RunArgs};

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
    let topology = Topology::from_sysfs(&args.sysfs_root).with_context(|| {
        format!(
            "reading the NUMA topology under {}",
            args.sysfs_root.display()
        )
    })?;
    log::info!(
        "topology from {}: {} node(s), {} possible CPU(s)",
        topology.source,
        topology.nodes.len(),
        topology.possible_cpus
    );
    let tracefs = match &args.tracefs {
        Some(dir) => Tracefs::at(dir),
        None => Tracefs::discover().context("locating tracefs")?,
    };
    let (mut sensors, ring) =
        Sensors::load(&topology, &tracefs, &args.proc_root).context("loading the eBPF sensors")?;
    for p in &sensors.probes {
        log::info!(
            "attached {} as {} ({})",
            p.probe.label(),
            p.variant,
            p.target
        );
    }
    if let Some(logger) = sensors.logger.take() {
        tokio::spawn(forward_ebpf_logs(logger));
    }
    let metrics = Arc::new(
        Metrics::new(sensors.counters.clone(), &topology, &sensors.probes)
            .context("registering metrics")?,
    );
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
    log::info!(
        "ready: serving metrics on http://{bound}/metrics, events: {:?}",
        args.events
    );

    let mut pipeline = Pipeline {
        classifier: StealClassifier::new(args.proc_root.clone()),
        clock: BootClock::new(),
        metrics,
        topology,
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
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                pipeline.drain(guard.get_inner_mut())?;
                guard.clear_ready();
            }
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
        }
    }

    pipeline.metrics.set_ready(false);
    // Detach first so nothing new arrives, then read what is left: no record lost.
    drop(sensors);
    let mut ring = ring.into_inner();
    pipeline.drain(&mut ring)?;
    let _ = stop_tx.send(true);
    server
        .await
        .context("metrics server task")?
        .context("metrics server")?;
    log::info!("stopped: every program detached");
    Ok(())
}

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

struct Pipeline<'a> {
    classifier: StealClassifier,
    clock: BootClock,
    metrics: Arc<Metrics>,
    topology: Topology,
    writer: Option<EventWriter<BufWriter<io::StdoutLock<'a>>>>,
    /// `--events-file`: the same stream, to a rotated file.
    file: Option<EventWriter<RotatingFile>>,
}

impl Pipeline<'_> {
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> anyhow::Result<()> {
        while let Some(item) = ring.next() {
            let Some(migration) = sched_migrate::decode(&item) else {
                log::warn!(
                    "ignoring a ring-buffer record of {} bytes with an unknown tag",
                    item.len()
                );
                continue;
            };
            drop(item);
            if let Ok(report) = self.classifier.classify(migration, &self.topology) {
                self.report(&report)?;
            }
        }
        if let Some(w) = &mut self.writer {
            w.flush().context("writing events to stdout")?;
        }
        if let Some(w) = &mut self.file {
            w.flush().context("writing events to --events-file")?;
        }
        Ok(())
    }

    fn report(&mut self, report: &StealReport) -> anyhow::Result<()> {
        self.metrics.record_steal(&report.error);
        if self.writer.is_none() && self.file.is_none() {
            return Ok(());
        }
        let m = &report.migration;
        let event = StealEvent {
            kind: NumaStealError::TYPE,
            timestamp: self.clock.rfc3339(m.boot_ns),
            error: &report.error,
            pid: report.pid,
            tid: m.tid,
            comm: &m.comm,
            src_cpu: m.src_cpu,
            dst_cpu: m.dst_cpu,
            distance: report.distance,
            actor_tid: m.actor_tid,
            message: report.error.to_string(),
        };
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
