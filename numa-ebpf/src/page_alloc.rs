//! `kmem:mm_page_alloc`: pages allocated for a task on a node other than the node of
//! the CPU it runs on (remote placement), counted per node pair and per thread group.
//!
//! It fires in `__alloc_pages()` (mm/page_alloc.c) in the allocating context: for a
//! user page fault that is the faulting task on the CPU it runs on, so `current` and
//! `bpf_get_smp_processor_id()` name the workload and its CPU node. The page's node
//! comes from its pfn and the node pfn ranges the agent wrote (memory blocks in sysfs).
//!
//! Two entry points share one body; the agent attaches the first that works:
//! - `mm_page_alloc_raw`, a raw tracepoint on the prototype (include/trace/events/kmem.h,
//!   6.1 to 6.18 alike)
//!   `TP_PROTO(struct page *page, unsigned int order, gfp_t gfp_flags, int migratetype)`:
//!   the pfn is `(page - vmemmap) / sizeof(struct page)` with the `PageLayout` the
//!   agent calibrated against `/proc/self/pagemap`. No trace record is filled, which on
//!   a page-fault-heavy workload is most of the classic variant's cost.
//! - `mm_page_alloc`, the classic tracepoint, reading the pfn the kernel computed:
//!
//! ```text
//! field:unsigned long pfn;        offset:8;   size:8;  signed:0;   (6.1, 6.12, 6.18 alike)
//! field:unsigned int order;       offset:16;  size:4;  signed:0;
//! field:unsigned long gfp_flags;  offset:24;  size:8;  signed:0;
//! field:int migratetype;          offset:32;  size:4;  signed:1;
//! ```
use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};
use numa_common::{
    AccessKey, AllocRun, MAX_PFN_RANGES, NODE_UNKNOWN, PageAllocConfig, PageCalibration,
    PageLayout, PfnBank,
};

use crate::maps::{PAGE_ALLOCS, PFN_RANGES, WORKLOAD_ALLOCS, bump, node_of, slot};

/// Pages gathered in a CPU's run before they are added to the counter maps.
const FLUSH_PAGES: u64 = 256;

#[unsafe(no_mangle)]
static PAGE_ALLOC_CONFIG: Global<PageAllocConfig> = Global::new(PageAllocConfig {
    pfn_offset: 0,
    order_offset: 0,
    node_slots: 1,
    agent_tgid: 0,
});

#[map(name = "PFN_BANK")]
static PFN_BANK: Array<PfnBank> = Array::with_max_entries(1, 0);

#[map(name = "PAGE_LAYOUT")]
static PAGE_LAYOUT: Array<PageLayout> = Array::with_max_entries(1, 0);

#[map(name = "PAGE_CALIBRATION")]
static PAGE_CALIBRATION: Array<PageCalibration> = Array::with_max_entries(1, 0);

#[map(name = "ALLOC_RUNS")]
static ALLOC_RUNS: PerCpuArray<AllocRun> = PerCpuArray::with_max_entries(1, 0);

/// Orders above this are not page-fault allocations (MAX_PAGE_ORDER is 10 on x86).
const MAX_ORDER: u32 = 10;

#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn mm_page_alloc_raw(ctx: RawTracePointContext) -> i32 {
    let page = ctx.arg::<u64>(0);
    if page == 0 {
        return 0; // a failed allocation
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let cfg = PAGE_ALLOC_CONFIG.load();
    if (pid_tgid >> 32) as u32 == cfg.agent_tgid {
        record_calibration(pid_tgid as u32, page);
        return 0;
    }
    add_pages(&cfg, pid_tgid, page, ctx.arg::<u64>(1) as u32, |page| {
        let layout = PAGE_LAYOUT.get(0)?;
        if layout.page_size == 0 || page < layout.vmemmap {
            return None; // not calibrated yet
        }
        let (node, lo, hi) = pfn_stretch((page - layout.vmemmap) / layout.page_size);
        // Back to page pointers; real pfns are far below 2^52, so only the open end
        // of the last stretch (u64::MAX) needs care.
        let at = |pfn: u64| {
            if pfn == u64::MAX {
                u64::MAX
            } else {
                layout
                    .vmemmap
                    .wrapping_add(pfn.wrapping_mul(layout.page_size))
            }
        };
        Some((node, at(lo), at(hi)))
    });
    0
}

#[tracepoint(category = "kmem", name = "mm_page_alloc")]
pub fn mm_page_alloc(ctx: TracePointContext) -> u32 {
    let cfg = PAGE_ALLOC_CONFIG.load();
    // SAFETY: offsets come from this kernel's format file; reads go through
    // bpf_probe_read_kernel, which fails cleanly instead of faulting. (Direct ctx
    // loads would be cheaper, but the verifier allows them only at offsets fixed in
    // the instruction, not at load-time constants.)
    let fields = unsafe {
        (
            ctx.read_at::<u64>(cfg.pfn_offset as usize),
            ctx.read_at::<u32>(cfg.order_offset as usize),
        )
    };
    // pfn == -1UL: a failed allocation.
    if let (Ok(pfn), Ok(order)) = fields
        && pfn != u64::MAX
    {
        let pid_tgid = bpf_get_current_pid_tgid();
        if (pid_tgid >> 32) as u32 != cfg.agent_tgid {
            add_pages(&cfg, pid_tgid, pfn, order, |pfn| Some(pfn_stretch(pfn)));
        }
    }
    0
}

/// The agent's calibrating thread allocates single pages whose pfns it reads from
/// `/proc/self/pagemap`; the `struct page *` of each is kept here for it to compare.
#[inline(always)]
fn record_calibration(tid: u32, page: u64) {
    if let Some(slot) = PAGE_CALIBRATION.get_ptr_mut(0) {
        // SAFETY: a plain array slot; only the agent's one calibrating thread writes it.
        let slot = unsafe { &mut *slot };
        if slot.tid != 0 && slot.tid == tid {
            slot.page = page;
        }
    }
}

/// Count 2^order pages at `position` for the current task. Page faults come in long
/// runs of one thread group on one CPU touching one node's memory, so the common case
/// is a compare and an add on this CPU's run; the node lookups (`locate`, which maps a
/// position to its node and the stretch around it) and the map updates happen once
/// per run, or every [`FLUSH_PAGES`] pages, which also picks up new pfn ranges and
/// topology. The counter maps therefore lag by at most one run per CPU.
#[inline(always)]
fn add_pages(
    cfg: &PageAllocConfig,
    pid_tgid: u64,
    position: u64,
    order: u32,
    locate: impl FnOnce(u64) -> Option<(u32, u64, u64)>,
) {
    let Some(run) = ALLOC_RUNS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; tracing programs run with migration disabled and do
    // not nest on one CPU.
    let run = unsafe { &mut *run };
    run.hits += 1;
    let tgid = (pid_tgid >> 32) as u32;
    // Interrupt-context allocations on the idle task belong to no workload, and
    // garbage orders to no page fault. Kernel threads are counted here and left out by
    // the agent (a TASKS lookup per page would cost more than it saves).
    if tgid == 0 || order > MAX_ORDER {
        return;
    }
    let pages = 1u64 << order;
    if run.tgid == tgid && run.lo <= position && position < run.hi && run.pages < FLUSH_PAGES {
        run.pages += pages;
        return;
    }
    flush(cfg, run);
    let Some((mem_node, lo, hi)) = locate(position) else {
        return;
    };
    // SAFETY: helper without arguments.
    let cpu_node = node_of(unsafe { bpf_get_smp_processor_id() });
    *run = AllocRun {
        tgid,
        cpu_node,
        mem_node,
        _pad: 0,
        lo,
        hi,
        pages,
        hits: run.hits,
    };
}

/// Add a run's pages to the node-pair matrix and to its thread group's counter.
#[inline(always)]
fn flush(cfg: &PageAllocConfig, run: &mut AllocRun) {
    if run.pages == 0 {
        return;
    }
    let slots = cfg.node_slots;
    bump(
        PAGE_ALLOCS.get_ptr_mut(slot(run.cpu_node, slots) * slots + slot(run.mem_node, slots)),
        run.pages,
    );
    let key = AccessKey {
        tgid: run.tgid,
        cpu_node: run.cpu_node,
        mem_node: run.mem_node,
        _pad: 0,
    };
    match WORKLOAD_ALLOCS.get_ptr_mut(key) {
        Some(counter) => bump(Some(counter), run.pages),
        None => {
            // A full LRU map evicts its oldest entry instead of failing.
            let _ = WORKLOAD_ALLOCS.insert(key, run.pages, 0);
        }
    }
    run.pages = 0;
}

/// The node of `pfn` and the stretch `[lo, hi)` of pfns around it on that node, from
/// the bank of ranges in use: few, merged and sorted by start (the agent's
/// `memory_blocks::node_pfn_ranges`), so the scan stops at the first range past `pfn`.
/// A pfn no range holds gets [`NODE_UNKNOWN`] and the gap between ranges.
#[inline(always)]
fn pfn_stretch(pfn: u64) -> (u32, u64, u64) {
    let mut lo = 0u64;
    let Some(bank) = PFN_BANK.get(0) else {
        return (NODE_UNKNOWN, lo, u64::MAX);
    };
    let base = if bank.bank == 0 { 0 } else { MAX_PFN_RANGES };
    for i in 0..MAX_PFN_RANGES {
        if i >= bank.count {
            break;
        }
        let Some(range) = PFN_RANGES.get(base + i) else {
            break;
        };
        if pfn < range.start_pfn {
            return (NODE_UNKNOWN, lo, range.start_pfn);
        }
        if pfn < range.end_pfn {
            return (range.node, range.start_pfn, range.end_pfn);
        }
        lo = range.end_pfn;
    }
    (NODE_UNKNOWN, lo, u64::MAX)
}
