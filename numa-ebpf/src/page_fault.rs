//! `exceptions:page_fault_user` (x86 only): a sample of user page faults, one in
//! `FaultConfig::sample_rate` per CPU, each sent with the faulting task, its CPU and
//! node, the address and the error code. The page's node is not known here (the
//! tracepoint fires before the fault is handled); the agent resolves it with
//! `move_pages(2)`.
//!
//! It fires from `handle_page_fault()` -> `trace_page_fault_entries()`
//! (arch/x86/mm/fault.c) when `user_mode(regs)`, in the faulting task's context, so
//! `current` and `bpf_get_smp_processor_id()` are the faulting thread and its CPU.
//! Prototype (arch/x86/include/asm/trace/exceptions.h, `x86_exceptions` class, the
//! same in 6.1, 6.12 and 6.18):
//!
//! ```text
//! TP_PROTO(unsigned long address, struct pt_regs *regs, unsigned long error_code)
//! ```
//!
//! and the classic event's fields (tracefs `format`, 6.1, 6.12, 6.18 alike):
//!
//! ```text
//! field:unsigned long address;    offset:8;   size:8;  signed:0;
//! field:unsigned long ip;         offset:16;  size:8;  signed:0;
//! field:unsigned long error_code; offset:24;  size:8;  signed:0;
//! ```
//!
//! Three entry points share one body; the agent attaches the first that works:
//! `tp_btf` and `raw_tracepoint` get the prototype's arguments directly, while the
//! classic tracepoint first has the kernel fill a trace record for every fault
//! (`perf_trace_x86_exceptions`) before the program runs, which costs more per hit.
use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use numa_common::{FaultConfig, FaultRecord, Probe};

use crate::maps::{EVENTS, count_lost, node_of, submit_flags};

#[unsafe(no_mangle)]
static FAULT_CONFIG: Global<FaultConfig> = Global::new(FaultConfig {
    sample_rate: 1,
    agent_tgid: 0,
    address_offset: 8,
    error_code_offset: 24,
});

/// Per CPU: faults left before the next sample. Starts at 0, so a CPU's first fault
/// is sampled, then every `sample_rate`-th.
#[map(name = "FAULT_COUNTDOWN")]
static FAULT_COUNTDOWN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[btf_tracepoint(function = "page_fault_user")]
pub fn page_fault_user_btf(ctx: BtfTracePointContext) -> i32 {
    // Arguments 0 and 2 of TP_PROTO: address, error_code (both unsigned long).
    if sampled() {
        send(ctx.arg::<u64>(0), ctx.arg::<u64>(2));
    }
    0
}

#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user_raw(ctx: RawTracePointContext) -> i32 {
    if sampled() {
        send(ctx.arg::<u64>(0), ctx.arg::<u64>(2));
    }
    0
}

#[tracepoint(category = "exceptions", name = "page_fault_user")]
pub fn page_fault_user_tp(ctx: TracePointContext) -> u32 {
    if sampled() {
        let cfg = FAULT_CONFIG.load();
        // SAFETY: offsets come from this kernel's format file; reads go through
        // bpf_probe_read_kernel, which fails cleanly instead of faulting.
        let fields = unsafe {
            (
                ctx.read_at::<u64>(cfg.address_offset as usize),
                ctx.read_at::<u64>(cfg.error_code_offset as usize),
            )
        };
        if let (Ok(address), Ok(error_code)) = fields {
            send(address, error_code);
        }
    }
    0
}

/// The sampling decision, first and alone: one per-CPU array slot, a decrement and a
/// compare. The other `sample_rate - 1` faults in every `sample_rate` stop here.
#[inline(always)]
fn sampled() -> bool {
    let Some(left) = FAULT_COUNTDOWN.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot; tracing programs run with migration disabled and the
    // kernel does not nest a second page fault program on the same CPU.
    let left = unsafe { &mut *left };
    if *left > 1 {
        *left -= 1;
        return false;
    }
    *left = u64::from(FAULT_CONFIG.load().sample_rate.max(1));
    true
}

#[inline(always)]
fn send(address: u64, error_code: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == 0 || tgid == FAULT_CONFIG.load().agent_tgid {
        return;
    }
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(mut entry) = EVENTS.reserve::<FaultRecord>(0) else {
        count_lost(Probe::PageFaultUser);
        return;
    };
    entry.write(FaultRecord {
        probe: Probe::PageFaultUser as u32,
        cpu,
        cpu_node: node_of(cpu),
        tid: pid_tgid as u32,
        tgid,
        _pad: 0,
        address,
        error_code,
    });
    entry.submit(submit_flags());
}
