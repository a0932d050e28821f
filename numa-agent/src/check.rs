//! `numa-agent check`: can the sensor run on this kernel, and what will it not see?
//!
//! Everything is read from the running system, never assumed: host facts from procfs,
//! sysfs and tracefs, and each probe variant by loading a trivial program (`r0 = 0;
//! exit`) of that type at that hook and attaching it, then detaching at once. Nothing
//! is mounted or changed.
use std::{
    ffi::CString,
    fs, io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya_obj::{
    btf::BtfKind,
    generated::{bpf_attach_type, bpf_prog_type},
};
use serde::Serialize;

use crate::{
    bpf_sys, operator_metrics, privileges,
    sensors::{balancing, page_alloc, page_fault, sched_migrate, task},
    topology::Topology,
    tracefs::{self, Tracefs},
};

/// How a line of the report bears on `run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// `run` works, but something is not seen or not as it could be.
    Warn,
    /// `run` cannot work until this is changed.
    Fail,
}

#[derive(Clone, Debug, Serialize)]
pub struct Fact {
    pub name: &'static str,
    pub value: String,
    pub status: Status,
    /// What to do about a `Warn` or `Fail`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VariantCheck {
    /// `tp_btf`, `raw_tracepoint`, `tracepoint`, `fentry`, `kprobe`.
    pub variant: &'static str,
    pub target: String,
    pub attachable: bool,
    /// Why not, as the kernel said it (errno, verifier's first line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeCheck {
    pub probe: &'static str,
    pub purpose: &'static str,
    /// `run` refuses to start without it.
    pub required: bool,
    /// Variants in the order an agent would prefer them (newest first).
    pub variants: Vec<VariantCheck>,
    /// The variant this agent attaches, if it implements one that works here.
    pub uses: Option<&'static str>,
    pub status: Status,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub facts: Vec<Fact>,
    pub probes: Vec<ProbeCheck>,
    pub run_can_work: bool,
}

/// Where the checks read the system.
#[derive(Clone, Debug)]
pub struct CheckInput {
    pub sysfs_root: PathBuf,
    pub tracefs: Option<PathBuf>,
}

fn fact(
    name: &'static str,
    value: impl Into<String>,
    status: Status,
    advice: Option<String>,
) -> Fact {
    Fact {
        name,
        value: value.into(),
        status,
        advice,
    }
}

pub fn run(input: &CheckInput) -> Report {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let caps = privileges::effective_caps().unwrap_or(0);
    let mut facts = vec![
        kernel_fact(),
        btf_fact(),
        lockdown_fact(),
        capabilities_fact(caps),
    ];
    let (tracefs_fact, tracefs) = tracefs_fact(input.tracefs.as_deref(), &mounts, caps);
    facts.push(tracefs_fact);
    facts.push(fact(
        "cgroup mode",
        cgroup_mode(&mounts).describe(),
        Status::Ok,
        None,
    ));
    facts.push(numa_balancing_fact());
    facts.push(nodes_fact(&input.sysfs_root));
    facts.push(bpf_stats_fact());

    let btf = aya::Btf::from_sys_fs().ok();
    let probes = vec![
        tracepoint_probe(
            "sched_migrate_task",
            "cross-node task migrations (NUMAStealError)",
            sched_migrate::CATEGORY,
            sched_migrate::EVENT,
            tracefs.as_ref(),
            btf.as_ref(),
            |t| {
                let f = t.event_format(sched_migrate::CATEGORY, sched_migrate::EVENT)?;
                sched_migrate::config_from_format(&f, 2).map(|_| ())
            },
        ),
        tracepoint_probe(
            "task_newtask",
            "thread -> process attribution of new threads",
            task::CATEGORY,
            task::EVENT,
            tracefs.as_ref(),
            btf.as_ref(),
            |t| {
                let f = t.event_format(task::CATEGORY, task::EVENT)?;
                task::config_from_format(&f).map(|_| ())
            },
        ),
        tracepoint_probe(
            "cgroup_attach_task",
            "cgroup moves, so events name the workload a process belongs to now",
            task::ATTACH_CATEGORY,
            task::ATTACH_EVENT,
            tracefs.as_ref(),
            btf.as_ref(),
            |t| {
                let f = t.event_format(task::ATTACH_CATEGORY, task::ATTACH_EVENT)?;
                f.int_field("dst_root", 4)?;
                f.int_field("dst_id", 8)?;
                f.int_field("pid", 4).map(|_| ())
            },
        ),
        tracepoint_probe(
            "mm_page_alloc",
            "remote memory placement (NUMAAccessError, numa_memory_accesses_total); the raw \
             variant also needs its struct page layout to calibrate at start",
            page_alloc::CATEGORY,
            page_alloc::EVENT,
            tracefs.as_ref(),
            btf.as_ref(),
            |t| {
                let f = t.event_format(page_alloc::CATEGORY, page_alloc::EVENT)?;
                page_alloc::config_from_format(&f).map(|_| ())
            },
        )
        .implementing(&page_alloc::VARIANTS.map(|(v, _)| v)),
        numa_fault_probe(btf.as_ref()),
    ];
    // NUMA-balancing probes (optional: `run` goes on without them).
    let optional = |mut p: ProbeCheck| {
        p.required = false;
        if p.status == Status::Fail {
            p.status = Status::Warn;
        }
        p
    };
    let mut probes = probes;
    probes.push(optional(page_fault_probe(tracefs.as_ref(), btf.as_ref())));
    for (event, purpose) in [
        (balancing::MOVE_EVENT, "NUMA-balancing task moves"),
        (balancing::SWAP_EVENT, "NUMA-balancing task swaps"),
        (balancing::STICK_EVENT, "NUMA-balancing decisions to stay"),
    ] {
        probes.push(optional(tracepoint_probe(
            event,
            purpose,
            balancing::SCHED,
            event,
            tracefs.as_ref(),
            btf.as_ref(),
            |t| balancing::nid_offsets(&t.event_format(balancing::SCHED, event)?).map(|_| ()),
        )));
    }
    probes.push(optional(tracepoint_probe(
        "mm_migrate_pages",
        "pages migrated per reason (numa_misplaced, compaction, ...)",
        balancing::MIGRATE,
        balancing::MIGRATE_EVENT,
        tracefs.as_ref(),
        btf.as_ref(),
        |t| {
            let f = t.event_format(balancing::MIGRATE, balancing::MIGRATE_EVENT)?;
            balancing::migrate_pages_config(&f).map(|_| ())
        },
    )));
    let run_can_work = facts.iter().all(|f| f.status != Status::Fail)
        && probes.iter().all(|p| p.status != Status::Fail);
    Report {
        facts,
        probes,
        run_can_work,
    }
}

fn kernel_fact() -> Fact {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let version = parse_version(&release);
    // CAP_BPF/CAP_PERFMON and BPF ring buffers arrived in 5.8.
    match version {
        Some(v) if v >= (5, 8) => fact("kernel", release, Status::Ok, None),
        Some(_) => fact(
            "kernel",
            release,
            Status::Fail,
            Some("the sensor needs Linux 5.8 or newer (BPF ring buffer, CAP_BPF)".into()),
        ),
        None => fact(
            "kernel",
            release,
            Status::Warn,
            Some("kernel version unreadable".into()),
        ),
    }
}

/// `6.18.44-fc` -> (6, 18).
pub fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn btf_fact() -> Fact {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    match fs::metadata(path) {
        Ok(m) => fact(
            "BTF",
            format!("{} ({} KiB)", path.display(), m.len() / 1024),
            Status::Ok,
            None,
        ),
        Err(_) => fact(
            "BTF",
            "absent",
            Status::Warn,
            Some(
                "no kernel BTF: tp_btf and fentry variants are unavailable (classic tracepoints \
                 still work); use a kernel built with CONFIG_DEBUG_INFO_BTF=y"
                    .into(),
            ),
        ),
    }
}

/// The bracketed entry of `/sys/kernel/security/lockdown` (`none [integrity] confidentiality`).
pub fn parse_lockdown(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(text[start + 1..end].to_owned())
}

/// `CONFIG_<name>` from /proc/config.gz (decompressed by gzip, which every Debian has).
fn kernel_config(name: &str) -> Option<String> {
    let out = std::process::Command::new("gzip")
        .args(["-dc", "/proc/config.gz"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    config_value(&text, name)
}

/// `y`, `m`, a value, or `n` for `# CONFIG_X is not set`; `None` if not mentioned.
pub fn config_value(config: &str, name: &str) -> Option<String> {
    let key = format!("CONFIG_{name}=");
    let unset = format!("# CONFIG_{name} is not set");
    config.lines().find_map(|l| {
        if l == unset {
            Some("n".to_owned())
        } else {
            l.strip_prefix(&key).map(str::to_owned)
        }
    })
}

fn lockdown_fact() -> Fact {
    let advice_for = |mode: &str| match mode {
        // security/lockdown/lockdown.c: confidentiality denies LOCKDOWN_BPF_READ_KERNEL,
        // which bpf_probe_read_kernel and friends need.
        "confidentiality" => Some(
            "lockdown=confidentiality forbids eBPF reading kernel memory: tracepoint arguments \
             still arrive, richer probes fail; boot with lockdown=integrity or none"
                .to_owned(),
        ),
        _ => None,
    };
    if let Ok(text) = fs::read_to_string("/sys/kernel/security/lockdown")
        && let Some(mode) = parse_lockdown(&text)
    {
        let status = if mode == "confidentiality" {
            Status::Warn
        } else {
            Status::Ok
        };
        let advice = advice_for(&mode);
        return fact("lockdown", mode, status, advice);
    }
    // securityfs not mounted: the kernel config says what lockdown is forced to.
    for (option, mode) in [
        ("LOCK_DOWN_KERNEL_FORCE_CONFIDENTIALITY", "confidentiality"),
        ("LOCK_DOWN_KERNEL_FORCE_INTEGRITY", "integrity"),
        ("LOCK_DOWN_KERNEL_FORCE_NONE", "none"),
    ] {
        if kernel_config(option).as_deref() == Some("y") {
            let status = if mode == "confidentiality" {
                Status::Warn
            } else {
                Status::Ok
            };
            return fact(
                "lockdown",
                format!("{mode} (from /proc/config.gz CONFIG_{option}; securityfs not mounted)"),
                status,
                advice_for(mode),
            );
        }
    }
    fact(
        "lockdown",
        "unknown",
        Status::Ok,
        Some(
            "mount securityfs (`mount -t securityfs securityfs /sys/kernel/security`) to read \
             the lockdown mode"
                .into(),
        ),
    )
}

/// Capability numbers from include/uapi/linux/capability.h, and why each matters.
const CAPS: [(&str, u32, &str); 4] = [
    ("CAP_BPF", 39, "load programs and create maps (5.8+)"),
    ("CAP_PERFMON", 38, "attach tracing programs, read tracefs"),
    (
        "CAP_SYS_ADMIN",
        21,
        "replaces both on older kernels; mounts tracefs; BPF_ENABLE_STATS",
    ),
    (
        "CAP_SYS_RESOURCE",
        24,
        "raise RLIMIT_MEMLOCK on kernels before 5.11",
    ),
];

fn capabilities_fact(caps: u64) -> Fact {
    let held: Vec<String> = CAPS
        .iter()
        .map(|(name, bit, _)| {
            format!(
                "{name} {}",
                if caps & (1 << bit) != 0 {
                    "held"
                } else {
                    "missing"
                }
            )
        })
        .collect();
    let missing = privileges::missing_for_tracing(caps);
    let value = format!("effective {caps:#x}: {}", held.join(", "));
    if missing.is_empty() {
        fact("capabilities", value, Status::Ok, None)
    } else {
        let why: Vec<String> = CAPS
            .iter()
            .filter(|(n, _, _)| missing.contains(n))
            .map(|(n, _, why)| format!("{n} ({why})"))
            .collect();
        fact(
            "capabilities",
            value,
            Status::Fail,
            Some(format!(
                "missing {}: run as root or `setcap cap_bpf,cap_perfmon+ep numa-agent`",
                why.join(", ")
            )),
        )
    }
}

fn tracefs_fact(explicit: Option<&Path>, mounts: &str, caps: u64) -> (Fact, Option<Tracefs>) {
    if let Some(dir) = explicit {
        return if dir.join("events").is_dir() {
            (
                fact(
                    "tracefs",
                    format!("{} (--tracefs)", dir.display()),
                    Status::Ok,
                    None,
                ),
                Some(Tracefs::at(dir)),
            )
        } else {
            (
                fact(
                    "tracefs",
                    format!("{}: no events/ directory", dir.display()),
                    Status::Fail,
                    Some("point --tracefs at a mounted tracefs".into()),
                ),
                None,
            )
        };
    }
    if let Some(dir) = tracefs::find_in_mounts(mounts) {
        return (
            fact(
                "tracefs",
                format!("{} (mounted)", dir.display()),
                Status::Ok,
                None,
            ),
            Some(Tracefs::at(dir)),
        );
    }
    let can_mount = caps & (1 << 21) != 0;
    (
        fact(
            "tracefs",
            "not mounted",
            if can_mount {
                Status::Warn
            } else {
                Status::Fail
            },
            Some(if can_mount {
                "run mounts it on /sys/kernel/tracing itself; or `mount -t tracefs nodev /sys/kernel/tracing`".into()
            } else {
                "mount it: `mount -t tracefs nodev /sys/kernel/tracing` (run needs CAP_SYS_ADMIN to do it)".into()
            }),
        ),
        None,
    )
}

/// How cgroups are mounted (/proc/mounts; Documentation/admin-guide/cgroup-v2.rst).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup2 only, at `path`.
    Unified {
        path: String,
    },
    /// v1 controllers plus cgroup2 at `unified` (systemd's hybrid layout).
    Hybrid {
        unified: String,
        v1: usize,
    },
    /// v1 controllers only.
    Legacy {
        v1: usize,
    },
    None,
}

impl CgroupMode {
    pub fn describe(&self) -> String {
        match self {
            Self::Unified { path } => format!("unified (cgroup v2 at {path})"),
            Self::Hybrid { unified, v1 } => {
                format!("hybrid ({v1} cgroup v1 hierarchies, cgroup2 at {unified})")
            }
            Self::Legacy { v1 } => format!("legacy ({v1} cgroup v1 hierarchies, no cgroup2)"),
            Self::None => "none mounted".into(),
        }
    }
}

pub fn cgroup_mode(mounts: &str) -> CgroupMode {
    let mut v2 = None;
    let mut v1 = 0;
    for line in mounts.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        match cols.get(2) {
            Some(&"cgroup2") => v2 = v2.or(cols.get(1).map(|p| (*p).to_owned())),
            Some(&"cgroup") => v1 += 1,
            _ => {}
        }
    }
    match (v2, v1) {
        (Some(path), 0) => CgroupMode::Unified { path },
        (Some(unified), v1) => CgroupMode::Hybrid { unified, v1 },
        (None, 0) => CgroupMode::None,
        (None, v1) => CgroupMode::Legacy { v1 },
    }
}

fn numa_balancing_fact() -> Fact {
    let value = fs::read_to_string("/proc/sys/kernel/numa_balancing").map(|s| s.trim().to_owned());
    // Documentation/admin-guide/sysctl/kernel.rst: 0 off, 1 normal, 2 memory tiering, 3 both.
    match value.as_deref() {
        Ok("0") => fact(
            "numa_balancing",
            "0 (disabled)",
            Status::Warn,
            Some(
                "no NUMA hinting faults, so no NUMA-balancing signals (task_numa_fault); \
                 `sysctl kernel.numa_balancing=1` enables them (steals are seen either way)"
                    .into(),
            ),
        ),
        Ok("1") => fact("numa_balancing", "1 (normal)", Status::Ok, None),
        Ok("2") => fact("numa_balancing", "2 (memory tiering)", Status::Ok, None),
        Ok("3") => fact(
            "numa_balancing",
            "3 (normal + memory tiering)",
            Status::Ok,
            None,
        ),
        Ok(other) => fact("numa_balancing", other.to_owned(), Status::Ok, None),
        Err(_) => fact(
            "numa_balancing",
            "absent",
            Status::Warn,
            Some("kernel without CONFIG_NUMA_BALANCING: no NUMA-balancing signals".into()),
        ),
    }
}

fn nodes_fact(sysfs_root: &Path) -> Fact {
    match Topology::from_sysfs(sysfs_root) {
        Ok(t) => {
            let per: Vec<String> = t
                .nodes
                .iter()
                .map(|n| format!("node{} {} CPU(s)", n.id, n.cpus.len()))
                .collect();
            let value = format!("{} ({}; from {})", t.nodes.len(), per.join(", "), t.source);
            if t.nodes.len() < 2 {
                fact(
                    "NUMA nodes",
                    value,
                    Status::Warn,
                    Some(
                        "one node: no migration crosses nodes; declare a split with \
                         `--sysfs-root` (README, \"Declaring a node split\") or run on a multi-node machine"
                            .into(),
                    ),
                )
            } else {
                fact("NUMA nodes", value, Status::Ok, None)
            }
        }
        Err(e) => fact(
            "NUMA nodes",
            format!("unreadable: {e}"),
            Status::Fail,
            Some(
                "run reads the topology from <sysfs-root>/devices/system/node; fix --sysfs-root"
                    .into(),
            ),
        ),
    }
}

fn bpf_stats_fact() -> Fact {
    let value = match operator_metrics::bpf_stats_enabled() {
        Some(true) => "1 (per-program run time collected)",
        Some(false) => "0 (run --bpf-stats collects per-program cost while the agent runs)",
        None => "unreadable",
    };
    fact("kernel.bpf_stats_enabled", value, Status::Ok, None)
}

/// Turn a failed load or attach into (why not, what to do).
fn explain(stage: &str, err: &io::Error, log: &str) -> (String, String) {
    let log = if log.is_empty() {
        String::new()
    } else {
        format!("; verifier: {log}")
    };
    let why = format!("{stage} failed: {err}{log}");
    let caps = privileges::effective_caps().unwrap_or(0);
    let advice = match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES)
            if !privileges::missing_for_tracing(caps).is_empty() =>
        {
            "run as root or grant CAP_BPF and CAP_PERFMON".to_owned()
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "the kernel refuses it although CAP_BPF and CAP_PERFMON are held: a \
             security policy (LSM, lockdown, hypervisor) forbids this program type on this \
             host; use another variant listed here, or a host that permits it"
                .to_owned()
        }
        Some(libc::ENOENT) | Some(libc::ESRCH) => {
            "the hook does not exist in this kernel (renamed, inlined or compiled out)".to_owned()
        }
        Some(libc::EINVAL) | Some(libc::E2BIG) | Some(libc::EOPNOTSUPP) | Some(524) => {
            "this kernel does not support this program type at this hook; a newer kernel may"
                .to_owned()
        }
        _ => "unexpected error; report it with the output of `numa-agent check --json`".to_owned(),
    };
    (why, advice)
}

fn variant_result(
    variant: &'static str,
    target: String,
    result: Result<(), (String, String)>,
) -> VariantCheck {
    match result {
        Ok(()) => VariantCheck {
            variant,
            target,
            attachable: true,
            why_not: None,
            advice: None,
        },
        Err((why, advice)) => VariantCheck {
            variant,
            target,
            attachable: false,
            why_not: Some(why),
            advice: Some(advice),
        },
    }
}

/// Load `prog_type` (with attach type and BTF id), then attach it with `attach`.
fn try_load_attach(
    prog_type: bpf_prog_type,
    attach_type: u32,
    btf_id: u32,
    attach: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd>,
) -> Result<(), (String, String)> {
    let prog = bpf_sys::load_trivial(prog_type as u32, attach_type, btf_id)
        .map_err(|f| explain("load", &f.error, &f.verifier_log))?;
    // The link/perf fd detaches when dropped at the end of this statement.
    attach(prog.as_fd())
        .map(drop)
        .map_err(|e| explain("attach", &e, ""))
}

fn btf_id(btf: Option<&aya::Btf>, name: &str, kind: BtfKind) -> Result<u32, (String, String)> {
    let Some(btf) = btf else {
        return Err((
            "no kernel BTF (/sys/kernel/btf/vmlinux)".into(),
            "needs a kernel built with CONFIG_DEBUG_INFO_BTF=y".into(),
        ));
    };
    btf.id_by_type_name_kind(name, kind).map_err(|e| {
        (
            format!("{name} not in the kernel's BTF: {e}"),
            "the hook does not exist in this kernel (renamed, inlined or compiled out)".into(),
        )
    })
}

fn tracepoint_probe(
    probe: &'static str,
    purpose: &'static str,
    category: &str,
    event: &str,
    tracefs: Option<&Tracefs>,
    btf: Option<&aya::Btf>,
    layout: impl Fn(&Tracefs) -> Result<(), tracefs::TracefsError>,
) -> ProbeCheck {
    let tp_btf = variant_result(
        "tp_btf",
        format!("btf_trace_{event}"),
        btf_id(btf, &format!("btf_trace_{event}"), BtfKind::Typedef).and_then(|id| {
            try_load_attach(
                bpf_prog_type::BPF_PROG_TYPE_TRACING,
                bpf_attach_type::BPF_TRACE_RAW_TP as u32,
                id,
                |fd| bpf_sys::raw_tracepoint_open(fd, None),
            )
        }),
    );
    let name = CString::new(event).unwrap_or_default();
    let raw = variant_result(
        "raw_tracepoint",
        event.to_owned(),
        try_load_attach(bpf_prog_type::BPF_PROG_TYPE_RAW_TRACEPOINT, 0, 0, |fd| {
            bpf_sys::raw_tracepoint_open(fd, Some(&name))
        }),
    );
    let classic = variant_result(
        "tracepoint",
        format!("{category}:{event}"),
        match tracefs {
            None => Err((
                "tracefs not found".into(),
                "mount tracefs (see the tracefs line above)".into(),
            )),
            Some(t) => tracepoint_id(t, category, event)
                .and_then(|id| {
                    try_load_attach(bpf_prog_type::BPF_PROG_TYPE_TRACEPOINT, 0, 0, |fd| {
                        bpf_sys::attach_perf_tracepoint(fd, id)
                    })
                })
                .and_then(|()| {
                    layout(t).map_err(|e| {
                        (
                            format!("attaches, but the event layout is not supported: {e}"),
                            "this kernel's format file lacks a field the program reads; report it with the format file".into(),
                        )
                    })
                }),
        },
    );
    // This agent implements the classic tracepoint (offsets from tracefs) only.
    let uses = classic.attachable.then_some("tracepoint");
    ProbeCheck {
        probe,
        purpose,
        required: true,
        status: if uses.is_some() {
            Status::Ok
        } else {
            Status::Fail
        },
        variants: vec![tp_btf, raw, classic],
        uses,
    }
}

impl ProbeCheck {
    /// The agent implements `variants` of this probe, preferred first, and uses the
    /// first one that attaches here.
    fn implementing(mut self, variants: &[&'static str]) -> Self {
        self.uses = variants.iter().copied().find(|v| {
            self.variants
                .iter()
                .any(|c| c.variant == *v && c.attachable)
        });
        self.status = if self.uses.is_some() {
            Status::Ok
        } else {
            Status::Fail
        };
        self
    }
}

/// Sampled user page faults: the software page-fault counter (any architecture),
/// then the x86 `exceptions:page_fault_user` tracepoint's variants.
fn page_fault_probe(tracefs: Option<&Tracefs>, btf: Option<&aya::Btf>) -> ProbeCheck {
    let counter = variant_result(
        "perf_event",
        "software:page-faults".to_owned(),
        try_load_attach(bpf_prog_type::BPF_PROG_TYPE_PERF_EVENT, 0, 0, |fd| {
            bpf_sys::attach_perf_software_page_faults(fd)
        }),
    );
    let mut check = tracepoint_probe(
        "page_fault_user",
        "sampled user page faults (numa_sampled_faults_total, --fault-sample-rate)",
        page_fault::CATEGORY,
        page_fault::EVENT,
        tracefs,
        btf,
        |t| {
            let f = t.event_format(page_fault::CATEGORY, page_fault::EVENT)?;
            page_fault::config_from_format(&f, 1).map(|_| ())
        },
    );
    check.variants.insert(0, counter);
    check.implementing(&page_fault::VARIANTS.map(|(v, _)| v))
}

fn tracepoint_id(t: &Tracefs, category: &str, event: &str) -> Result<u64, (String, String)> {
    let path = t
        .root()
        .join("events")
        .join(category)
        .join(event)
        .join("id");
    fs::read_to_string(&path)
        .map_err(|e| {
            let advice = if e.kind() == io::ErrorKind::NotFound {
                "the tracepoint does not exist in this kernel (renamed or compiled out)"
            } else {
                "tracefs is not readable by this user: run as root or grant CAP_PERFMON"
            };
            (format!("{}: {e}", path.display()), advice.into())
        })?
        .trim()
        .parse()
        .map_err(|e| {
            (
                format!("{}: {e}", path.display()),
                "corrupt tracefs id file".into(),
            )
        })
}

fn numa_fault_probe(btf: Option<&aya::Btf>) -> ProbeCheck {
    const FUNC: &str = "task_numa_fault";
    let fentry = variant_result(
        "fentry",
        FUNC.to_owned(),
        btf_id(btf, FUNC, BtfKind::Func).and_then(|id| {
            try_load_attach(
                bpf_prog_type::BPF_PROG_TYPE_TRACING,
                bpf_attach_type::BPF_TRACE_FENTRY as u32,
                id,
                |fd| bpf_sys::raw_tracepoint_open(fd, None),
            )
        }),
    );
    let kprobe = variant_result("kprobe", FUNC.to_owned(), kprobe_check(FUNC));
    // The agent implements fentry only (sensors/balancing.rs); kprobe is listed for
    // what the kernel would allow.
    let uses = fentry.attachable.then_some("fentry");
    ProbeCheck {
        probe: "task_numa_fault",
        purpose: "NUMA hinting faults, local/remote per process as the kernel flags them",
        required: false,
        status: if uses.is_some() {
            Status::Ok
        } else {
            Status::Warn
        },
        variants: vec![fentry, kprobe],
        uses,
    }
}

/// kprobes attach through the `kprobe` perf PMU (kernel/trace/trace_event_perf.c);
/// without CONFIG_KPROBES it does not exist.
fn kprobe_check(func: &str) -> Result<(), (String, String)> {
    let pmu = Path::new("/sys/bus/event_source/devices/kprobe/type");
    let Ok(pmu_type) = fs::read_to_string(pmu) else {
        let config = kernel_config("KPROBES")
            .map(|v| format!(" (CONFIG_KPROBES={v} in /proc/config.gz)"))
            .unwrap_or_default();
        return Err((
            format!("no kprobe PMU ({} absent){config}", pmu.display()),
            "this kernel is built without kprobes (CONFIG_KPROBES); use a kernel with \
             CONFIG_KPROBES=y, or rely on the fentry or tracepoint variants"
                .into(),
        ));
    };
    let pmu_type: u32 = pmu_type
        .trim()
        .parse()
        .map_err(|e| (format!("{}: {e}", pmu.display()), "corrupt PMU type".into()))?;
    let name = CString::new(func).unwrap_or_default();
    try_load_attach(bpf_prog_type::BPF_PROG_TYPE_KPROBE, 0, 0, |fd| {
        bpf_sys::attach_perf_kprobe(fd, pmu_type, &name)
    })
}

/// The report as lines for a terminal: `ok`/`warn`/`FAIL`, then `->` what to do.
pub fn render(report: &Report) -> String {
    let mark = |s: Status| match s {
        Status::Ok => "ok  ",
        Status::Warn => "warn",
        Status::Fail => "FAIL",
    };
    let mut out = String::new();
    for f in &report.facts {
        out.push_str(&format!("{} {:<26} {}\n", mark(f.status), f.name, f.value));
        if let Some(a) = &f.advice {
            out.push_str(&format!("       -> {a}\n"));
        }
    }
    out.push('\n');
    for p in &report.probes {
        let uses = p.uses.map_or_else(
            || {
                if p.required {
                    "no working variant".to_owned()
                } else {
                    "no variant this agent implements works here (optional: run goes on without it)"
                        .to_owned()
                }
            },
            |v| format!("uses {v}"),
        );
        out.push_str(&format!(
            "{} probe {} ({}){}: {uses}\n",
            mark(p.status),
            p.probe,
            p.purpose,
            if p.required { ", required" } else { "" }
        ));
        for v in &p.variants {
            if v.attachable {
                out.push_str(&format!(
                    "       {:<15} {:<28} attachable\n",
                    v.variant, v.target
                ));
            } else {
                out.push_str(&format!(
                    "       {:<15} {:<28} unavailable: {}\n",
                    v.variant,
                    v.target,
                    v.why_not.as_deref().unwrap_or("")
                ));
                if let Some(a) = &v.advice {
                    out.push_str(&format!("         -> {a}\n"));
                }
            }
        }
    }
    out.push('\n');
    out.push_str(if report.run_can_work {
        "numa-agent run can work here.\n"
    } else {
        "numa-agent run cannot work here: fix the FAIL lines above.\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_modes_from_mounts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup_mode(hybrid),
            CgroupMode::Hybrid {
                unified: "/sys/fs/cgroup/unified".into(),
                v1: 2
            }
        );
        assert_eq!(
            cgroup_mode("cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n"),
            CgroupMode::Unified {
                path: "/sys/fs/cgroup".into()
            }
        );
        assert_eq!(
            cgroup_mode("cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"),
            CgroupMode::Legacy { v1: 1 }
        );
        assert_eq!(cgroup_mode("proc /proc proc rw 0 0\n"), CgroupMode::None);
    }

    #[test]
    fn lockdown_versions_and_config() {
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n").as_deref(),
            Some("integrity")
        );
        assert_eq!(parse_lockdown("none integrity"), None);
        assert_eq!(parse_version("6.18.44-fc-v1147"), Some((6, 18)));
        assert_eq!(parse_version("5.4.0-150-generic"), Some((5, 4)));
        let config = "CONFIG_HAVE_KPROBES=y\n# CONFIG_KPROBES is not set\nCONFIG_HZ=250\n";
        assert_eq!(config_value(config, "KPROBES").as_deref(), Some("n"));
        assert_eq!(config_value(config, "HZ").as_deref(), Some("250"));
        assert_eq!(config_value(config, "BPF"), None);
    }
}
