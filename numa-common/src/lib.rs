//! ABI shared by the eBPF programs (`numa-ebpf`) and the agent (`numa-agent`).
//!
//! Every type here crosses the kernel/user boundary through a BPF map or the
//! ring buffer, so each is `#[repr(C)]`, holds integers only (a `u32` flag, never
//! `bool`, `enum` or `Option`), spells out its padding, and has a size assert:
//! a layout change on one side only fails the build instead of reading garbage.
#![no_std]

/// Map names, as declared by `numa-ebpf` (`#[map(name = ..)]`) and opened by the agent.
pub mod maps {
    /// `Array<u32>`: CPU id -> NUMA node id, written by the agent from its topology.
    /// Sized from the number of possible CPUs at load time.
    pub const CPU_NODE: &str = "CPU_NODE";
    /// `PerCpuArray<u64>`: migrations counted per (source node slot, destination node slot),
    /// index `src_slot * node_slots + dst_slot` (see [`super::MigrateConfig::node_slots`]).
    pub const MIGRATIONS: &str = "MIGRATIONS";
    /// `PerCpuArray<u64>`: records that could not be sent, indexed by [`super::Probe`] id.
    pub const LOST: &str = "LOST";
    /// `RingBuf`: sampled or rare individual records ([`super::MigrateRecord`], ...).
    pub const EVENTS: &str = "EVENTS";
    /// `LruHashMap<u32, TaskInfo>`: thread id -> [`super::TaskInfo`], filled by the
    /// `task_newtask` program for new threads and by the agent for those alive at start,
    /// so an event names its thread group even after the thread has exited. The entry
    /// of a thread-group leader (key = tgid) also carries the group's cgroup ids, kept
    /// current by the `cgroup_attach_task` program.
    pub const TASKS: &str = "TASKS";
    /// `Array<PfnRange>`: physical page-frame ranges of each node, written by the agent
    /// in two banks of [`super::MAX_PFN_RANGES`] entries; [`PFN_BANK`] says which bank
    /// the programs scan and how many of its entries are used.
    pub const PFN_RANGES: &str = "PFN_RANGES";
    /// `Array<PfnBank>` (one entry): the bank of [`PFN_RANGES`] in use. The agent fills
    /// the other bank and then switches this one entry, so a program never scans a
    /// half-written table when memory is hot-(un)plugged.
    pub const PFN_BANK: &str = "PFN_BANK";
    /// `Array<PageLayout>` (one entry): how a `struct page *` maps to its pfn on this
    /// kernel, learned by the agent at start; until then the raw page-alloc program
    /// counts nothing.
    pub const PAGE_LAYOUT: &str = "PAGE_LAYOUT";
    /// `Array<PageCalibration>` (one entry): the last page the raw page-alloc program
    /// saw allocated for the agent's calibrating thread.
    pub const PAGE_CALIBRATION: &str = "PAGE_CALIBRATION";
    /// `PerCpuArray<u64>`: pages allocated per (CPU node slot, memory node slot), index
    /// `cpu_slot * node_slots + mem_slot`, like [`MIGRATIONS`].
    pub const PAGE_ALLOCS: &str = "PAGE_ALLOCS";
    /// `LruPerCpuHashMap<AccessKey, u64>`: pages allocated per (thread group, CPU node,
    /// memory node), for per-workload cross-node ratios.
    pub const WORKLOAD_ALLOCS: &str = "WORKLOAD_ALLOCS";
    /// `PerCpuArray<AllocRun>` (one entry): per CPU, the run of pages the page-alloc
    /// program is gathering, and how many times it ran there (the agent's storm check).
    pub const ALLOC_RUNS: &str = "ALLOC_RUNS";
    /// `PerCpuArray<u64>`: per CPU, user page faults left before the next sample of the
    /// page-fault program (a countdown from [`super::FaultConfig::sample_rate`]).
    pub const FAULT_COUNTDOWN: &str = "FAULT_COUNTDOWN";
    /// `PerCpuArray<u64>`: NUMA-balancing decisions (`sched:sched_{move,swap,stick}_numa`)
    /// per (kind, source node slot, destination node slot), index
    /// `(kind * node_slots + src_slot) * node_slots + dst_slot`, kind from
    /// [`super::balancing_kind`]; the last node slot counts `-1` (no destination).
    pub const NUMA_BALANCING: &str = "NUMA_BALANCING";
    /// `PerCpuArray<u64>`: pages of `migrate:mm_migrate_pages` per (reason slot, result),
    /// index `reason_slot * 2 + result` (result 0 = succeeded, 1 = failed); see
    /// [`super::MIGRATE_REASON_SLOTS`].
    pub const MIGRATE_PAGES: &str = "MIGRATE_PAGES";
    /// `PerCpuArray<u64>`: NUMA hinting faults seen at `task_numa_fault()`, index
    /// `((cpu_slot * node_slots + mem_slot) * 2 + local) * 2 + what` (local = the kernel's
    /// `TNF_FAULT_LOCAL`; what 0 = faults, 1 = pages).
    pub const HINT_FAULTS: &str = "HINT_FAULTS";
    /// `LruPerCpuHashMap<u32, HintFaultCounts>`: the same faults per thread group.
    pub const TASK_HINT_FAULTS: &str = "TASK_HINT_FAULTS";
}

/// Program names, as the functions are named in `numa-ebpf`.
pub mod programs {
    pub const SCHED_MIGRATE_TASK: &str = "sched_migrate_task";
    pub const TASK_NEWTASK: &str = "task_newtask";
    /// `kmem:mm_page_alloc` as a classic tracepoint (pfn from the trace record).
    pub const MM_PAGE_ALLOC: &str = "mm_page_alloc";
    /// The same as a raw tracepoint (pfn from the `struct page *` argument and the
    /// calibrated [`super::PageLayout`]), tried first: no trace record to fill per page.
    pub const MM_PAGE_ALLOC_RAW: &str = "mm_page_alloc_raw";
    pub const CGROUP_ATTACH_TASK: &str = "cgroup_attach_task";
    /// `exceptions:page_fault_user` as a BTF-typed raw tracepoint (`tp_btf`), tried first.
    pub const PAGE_FAULT_USER_BTF: &str = "page_fault_user_btf";
    /// The same as a raw tracepoint (arguments untyped), tried second.
    pub const PAGE_FAULT_USER_RAW: &str = "page_fault_user_raw";
    /// The same as a classic tracepoint (fields at offsets from tracefs), tried last.
    pub const PAGE_FAULT_USER_TP: &str = "page_fault_user_tp";
    /// User page faults sampled by the kernel's software perf event
    /// (`PERF_COUNT_SW_PAGE_FAULTS`, one sample per `sample_rate` faults per CPU), tried
    /// first: no program runs on the faults in between.
    pub const PAGE_FAULT_SAMPLE: &str = "page_fault_sample";
    pub const SCHED_MOVE_NUMA: &str = "sched_move_numa";
    pub const SCHED_SWAP_NUMA: &str = "sched_swap_numa";
    pub const SCHED_STICK_NUMA: &str = "sched_stick_numa";
    pub const MM_MIGRATE_PAGES: &str = "mm_migrate_pages";
    /// fentry program on the kernel function `task_numa_fault`.
    pub const TASK_NUMA_FAULT: &str = "task_numa_fault";
}

/// Names of the load-time constants (`Global<T>` statics) set by the agent.
pub mod globals {
    /// [`super::MigrateConfig`].
    pub const MIGRATE_CONFIG: &str = "MIGRATE_CONFIG";
    /// [`super::NewTaskConfig`].
    pub const NEWTASK_CONFIG: &str = "NEWTASK_CONFIG";
    /// [`super::PageAllocConfig`].
    pub const PAGE_ALLOC_CONFIG: &str = "PAGE_ALLOC_CONFIG";
    /// [`super::AttachConfig`].
    pub const ATTACH_CONFIG: &str = "ATTACH_CONFIG";
    /// [`super::FaultConfig`].
    pub const FAULT_CONFIG: &str = "FAULT_CONFIG";
    /// [`super::BalancingConfig`].
    pub const BALANCING_CONFIG: &str = "BALANCING_CONFIG";
    /// [`super::MigratePagesConfig`].
    pub const MIGRATE_PAGES_CONFIG: &str = "MIGRATE_PAGES_CONFIG";
    /// [`super::HintFaultConfig`].
    pub const HINT_FAULT_CONFIG: &str = "HINT_FAULT_CONFIG";
}

/// Probe ids: index of the [`maps::LOST`] counters and tag of each ring-buffer record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Probe {
    SchedMigrateTask = 0,
    MmPageAlloc = 1,
    PageFaultUser = 2,
    // NUMA-balancing probes (issue 4): they aggregate in maps and send no records.
    SchedMoveNuma = 3,
    SchedSwapNuma = 4,
    SchedStickNuma = 5,
    MmMigratePages = 6,
    TaskNumaFault = 7,
}

impl Probe {
    pub const ALL: [Probe; 8] = [
        Probe::SchedMigrateTask,
        Probe::MmPageAlloc,
        Probe::PageFaultUser,
        Probe::SchedMoveNuma,
        Probe::SchedSwapNuma,
        Probe::SchedStickNuma,
        Probe::MmMigratePages,
        Probe::TaskNumaFault,
    ];
    /// Stable label used in metrics (`numa_events_lost_total{probe}`).
    pub const fn label(self) -> &'static str {
        match self {
            Probe::SchedMigrateTask => "sched_migrate_task",
            Probe::MmPageAlloc => "mm_page_alloc",
            Probe::PageFaultUser => "page_fault_user",
            Probe::SchedMoveNuma => "sched_move_numa",
            Probe::SchedSwapNuma => "sched_swap_numa",
            Probe::SchedStickNuma => "sched_stick_numa",
            Probe::MmMigratePages => "mm_migrate_pages",
            Probe::TaskNumaFault => "task_numa_fault",
        }
    }
}

/// Number of entries in [`maps::LOST`].
pub const PROBE_COUNT: u32 = Probe::ALL.len() as u32;

/// Node value in [`maps::CPU_NODE`] for a CPU the topology does not place in any node
/// (for example a CPU hot-plugged after the agent read sysfs). Counted under the
/// last node slot, never used as an index as is.
pub const NODE_UNKNOWN: u32 = u32::MAX;

/// How a task ended up on another CPU, as far as the context in which
/// `sched_migrate_task` fired tells it. The tracepoint fires in `set_task_cpu()`
/// (kernel/sched/core.c), which runs in the waker's, the balancer's or the CPU
/// stopper's context, never necessarily the migrated task's own.
pub mod steal_type {
    /// No rule below matched.
    pub const UNKNOWN: u32 = 0;
    /// `current` is an ordinary task other than the migrated one: `try_to_wake_up()` ->
    /// `select_task_rq()` placed the wakee on another CPU. Ambiguous with a periodic
    /// load-balance pull run from SCHED_SOFTIRQ on top of that task.
    pub const WAKEUP: u32 = 1;
    /// `current` is the idle task (pid 0): a newly-idle or nohz idle balance pulled the
    /// task (`sched_balance_newidle()`/`load_balance()`, kernel/sched/fair.c). Ambiguous
    /// with a wakeup issued from an interrupt that arrived while the CPU was idle.
    pub const IDLE_BALANCE: u32 = 2;
    /// `current` is a CPU stopper thread (`migration/N`, kernel/stop_machine.c): an
    /// affinity change (`migration_cpu_stop`), an active load balance
    /// (`active_load_balance_cpu_stop`), a NUMA-balancing move (`migrate_task_to`,
    /// `migrate_swap`) or exec balancing. Which of these is not visible here.
    pub const FORCED: u32 = 3;
    /// `current` is the migrated task itself.
    pub const SELF: u32 = 4;
}

/// Load-time constants of the `sched_migrate_task` program, read from the running
/// kernel's tracefs `format` file (6.1 and 6.18 lay the event out differently).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MigrateConfig {
    /// Byte offset of `pid_t pid` (the migrated task's thread id).
    pub pid_offset: u32,
    /// Byte offset of `int orig_cpu`.
    pub orig_cpu_offset: u32,
    /// Byte offset of `int dest_cpu`.
    pub dest_cpu_offset: u32,
    /// Byte offset of `comm`: a `char[16]` array, or a `__data_loc` word (see below).
    pub comm_offset: u32,
    /// 1 when `comm` is `__data_loc char[]`: a u32 whose low 16 bits are the offset of
    /// the string within the record and high 16 bits its length (include/trace/stages).
    pub comm_data_loc: u32,
    /// Number of node slots in the [`maps::MIGRATIONS`] matrix: highest node id + 2, the
    /// last slot counting CPUs of unknown node. Node ids are the OS's, never re-indexed.
    pub node_slots: u32,
    /// Thread-group id of the agent: its own threads are counted but never reported.
    pub agent_tgid: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<MigrateConfig>() == 32);

/// Load-time constants of the `task:task_newtask` program (offsets from its format file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct NewTaskConfig {
    /// Byte offset of `pid_t pid` (the new task's thread id).
    pub pid_offset: u32,
    /// Byte offset of the 8-byte `clone_flags`.
    pub clone_flags_offset: u32,
}
const _: () = assert!(core::mem::size_of::<NewTaskConfig>() == 8);

/// `CLONE_THREAD` (include/uapi/linux/sched.h): the new task joins the caller's group.
pub const CLONE_THREAD: u64 = 0x0001_0000;
/// `CLONE_INTO_CGROUP` (include/uapi/linux/sched.h, clone3 only): the child starts in the
/// cgroup v2 group named by `clone_args.cgroup`, not in its parent's.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Number of cgroup hierarchies whose cgroup id the kernel side tracks per process.
pub const CGROUP_SLOTS: usize = 2;
/// Slot of the v1 hierarchy attribution reads in v1/hybrid mode (`memory`, else
/// `name=systemd`). Unused (id 0) on a pure v2 host.
pub const CGROUP_SLOT_V1: usize = 0;
/// Slot of the cgroup v2 (default, "unified") hierarchy, hierarchy id 0.
pub const CGROUP_SLOT_V2: usize = 1;
/// [`AttachConfig::v1_hierarchy`] when no v1 hierarchy is tracked. Hierarchy ids are
/// small non-negative ints (`/proc/<pid>/cgroup` first column).
pub const HIERARCHY_NONE: u32 = u32::MAX;

/// Value of [`maps::TASKS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TaskInfo {
    pub tgid: u32,
    /// [`TASK_KERNEL_THREAD`] or 0.
    pub flags: u32,
    /// Cgroup ids (kernfs node ids, equal to the cgroup directory's inode number) of the
    /// thread group, indexed by [`CGROUP_SLOT_V1`] / [`CGROUP_SLOT_V2`]; 0 = not known.
    /// Kept on the thread-group leader's entry (key = tgid): `cgroup_attach_task`
    /// reports a whole-process move once, with the leader's pid.
    pub cgroup_ids: [u64; CGROUP_SLOTS],
}
const _: () = assert!(core::mem::size_of::<TaskInfo>() == 24);

/// Load-time constants of the `cgroup:cgroup_attach_task` program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct AttachConfig {
    /// Byte offset of `int dst_root` (the destination's hierarchy id).
    pub dst_root_offset: u32,
    /// Byte offset of `u64 dst_id` (the destination cgroup's id).
    pub dst_id_offset: u32,
    /// Byte offset of `int pid` (the moved task; the leader for a whole-process move).
    pub pid_offset: u32,
    /// Hierarchy id tracked in [`CGROUP_SLOT_V1`], or [`HIERARCHY_NONE`].
    pub v1_hierarchy: u32,
}
const _: () = assert!(core::mem::size_of::<AttachConfig>() == 16);

/// [`TaskInfo::flags`]: a kernel thread (a child of kthreadd, pid 2).
pub const TASK_KERNEL_THREAD: u32 = 1;

/// Capacity of [`maps::TASKS`]; least recently used entries go first, so threads that
/// exited long ago make room for new ones.
pub const TASKS_CAPACITY: u32 = 65_536;

/// Load-time constants of the `kmem:mm_page_alloc` program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PageAllocConfig {
    /// Byte offset of the 8-byte `pfn` (`-1UL` when the allocation failed).
    pub pfn_offset: u32,
    /// Byte offset of `unsigned int order` (2^order pages were allocated).
    pub order_offset: u32,
    /// As [`MigrateConfig::node_slots`].
    pub node_slots: u32,
    /// As [`MigrateConfig::agent_tgid`]: the agent's own allocations are not counted.
    pub agent_tgid: u32,
}
const _: () = assert!(core::mem::size_of::<PageAllocConfig>() == 16);

/// Value of [`maps::PFN_BANK`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PfnBank {
    /// 0 or 1: entries `bank * MAX_PFN_RANGES ..` of [`maps::PFN_RANGES`] are in use.
    pub bank: u32,
    /// Entries used in that bank (at most [`MAX_PFN_RANGES`]).
    pub count: u32,
}
const _: () = assert!(core::mem::size_of::<PfnBank>() == 8);

/// Value of [`maps::PAGE_LAYOUT`]: with the kernel's virtual memory map
/// (CONFIG_SPARSEMEM_VMEMMAP) `struct page`s form one array, so
/// `pfn = (page - vmemmap) / page_size` (`__page_to_pfn`, include/asm-generic/memory_model.h).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PageLayout {
    /// Address of the `struct page` of pfn 0.
    pub vmemmap: u64,
    /// `sizeof(struct page)`; 0 while not calibrated.
    pub page_size: u64,
}
const _: () = assert!(core::mem::size_of::<PageLayout>() == 16);

/// Value of [`maps::PAGE_CALIBRATION`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PageCalibration {
    /// Thread whose allocations are recorded (0: none).
    pub tid: u32,
    pub _pad: u32,
    /// The `struct page *` of its last allocation.
    pub page: u64,
}
const _: () = assert!(core::mem::size_of::<PageCalibration>() == 16);

/// Value of [`maps::ALLOC_RUNS`]: per CPU, the run of pages being gathered, allocated
/// for one thread group while this CPU was on `cpu_node`, with page positions in
/// `[lo, hi)`, a stretch of one memory node (or of no known node). Positions are page
/// pointers for the raw program and pfns for the classic one; only one of them is ever
/// attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct AllocRun {
    pub tgid: u32,
    pub cpu_node: u32,
    pub mem_node: u32,
    pub _pad: u32,
    pub lo: u64,
    pub hi: u64,
    /// Pages gathered and not yet added to the counter maps.
    pub pages: u64,
    /// Times the program ran for an allocation on this CPU since it was loaded, counted
    /// or not (failed allocations and the agent's own aside): what the probe costs a
    /// CPU is this times its cost per run.
    pub hits: u64,
}
const _: () = assert!(core::mem::size_of::<AllocRun>() == 48);

/// Capacity of [`maps::PFN_RANGES`]: the program scans it linearly, so the agent merges
/// contiguous memory blocks of a node into one range first.
pub const MAX_PFN_RANGES: u32 = 64;

/// Pages `[start_pfn, end_pfn)` belong to `node`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PfnRange {
    pub start_pfn: u64,
    pub end_pfn: u64,
    pub node: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<PfnRange>() == 24);

/// Key of [`maps::WORKLOAD_ALLOCS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C)]
pub struct AccessKey {
    pub tgid: u32,
    /// Node of the CPU the allocating task ran on ([`NODE_UNKNOWN`] if none).
    pub cpu_node: u32,
    /// Node the page lives on ([`NODE_UNKNOWN`] if no range holds its pfn).
    pub mem_node: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<AccessKey>() == 16);

/// Capacity of [`maps::WORKLOAD_ALLOCS`].
pub const WORKLOAD_ALLOCS_CAPACITY: u32 = 16_384;

/// Length of a task's `comm` (TASK_COMM_LEN, include/linux/sched.h).
pub const COMM_LEN: usize = 16;

/// One cross-node migration, sent through [`maps::EVENTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct MigrateRecord {
    /// Always [`Probe::SchedMigrateTask`]; first field of every ring-buffer record.
    pub probe: u32,
    /// One of [`steal_type`].
    pub steal_type: u32,
    /// `bpf_ktime_get_boot_ns()` when the tracepoint fired.
    pub boot_ns: u64,
    /// The migrated thread (the tracepoint's `pid` field, not `current`).
    pub tid: u32,
    pub src_cpu: u32,
    pub dst_cpu: u32,
    pub src_node: u32,
    pub dst_node: u32,
    /// Thread and thread-group id of `current`, the context that moved the task.
    pub actor_tid: u32,
    pub actor_tgid: u32,
    /// Thread group of the migrated thread from [`maps::TASKS`]; 0 when not known there.
    pub tgid: u32,
    /// The migrated task's command, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// The migrated thread's group's cgroup ids from [`maps::TASKS`] at event time
    /// (see [`TaskInfo::cgroup_ids`]): captured in the kernel so a process that exits
    /// before the agent reads the record is still charged to its cgroup.
    pub cgroup_ids: [u64; CGROUP_SLOTS],
}
const _: () = assert!(core::mem::size_of::<MigrateRecord>() == 80);

/// Load-time constants of the `exceptions:page_fault_user` programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FaultConfig {
    /// Sample one user fault in this many, counted per CPU (>= 1).
    pub sample_rate: u32,
    /// As [`MigrateConfig::agent_tgid`]: the agent's own faults are never sampled.
    pub agent_tgid: u32,
    /// Classic-tracepoint variant only: byte offset of `unsigned long address`.
    pub address_offset: u32,
    /// Classic-tracepoint variant only: byte offset of `unsigned long error_code`.
    pub error_code_offset: u32,
}
const _: () = assert!(core::mem::size_of::<FaultConfig>() == 16);

/// One sampled user page fault, sent through [`maps::EVENTS`]. Recorded before the
/// kernel handles the fault, so the page's node is not known yet: the agent asks
/// `move_pages(2)` for it later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct FaultRecord {
    /// Always [`Probe::PageFaultUser`]; first field of every ring-buffer record.
    pub probe: u32,
    /// CPU the fault was taken on.
    pub cpu: u32,
    /// Node of that CPU ([`NODE_UNKNOWN`] if none).
    pub cpu_node: u32,
    /// The faulting thread (`current`) and its thread group.
    pub tid: u32,
    pub tgid: u32,
    pub _pad: u32,
    /// Faulting user virtual address (`cr2`).
    pub address: u64,
    /// x86 page-fault error code (arch/x86/include/asm/trap_pf.h: bit 0 present,
    /// 1 write, 2 user, 4 instruction fetch, ...), or [`ERROR_CODE_UNKNOWN`] from the
    /// perf-event variant, which the kernel does not hand the error code.
    pub error_code: u64,
}

/// [`FaultRecord::error_code`] of a sample whose error code is not known.
pub const ERROR_CODE_UNKNOWN: u64 = u64::MAX;
const _: () = assert!(core::mem::size_of::<FaultRecord>() == 40);

/// Kinds of NUMA-balancing decision, the first index of [`maps::NUMA_BALANCING`].
pub mod balancing_kind {
    /// `sched_move_numa`: `migrate_task_to()` asks the stopper to move the task to a CPU
    /// of its preferred node (kernel/sched/core.c); an attempt, which may still fail.
    pub const MOVE: u32 = 0;
    /// `sched_swap_numa`: `migrate_swap()` exchanges two tasks across nodes.
    pub const SWAP: u32 = 1;
    /// `sched_stick_numa`: `task_numa_migrate()` (kernel/sched/fair.c) found no better
    /// CPU (`dst_cpu = dst_nid = -1`) or the move or swap failed: the task stays.
    pub const STICK: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// Load-time constants of the three `sched:sched_*_numa` programs (offsets of the node
/// fields from each event's format file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BalancingConfig {
    /// `int src_nid` / `int dst_nid` of `sched_move_numa`.
    pub move_src_nid: u32,
    pub move_dst_nid: u32,
    /// Of `sched_swap_numa`.
    pub swap_src_nid: u32,
    pub swap_dst_nid: u32,
    /// Of `sched_stick_numa` (`dst_nid` may be -1).
    pub stick_src_nid: u32,
    pub stick_dst_nid: u32,
    /// As [`MigrateConfig::node_slots`]; the last slot also takes `-1`.
    pub node_slots: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<BalancingConfig>() == 32);

/// Reason slots of [`maps::MIGRATE_PAGES`]: `enum migrate_reason` values below the last
/// slot keep their own; the last collects any larger (or negative) value. Kernels
/// 6.1-6.18 define 9-10 reasons (include/linux/migrate_mode.h).
pub const MIGRATE_REASON_SLOTS: u32 = 16;

/// Load-time constants of the `migrate:mm_migrate_pages` program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MigratePagesConfig {
    /// Byte offset of `unsigned long succeeded` (base pages, THPs counted by size).
    pub succeeded_offset: u32,
    /// Byte offset of `unsigned long failed`.
    pub failed_offset: u32,
    /// Byte offset of `int reason` (`enum migrate_reason`).
    pub reason_offset: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<MigratePagesConfig>() == 16);

/// Load-time constants of the `task_numa_fault` fentry program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct HintFaultConfig {
    /// As [`MigrateConfig::node_slots`].
    pub node_slots: u32,
    /// Not recorded per task (still in the global counts, which /proc/vmstat matches).
    pub agent_tgid: u32,
}
const _: () = assert!(core::mem::size_of::<HintFaultConfig>() == 8);

/// `task_numa_fault()` flags (include/linux/sched/numa_balancing.h, the same in
/// 6.1-6.18): the page was migrated, the migration failed, the fault was local.
pub const TNF_MIGRATED: u32 = 0x01;
pub const TNF_FAULT_LOCAL: u32 = 0x08;
pub const TNF_MIGRATE_FAIL: u32 = 0x10;

/// Value of [`maps::TASK_HINT_FAULTS`]: one thread group's NUMA hinting faults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct HintFaultCounts {
    /// Faults with `TNF_FAULT_LOCAL` (page on the faulting CPU's node) and without.
    pub local_faults: u64,
    pub remote_faults: u64,
    /// The same in pages (a huge-page fault is 512 pages).
    pub local_pages: u64,
    pub remote_pages: u64,
    /// Pages with `TNF_MIGRATED` / `TNF_MIGRATE_FAIL`.
    pub migrated_pages: u64,
    pub migrate_failed_pages: u64,
}
const _: () = assert!(core::mem::size_of::<HintFaultCounts>() == 48);

/// Capacity of [`maps::TASK_HINT_FAULTS`].
pub const TASK_HINT_FAULTS_CAPACITY: u32 = 16_384;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers only, explicit padding: every bit pattern is valid.
    unsafe impl aya::Pod for super::MigrateConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MigrateRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NewTaskConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TaskInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageAllocConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PfnRange {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PfnBank {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageCalibration {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllocRun {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AccessKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AttachConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FaultConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BalancingConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MigratePagesConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HintFaultConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HintFaultCounts {}
}
