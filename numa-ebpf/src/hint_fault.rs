//! NUMA hinting faults, at the entry of the kernel function that accounts them:
//!
//! ```c
//! void task_numa_fault(int last_cpupid, int mem_node, int pages, int flags);
//! ```
//!
//! (kernel/sched/fair.c, the same signature in 6.1, 6.12 and 6.18). `do_numa_page()`
//! (mm/memory.c) and `do_huge_pmd_numa_page()` (mm/huge_memory.c) call it once per
//! hinting fault, in the faulting task's context, after `numa_migrate_prep()` (6.1) /
//! `numa_migrate_check()` (6.12) counted the fault in the vmstat event
//! `numa_hint_faults` and, when the page was on the faulting CPU's node, set
//! `TNF_FAULT_LOCAL` and counted `numa_hint_faults_local`. So locality here is the
//! kernel's own verdict, not recomputed. `mem_node` is the page's node after the fault
//! (the target node when `TNF_MIGRATED` is set); `pages` is 1, or the size of a huge page.
//!
//! fentry needs a kernel that allows BPF trampolines on this function; where it does
//! not (the development host answers EPERM), the agent reports the probe unavailable.
use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    macros::fentry,
    programs::FEntryContext,
};
use numa_common::{
    HintFaultConfig, HintFaultCounts, TNF_FAULT_LOCAL, TNF_MIGRATE_FAIL, TNF_MIGRATED,
};

use crate::maps::{HINT_FAULTS, TASK_HINT_FAULTS, bump, node_of, slot};

#[unsafe(no_mangle)]
static HINT_FAULT_CONFIG: Global<HintFaultConfig> = Global::new(HintFaultConfig {
    node_slots: 1,
    agent_tgid: 0,
});

#[fentry(function = "task_numa_fault")]
pub fn task_numa_fault(ctx: FEntryContext) -> u32 {
    let _ = try_task_numa_fault(&ctx);
    0
}

fn try_task_numa_fault(ctx: &FEntryContext) -> Result<(), i64> {
    let cfg = HINT_FAULT_CONFIG.load();
    let mem_node: i32 = ctx.arg(1);
    let pages: i32 = ctx.arg(2);
    let flags: i32 = ctx.arg(3);
    let (pages, flags) = (pages.max(0) as u64, flags as u32);
    let local = u32::from(flags & TNF_FAULT_LOCAL != 0);
    let slots = cfg.node_slots;
    // SAFETY: helper without arguments.
    let cpu_node = slot(node_of(unsafe { bpf_get_smp_processor_id() }), slots);
    let mem_node = slot(mem_node as u32, slots);
    let base = ((cpu_node * slots + mem_node) * 2 + local) * 2;
    bump(HINT_FAULTS.get_ptr_mut(base), 1);
    bump(HINT_FAULTS.get_ptr_mut(base + 1), pages);

    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == 0 || tgid == cfg.agent_tgid {
        return Ok(());
    }
    let migrated = if flags & TNF_MIGRATED != 0 { pages } else { 0 };
    let failed = if flags & TNF_MIGRATE_FAIL != 0 {
        pages
    } else {
        0
    };
    match TASK_HINT_FAULTS.get_ptr_mut(tgid) {
        Some(counts) => {
            // SAFETY: this CPU's copy of the value; preemption is off in the program.
            let c = unsafe { &mut *counts };
            if local != 0 {
                c.local_faults += 1;
                c.local_pages += pages;
            } else {
                c.remote_faults += 1;
                c.remote_pages += pages;
            }
            c.migrated_pages += migrated;
            c.migrate_failed_pages += failed;
            Ok(())
        }
        None => {
            let (l, r) = (u64::from(local), u64::from(local ^ 1));
            let counts = HintFaultCounts {
                local_faults: l,
                remote_faults: r,
                local_pages: l * pages,
                remote_pages: r * pages,
                migrated_pages: migrated,
                migrate_failed_pages: failed,
            };
            TASK_HINT_FAULTS.insert(tgid, counts, 0).map_err(i64::from)
        }
    }
}
