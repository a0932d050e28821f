//! Userspace half of the `sched:sched_migrate_task` probe: the load-time config read
//! from the kernel's format file, and decoding of the records it sends.
use numa_common::{
    CGROUP_SLOTS, COMM_LEN, MigrateConfig, MigrateRecord, NODE_UNKNOWN, Probe, steal_type,
};

use crate::{
    topology::NodeId,
    tracefs::{EventFormat, TracefsError},
};

pub const CATEGORY: &str = "sched";
pub const EVENT: &str = "sched_migrate_task";

/// Offsets of the fields the program reads, from this kernel's `format` file.
/// Refuses a layout that lacks a field or types it differently.
pub fn config_from_format(
    format: &EventFormat,
    node_slots: u32,
) -> Result<MigrateConfig, TracefsError> {
    let comm = format.string_field("comm")?;
    Ok(MigrateConfig {
        pid_offset: format.int_field("pid", 4)?.offset,
        orig_cpu_offset: format.int_field("orig_cpu", 4)?.offset,
        dest_cpu_offset: format.int_field("dest_cpu", 4)?.offset,
        comm_offset: comm.offset,
        comm_data_loc: u32::from(comm.data_loc),
        node_slots,
        agent_tgid: 0,
        _pad: 0,
    })
}

/// How the task was moved; see `numa_common::steal_type` for the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StealType {
    Wakeup,
    IdleBalance,
    Forced,
    #[serde(rename = "self")]
    SelfMove,
    Unknown,
}

impl StealType {
    pub fn from_abi(value: u32) -> Self {
        match value {
            steal_type::WAKEUP => Self::Wakeup,
            steal_type::IDLE_BALANCE => Self::IdleBalance,
            steal_type::FORCED => Self::Forced,
            steal_type::SELF => Self::SelfMove,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wakeup => "wakeup",
            Self::IdleBalance => "idle_balance",
            Self::Forced => "forced",
            Self::SelfMove => "self",
            Self::Unknown => "unknown",
        }
    }
}

/// A decoded cross-node migration record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    pub boot_ns: u64,
    pub tid: u32,
    pub src_cpu: u32,
    pub dst_cpu: u32,
    pub src_node: Option<NodeId>,
    pub dst_node: Option<NodeId>,
    pub steal_type: StealType,
    pub actor_tid: u32,
    pub actor_tgid: u32,
    /// Thread group of the moved thread as the kernel recorded it, if it did.
    pub tgid: Option<u32>,
    pub comm: String,
    /// The thread group's cgroup ids as the kernel knew them at the event, per
    /// `numa_common::CGROUP_SLOT_*`; 0 = not known.
    pub cgroup_ids: [u64; CGROUP_SLOTS],
}

/// Decode one ring-buffer record of this probe; `None` if it is not one.
pub fn decode(bytes: &[u8]) -> Option<Migration> {
    if bytes.len() < size_of::<MigrateRecord>() {
        return None;
    }
    // SAFETY: length checked; MigrateRecord is Pod (integers only), read unaligned.
    let r: MigrateRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    if r.probe != Probe::SchedMigrateTask as u32 {
        return None;
    }
    let node = |n: u32| (n != NODE_UNKNOWN).then_some(n);
    Some(Migration {
        boot_ns: r.boot_ns,
        tid: r.tid,
        src_cpu: r.src_cpu,
        dst_cpu: r.dst_cpu,
        src_node: node(r.src_node),
        dst_node: node(r.dst_node),
        steal_type: StealType::from_abi(r.steal_type),
        actor_tid: r.actor_tid,
        actor_tgid: r.actor_tgid,
        tgid: (r.tgid != 0).then_some(r.tgid),
        comm: comm_to_string(&r.comm),
        cgroup_ids: r.cgroup_ids,
    })
}

pub fn comm_to_string(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn format(kernel: &str) -> EventFormat {
        crate::tracefs::fixtures::format(kernel, "sched__sched_migrate_task.format")
    }

    #[test]
    fn config_follows_each_kernel_layout() {
        let old = config_from_format(&format("linux-6.1-debian"), 3).expect("6.1");
        assert_eq!(
            old,
            MigrateConfig {
                pid_offset: 24,
                orig_cpu_offset: 32,
                dest_cpu_offset: 36,
                comm_offset: 8,
                comm_data_loc: 0,
                node_slots: 3,
                agent_tgid: 0,
                _pad: 0,
            }
        );
        let new = config_from_format(&format("linux-6.18"), 3).expect("6.18");
        assert_eq!(
            (new.pid_offset, new.orig_cpu_offset, new.dest_cpu_offset),
            (12, 20, 24)
        );
        assert_eq!((new.comm_offset, new.comm_data_loc), (8, 1));
    }

    #[test]
    fn refuses_a_layout_without_dest_cpu() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/fixtures/tracefs/linux-6.18/sched__sched_migrate_task.format"),
        )
        .expect("fixture")
        .replace("dest_cpu;", "target_cpu;");
        let f = EventFormat::parse(&text, "edited").expect("parses");
        let e = config_from_format(&f, 2)
            .expect_err("dest_cpu missing")
            .to_string();
        assert!(e.contains("`dest_cpu` is missing"), "{e}");
    }

    #[test]
    fn decodes_a_record() {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"pin0");
        let r = MigrateRecord {
            probe: 0,
            steal_type: steal_type::FORCED,
            boot_ns: 42,
            tid: 7,
            src_cpu: 0,
            dst_cpu: 1,
            src_node: 0,
            dst_node: NODE_UNKNOWN,
            actor_tid: 15,
            actor_tgid: 15,
            tgid: 6,
            comm,
            cgroup_ids: [11, 22],
        };
        // SAFETY: reading the bytes of a Pod value.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const r).cast::<u8>(), size_of::<MigrateRecord>())
        };
        let m = decode(bytes).expect("decodes");
        assert_eq!(
            (m.tid, m.tgid, m.src_node, m.dst_node),
            (7, Some(6), Some(0), None)
        );
        assert_eq!((m.steal_type, m.comm.as_str()), (StealType::Forced, "pin0"));
        assert_eq!(m.cgroup_ids, [11, 22]);
        assert_eq!(decode(&bytes[..10]), None);
    }
}
