//! Prometheus metrics, pulled: kernel counters are read from the BPF maps at scrape
//! time by a `Collector`; userspace counts only what it decides (errors reported).
//! Labels are bounded: node ids, probe names, steal types; never pid, tid or comm.
use std::{
    future::Future,
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use numa_common::Probe;
use prometheus::{
    Encoder as _, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use tokio::net::TcpListener;

use crate::{
    errors::{NumaAccessError, NumaStealError, node_label},
    sensors::{KernelCounters, ProbeStatus},
    topology::{NodeId, Topology},
};

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    steal_errors: IntCounterVec,
    access_errors: IntCounterVec,
    page_alloc_duty: prometheus::Gauge,
    reattach_failures: IntCounterVec,
    /// Set while the sensors are attached and records are being read (`/readyz`).
    ready: AtomicBool,
}

impl Metrics {
    pub fn new(
        counters: Arc<KernelCounters>,
        topology: &Topology,
        probes: &[ProbeStatus],
    ) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let nodes: Vec<NodeId> = topology.nodes.iter().map(|n| n.id).collect();
        registry.register(Box::new(KernelCollector::new(counters, nodes)?))?;

        let steal_errors = IntCounterVec::new(
            Opts::new(
                "numa_steal_errors_total",
                "NUMAStealError events reported: cross-node migrations of in-scope user tasks",
            ),
            &["stolen_from_node", "current_node", "steal_type"],
        )?;
        registry.register(Box::new(steal_errors.clone()))?;

        let access_errors = IntCounterVec::new(
            Opts::new(
                "numa_access_errors_total",
                "NUMAAccessError events reported: workload windows over the cross-node threshold",
            ),
            &["source_node", "target_node"],
        )?;
        registry.register(Box::new(access_errors.clone()))?;

        let page_alloc_duty = prometheus::Gauge::new(
            "numa_page_alloc_duty",
            "The page-alloc probe's duty in effect: 1 counts every page; during an allocation \
             storm (--alloc-storm-rate) --fault-sample-duty / 100 of each access window, and \
             numa_memory_accesses_total counts only that share of the pages",
        )?;
        page_alloc_duty.set(1.0);
        registry.register(Box::new(page_alloc_duty.clone()))?;

        // A duty-cycled probe that cannot be put back is blind for that window: the log
        // says why, this says how often, so an alert can see it.
        let reattach_failures = IntCounterVec::new(
            Opts::new(
                "numa_probe_reattach_failures_total",
                "Times a duty-cycled probe (the page-fault sampler, the page-alloc probe in an \
                 allocation storm) could not be attached again at a window's start; that \
                 window has no samples or no pages from it (the log says why)",
            ),
            &["probe"],
        )?;
        for probe in [Probe::PageFaultUser, Probe::MmPageAlloc] {
            reattach_failures.with_label_values(&[probe.label()]);
        }
        registry.register(Box::new(reattach_failures.clone()))?;

        let attached = IntGaugeVec::new(
            Opts::new(
                "numa_probe_attached",
                "1 for each probe attached, with the variant that won; 0 with variant \
                 `unavailable` for a requested probe this kernel cannot host",
            ),
            &["probe", "variant"],
        )?;
        // An optional probe this kernel does not allow is not "attached = 0" (which the
        // NumaProbeNotAttached alert treats as a fault to fix) but unavailable, with a
        // bounded reason; its log line says the rest.
        let unavailable = IntGaugeVec::new(
            Opts::new(
                "numa_probe_unavailable",
                "1 for each optional probe this kernel does not allow, with why (no_event, \
                 unsupported_layout, no_btf, kernel_refused, attach_failed); its series are absent",
            ),
            &["probe", "reason"],
        )?;
        for p in probes {
            match &p.unavailable {
                None => attached
                    .with_label_values(&[p.probe.label(), p.variant])
                    .set(1),
                Some(why) => unavailable
                    .with_label_values(&[p.probe.label(), why.kind])
                    .set(1),
            }
        }
        registry.register(Box::new(attached))?;
        registry.register(Box::new(unavailable))?;
        crate::operator_metrics::register_topology(&registry, topology)?;
        Ok(Self {
            registry,
            steal_errors,
            access_errors,
            page_alloc_duty,
            reattach_failures,
            ready: AtomicBool::new(false),
        })
    }

    pub fn record_access(&self, error: &NumaAccessError) {
        self.access_errors
            .with_label_values(&[error.source_node.to_string(), error.target_node.to_string()])
            .inc();
    }

    /// The share of each window the page-alloc probe counts from now on (1, or the duty
    /// during an allocation storm).
    pub fn set_page_alloc_duty(&self, duty: f64) {
        self.page_alloc_duty.set(duty);
    }

    /// A duty-cycled probe could not be attached again at a window's start.
    pub fn count_reattach_failure(&self, probe: Probe) {
        self.reattach_failures
            .with_label_values(&[probe.label()])
            .inc();
    }

    /// Register a further collector owned by another module (per-workload counters,
    /// eBPF program statistics).
    pub fn register(&self, collector: Box<dyn Collector>) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// Mark the agent ready (sensors attached, records flowing) or not (stopping).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn record_steal(&self, error: &NumaStealError) {
        self.steal_errors
            .with_label_values(&[
                node_label(error.stolen_from_node).as_str(),
                node_label(error.current_node).as_str(),
                error.steal_type.as_str(),
            ])
            .inc();
    }

    /// The registry, for other modules' metrics (policy engine).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Reads the kernel's per-CPU counters (MIGRATIONS, LOST) when scraped.
struct KernelCollector {
    counters: Arc<KernelCounters>,
    nodes: Vec<NodeId>,
    descs: Vec<Desc>,
}

fn migrations_vec() -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(
        Opts::new(
            "numa_task_migrations_total",
            "Task migrations seen by sched:sched_migrate_task, by source and destination NUMA node",
        ),
        &["src_node", "dst_node"],
    )
}

fn page_allocs_vec() -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(
        Opts::new(
            "numa_memory_accesses_total",
            "Pages allocated for tasks, kernel threads included (kmem:mm_page_alloc), by the node \
             of the CPU the task ran on and the node of the memory: placement of new memory \
             (every page, except during an allocation storm: only numa_page_alloc_duty of the \
             time), see README",
        ),
        &["cpu_node", "mem_node"],
    )
}

fn lost_vec() -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(
        Opts::new(
            "numa_events_lost_total",
            "Records a probe could not send to the agent because the ring buffer was full",
        ),
        &["probe"],
    )
}

impl KernelCollector {
    fn new(counters: Arc<KernelCounters>, nodes: Vec<NodeId>) -> Result<Self, prometheus::Error> {
        let descs = [
            migrations_vec()?.desc(),
            page_allocs_vec()?.desc(),
            lost_vec()?.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        Ok(Self {
            counters,
            nodes,
            descs,
        })
    }

    fn gather(&self) -> Result<Vec<MetricFamily>, Box<dyn std::error::Error>> {
        let migrations = migrations_vec()?;
        // Every known pair exists from the start, so `rate()` and alerts see zeros.
        for src in &self.nodes {
            for dst in &self.nodes {
                migrations.with_label_values(&[src.to_string(), dst.to_string()]);
            }
        }
        for cell in self.counters.migrations()? {
            migrations
                .with_label_values(&[node_label(cell.src_node), node_label(cell.dst_node)])
                .inc_by(cell.count);
        }
        let page_allocs = page_allocs_vec()?;
        for cpu in &self.nodes {
            for mem in &self.nodes {
                page_allocs.with_label_values(&[cpu.to_string(), mem.to_string()]);
            }
        }
        for cell in self.counters.page_allocs()? {
            page_allocs
                .with_label_values(&[node_label(cell.src_node), node_label(cell.dst_node)])
                .inc_by(cell.count);
        }
        let lost = lost_vec()?;
        for (probe, count) in self.counters.lost()? {
            lost.with_label_values(&[probe.label()]).inc_by(count);
        }
        Ok([migrations.collect(), page_allocs.collect(), lost.collect()].concat())
    }
}

collector_from_gather!(KernelCollector, "kernel counters");

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    match metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `/readyz`: 200 once the sensors are attached and their records are read, 503
/// before that and while stopping, so a probe takes the agent out before it detaches.
async fn readyz_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.is_ready() {
        (axum::http::StatusCode::OK, "ready\n")
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not ready: sensors not attached or stopping\n",
        )
    }
}

/// Serve `/metrics`, `/healthz` (the process answers) and `/readyz` (sensors attached
/// and read) on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz_handler))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
