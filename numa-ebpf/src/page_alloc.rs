//! `kmem:mm_page_alloc`: pages allocated for a task on a node other than the node of
//! the CPU it runs on (remote placement), counted per node pair and per thread group.
//!
//! ```text
//! field:unsigned long pfn;        offset:8;   size:8;  signed:0;   (6.1, 6.12, 6.18 alike)
//! field:unsigned int order;       offset:16;  size:4;  signed:0;
//! field:unsigned long gfp_flags;  offset:24;  size:8;  signed:0;
//! field:int migratetype;          offset:32;  size:4;  signed:1;
//! ```
//!
//! It fires in `__alloc_pages()` (mm/page_alloc.c) in the allocating context: for a
//! user page fault that is the faulting task on the CPU it runs on, so `current` and
//! `bpf_get_smp_processor_id()` name the workload and its CPU node. The page's node
//! comes from its pfn and the node pfn ranges the agent wrote (memory blocks in sysfs).
use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    macros::tracepoint,
    programs::TracePointContext,
};
use numa_common::{AccessKey, MAX_PFN_RANGES, NODE_UNKNOWN, PageAllocConfig, TASK_KERNEL_THREAD};

use crate::maps::{PAGE_ALLOCS, PFN_RANGES, TASKS, WORKLOAD_ALLOCS, bump, node_of, slot};

#[unsafe(no_mangle)]
static PAGE_ALLOC_CONFIG: Global<PageAllocConfig> = Global::new(PageAllocConfig {
    pfn_offset: 0,
    order_offset: 0,
    node_slots: 1,
    range_count: 0,
    agent_tgid: 0,
    _pad: 0,
});

/// Orders above this are not page-fault allocations (MAX_PAGE_ORDER is 10 on x86).
const MAX_ORDER: u32 = 10;

#[tracepoint(category = "kmem", name = "mm_page_alloc")]
pub fn mm_page_alloc(ctx: TracePointContext) -> u32 {
    let _ = try_mm_page_alloc(&ctx);
    0
}

fn try_mm_page_alloc(ctx: &TracePointContext) -> Result<(), i32> {
    let cfg = PAGE_ALLOC_CONFIG.load();
    // SAFETY: offsets come from this kernel's format file; reads go through
    // bpf_probe_read_kernel, which fails cleanly instead of faulting.
    let (pfn, order) = unsafe {
        (
            ctx.read_at::<u64>(cfg.pfn_offset as usize)?,
            ctx.read_at::<u32>(cfg.order_offset as usize)?,
        )
    };
    if pfn == u64::MAX || order > MAX_ORDER {
        return Ok(()); // a failed allocation (pfn == -1UL), or garbage
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    // Interrupt-context and kernel-thread allocations belong to no workload.
    if tgid == 0 || tgid == cfg.agent_tgid {
        return Ok(());
    }
    // SAFETY: copied out at once.
    if unsafe { TASKS.get(tid) }.is_some_and(|t| t.flags & TASK_KERNEL_THREAD != 0) {
        return Ok(());
    }
    // SAFETY: helper without arguments.
    let cpu_node = node_of(unsafe { bpf_get_smp_processor_id() });
    let mem_node = node_of_pfn(pfn, cfg.range_count);
    let pages = 1u64 << order;

    let slots = cfg.node_slots;
    bump(
        PAGE_ALLOCS.get_ptr_mut(slot(cpu_node, slots) * slots + slot(mem_node, slots)),
        pages,
    );
    let key = AccessKey {
        tgid,
        cpu_node,
        mem_node,
        _pad: 0,
    };
    match WORKLOAD_ALLOCS.get_ptr_mut(key) {
        Some(counter) => bump(Some(counter), pages),
        None => {
            WORKLOAD_ALLOCS.insert(key, pages, 0)?;
        }
    }
    Ok(())
}

/// Node whose range holds `pfn`; a bounded scan (the agent merged ranges first).
#[inline(always)]
fn node_of_pfn(pfn: u64, count: u32) -> u32 {
    for i in 0..MAX_PFN_RANGES {
        if i >= count {
            break;
        }
        if let Some(range) = PFN_RANGES.get(i) {
            if pfn >= range.start_pfn && pfn < range.end_pfn {
                return range.node;
            }
        }
    }
    NODE_UNKNOWN
}
