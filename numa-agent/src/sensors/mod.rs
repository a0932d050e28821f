//! Loading the eBPF object, attaching its programs, and the maps they fill.
//!
//! Load-time constants (tracepoint field offsets, node-slot count) go in as
//! `Global` overrides; map sizes follow the machine (possible CPUs, node count).
pub mod balancing;
pub mod page_alloc;
pub mod page_fault;
pub mod page_layout;
pub mod sched_migrate;
mod switchable;
pub mod task;

use std::{path::Path, sync::Arc};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{ProgramError, TracePoint},
};
use numa_common::{
    AccessKey, NODE_UNKNOWN, PROBE_COUNT, PageCalibration, Probe, globals, maps, programs,
};
use thiserror::Error;

use self::switchable::{Hook, Switchable};
use crate::{
    cgroup::Tracked,
    topology::{NodeId, Topology},
    tracefs::{Tracefs, TracefsError},
};

/// What the programs need to attribute events: the agent's own tgid as the host's pid
/// namespace numbers it (never reported), and the cgroup hierarchies to follow.
#[derive(Clone, Debug)]
pub struct AttributionSetup {
    pub agent_tgid: u32,
    pub tracked: Tracked,
}

/// The object built by aya-build (numa-agent/build.rs); empty when the build had no
/// bpf-linker.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/numa-ebpf"));

#[derive(Debug, Error)]
pub enum SensorError {
    #[error(
        "this numa-agent was built without its eBPF programs (bpf-linker was missing at build \
         time); build it with `cargo xtask run` or after `cargo xtask setup`"
    )]
    NotBuilt,
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    PfnTable(#[from] page_alloc::PfnTableError),
    #[error("loading the eBPF object into the kernel failed")]
    Load(#[source] Box<EbpfError>),
    #[error("eBPF map {name} is missing from the object")]
    MissingMap { name: &'static str },
    #[error("eBPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("struct page layout for the raw mm_page_alloc program")]
    PageLayout(#[from] page_layout::CalibrationError),
    #[error("no variant of {probe} was tried: {why}")]
    NoVariant { probe: &'static str, why: String },
    #[error("eBPF program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
}

/// Which probe is attached, and how.
#[derive(Clone, Debug)]
pub struct ProbeStatus {
    pub probe: Probe,
    /// `tracepoint` (classic, offsets from tracefs), `raw_tracepoint`, `tp_btf`,
    /// `fentry`; [`ProbeStatus::NONE`] when no variant could attach.
    pub variant: &'static str,
    pub target: String,
    /// Why the probe is not attached (then `variant` is [`ProbeStatus::NONE`]).
    pub unavailable: Option<Unavailable>,
}

/// Why an optional probe is not attached: a bounded kind for metrics, and the detail
/// for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// One of [`Unavailable::KINDS`].
    pub kind: &'static str,
    pub detail: String,
}

impl Unavailable {
    /// The event is not in this kernel's tracefs (or tracefs is unreadable).
    pub const NO_EVENT: &'static str = "no_event";
    /// The event exists but lacks a field the program reads, or types it differently.
    pub const UNSUPPORTED_LAYOUT: &'static str = "unsupported_layout";
    /// No kernel BTF (`/sys/kernel/btf/vmlinux`), which fentry needs.
    pub const NO_BTF: &'static str = "no_btf";
    /// The kernel refused to load the program (EPERM/EACCES: lockdown, no trampolines).
    pub const KERNEL_REFUSED: &'static str = "kernel_refused";
    /// Loading or attaching failed otherwise.
    pub const ATTACH_FAILED: &'static str = "attach_failed";
    pub const KINDS: [&'static str; 5] = [
        Self::NO_EVENT,
        Self::UNSUPPORTED_LAYOUT,
        Self::NO_BTF,
        Self::KERNEL_REFUSED,
        Self::ATTACH_FAILED,
    ];

    pub fn new(kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.detail, self.kind)
    }
}

impl ProbeStatus {
    /// The variant of a probe that could not attach.
    pub const NONE: &'static str = "none";

    pub fn attached(probe: Probe, variant: &'static str, target: String) -> Self {
        Self {
            probe,
            variant,
            target,
            unavailable: None,
        }
    }

    /// `variant` on `target` if `outcome` is Ok, else unavailable with its reason.
    pub fn from_outcome(
        probe: Probe,
        variant: &'static str,
        target: String,
        outcome: Result<(), Unavailable>,
    ) -> Self {
        match outcome {
            Ok(()) => Self::attached(probe, variant, target),
            Err(reason) => Self {
                probe,
                variant: Self::NONE,
                target,
                unavailable: Some(reason),
            },
        }
    }

    pub fn is_active(&self) -> bool {
        self.unavailable.is_none()
    }
}

/// Optional probes and their settings; [`Default`] loads none of them.
#[derive(Clone, Debug, Default)]
pub struct SensorOptions {
    /// Sample one user page fault in this many per CPU (`exceptions:page_fault_user`);
    /// `None` leaves the probe out.
    pub fault_sample_rate: Option<u32>,
    /// Only try these page-fault attach variants (labels of [`page_fault::VARIANTS`]),
    /// in their usual order; empty tries all. For tests of each fallback.
    pub fault_variants: Vec<String>,
    /// The same for the page-allocation probe (labels of [`page_alloc::VARIANTS`]).
    pub page_alloc_variants: Vec<String>,
}

/// The loaded programs and their counter maps. Dropping it detaches every program.
pub struct Sensors {
    _ebpf: Ebpf,
    pub counters: Arc<KernelCounters>,
    /// Pages per (thread group, CPU node, memory node), read each access window.
    pub workload_allocs: PerCpuHashMap<MapData, AccessKey, u64>,
    /// Node pfn ranges the page-alloc programs scan; re-read on memory hotplug.
    pfn_table: page_alloc::PfnTable,
    pub probes: Vec<ProbeStatus>,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// NUMA-balancing counters (each map present only if its probe attached).
    pub balancing: Arc<balancing::BalancingCounters>,
    /// Hinting faults per thread group; `None` when fentry is unavailable.
    pub task_hint_faults: Option<PerCpuHashMap<MapData, u32, numa_common::HintFaultCounts>>,
    /// The page-fault sampler, if asked for and attached.
    fault_sampler: Option<Switchable>,
    /// The page-alloc probe: attached, except for part of each window in a storm.
    page_alloc: Switchable,
    /// Per CPU, the page-alloc program's run of pages and its run count.
    alloc_runs: PerCpuArray<MapData, numa_common::AllocRun>,
}

impl Sensors {
    /// Load the object, write the topology into it and attach every program. Returns
    /// the sensors and the ring buffer their records arrive in; the ring buffer
    /// outlives the sensors so that what is left in it can be read after detaching.
    pub fn load(
        topology: &Topology,
        tracefs: &Tracefs,
        sysfs_root: &Path,
        proc_root: &Path,
        attribution: &AttributionSetup,
    ) -> Result<(Self, RingBuf<MapData>), SensorError> {
        Self::load_with(
            topology,
            tracefs,
            sysfs_root,
            proc_root,
            attribution,
            SensorOptions::default(),
        )
    }

    /// As [`Self::load`], plus the optional probes `options` asks for.
    pub fn load_with(
        topology: &Topology,
        tracefs: &Tracefs,
        sysfs_root: &Path,
        proc_root: &Path,
        attribution: &AttributionSetup,
        options: SensorOptions,
    ) -> Result<(Self, RingBuf<MapData>), SensorError> {
        if EBPF_OBJECT.is_empty() {
            return Err(SensorError::NotBuilt);
        }
        let format = tracefs.event_format(sched_migrate::CATEGORY, sched_migrate::EVENT)?;
        let node_slots = node_slots(topology);
        let mut migrate_config = sched_migrate::config_from_format(&format, node_slots)?;
        migrate_config.agent_tgid = attribution.agent_tgid;
        let newtask_config =
            task::config_from_format(&tracefs.event_format(task::CATEGORY, task::EVENT)?)?;
        let mut page_alloc_config = page_alloc::config_from_format(
            &tracefs.event_format(page_alloc::CATEGORY, page_alloc::EVENT)?,
        )?;
        page_alloc_config.node_slots = node_slots;
        page_alloc_config.agent_tgid = attribution.agent_tgid;
        let attach_config = task::attach_config_from_format(
            &tracefs.event_format(task::ATTACH_CATEGORY, task::ATTACH_EVENT)?,
            &attribution.tracked,
        )?;
        // The page-fault tracepoint is x86-only: without its format file (arm64) only the
        // perf-event variant, which needs no tracepoint, is tried. The classic variant
        // needs the offsets.
        let fault_setup = options.fault_sample_rate.map(|rate| {
            match tracefs.event_format(page_fault::CATEGORY, page_fault::EVENT) {
                Ok(format) => page_fault::config_from_format(&format, rate).map(|cfg| (cfg, None)),
                Err(e) => Ok((
                    numa_common::FaultConfig {
                        sample_rate: rate.max(1),
                        ..Default::default()
                    },
                    Some(e.to_string()),
                )),
            }
        });
        let fault_config = match fault_setup {
            Some(Ok((mut cfg, no_tracepoint))) => {
                cfg.agent_tgid = attribution.agent_tgid;
                Some((cfg, no_tracepoint))
            }
            Some(Err(e)) => return Err(e.into()),
            None => None,
        };
        let balancing_setup =
            balancing::BalancingSetup::from_tracefs(tracefs, node_slots, attribution.agent_tgid);
        let possible_cpus = topology
            .possible_cpus
            .max(aya::util::nr_cpus().map_or(0, |n| n as u32))
            .max(1);

        let fault_global = match &fault_config {
            Some((cfg, _)) => *cfg,
            None => numa_common::FaultConfig {
                sample_rate: 1,
                ..Default::default()
            },
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::FAULT_CONFIG, &fault_global, true)
            .override_global(globals::MIGRATE_CONFIG, &migrate_config, true)
            .override_global(globals::NEWTASK_CONFIG, &newtask_config, true)
            .override_global(globals::PAGE_ALLOC_CONFIG, &page_alloc_config, true)
            .override_global(globals::ATTACH_CONFIG, &attach_config, true)
            .override_global(globals::BALANCING_CONFIG, &balancing_setup.balancing, true)
            .override_global(
                globals::MIGRATE_PAGES_CONFIG,
                &balancing_setup.migrate_pages,
                true,
            )
            .override_global(
                globals::HINT_FAULT_CONFIG,
                &balancing_setup.hint_faults,
                true,
            )
            .map_max_entries(
                maps::NUMA_BALANCING,
                numa_common::balancing_kind::COUNT * node_slots * node_slots,
            )
            .map_max_entries(maps::HINT_FAULTS, node_slots * node_slots * 4)
            .map_max_entries(maps::CPU_NODE, possible_cpus)
            .map_max_entries(maps::MIGRATIONS, node_slots * node_slots)
            .map_max_entries(maps::PAGE_ALLOCS, node_slots * node_slots)
            .load(EBPF_OBJECT)
            .map_err(|e| SensorError::Load(Box::new(e)))?;

        write_cpu_nodes(&mut ebpf, topology)?;
        let mut pfn_table = page_alloc::PfnTable::new(
            take(&mut ebpf, maps::PFN_RANGES)?,
            take(&mut ebpf, maps::PFN_BANK)?,
        );
        pfn_table.refresh(sysfs_root)?;
        // Only error paths in the programs log; a failure here costs nothing but those lines.
        let logger = aya_log::EbpfLogger::init(&mut ebpf)
            .inspect_err(|e| log::warn!("eBPF log forwarding unavailable: {e}"))
            .ok();

        // task_newtask and cgroup_attach_task first, then the threads already alive:
        // together they cover every thread the migration program can meet, and every
        // cgroup move after the seed read /proc.
        attach_tracepoint(
            &mut ebpf,
            programs::TASK_NEWTASK,
            task::CATEGORY,
            task::EVENT,
        )?;
        attach_tracepoint(
            &mut ebpf,
            programs::CGROUP_ATTACH_TASK,
            task::ATTACH_CATEGORY,
            task::ATTACH_EVENT,
        )?;
        let seeded = {
            let map = ebpf
                .map_mut(maps::TASKS)
                .ok_or(SensorError::MissingMap { name: maps::TASKS })?;
            let mut tasks = BpfHashMap::try_from(map).map_err(|source| SensorError::Map {
                name: maps::TASKS,
                source,
            })?;
            task::seed_from_proc(&mut tasks, proc_root, &attribution.tracked).map_err(|source| {
                SensorError::Map {
                    name: maps::TASKS,
                    source,
                }
            })?
        };
        log::debug!("recorded {seeded} running threads in {}", maps::TASKS);
        attach_tracepoint(
            &mut ebpf,
            programs::SCHED_MIGRATE_TASK,
            sched_migrate::CATEGORY,
            sched_migrate::EVENT,
        )?;
        let (page_alloc_status, page_alloc) =
            attach_page_alloc(&mut ebpf, &options.page_alloc_variants)?;
        let mut probes = vec![
            ProbeStatus::attached(
                Probe::SchedMigrateTask,
                "tracepoint",
                format!("{}:{}", sched_migrate::CATEGORY, sched_migrate::EVENT),
            ),
            page_alloc_status,
        ];
        let mut fault_sampler = None;
        if let Some((cfg, no_tracepoint)) = &fault_config {
            let (status, sampler) = attach_page_fault(
                &mut ebpf,
                &options.fault_variants,
                cfg.sample_rate,
                no_tracepoint.as_deref(),
            );
            probes.push(status);
            fault_sampler = sampler;
        }
        let balancing = balancing::attach(&mut ebpf, &balancing_setup)?;
        probes.extend(balancing.probes);

        let events = take(&mut ebpf, maps::EVENTS)?;
        let counters = Arc::new(KernelCounters {
            migrations: take(&mut ebpf, maps::MIGRATIONS)?,
            lost: take(&mut ebpf, maps::LOST)?,
            page_allocs: take(&mut ebpf, maps::PAGE_ALLOCS)?,
            node_slots,
        });
        let workload_allocs = take(&mut ebpf, maps::WORKLOAD_ALLOCS)?;
        let alloc_runs = take(&mut ebpf, maps::ALLOC_RUNS)?;
        let sensors = Self {
            _ebpf: ebpf,
            counters,
            workload_allocs,
            pfn_table,
            probes,
            logger,
            balancing: balancing.counters,
            task_hint_faults: balancing.task_hint_faults,
            fault_sampler,
            page_alloc,
            alloc_runs,
        };
        Ok((sensors, events))
    }
}

impl Sensors {
    /// Each loaded program's name and a duplicate of its fd, so its kernel statistics
    /// (`bpf_prog_info`) can be read at scrape time. Programs whose fd cannot be
    /// duplicated are left out with a warning.
    pub fn program_fds(&self) -> Vec<(String, std::os::fd::OwnedFd)> {
        self._ebpf
            .programs()
            .filter_map(|(name, program)| {
                // A probe that lost, or that this kernel refused, was never loaded.
                if matches!(program.fd(), Err(ProgramError::NotLoaded)) {
                    return None;
                }
                let fd = program
                    .fd()
                    .ok()
                    .and_then(|fd| std::os::fd::AsFd::as_fd(fd).try_clone_to_owned().ok());
                if fd.is_none() {
                    log::warn!("no fd for eBPF program {name}: its statistics are not exported");
                }
                fd.map(|fd| (name.to_owned(), fd))
            })
            .collect()
    }
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    category: &str,
    event: &str,
) -> Result<(), SensorError> {
    let prog_err = program_error(name);
    let program: &mut TracePoint = typed_program(ebpf, name)?;
    program.load().map_err(prog_err)?;
    program.attach(category, event).map_err(prog_err)?;
    Ok(())
}

/// The first page-alloc variant that attaches (and, for the raw one, calibrates), or
/// the classic tracepoint's error: without this probe there is no page placement.
fn attach_page_alloc(
    ebpf: &mut Ebpf,
    only: &[String],
) -> Result<(ProbeStatus, Switchable), SensorError> {
    let hook = Hook {
        category: page_alloc::CATEGORY,
        event: page_alloc::EVENT,
        sample_rate: 0,
    };
    let mut why = Vec::new();
    let mut last_error = None;
    for (variant, name) in page_alloc::VARIANTS {
        if !only.is_empty() && !only.iter().any(|v| v == variant) {
            why.push(format!("{variant}: not requested"));
            continue;
        }
        let attached = switchable::load_variant(ebpf, variant, name, page_alloc::EVENT)
            .and_then(|()| {
                let probe = Switchable::attach(ebpf, variant, name, hook)?;
                if variant == "raw_tracepoint" {
                    calibrate_page_layout(ebpf)?;
                }
                Ok(probe)
            })
            .inspect_err(|_| {
                // Leave nothing attached that counts nothing (unloading detaches).
                if let Some(program) = ebpf.program_mut(name) {
                    let _ = unload(program);
                }
            });
        match attached {
            Ok(probe) => {
                let target = match variant {
                    "raw_tracepoint" => page_alloc::EVENT.to_owned(),
                    _ => format!("{}:{}", page_alloc::CATEGORY, page_alloc::EVENT),
                };
                if !why.is_empty() {
                    log::info!("mm_page_alloc as {variant} ({})", why.join("; "));
                }
                let status = ProbeStatus::attached(Probe::MmPageAlloc, variant, target);
                return Ok((status, probe));
            }
            Err(e) => {
                let text = error_chain(&e);
                log::info!("mm_page_alloc as {variant}: {text}; trying the next variant");
                why.push(format!("{variant}: {text}"));
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or(SensorError::NoVariant {
        probe: "mm_page_alloc",
        why: why.join("; "),
    }))
}

/// Learn the `struct page` layout with the raw program attached and hand it to the
/// program (numa-common `maps::PAGE_LAYOUT`); until then it counts nothing.
fn calibrate_page_layout(ebpf: &mut Ebpf) -> Result<(), SensorError> {
    let layout = page_layout::calibrate(&mut borrowed_array::<PageCalibration>(
        ebpf,
        maps::PAGE_CALIBRATION,
    )?)?;
    log::info!(
        "struct page layout: vmemmap at {:#x}, {} bytes per page (checked against \
         /proc/self/pagemap)",
        layout.vmemmap,
        layout.page_size
    );
    borrowed_array(ebpf, maps::PAGE_LAYOUT)?
        .set(0, layout, 0)
        .map_err(|source| SensorError::Map {
            name: maps::PAGE_LAYOUT,
            source,
        })
}

/// Attach the page-fault sampler by capability, cheapest variant first (bcc's
/// libbpf-tools numamove.c picks fentry/kprobe the same way): the software counter
/// needs only perf events, `tp_btf` needs kernel BTF, `raw_tracepoint` nothing but the
/// tracepoint, the classic tracepoint is the last resort. Each failure is logged with
/// its reason. `no_tracepoint` says why this kernel has no `page_fault_user`
/// tracepoint (arm64): then only `perf_event` is tried.
fn attach_page_fault(
    ebpf: &mut Ebpf,
    only: &[String],
    sample_rate: u32,
    no_tracepoint: Option<&str>,
) -> (ProbeStatus, Option<Switchable>) {
    let mut why = Vec::new();
    for (variant, name) in page_fault::VARIANTS {
        if !only.is_empty() && !only.iter().any(|v| v == variant) {
            why.push(format!("{variant}: not requested"));
            continue;
        }
        if let (Some(reason), false) = (no_tracepoint, variant == "perf_event") {
            why.push(format!("{variant}: {reason}"));
            continue;
        }
        let hook = Hook {
            category: page_fault::CATEGORY,
            event: page_fault::EVENT,
            sample_rate,
        };
        let attached =
            switchable::load_variant(ebpf, variant, name, page_fault::EVENT).and_then(|()| {
                // Leave nothing loaded that the next variant replaces.
                Switchable::attach(ebpf, variant, name, hook).inspect_err(|_| {
                    if let Some(program) = ebpf.program_mut(name) {
                        let _ = unload(program);
                    }
                })
            });
        match attached {
            Ok(sampler) => {
                let target = match variant {
                    "perf_event" => format!("software:page-faults:{sample_rate}"),
                    "tp_btf" => format!("btf_trace_{}", page_fault::EVENT),
                    "raw_tracepoint" => page_fault::EVENT.to_owned(),
                    _ => format!("{}:{}", page_fault::CATEGORY, page_fault::EVENT),
                };
                return (
                    ProbeStatus::attached(Probe::PageFaultUser, variant, target),
                    Some(sampler),
                );
            }
            Err(e) => {
                let e = error_chain(&e);
                log::info!("page_fault_user as {variant}: {e}; trying the next variant");
                why.push(format!("{variant}: {e}"));
            }
        }
    }
    log::warn!(
        "page_fault_user unavailable, sampled page faults are not measured: {}",
        why.join("; ")
    );
    let kind = if no_tracepoint.is_some() {
        Unavailable::NO_EVENT
    } else {
        Unavailable::ATTACH_FAILED
    };
    let status = ProbeStatus::from_outcome(
        Probe::PageFaultUser,
        ProbeStatus::NONE,
        format!("{}:{}", page_fault::CATEGORY, page_fault::EVENT),
        Err(Unavailable {
            kind,
            detail: why.join("; "),
        }),
    );
    (status, None)
}

/// Unload a program through its typed handle (aya's `Program::unload` takes it by value).
fn unload(program: &mut aya::programs::Program) -> Result<(), ProgramError> {
    use aya::programs::Program as P;
    match program {
        P::PerfEvent(p) => p.unload(),
        P::BtfTracePoint(p) => p.unload(),
        P::RawTracePoint(p) => p.unload(),
        P::TracePoint(p) => p.unload(),
        _ => Err(ProgramError::UnexpectedProgramType),
    }
}

impl Sensors {
    /// Put the page-fault sampler on the fault path (`true`) or take it off (`false`);
    /// a no-op when it is already so, or when the probe is not attached at all. On an
    /// error the sampler stays off and the next call tries again.
    pub fn set_fault_sampling(&mut self, on: bool) -> Result<(), SensorError> {
        match &mut self.fault_sampler {
            Some(sampler) => sampler.set(&mut self._ebpf, on),
            None => Ok(()),
        }
    }

    /// Put the page-alloc probe on the allocation path or take it off (during an
    /// allocation storm, `crate::alloc_storm`); as [`Self::set_fault_sampling`].
    pub fn set_page_alloc_counting(&mut self, on: bool) -> Result<(), SensorError> {
        self.page_alloc.set(&mut self._ebpf, on)
    }

    /// Per CPU, how many times the page-alloc program has run (numa-common
    /// `AllocRun::hits`), indexed by CPU id.
    pub fn page_alloc_hits(&self) -> Result<Vec<u64>, MapError> {
        Ok(self
            .alloc_runs
            .get(&0, 0)?
            .iter()
            .map(|run| run.hits)
            .collect())
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Nodes beyond the online ones the node-pair maps are sized for up front (possible
/// nodes memory may be hot-added to): the maps grow with the square of it.
const MAX_SIZED_NODES: u32 = 16;

/// One slot per node id up to the highest online one, or the highest possible one up
/// to [`MAX_SIZED_NODES`], plus one for CPUs and pages of unknown node. A node id past
/// them counts as unknown until the agent restarts.
fn node_slots(topology: &Topology) -> u32 {
    let online = topology.max_node_id().map_or(0, |id| id + 1);
    online.max(topology.possible_nodes.min(MAX_SIZED_NODES)) + 1
}

/// Wrap a program's error with its name.
fn program_error(name: &'static str) -> impl Fn(ProgramError) -> SensorError + Copy {
    move |source| SensorError::Program {
        name,
        source: Box::new(source),
    }
}

/// Program `name` of the object as its type `P` (tracepoint, raw tracepoint, ...).
fn typed_program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, SensorError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog_err = program_error(name);
    ebpf.program_mut(name)
        .ok_or(prog_err(ProgramError::UnexpectedProgramType))?
        .try_into()
        .map_err(prog_err)
}

/// Map `name` of the object as an array of `T`, left in the object.
fn borrowed_array<'a, T: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<Array<&'a mut MapData, T>, SensorError> {
    let map = ebpf.map_mut(name).ok_or(SensorError::MissingMap { name })?;
    Array::try_from(map).map_err(|source| SensorError::Map { name, source })
}

/// Take map `name` out of the object as the typed map `M`.
fn take<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, SensorError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(SensorError::MissingMap { name })?;
    M::try_from(map).map_err(|source| SensorError::Map { name, source })
}

impl Sensors {
    /// Re-read the node pfn ranges under `sysfs_root` (memory hot-added, removed or
    /// moved between nodes) and switch the programs to them if they changed. Returns
    /// the new ranges' count when they did.
    pub fn refresh_memory_ranges(
        &mut self,
        sysfs_root: &Path,
    ) -> Result<Option<usize>, page_alloc::PfnTableError> {
        self.pfn_table.refresh(sysfs_root)
    }

    /// Rewrite the cpu->node map from a re-read topology (a CPU turned up in no node).
    /// Node ids above the one the maps were sized for stay counted as unknown until
    /// the agent restarts.
    pub fn update_topology(&mut self, topology: &Topology) -> Result<(), SensorError> {
        write_cpu_nodes(&mut self._ebpf, topology)
    }
}

fn write_cpu_nodes(ebpf: &mut Ebpf, topology: &Topology) -> Result<(), SensorError> {
    let map_err = |source| SensorError::Map {
        name: maps::CPU_NODE,
        source,
    };
    let mut cpu_node = borrowed_array::<u32>(ebpf, maps::CPU_NODE)?;
    let capacity = cpu_node.len();
    for (cpu, node) in topology.cpu_to_node().into_iter().enumerate() {
        let Ok(cpu) = u32::try_from(cpu) else { break };
        if cpu >= capacity {
            break;
        }
        cpu_node
            .set(cpu, node.unwrap_or(NODE_UNKNOWN), 0)
            .map_err(map_err)?;
    }
    // CPUs the topology does not list keep NODE_UNKNOWN rather than the array's 0.
    for cpu in topology.possible_cpus.min(capacity)..capacity {
        cpu_node.set(cpu, NODE_UNKNOWN, 0).map_err(map_err)?;
    }
    Ok(())
}

/// Counters the kernel keeps; read at scrape time, never re-derived in userspace.
pub struct KernelCounters {
    migrations: PerCpuArray<MapData, u64>,
    lost: PerCpuArray<MapData, u64>,
    page_allocs: PerCpuArray<MapData, u64>,
    node_slots: u32,
}

/// One cell of a node-pair matrix; `None` is a CPU or page of unknown node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePairCount {
    pub src_node: Option<NodeId>,
    pub dst_node: Option<NodeId>,
    pub count: u64,
}

impl KernelCounters {
    fn slot_node(&self, slot: u32) -> Option<NodeId> {
        (slot + 1 < self.node_slots).then_some(slot)
    }

    /// Every non-zero cell of the (source node, destination node) migration matrix,
    /// summed over CPUs.
    pub fn migrations(&self) -> Result<Vec<NodePairCount>, MapError> {
        self.matrix(&self.migrations)
    }

    /// Every non-zero cell of the (CPU node, memory node) page-allocation matrix.
    pub fn page_allocs(&self) -> Result<Vec<NodePairCount>, MapError> {
        self.matrix(&self.page_allocs)
    }

    fn matrix(&self, map: &PerCpuArray<MapData, u64>) -> Result<Vec<NodePairCount>, MapError> {
        let mut out = Vec::new();
        for (index, values) in map.iter().enumerate() {
            let count: u64 = values?.iter().sum();
            if count == 0 {
                continue;
            }
            let index = index as u32;
            out.push(NodePairCount {
                src_node: self.slot_node(index / self.node_slots),
                dst_node: self.slot_node(index % self.node_slots),
                count,
            });
        }
        Ok(out)
    }

    /// Records each probe could not send, summed over CPUs.
    pub fn lost(&self) -> Result<Vec<(Probe, u64)>, MapError> {
        let mut out = Vec::with_capacity(PROBE_COUNT as usize);
        for probe in Probe::ALL {
            let values = self.lost.get(&(probe as u32), 0)?;
            out.push((probe, values.iter().sum()));
        }
        Ok(out)
    }
}
