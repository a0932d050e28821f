//! Maps shared by every program. Sizes set here are placeholders: the agent sizes
//! `CPU_NODE` from the possible CPUs and `MIGRATIONS` from the node count at load time.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use numa_common::{
    AccessKey, HintFaultCounts, MAX_PFN_RANGES, MIGRATE_REASON_SLOTS, NODE_UNKNOWN, PROBE_COUNT,
    PfnRange, Probe, TASK_HINT_FAULTS_CAPACITY, TASKS_CAPACITY, TaskInfo, WORKLOAD_ALLOCS_CAPACITY,
};

#[map(name = "CPU_NODE")]
pub static CPU_NODE: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "MIGRATIONS")]
pub static MIGRATIONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "LOST")]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(PROBE_COUNT, 0);

/// 1 MiB holds ~16k migration records, far more than a busy machine produces
/// between two drains of the agent (see [`submit_flags`]).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Waiting bytes from which a submit wakes the agent at once.
const WAKEUP_BYTES: u64 = 64 * 1024;

/// Flags for submitting a ring-buffer record. A wakeup per record costs an irq_work
/// (kernel/bpf/ringbuf.c `bpf_ringbuf_commit()`), which on a virtual machine is an
/// interrupt round trip worth several microseconds per event; instead the agent
/// drains on a short timer and is woken only when a backlog builds up.
#[inline(always)]
pub fn submit_flags() -> u64 {
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= WAKEUP_BYTES {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

#[map(name = "TASKS")]
pub static TASKS: LruHashMap<u32, TaskInfo> = LruHashMap::with_max_entries(TASKS_CAPACITY, 0);

#[map(name = "PFN_RANGES")]
pub static PFN_RANGES: Array<PfnRange> = Array::with_max_entries(2 * MAX_PFN_RANGES, 0);

#[map(name = "PAGE_ALLOCS")]
pub static PAGE_ALLOCS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "WORKLOAD_ALLOCS")]
pub static WORKLOAD_ALLOCS: LruPerCpuHashMap<AccessKey, u64> =
    LruPerCpuHashMap::with_max_entries(WORKLOAD_ALLOCS_CAPACITY, 0);

/// Sized by the agent: kinds x node slots x node slots.
#[map(name = "NUMA_BALANCING")]
pub static NUMA_BALANCING: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "MIGRATE_PAGES")]
pub static MIGRATE_PAGES: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(MIGRATE_REASON_SLOTS * 2, 0);

/// Sized by the agent: node slots x node slots x 4.
#[map(name = "HINT_FAULTS")]
pub static HINT_FAULTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "TASK_HINT_FAULTS")]
pub static TASK_HINT_FAULTS: LruPerCpuHashMap<u32, HintFaultCounts> =
    LruPerCpuHashMap::with_max_entries(TASK_HINT_FAULTS_CAPACITY, 0);

/// Slot of `node` in a node-pair matrix of `slots` x `slots`; the last slot collects
/// unknown nodes.
#[inline(always)]
pub fn slot(node: u32, slots: u32) -> u32 {
    if node >= slots - 1 { slots - 1 } else { node }
}

/// Add one to a per-CPU counter.
#[inline(always)]
pub fn bump(counter: Option<*mut u64>, by: u64) {
    if let Some(counter) = counter {
        // SAFETY: per-CPU slot, and tracepoint programs run with preemption disabled.
        unsafe { *counter += by };
    }
}

/// NUMA node of `cpu`, or [`NODE_UNKNOWN`] for a CPU the topology did not place.
#[inline(always)]
pub fn node_of(cpu: u32) -> u32 {
    CPU_NODE.get(cpu).copied().unwrap_or(NODE_UNKNOWN)
}

/// Count one record of `probe` that could not be sent (ring buffer full).
#[inline(always)]
pub fn count_lost(probe: Probe) {
    if let Some(counter) = LOST.get_ptr_mut(probe as u32) {
        // SAFETY: per-CPU slot, and tracepoint programs run with preemption disabled.
        unsafe { *counter += 1 };
    }
}
