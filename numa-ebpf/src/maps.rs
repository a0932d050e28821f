//! Maps shared by every program. Sizes set here are placeholders: the agent sizes
//! `CPU_NODE` from the possible CPUs and `MIGRATIONS` from the node count at load time.
use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use numa_common::{NODE_UNKNOWN, PROBE_COUNT, Probe, TASKS_CAPACITY, TaskInfo};

#[map(name = "CPU_NODE")]
pub static CPU_NODE: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "MIGRATIONS")]
pub static MIGRATIONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "LOST")]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(PROBE_COUNT, 0);

/// 1 MiB holds ~16k migration records: far more than a busy machine produces
/// between two polls of the agent (it wakes on every record).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

#[map(name = "TASKS")]
pub static TASKS: LruHashMap<u32, TaskInfo> = LruHashMap::with_max_entries(TASKS_CAPACITY, 0);

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
