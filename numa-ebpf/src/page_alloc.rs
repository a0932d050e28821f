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
//!   the pfn is `(page - vmemmap) / sizeof(struct page)` with the [`PageLayout`] the
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
    maps::Array,
    programs::{RawTracePointContext, TracePointContext},
};
use numa_common::{
    AccessKey, MAX_PFN_RANGES, NODE_UNKNOWN, PageAllocConfig, PageCalibration, PageLayout, PfnBank,
};

use crate::maps::{PAGE_ALLOCS, PENDING_ALLOCS, PFN_RANGES, WORKLOAD_ALLOCS, bump, node_of, slot};

/// Pages gathered in a CPU's pending slot before they are written to WORKLOAD_ALLOCS.
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
    let Some(layout) = PAGE_LAYOUT.get(0) else {
        return 0;
    };
    if layout.page_size == 0 || page < layout.vmemmap {
        return 0; // not calibrated yet
    }
    let pfn = (page - layout.vmemmap) / layout.page_size;
    count_pages(&cfg, pid_tgid, pfn, ctx.arg::<u64>(1) as u32);
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
    if let (Ok(pfn), Ok(order)) = fields {
        if pfn != u64::MAX {
            // pfn == -1UL: a failed allocation
            let pid_tgid = bpf_get_current_pid_tgid();
            if (pid_tgid >> 32) as u32 != cfg.agent_tgid {
                count_pages(&cfg, pid_tgid, pfn, order);
            }
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

#[inline(always)]
fn count_pages(cfg: &PageAllocConfig, pid_tgid: u64, pfn: u64, order: u32) {
    let tgid = (pid_tgid >> 32) as u32;
    // Interrupt-context allocations on the idle task belong to no workload, and
    // garbage orders to no page fault. Kernel threads are counted here and left out by
    // the agent (a TASKS lookup per page would cost more than it saves).
    if tgid == 0 || order > MAX_ORDER {
        return;
    }
    // SAFETY: helper without arguments.
    let cpu_node = node_of(unsafe { bpf_get_smp_processor_id() });
    let mem_node = node_of_pfn(pfn);
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
    );
}

/// Page faults come in long runs of the same (tgid, cpu node, memory node) on a CPU,
/// so pages are summed in a per-CPU slot and written to the hash map only when the key
/// changes or [`FLUSH_PAGES`] have gathered: one hash update per run instead of one per
/// page. The agent therefore sees a CPU's last run up to [`FLUSH_PAGES`] pages late.
#[inline(always)]
fn add_workload_pages(key: AccessKey, pages: u64) {
    let Some(pending) = PENDING_ALLOCS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; tracepoint programs run with preemption disabled.
    let pending = unsafe { &mut *pending };
    if pending.key == key {
        pending.pages += pages;
        if pending.pages < FLUSH_PAGES {
            return;
        }
        let flushed = pending.pages;
        pending.pages = 0;
        return flush(key, flushed);
    }
    let (old_key, old_pages) = (pending.key, pending.pages);
    pending.key = key;
    pending.pages = pages;
    if old_pages > 0 {
        flush(old_key, old_pages);
    }
}

fn flush(key: AccessKey, pages: u64) {
    match WORKLOAD_ALLOCS.get_ptr_mut(key) {
        Some(counter) => bump(Some(counter), pages),
        None => {
            // A full LRU map evicts its oldest entry instead of failing.
            let _ = WORKLOAD_ALLOCS.insert(key, pages, 0);
        }
    }
}

/// Node whose range holds `pfn`: a bounded scan of the bank in use (the agent merged
/// contiguous blocks of a node first, so there are few).
#[inline(always)]
fn node_of_pfn(pfn: u64) -> u32 {
    let Some(bank) = PFN_BANK.get(0) else {
        return NODE_UNKNOWN;
    };
    let base = if bank.bank == 0 { 0 } else { MAX_PFN_RANGES };
    for i in 0..MAX_PFN_RANGES {
        if i >= bank.count {
            break;
        }
        if let Some(range) = PFN_RANGES.get(base + i) {
            if pfn >= range.start_pfn && pfn < range.end_pfn {
                return range.node;
            }
        }
    }
    NODE_UNKNOWN
}
