//! Userspace half of the NUMA-balancing probes: `sched:sched_{move,swap,stick}_numa`,
//! `migrate:mm_migrate_pages` (classic tracepoints, offsets from tracefs) and NUMA
//! hinting faults (fentry on `task_numa_fault`). Each is optional: a kernel without
//! the event or without fentry gets the probe reported unavailable, with the reason,
//! and its series left out (never a 0 that looks measured).
//!
//! All of them fire only while `kernel.numa_balancing` is on (it is 0 by default): the
//! scanner (`task_numa_work()`, kernel/sched/fair.c) is what makes hinting faults, which
//! drive page migrations (`numa_misplaced`) and task placement.
use std::{collections::BTreeMap, fs, path::Path, sync::Arc};

use aya::{
    Btf, Ebpf,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap},
    programs::{FEntry, ProgramError},
};
use numa_common::{
    BalancingConfig, HintFaultConfig, HintFaultCounts, MIGRATE_REASON_SLOTS, MigratePagesConfig,
    Probe, balancing_kind, maps, programs,
};
use thiserror::Error;

use super::{ProbeStatus, SensorError, Unavailable};
use crate::{
    topology::NodeId,
    tracefs::{EventFormat, Tracefs, TracefsError},
};

pub const SCHED: &str = "sched";
pub const MOVE_EVENT: &str = "sched_move_numa";
pub const SWAP_EVENT: &str = "sched_swap_numa";
pub const STICK_EVENT: &str = "sched_stick_numa";
pub const MIGRATE: &str = "migrate";
pub const MIGRATE_EVENT: &str = "mm_migrate_pages";
/// The kernel function the hinting-fault program enters (kernel/sched/fair.c).
pub const HINT_FAULT_FUNCTION: &str = "task_numa_fault";

/// `kernel.numa_balancing` (Documentation/admin-guide/sysctl/kernel.rst): 0 off,
/// 1 normal, 2 memory tiering, 3 both.
pub const NUMA_BALANCING_SYSCTL: &str = "sys/kernel/numa_balancing";

/// The sysctl under `proc_root`; `None` when absent (no CONFIG_NUMA_BALANCING) or unreadable.
pub fn numa_balancing_mode(proc_root: &Path) -> Option<u32> {
    fs::read_to_string(proc_root.join(NUMA_BALANCING_SYSCTL))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Offsets of `src_nid` and `dst_nid` of one `sched_*_numa` format.
pub fn nid_offsets(format: &EventFormat) -> Result<(u32, u32), TracefsError> {
    Ok((
        format.int_field("src_nid", 4)?.offset,
        format.int_field("dst_nid", 4)?.offset,
    ))
}

/// The balancing config from the three formats; an absent one leaves zero offsets (its
/// program is then not attached).
pub fn balancing_config(
    move_numa: Option<(u32, u32)>,
    swap_numa: Option<(u32, u32)>,
    stick_numa: Option<(u32, u32)>,
    node_slots: u32,
) -> BalancingConfig {
    let (move_src_nid, move_dst_nid) = move_numa.unwrap_or_default();
    let (swap_src_nid, swap_dst_nid) = swap_numa.unwrap_or_default();
    let (stick_src_nid, stick_dst_nid) = stick_numa.unwrap_or_default();
    BalancingConfig {
        move_src_nid,
        move_dst_nid,
        swap_src_nid,
        swap_dst_nid,
        stick_src_nid,
        stick_dst_nid,
        node_slots,
        _pad: 0,
    }
}

pub fn migrate_pages_config(format: &EventFormat) -> Result<MigratePagesConfig, TracefsError> {
    Ok(MigratePagesConfig {
        succeeded_offset: format.int_field("succeeded", 8)?.offset,
        failed_offset: format.int_field("failed", 8)?.offset,
        reason_offset: format.int_field("reason", 4)?.offset,
        _pad: 0,
    })
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SymbolicError {
    #[error("{source_path}: print fmt has no __print_symbolic(REC->{field}, ...) table")]
    Missing { source_path: String, field: String },
    #[error("{source_path}: __print_symbolic(REC->{field}, ...): cannot read entry `{entry}`")]
    Entry {
        source_path: String,
        field: String,
        entry: String,
    },
}

/// The value -> name table of `__print_symbolic(REC-><field>, {0, "a"}, {1, "b"}, ...)` in
/// a format's `print fmt` (include/trace/stages/stage3_trace_output.h prints the table
/// as the kernel compiled it, so names follow the running kernel's `enum`).
pub fn print_symbolic(
    format: &EventFormat,
    field: &str,
) -> Result<BTreeMap<i64, String>, SymbolicError> {
    let missing = || SymbolicError::Missing {
        source_path: format.source.clone(),
        field: field.to_owned(),
    };
    let head = format!("__print_symbolic(REC->{field},");
    let start = format.print_fmt.find(&head).ok_or_else(missing)? + head.len();
    let rest = &format.print_fmt[start..];
    let mut table = BTreeMap::new();
    let mut chars = rest.char_indices().peekable();
    // Entries are `{ <int>, "<name>" }`, separated by commas; the table ends at the
    // first `)` outside an entry (names cannot hold braces in these tables).
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => {
                let end = rest[i..].find('}').ok_or_else(missing)? + i;
                let entry = &rest[i + 1..end];
                let bad = || SymbolicError::Entry {
                    source_path: format.source.clone(),
                    field: field.to_owned(),
                    entry: entry.trim().to_owned(),
                };
                let (value, name) = entry.split_once(',').ok_or_else(bad)?;
                let value: i64 = value.trim().parse().map_err(|_| bad())?;
                let name = name.trim();
                let name = name
                    .strip_prefix('"')
                    .and_then(|n| n.strip_suffix('"'))
                    .ok_or_else(bad)?;
                table.insert(value, name.to_owned());
                while chars.peek().is_some_and(|&(j, _)| j <= end) {
                    chars.next();
                }
            }
            ')' => break,
            _ => {}
        }
    }
    if table.is_empty() {
        return Err(missing());
    }
    Ok(table)
}

/// Label of each reason slot of the MIGRATE_PAGES map: the kernel's name where its
/// table has one, `reason_<n>` for a value the table lacks, `other` for the last slot
/// (values the kernel side could not index).
pub fn reason_labels(table: &BTreeMap<i64, String>) -> Vec<String> {
    (0..MIGRATE_REASON_SLOTS)
        .map(|slot| {
            if slot + 1 == MIGRATE_REASON_SLOTS {
                "other".to_owned()
            } else {
                table
                    .get(&i64::from(slot))
                    .cloned()
                    .unwrap_or_else(|| format!("reason_{slot}"))
            }
        })
        .collect()
}

/// Label of a balancing kind ([`balancing_kind`]).
pub fn kind_label(kind: u32) -> &'static str {
    match kind {
        balancing_kind::MOVE => "move",
        balancing_kind::SWAP => "swap",
        _ => "stick",
    }
}

/// One cell of the decisions matrix. `dst_node` is `None` for `-1` (no destination,
/// `sched_stick_numa`) or a node id past the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub kind: u32,
    pub src_node: Option<NodeId>,
    pub dst_node: Option<NodeId>,
    pub count: u64,
}

/// Pages `mm_migrate_pages` reported for one reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigratedPages {
    pub reason: String,
    pub succeeded: u64,
    pub failed: u64,
}

/// One cell of the hinting-fault matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintFaultCell {
    /// Node of the CPU the faulting task ran on.
    pub cpu_node: Option<NodeId>,
    /// The kernel's `mem_node` argument: the page's node after the fault.
    pub mem_node: Option<NodeId>,
    /// The kernel's `TNF_FAULT_LOCAL`.
    pub local: bool,
    pub faults: u64,
    pub pages: u64,
}

/// The balancing probes' counter maps, each present only if its probe is attached.
pub struct BalancingCounters {
    pub(crate) decisions: Option<PerCpuArray<MapData, u64>>,
    pub(crate) migrate_pages: Option<PerCpuArray<MapData, u64>>,
    pub(crate) hint_faults: Option<PerCpuArray<MapData, u64>>,
    pub(crate) reason_labels: Vec<String>,
    pub(crate) node_slots: u32,
}

impl BalancingCounters {
    fn slot_node(&self, slot: u32) -> Option<NodeId> {
        (slot + 1 < self.node_slots).then_some(slot)
    }

    /// Every non-zero cell of the (kind, src, dst) matrix; `None` if no
    /// `sched_*_numa` probe is attached.
    pub fn decisions(&self) -> Result<Option<Vec<Decision>>, MapError> {
        let Some(map) = &self.decisions else {
            return Ok(None);
        };
        let slots = self.node_slots;
        let mut out = Vec::new();
        for (index, values) in map.iter().enumerate() {
            let count: u64 = values?.iter().sum();
            if count == 0 {
                continue;
            }
            let index = index as u32;
            out.push(Decision {
                kind: index / (slots * slots),
                src_node: self.slot_node(index / slots % slots),
                dst_node: self.slot_node(index % slots),
                count,
            });
        }
        Ok(Some(out))
    }

    /// Pages per reason with any count; `None` if the probe is not attached.
    pub fn migrated_pages(&self) -> Result<Option<Vec<MigratedPages>>, MapError> {
        let Some(map) = &self.migrate_pages else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for (slot, label) in self.reason_labels.iter().enumerate() {
            let slot = slot as u32;
            let succeeded: u64 = map.get(&(slot * 2), 0)?.iter().sum();
            let failed: u64 = map.get(&(slot * 2 + 1), 0)?.iter().sum();
            if succeeded + failed > 0 {
                out.push(MigratedPages {
                    reason: label.clone(),
                    succeeded,
                    failed,
                });
            }
        }
        Ok(Some(out))
    }

    /// Every non-zero cell of the hinting-fault matrix; `None` if fentry is unavailable.
    pub fn hint_faults(&self) -> Result<Option<Vec<HintFaultCell>>, MapError> {
        let Some(map) = &self.hint_faults else {
            return Ok(None);
        };
        let slots = self.node_slots;
        let mut cells = BTreeMap::new();
        for (index, values) in map.iter().enumerate() {
            let count: u64 = values?.iter().sum();
            if count == 0 {
                continue;
            }
            let index = index as u32;
            let (what, local, pair) = (index % 2, index / 2 % 2, index / 4);
            let cell = cells
                .entry((pair / slots, pair % slots, local))
                .or_insert((0, 0));
            if what == 0 {
                cell.0 += count;
            } else {
                cell.1 += count;
            }
        }
        Ok(Some(
            cells
                .into_iter()
                .map(|((cpu, mem, local), (faults, pages))| HintFaultCell {
                    cpu_node: self.slot_node(cpu),
                    mem_node: self.slot_node(mem),
                    local: local == 1,
                    faults,
                    pages,
                })
                .collect(),
        ))
    }
}

/// Read every thread group's hinting faults, summed over CPUs.
pub fn read_task_hint_faults(
    map: &PerCpuHashMap<MapData, u32, HintFaultCounts>,
) -> Result<BTreeMap<u32, HintFaultCounts>, MapError> {
    let mut out = BTreeMap::new();
    for entry in map.iter() {
        let (tgid, values) = entry?;
        let mut sum = HintFaultCounts::default();
        for v in values.iter() {
            sum.local_faults += v.local_faults;
            sum.remote_faults += v.remote_faults;
            sum.local_pages += v.local_pages;
            sum.remote_pages += v.remote_pages;
            sum.migrated_pages += v.migrated_pages;
            sum.migrate_failed_pages += v.migrate_failed_pages;
        }
        out.insert(tgid, sum);
    }
    Ok(out)
}

/// What the balancing probes need at load time, read from tracefs before the object is
/// loaded: each probe's config, or why it cannot be attached.
pub struct BalancingSetup {
    pub balancing: BalancingConfig,
    pub migrate_pages: MigratePagesConfig,
    pub hint_faults: HintFaultConfig,
    /// Per `sched_*_numa` event (move, swap, stick): `Err(reason)` when its format is
    /// absent or unusable.
    pub decisions: [Result<(), Unavailable>; 3],
    /// `mm_migrate_pages`: the reason label of each map slot, or why not.
    pub reasons: Result<Vec<String>, Unavailable>,
    pub node_slots: u32,
}

impl BalancingSetup {
    pub fn from_tracefs(tracefs: &Tracefs, node_slots: u32, agent_tgid: u32) -> Self {
        let nids = |event: &str| {
            tracefs
                .event_format(SCHED, event)
                .and_then(|f| nid_offsets(&f))
                .map_err(|e| tracefs_unavailable(&e))
        };
        let (m, s, t) = (nids(MOVE_EVENT), nids(SWAP_EVENT), nids(STICK_EVENT));
        let balancing =
            balancing_config(m.clone().ok(), s.clone().ok(), t.clone().ok(), node_slots);
        let migrate = tracefs
            .event_format(MIGRATE, MIGRATE_EVENT)
            .map_err(|e| tracefs_unavailable(&e))
            .and_then(|f| {
                let config = migrate_pages_config(&f).map_err(|e| tracefs_unavailable(&e))?;
                let table = print_symbolic(&f, "reason").map_err(|e| {
                    Unavailable::new(Unavailable::UNSUPPORTED_LAYOUT, e.to_string())
                })?;
                Ok((config, reason_labels(&table)))
            });
        let (migrate_pages, reasons) = match migrate {
            Ok((config, labels)) => (config, Ok(labels)),
            Err(e) => (MigratePagesConfig::default(), Err(e)),
        };
        Self {
            balancing,
            migrate_pages,
            hint_faults: HintFaultConfig {
                node_slots,
                agent_tgid,
            },
            decisions: [m.map(drop), s.map(drop), t.map(drop)],
            reasons,
            node_slots,
        }
    }
}

/// The loaded balancing probes: their counters, the per-task hinting-fault map (if
/// fentry attached) and one status per probe.
pub struct Attached {
    pub counters: Arc<BalancingCounters>,
    pub task_hint_faults: Option<PerCpuHashMap<MapData, u32, HintFaultCounts>>,
    pub probes: Vec<ProbeStatus>,
}

/// Attach every balancing probe this kernel allows; none of them is fatal.
pub(super) fn attach(ebpf: &mut Ebpf, setup: &BalancingSetup) -> Result<Attached, SensorError> {
    let mut probes = Vec::new();
    let mut any_decision = false;
    for ((probe, program, event), ready) in [
        (Probe::SchedMoveNuma, programs::SCHED_MOVE_NUMA, MOVE_EVENT),
        (Probe::SchedSwapNuma, programs::SCHED_SWAP_NUMA, SWAP_EVENT),
        (
            Probe::SchedStickNuma,
            programs::SCHED_STICK_NUMA,
            STICK_EVENT,
        ),
    ]
    .into_iter()
    .zip(&setup.decisions)
    {
        let target = format!("{SCHED}:{event}");
        let outcome = ready.clone().and_then(|()| {
            super::attach_tracepoint(ebpf, program, SCHED, event)
                .map_err(|e| attach_unavailable(&e))
        });
        any_decision |= outcome.is_ok();
        probes.push(ProbeStatus::from_outcome(
            probe,
            "tracepoint",
            target,
            outcome,
        ));
    }
    let migrate_target = format!("{MIGRATE}:{MIGRATE_EVENT}");
    let migrate = setup.reasons.clone().and_then(|labels| {
        super::attach_tracepoint(ebpf, programs::MM_MIGRATE_PAGES, MIGRATE, MIGRATE_EVENT)
            .map_err(|e| attach_unavailable(&e))
            .map(|()| labels)
    });
    let reason_labels = migrate.clone().unwrap_or_default();
    probes.push(ProbeStatus::from_outcome(
        Probe::MmMigratePages,
        "tracepoint",
        migrate_target,
        migrate.as_ref().map(drop).map_err(Clone::clone),
    ));
    let fentry = attach_fentry(ebpf);
    let hint_ok = fentry.is_ok();
    probes.push(ProbeStatus::from_outcome(
        Probe::TaskNumaFault,
        "fentry",
        format!("fentry:{HINT_FAULT_FUNCTION}"),
        fentry,
    ));

    let counters = BalancingCounters {
        decisions: any_decision
            .then(|| super::take(ebpf, maps::NUMA_BALANCING))
            .transpose()?,
        migrate_pages: migrate
            .is_ok()
            .then(|| super::take(ebpf, maps::MIGRATE_PAGES))
            .transpose()?,
        hint_faults: hint_ok
            .then(|| super::take(ebpf, maps::HINT_FAULTS))
            .transpose()?,
        reason_labels,
        node_slots: setup.node_slots,
    };
    let task_hint_faults = hint_ok
        .then(|| super::take(ebpf, maps::TASK_HINT_FAULTS))
        .transpose()?;
    Ok(Attached {
        counters: Arc::new(counters),
        task_hint_faults,
        probes,
    })
}

/// fentry needs the kernel's BTF (to find the function) and a kernel that lets BPF
/// trampolines attach; the error says which step failed.
fn attach_fentry(ebpf: &mut Ebpf) -> Result<(), Unavailable> {
    let btf = Btf::from_sys_fs().map_err(|e| {
        Unavailable::new(Unavailable::NO_BTF, format!("reading the kernel BTF: {e}"))
    })?;
    let program: &mut FEntry = ebpf
        .program_mut(programs::TASK_NUMA_FAULT)
        .ok_or_else(|| {
            Unavailable::new(
                Unavailable::ATTACH_FAILED,
                "program missing from the object",
            )
        })?
        .try_into()
        .map_err(|e: ProgramError| Unavailable::new(Unavailable::ATTACH_FAILED, e.to_string()))?;
    program.load(HINT_FAULT_FUNCTION, &btf).map_err(|e| {
        // ProgramError::LoadError already prints its io::Error source.
        let refused = matches!(&e, ProgramError::LoadError { io_error, .. }
            if matches!(io_error.raw_os_error(), Some(libc::EPERM | libc::EACCES)));
        if refused {
            Unavailable::new(
                Unavailable::KERNEL_REFUSED,
                format!(
                    "loading fentry on {HINT_FAULT_FUNCTION}: {e}: this kernel refuses BPF \
                     trampolines here, so no local/remote hinting-fault counts"
                ),
            )
        } else {
            Unavailable::new(
                Unavailable::ATTACH_FAILED,
                format!("loading fentry on {HINT_FAULT_FUNCTION}: {e}"),
            )
        }
    })?;
    program.attach().map_err(|e| {
        Unavailable::new(
            Unavailable::ATTACH_FAILED,
            format!(
                "attaching fentry on {HINT_FAULT_FUNCTION}: {}",
                super::error_chain(&e)
            ),
        )
    })?;
    Ok(())
}

/// A format file that is absent (`no_event`) or does not fit (`unsupported_layout`).
fn tracefs_unavailable(e: &TracefsError) -> Unavailable {
    let kind = match e {
        TracefsError::Read { .. } | TracefsError::Mount { .. } => Unavailable::NO_EVENT,
        TracefsError::Format { .. } | TracefsError::Field { .. } => Unavailable::UNSUPPORTED_LAYOUT,
    };
    Unavailable::new(kind, e.to_string())
}

fn attach_unavailable(e: &SensorError) -> Unavailable {
    Unavailable::new(Unavailable::ATTACH_FAILED, super::error_chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tracefs::fixtures::{KERNELS, format};

    #[test]
    fn node_offsets_on_every_fixture_kernel() {
        for kernel in KERNELS {
            let m = nid_offsets(&format(kernel, "sched__sched_move_numa.format")).expect("move");
            let s = nid_offsets(&format(kernel, "sched__sched_swap_numa.format")).expect("swap");
            let t = nid_offsets(&format(kernel, "sched__sched_stick_numa.format")).expect("stick");
            assert_eq!((m, s, t), ((24, 32), (24, 44), (24, 44)), "{kernel}");
        }
    }

    #[test]
    fn migrate_pages_reason_moved_between_6_1_and_6_12() {
        let old = migrate_pages_config(&format(KERNELS[0], "migrate__mm_migrate_pages.format"))
            .expect("6.1");
        assert_eq!(
            (old.succeeded_offset, old.failed_offset, old.reason_offset),
            (8, 16, 52)
        );
        for kernel in &KERNELS[1..] {
            let new = migrate_pages_config(&format(kernel, "migrate__mm_migrate_pages.format"))
                .expect("new");
            assert_eq!(new.reason_offset, 60, "{kernel}");
        }
    }

    #[test]
    fn reason_names_come_from_each_kernels_table() {
        let old = print_symbolic(
            &format(KERNELS[0], "migrate__mm_migrate_pages.format"),
            "reason",
        )
        .expect("6.1 table");
        assert_eq!(old.len(), 9);
        assert_eq!(old[&5], "numa_misplaced");
        assert_eq!(old[&0], "compaction");
        assert!(!old.contains_key(&9));
        let new = print_symbolic(
            &format(KERNELS[2], "migrate__mm_migrate_pages.format"),
            "reason",
        )
        .expect("6.18 table");
        assert_eq!(new[&9], "damon");
        // The `mode` table of the same line is not mixed in.
        let mode = print_symbolic(
            &format(KERNELS[2], "migrate__mm_migrate_pages.format"),
            "mode",
        )
        .expect("mode table");
        assert_eq!(mode.len(), 3);
        assert_eq!(mode[&2], "MIGRATE_SYNC");
        let labels = reason_labels(&old);
        assert_eq!(labels[5], "numa_misplaced");
        assert_eq!(labels[9], "reason_9");
        assert_eq!(labels[15], "other");
    }

    #[test]
    fn a_format_without_the_table_is_named() {
        let f = format(KERNELS[0], "sched__sched_move_numa.format");
        let e = print_symbolic(&f, "reason").expect_err("no table");
        assert!(
            e.to_string().contains("sched__sched_move_numa.format"),
            "{e}"
        );
        let mut bad = format(KERNELS[0], "migrate__mm_migrate_pages.format");
        bad.print_fmt = bad
            .print_fmt
            .replace("{5, \"numa_misplaced\"}", "{five, \"x\"}");
        let e = print_symbolic(&bad, "reason").expect_err("bad entry");
        assert!(e.to_string().contains("`five, \"x\"`"), "{e}");
    }

    #[test]
    fn balancing_sysctl_is_read_or_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(numa_balancing_mode(dir.path()), None);
        std::fs::create_dir_all(dir.path().join("sys/kernel")).expect("mkdir");
        std::fs::write(dir.path().join(NUMA_BALANCING_SYSCTL), "1\n").expect("write");
        assert_eq!(numa_balancing_mode(dir.path()), Some(1));
    }
}
