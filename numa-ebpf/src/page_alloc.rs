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
use numa_common::{AccessKey, MAX_PFN_RANGES, NODE_UNKNOWN, PageAllocConfig};

use crate::maps::{PAGE_ALLOCS, PENDING_ALLOCS, PFN_RANGES, WORKLOAD_ALLOCS, bump, node_of, slot};

/// Pages gathered in a CPU's pending slot before they are written to WORKLOAD_ALLOCS.
const FLUSH_PAGES: u64 = 256;

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
    // bpf_probe_read_kernel, which fails cleanly instead of faulting. (Direct ctx
    // loads would be cheaper, but the verifier allows them only at offsets fixed in
    // the instruction, not at load-time constants.)
    let (pfn, order) = unsafe {
        (
            ctx.read_at::<u64>(cfg.pfn_offset as usize)?,
            ctx.read_at::<u32>(cfg.order_offset as usize)?,
        )
    };
    if pfn == u64::MAX || order > MAX_ORDER {
        return Ok(()); // a failed allocation (pfn == -1UL), or garbage
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Interrupt-context allocations on the idle task belong to no workload. Kernel
    // threads are counted here and left out by the agent (a TASKS lookup per page
    // would cost more than it saves).
    if tgid == 0 || tgid == cfg.agent_tgid {
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
    add_workload_pages(
        AccessKey {
            tgid,
            cpu_node,
            mem_node,
            _pad: 0,
        },
        pages,
    )
}

/// Page faults come in long runs of the same (tgid, cpu node, memory node) on a CPU,
/// so pages are summed in a per-CPU slot and written to the hash map only when the key
/// changes or [`FLUSH_PAGES`] have gathered: one hash update per run instead of one per
/// page. The agent therefore sees a CPU's last run up to [`FLUSH_PAGES`] pages late.
#[inline(always)]
fn add_workload_pages(key: AccessKey, pages: u64) -> Result<(), i32> {
    let Some(pending) = PENDING_ALLOCS.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: this CPU's slot; tracepoint programs run with preemption disabled.
    let pending = unsafe { &mut *pending };
    if pending.key == key {
        pending.pages += pages;
        if pending.pages < FLUSH_PAGES {
            return Ok(());
        }
        let flushed = pending.pages;
        pending.pages = 0;
        return flush(key, flushed);
    }
    let (old_key, old_pages) = (pending.key, pending.pages);
    pending.key = key;
    pending.pages = pages;
    if old_pages > 0 {
        flush(old_key, old_pages)
    } else {
        Ok(())
    }
}

fn flush(key: AccessKey, pages: u64) -> Result<(), i32> {
    match WORKLOAD_ALLOCS.get_ptr_mut(key) {
        Some(counter) => {
            bump(Some(counter), pages);
            Ok(())
        }
        None => WORKLOAD_ALLOCS.insert(key, pages, 0),
    }
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
