//! `sched:sched_migrate_task`: every task migration, counted per (source node,
//! destination node); a record for each one that crosses nodes.
//!
//! The layout differs between kernels, so offsets come from the running kernel's
//! `format` file through `MIGRATE_CONFIG` (set by the agent at load time):
//!
//! ```text
//! 6.1 (Debian)                                         6.18
//! field:char comm[16];   offset:8;  size:16;           field:__data_loc char[] comm; offset:8;  size:4;
//! field:pid_t pid;       offset:24; size:4;            field:pid_t pid;              offset:12; size:4;
//! field:int prio;        offset:28; size:4;            field:int prio;               offset:16; size:4;
//! field:int orig_cpu;    offset:32; size:4;            field:int orig_cpu;           offset:20; size:4;
//! field:int dest_cpu;    offset:36; size:4;            field:int dest_cpu;           offset:24; size:4;
//! ```
//!
//! The event fires in `set_task_cpu()` (kernel/sched/core.c) in the context of
//! whoever moves the task, so the migrated task is `pid`, never `current`.
use aya_ebpf::{
    EbpfContext as _, Global,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_boot_ns,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use numa_common::{
    CGROUP_SLOT_V2, CGROUP_SLOTS, COMM_LEN, MigrateConfig, MigrateRecord, NODE_UNKNOWN, Probe,
    TASK_KERNEL_THREAD, steal_type,
};

use crate::maps::{EVENTS, MIGRATIONS, TASKS, bump, count_lost, node_of, slot, submit_flags};

#[unsafe(no_mangle)]
static MIGRATE_CONFIG: Global<MigrateConfig> = Global::new(MigrateConfig {
    pid_offset: 0,
    orig_cpu_offset: 0,
    dest_cpu_offset: 0,
    comm_offset: 0,
    comm_data_loc: 0,
    node_slots: 1,
    agent_tgid: 0,
    _pad: 0,
});

/// Prefix of the CPU stopper threads' comm (`migration/%u`, kernel/stop_machine.c).
const STOPPER_COMM: &[u8] = b"migration/";

#[tracepoint(category = "sched", name = "sched_migrate_task")]
pub fn sched_migrate_task(ctx: TracePointContext) -> u32 {
    match try_sched_migrate_task(&ctx) {
        Ok(ret) => ret,
        Err(offset) => {
            // Only reached if this kernel's format file lied about a field: rare, so logged.
            warn!(
                &ctx,
                "sched_migrate_task: cannot read the field at offset {}", offset
            );
            0
        }
    }
}

fn try_sched_migrate_task(ctx: &TracePointContext) -> Result<u32, u32> {
    let cfg = MIGRATE_CONFIG.load();
    // SAFETY: offsets come from this kernel's format file; reads go through
    // bpf_probe_read_kernel, which fails cleanly instead of faulting. Errors carry
    // the offset that could not be read.
    let read = |offset: u32| unsafe { ctx.read_at::<i32>(offset as usize) }.map_err(|_| offset);
    let tid = read(cfg.pid_offset)? as u32;
    let src_cpu = read(cfg.orig_cpu_offset)? as u32;
    let dst_cpu = read(cfg.dest_cpu_offset)? as u32;
    let src_node = node_of(src_cpu);
    let dst_node = node_of(dst_cpu);

    let slots = cfg.node_slots;
    bump(
        MIGRATIONS.get_ptr_mut(slot(src_node, slots) * slots + slot(dst_node, slots)),
        1,
    );
    if src_node == dst_node && src_node != NODE_UNKNOWN {
        return Ok(0);
    }

    let pid_tgid = bpf_get_current_pid_tgid();
    let actor_tid = pid_tgid as u32;
    let actor_tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is copied out at once; a concurrent update can only make it stale.
    let (mut tgid, task_flags) = match unsafe { TASKS.get(tid) } {
        Some(info) => (info.tgid, info.flags),
        None => (0, 0),
    };
    if tgid == 0 && actor_tid == tid {
        tgid = actor_tgid;
    }
    // Kernel threads are not workloads; the agent never observes itself.
    if task_flags & TASK_KERNEL_THREAD != 0 || (tgid != 0 && tgid == cfg.agent_tgid) {
        return Ok(0);
    }

    // The group's cgroups, as of now, from the leader's entry (see TaskInfo).
    let mut cgroup_ids = if tgid != 0 {
        // SAFETY: as above.
        unsafe { TASKS.get(tgid) }
            .map(|leader| leader.cgroup_ids)
            .unwrap_or([0; CGROUP_SLOTS])
    } else {
        [0; CGROUP_SLOTS]
    };
    if cgroup_ids[CGROUP_SLOT_V2] == 0 && actor_tid == tid {
        // SAFETY: plain helper call; `current` is the moved task here.
        cgroup_ids[CGROUP_SLOT_V2] = unsafe { bpf_get_current_cgroup_id() };
    }

    let Some(mut entry) = EVENTS.reserve::<MigrateRecord>(0) else {
        count_lost(Probe::SchedMigrateTask);
        return Ok(0);
    };
    let mut record = MigrateRecord {
        probe: Probe::SchedMigrateTask as u32,
        steal_type: classify(tid, actor_tid),
        // SAFETY: plain helper call without arguments.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        tid,
        src_cpu,
        dst_cpu,
        src_node,
        dst_node,
        actor_tid,
        actor_tgid,
        tgid,
        comm: [0; COMM_LEN],
        cgroup_ids,
    };
    read_comm(ctx, &cfg, &mut record.comm);
    entry.write(record);
    entry.submit(submit_flags());
    Ok(0)
}

/// See `numa_common::steal_type` for what each answer means and leaves ambiguous.
#[inline(always)]
fn classify(tid: u32, actor_tid: u32) -> u32 {
    if actor_tid == tid {
        return steal_type::SELF;
    }
    if actor_tid == 0 {
        return steal_type::IDLE_BALANCE;
    }
    match bpf_get_current_comm() {
        Ok(comm) if comm.starts_with(STOPPER_COMM) => steal_type::FORCED,
        Ok(_) => steal_type::WAKEUP,
        Err(_) => steal_type::UNKNOWN,
    }
}

/// The migrated task's comm from the record: an inline `char[16]` on older kernels, a
/// `__data_loc` string (low 16 bits offset, high 16 bits length) on newer ones.
#[inline(always)]
fn read_comm(ctx: &TracePointContext, cfg: &MigrateConfig, out: &mut [u8; COMM_LEN]) {
    let offset = if cfg.comm_data_loc != 0 {
        // SAFETY: see try_sched_migrate_task.
        match unsafe { ctx.read_at::<u32>(cfg.comm_offset as usize) } {
            Ok(loc) => (loc & 0xffff) as usize,
            Err(_) => return,
        }
    } else {
        cfg.comm_offset as usize
    };
    // SAFETY: the helper copies at most COMM_LEN bytes and stops at the NUL.
    let _ = unsafe {
        aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(
            (ctx.as_ptr() as *const u8).add(offset),
            out,
        )
    };
}
