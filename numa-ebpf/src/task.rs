//! `task:task_newtask`: remember the thread group (and kernel-thread flag) of every
//! new task, so events about a thread name its process even after it has exited.
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
use aya_ebpf::{
    Global, helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use numa_common::{CLONE_THREAD, NewTaskConfig, TASK_KERNEL_THREAD, TaskInfo};

use crate::maps::TASKS;

#[unsafe(no_mangle)]
static NEWTASK_CONFIG: Global<NewTaskConfig> = Global::new(NewTaskConfig {
    pid_offset: 0,
    clone_flags_offset: 0,
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
    let info = TaskInfo {
        tgid: if clone_flags & CLONE_THREAD != 0 {
            creator_tgid
        } else {
            pid
        },
        flags: if creator_tgid == KTHREADD_PID {
            TASK_KERNEL_THREAD
        } else {
            0
        },
    };
    TASKS.insert(pid, info, 0).map_err(i64::from)
}
