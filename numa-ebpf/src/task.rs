//! `task:task_newtask`: remember the thread group (and kernel-thread flag) of every
//! new task, so events about a thread name its process even after it has exited; and
//! `cgroup:cgroup_attach_task`: keep the cgroup ids of every process current, so events
//! are charged to the right cgroup even when the process is gone before the agent looks.
//!
//! ```text
//! field:pid_t pid;            offset:8;   size:4;  signed:1;   (6.18; 6.1 alike)
//! field:char comm[16];        offset:12;  size:16; signed:0;
//! field:u64 clone_flags;      offset:32;  size:8;  signed:0;   (6.1: unsigned long)
//! ```
//!
//! It fires in `copy_process()` (kernel/fork.c) in the parent's context, so `current`
//! is the creator: with CLONE_THREAD the new task joins the creator's thread group,
//! otherwise it leads a new one. Children of kthreadd (pid 2) are kernel threads.
//!
//! A child starts in its parent's cgroups on every hierarchy (`cgroup_fork()` /
//! `cgroup_post_fork()`, kernel/cgroup/cgroup.c) except with clone3's
//! CLONE_INTO_CGROUP, which picks its v2 cgroup: so a new process copies its creator's
//! ids, the v2 one read from `current` itself, and the v2 id is left unknown (0) for
//! CLONE_INTO_CGROUP. Moves after the fork arrive through `cgroup_attach_task`.
use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid},
    macros::tracepoint,
    programs::TracePointContext,
};
use numa_common::{
    AttachConfig, CGROUP_SLOT_V1, CGROUP_SLOT_V2, CGROUP_SLOTS, CLONE_INTO_CGROUP, CLONE_THREAD,
    HIERARCHY_NONE, NewTaskConfig, TASK_KERNEL_THREAD, TaskInfo,
};

use crate::maps::TASKS;

#[unsafe(no_mangle)]
static NEWTASK_CONFIG: Global<NewTaskConfig> = Global::new(NewTaskConfig {
    pid_offset: 0,
    clone_flags_offset: 0,
});

#[unsafe(no_mangle)]
static ATTACH_CONFIG: Global<AttachConfig> = Global::new(AttachConfig {
    dst_root_offset: 0,
    dst_id_offset: 0,
    pid_offset: 0,
    v1_hierarchy: HIERARCHY_NONE,
});

/// kthreadd's pid (`kernel_init` is 1, kthreadd 2: init/main.c `rest_init()`).
const KTHREADD_PID: u32 = 2;

#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let _ = try_task_newtask(&ctx);
    0
}

fn try_task_newtask(ctx: &TracePointContext) -> Result<(), i64> {
    let cfg = NEWTASK_CONFIG.load();
    // SAFETY: offsets come from this kernel's format file; reads go through
    // bpf_probe_read_kernel, which fails cleanly instead of faulting.
    let (pid, clone_flags) = unsafe {
        (
            ctx.read_at::<i32>(cfg.pid_offset as usize)
                .map_err(i64::from)? as u32,
            ctx.read_at::<u64>(cfg.clone_flags_offset as usize)
                .map_err(i64::from)?,
        )
    };
    let creator_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let flags = if creator_tgid == KTHREADD_PID {
        TASK_KERNEL_THREAD
    } else {
        0
    };
    if clone_flags & CLONE_THREAD != 0 {
        // A thread: its group's cgroups live on the leader's entry.
        let info = TaskInfo {
            tgid: creator_tgid,
            flags,
            cgroup_ids: [0; CGROUP_SLOTS],
        };
        return TASKS.insert(pid, info, 0).map_err(i64::from);
    }
    // SAFETY: the value is copied out at once; a concurrent update can only make it stale.
    let mut cgroup_ids = unsafe { TASKS.get(creator_tgid) }
        .map(|creator| creator.cgroup_ids)
        .unwrap_or([0; CGROUP_SLOTS]);
    cgroup_ids[CGROUP_SLOT_V2] = if clone_flags & CLONE_INTO_CGROUP != 0 {
        0
    } else {
        // SAFETY: plain helper call without arguments.
        unsafe { bpf_get_current_cgroup_id() }
    };
    let info = TaskInfo {
        tgid: pid,
        flags,
        cgroup_ids,
    };
    TASKS.insert(pid, info, 0).map_err(i64::from)
}

/// ```text
/// field:int dst_root;                   offset:8;  size:4; signed:1;   (6.18)
/// field:int dst_level;                  offset:12; size:4; signed:1;
/// field:u64 dst_id;                     offset:16; size:8; signed:0;
/// field:int pid;                        offset:24; size:4; signed:1;
/// field:__data_loc char[] dst_path;     offset:28; size:4; signed:0;
/// ```
///
/// Fired by `cgroup_attach_task()` (kernel/cgroup/cgroup.c) once per move, after the
/// migration succeeded, with the *leader* when a whole process moves (`cgroup.procs`),
/// or the thread itself for a single-thread move (v1 `tasks`, v2 threaded cgroups).
/// `dst_root` is the hierarchy id (0 for cgroup v2), `dst_id` the cgroup's kernfs id.
#[tracepoint(category = "cgroup", name = "cgroup_attach_task")]
pub fn cgroup_attach_task(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup_attach_task(&ctx);
    0
}

fn try_cgroup_attach_task(ctx: &TracePointContext) -> Result<(), i64> {
    let cfg = ATTACH_CONFIG.load();
    // SAFETY: as in try_task_newtask.
    let (root, id, pid) = unsafe {
        (
            ctx.read_at::<i32>(cfg.dst_root_offset as usize)
                .map_err(i64::from)? as u32,
            ctx.read_at::<u64>(cfg.dst_id_offset as usize)
                .map_err(i64::from)?,
            ctx.read_at::<i32>(cfg.pid_offset as usize)
                .map_err(i64::from)? as u32,
        )
    };
    let slot = if root == 0 {
        CGROUP_SLOT_V2
    } else if root == cfg.v1_hierarchy {
        CGROUP_SLOT_V1
    } else {
        return Ok(()); // a hierarchy attribution does not read
    };
    if let Some(info) = TASKS.get_ptr_mut(pid) {
        // SAFETY: an aligned 8-byte store into the map value; a concurrent reader sees
        // the old or the new id, both of which were true at some point.
        unsafe { (*info).cgroup_ids[slot] = id };
        return Ok(());
    }
    // Not seen before (evicted, or moved before the agent seeded it): the thread group
    // is not known here (0), the agent resolves it from /proc.
    let mut cgroup_ids = [0; CGROUP_SLOTS];
    cgroup_ids[slot] = id;
    let info = TaskInfo {
        tgid: 0,
        flags: 0,
        cgroup_ids,
    };
    TASKS.insert(pid, info, 0).map_err(i64::from)
}
