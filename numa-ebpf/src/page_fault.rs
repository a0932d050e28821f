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
//! Four entry points share one body; the agent attaches the first that works:
//! - `page_fault_sample`, a perf-event program on the software page-fault counter
//!   (`perf_sw_event(PERF_COUNT_SW_PAGE_FAULTS, 1, regs, address)` in
//!   `do_user_addr_fault()`, the same fault as the tracepoint) with
//!   `sample_period = sample_rate`: the kernel counts and samples, and no program runs
//!   on the faults in between. Enabling the `page_fault_user` tracepoint alone costs a
//!   fault-heavy workload a few percent (README "Cost"); this does not. The sample's
//!   address is the fault address; the error code is not handed over
//!   ([`ERROR_CODE_UNKNOWN`]).
//! - `tp_btf` and `raw_tracepoint` get the prototype's arguments directly and count
//!   down per CPU;
//! - the classic tracepoint first has the kernel fill a trace record for every fault
//!   (`perf_trace_x86_exceptions`) before the program runs, which costs more per hit.
use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    macros::{btf_tracepoint, map, perf_event, raw_tracepoint, tracepoint},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, PerfEventContext, RawTracePointContext, TracePointContext},
};
use numa_common::{ERROR_CODE_UNKNOWN, FaultConfig, FaultRecord, Probe};

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

#[perf_event]
pub fn page_fault_sample(ctx: PerfEventContext) -> u32 {
    // SAFETY: the kernel passes a `bpf_perf_event_data`; the verifier checks each read.
    let data = unsafe { &*ctx.ctx };
    // The counter also counts faults the kernel takes on user addresses (copy_to_user
    // in a syscall); `page_fault_user` fires for user mode only (`user_mode(regs)`:
    // the low two bits of CS are the privilege level, 3 for user).
    #[cfg(bpf_target_arch = "x86_64")]
    if data.regs.cs & 3 != 3 {
        return 0;
    }
    send(data.addr, ERROR_CODE_UNKNOWN);
    0
}

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
