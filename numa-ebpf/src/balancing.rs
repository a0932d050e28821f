//! NUMA balancing as the kernel decides it: `sched:sched_{move,swap,stick}_numa`
//! counted per (kind, source node, destination node), and `migrate:mm_migrate_pages`
//! counted in pages per (reason, succeeded/failed). Nothing is sent per event: these
//! fire at most a few times per scan period per task, and the agent reads the sums.
//!
//! The node fields, identical in 6.1, 6.12 and 6.18 (offsets still come from the
//! running kernel's format files):
//!
//! ```text
//! sched_move_numa:   field:int src_nid; offset:24;  field:int dst_nid; offset:32;
//! sched_swap_numa:   field:int src_nid; offset:24;  field:int dst_nid; offset:44;
//! sched_stick_numa:  field:int src_nid; offset:24;  field:int dst_nid; offset:44;
//! ```
//!
//! `sched_stick_numa` records `dst_nid = dst_cpu >= 0 ? cpu_to_node(dst_cpu) : -1`
//! (include/trace/events/sched.h): -1 when `task_numa_migrate()` found no better CPU.
//! A node id is never used as an index as is: [`slot`] clamps -1 (u32::MAX) and any id
//! past the map into the last slot.
//!
//! `mm_migrate_pages` fires at the end of `migrate_pages()` (mm/migrate.c) right after
//! it adds the same `succeeded`/`failed` to the vmstat events `pgmigrate_success` and
//! `pgmigrate_fail`:
//!
//! ```text
//! 6.1:  field:unsigned long succeeded; offset:8;  field:unsigned long failed; offset:16;
//!       field:int reason; offset:52;
//! 6.12, 6.18: succeeded@8, failed@16, reason@60 (large_folio_split@48 was added)
//! ```
use aya_ebpf::{Global, macros::tracepoint, programs::TracePointContext};
use numa_common::{BalancingConfig, MIGRATE_REASON_SLOTS, MigratePagesConfig, balancing_kind};

use crate::maps::{MIGRATE_PAGES, NUMA_BALANCING, bump, slot};

#[unsafe(no_mangle)]
static BALANCING_CONFIG: Global<BalancingConfig> = Global::new(BalancingConfig {
    move_src_nid: 0,
    move_dst_nid: 0,
    swap_src_nid: 0,
    swap_dst_nid: 0,
    stick_src_nid: 0,
    stick_dst_nid: 0,
    node_slots: 1,
    _pad: 0,
});

#[unsafe(no_mangle)]
static MIGRATE_PAGES_CONFIG: Global<MigratePagesConfig> = Global::new(MigratePagesConfig {
    succeeded_offset: 0,
    failed_offset: 0,
    reason_offset: 0,
    _pad: 0,
});

#[tracepoint(category = "sched", name = "sched_move_numa")]
pub fn sched_move_numa(ctx: TracePointContext) -> u32 {
    let cfg = BALANCING_CONFIG.load();
    let _ = count_decision(
        &ctx,
        balancing_kind::MOVE,
        cfg.move_src_nid,
        cfg.move_dst_nid,
    );
    0
}

#[tracepoint(category = "sched", name = "sched_swap_numa")]
pub fn sched_swap_numa(ctx: TracePointContext) -> u32 {
    let cfg = BALANCING_CONFIG.load();
    let _ = count_decision(
        &ctx,
        balancing_kind::SWAP,
        cfg.swap_src_nid,
        cfg.swap_dst_nid,
    );
    0
}

#[tracepoint(category = "sched", name = "sched_stick_numa")]
pub fn sched_stick_numa(ctx: TracePointContext) -> u32 {
    let cfg = BALANCING_CONFIG.load();
    let _ = count_decision(
        &ctx,
        balancing_kind::STICK,
        cfg.stick_src_nid,
        cfg.stick_dst_nid,
    );
    0
}

#[inline(always)]
fn count_decision(
    ctx: &TracePointContext,
    kind: u32,
    src_offset: u32,
    dst_offset: u32,
) -> Result<(), i64> {
    let slots = BALANCING_CONFIG.load().node_slots;
    // SAFETY: offsets come from this kernel's format file; bpf_probe_read_kernel fails
    // cleanly instead of faulting.
    let (src, dst) = unsafe {
        (
            ctx.read_at::<i32>(src_offset as usize)?,
            ctx.read_at::<i32>(dst_offset as usize)?,
        )
    };
    // -1 becomes u32::MAX, which `slot` puts in the last slot.
    let (src, dst) = (slot(src as u32, slots), slot(dst as u32, slots));
    bump(
        NUMA_BALANCING.get_ptr_mut((kind * slots + src) * slots + dst),
        1,
    );
    Ok(())
}

#[tracepoint(category = "migrate", name = "mm_migrate_pages")]
pub fn mm_migrate_pages(ctx: TracePointContext) -> u32 {
    let _ = try_mm_migrate_pages(&ctx);
    0
}

fn try_mm_migrate_pages(ctx: &TracePointContext) -> Result<(), i64> {
    let cfg = MIGRATE_PAGES_CONFIG.load();
    // SAFETY: as in count_decision.
    let (succeeded, failed, reason) = unsafe {
        (
            ctx.read_at::<u64>(cfg.succeeded_offset as usize)?,
            ctx.read_at::<u64>(cfg.failed_offset as usize)?,
            ctx.read_at::<i32>(cfg.reason_offset as usize)?,
        )
    };
    // The reason's name is the agent's business (the format's __print_symbolic table).
    let reason = slot(reason as u32, MIGRATE_REASON_SLOTS);
    if succeeded > 0 {
        bump(MIGRATE_PAGES.get_ptr_mut(reason * 2), succeeded);
    }
    if failed > 0 {
        bump(MIGRATE_PAGES.get_ptr_mut(reason * 2 + 1), failed);
    }
    Ok(())
}
