//! Sampled user page faults (`exceptions:page_fault_user`) resolved to the node of the
//! faulted page, and counted per (thread group, CPU node, memory node).
//!
//! The kernel program cannot know the page's node: the tracepoint fires before the
//! fault is handled, so for a first touch the page does not exist yet. The agent
//! gathers the samples of one ring-buffer drain (at most 100 ms old), groups them by
//! thread group and asks the kernel with one `move_pages(2)` call per process in
//! query mode (`nodes == NULL`: nothing moves, `status[i]` receives the node of the
//! page at `pages[i]`, mm/migrate.c `do_pages_stat()`). The answer is the node the
//! page is on at query time: exact, not guessed, but a page migrated between the
//! fault and the query (NUMA balancing) is counted on its new node.
//!
//! A sample is *resolved* when the query names a node; otherwise it is counted as
//! unresolved with the reason (see [`Unresolved`]) and in no ratio.
use std::{
    collections::{BTreeMap, HashMap},
    io,
    sync::{Arc, Mutex},
};

use prometheus::{
    Gauge, IntCounterVec, IntGauge, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use crate::{
    sensors::{page_alloc::AllocKey, page_fault::FaultSample},
    topology::NodeId,
};

/// Why a sample has no node. Bounded: these are the metric's `reason` label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unresolved {
    /// `-EFAULT`: no mapping at the address, anonymous memory never populated (a
    /// fault that failed), or the shared zero page (a read of untouched anonymous
    /// memory maps it: it belongs to no node's workload memory).
    NotMapped,
    /// `-ENOENT`: a file or shmem mapping without the page in memory.
    NotPresent,
    /// `ESRCH`: the process exited before the query.
    Exited,
    /// The CPU the fault was taken on is in no known node.
    UnknownCpuNode,
    /// Any other error (EPERM, or a per-page errno not listed above).
    Other,
}

impl Unresolved {
    pub const ALL: [Unresolved; 5] = [
        Self::NotMapped,
        Self::NotPresent,
        Self::Exited,
        Self::UnknownCpuNode,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotMapped => "not_mapped",
            Self::NotPresent => "not_present",
            Self::Exited => "exited",
            Self::UnknownCpuNode => "unknown_cpu_node",
            Self::Other => "other",
        }
    }

    fn from_status(status: i32) -> Self {
        match -status {
            libc::EFAULT => Self::NotMapped,
            libc::ENOENT => Self::NotPresent,
            _ => Self::Other,
        }
    }
}

/// Node of the page at each of `addresses` in process `pid`, or its per-page errno
/// (negative, as `move_pages` reports it). `Err` when the call itself failed.
pub fn query_nodes(pid: u32, addresses: &[u64]) -> io::Result<Vec<i32>> {
    let pages: Vec<*mut libc::c_void> = addresses
        .iter()
        .map(|&a| (a & !(page_size() - 1)) as usize as *mut libc::c_void)
        .collect();
    let mut status = vec![i32::MIN; pages.len()];
    // SAFETY: `pages` and `status` hold `pages.len()` elements each; `nodes` is NULL
    // (query mode), so the kernel only writes `status`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            pid as libc::pid_t,
            pages.len() as libc::c_ulong,
            pages.as_ptr(),
            std::ptr::null::<libc::c_int>(),
            status.as_mut_ptr(),
            0 as libc::c_int,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(status)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

/// Samples resolved per (CPU node, memory node), and unresolved per reason, since the
/// agent started: what `/metrics` exports.
#[derive(Debug, Default)]
pub struct SampledTotals {
    pub pairs: BTreeMap<(NodeId, NodeId), u64>,
    pub unresolved: BTreeMap<Unresolved, u64>,
}

/// Resolves and counts samples. Cheap to clone the totals handle for the collector.
#[derive(Debug, Default)]
pub struct SampledFaults {
    pending: HashMap<u32, Vec<FaultSample>>,
    /// Resolved samples of the current access window, per (tgid, cpu node, mem node).
    window: BTreeMap<AllocKey, u64>,
    totals: Arc<Mutex<SampledTotals>>,
}

/// Most pages asked in one `move_pages` call (the kernel walks them in chunks of
/// 16 anyway, mm/migrate.c `DO_PAGES_STAT_CHUNK_NR`; this only bounds our buffers).
const QUERY_BATCH: usize = 4096;

impl SampledFaults {
    pub fn totals(&self) -> Arc<Mutex<SampledTotals>> {
        self.totals.clone()
    }

    /// Queue a sample until [`Self::resolve`].
    pub fn push(&mut self, sample: FaultSample) {
        self.pending.entry(sample.tgid).or_default().push(sample);
    }

    /// Resolve every queued sample: one `move_pages` query per process.
    pub fn resolve(&mut self) {
        self.resolve_with(query_nodes);
    }

    /// As [`Self::resolve`], with the query injected (tests).
    pub fn resolve_with(&mut self, mut query: impl FnMut(u32, &[u64]) -> io::Result<Vec<i32>>) {
        if self.pending.is_empty() {
            return;
        }
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        for (tgid, samples) in self.pending.drain() {
            for chunk in samples.chunks(QUERY_BATCH) {
                let addresses: Vec<u64> = chunk.iter().map(|s| s.address).collect();
                let statuses = match query(tgid, &addresses) {
                    Ok(s) => s,
                    Err(e) => {
                        let reason = if e.raw_os_error() == Some(libc::ESRCH) {
                            Unresolved::Exited
                        } else {
                            log::debug!("move_pages({tgid}) failed: {e}");
                            Unresolved::Other
                        };
                        *totals.unresolved.entry(reason).or_default() += chunk.len() as u64;
                        continue;
                    }
                };
                for (sample, &status) in chunk.iter().zip(&statuses) {
                    let Some(cpu_node) = sample.cpu_node else {
                        *totals
                            .unresolved
                            .entry(Unresolved::UnknownCpuNode)
                            .or_default() += 1;
                        continue;
                    };
                    if status < 0 {
                        *totals
                            .unresolved
                            .entry(Unresolved::from_status(status))
                            .or_default() += 1;
                        continue;
                    }
                    let mem_node = status as NodeId;
                    *totals.pairs.entry((cpu_node, mem_node)).or_default() += 1;
                    *self
                        .window
                        .entry(AllocKey {
                            tgid,
                            cpu_node: Some(cpu_node),
                            mem_node: Some(mem_node),
                        })
                        .or_default() += 1;
                }
            }
        }
    }

    /// The resolved samples of the window that ends now, per (tgid, cpu node, mem node);
    /// the next window starts empty.
    pub fn take_window(&mut self) -> BTreeMap<AllocKey, u64> {
        std::mem::take(&mut self.window)
    }
}

fn pairs_vec() -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(
        Opts::new(
            "numa_sampled_faults_total",
            "Sampled user page faults (software page-fault counter or \
             exceptions:page_fault_user: 1 in numa_fault_sample_rate per CPU while the sampler \
             is attached, numa_fault_sample_duty of the time) whose page move_pages(2) placed, \
             by the node of the faulting CPU and the node of the page; see README",
        ),
        &["cpu_node", "mem_node"],
    )
}

fn unresolved_vec() -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(
        Opts::new(
            "numa_sampled_faults_unresolved_total",
            "Sampled user page faults whose page has no node: not_mapped (no mapping, never \
             populated, or the zero page), not_present, exited, unknown_cpu_node, other",
        ),
        &["reason"],
    )
}

fn rate_gauge() -> Result<IntGauge, prometheus::Error> {
    IntGauge::new(
        "numa_fault_sample_rate",
        "One user page fault in this many is sampled while the sampler is attached, counted \
         per CPU",
    )
}

fn duty_gauge() -> Result<Gauge, prometheus::Error> {
    Gauge::new(
        "numa_fault_sample_duty",
        "Share of each access window the page-fault sampler is attached (--fault-sample-duty \
         / 100); faults ~= samples * numa_fault_sample_rate / this, for a steady workload",
    )
}

/// `/metrics` for sampled faults; registered only while the probe is attached, so
/// on a kernel without it (arm64) the series are absent, never a measured zero.
pub struct SampledCollector {
    totals: Arc<Mutex<SampledTotals>>,
    nodes: Vec<NodeId>,
    rate: u32,
    duty: f64,
    descs: Vec<Desc>,
}

impl SampledCollector {
    pub fn new(
        totals: Arc<Mutex<SampledTotals>>,
        nodes: Vec<NodeId>,
        rate: u32,
        duty: f64,
    ) -> Result<Self, prometheus::Error> {
        let descs = [
            pairs_vec()?.desc(),
            unresolved_vec()?.desc(),
            rate_gauge()?.desc(),
            duty_gauge()?.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        Ok(Self {
            totals,
            nodes,
            rate,
            duty,
            descs,
        })
    }

    fn gather(&self) -> Result<Vec<MetricFamily>, prometheus::Error> {
        let pairs = pairs_vec()?;
        // Every known pair exists from the start, so `rate()` and alerts see zeros.
        for cpu in &self.nodes {
            for mem in &self.nodes {
                pairs.with_label_values(&[cpu.to_string(), mem.to_string()]);
            }
        }
        let unresolved = unresolved_vec()?;
        for reason in Unresolved::ALL {
            unresolved.with_label_values(&[reason.as_str()]);
        }
        {
            let totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
            for (&(cpu, mem), &n) in &totals.pairs {
                pairs
                    .with_label_values(&[cpu.to_string(), mem.to_string()])
                    .inc_by(n);
            }
            for (reason, &n) in &totals.unresolved {
                unresolved.with_label_values(&[reason.as_str()]).inc_by(n);
            }
        }
        let rate = rate_gauge()?;
        rate.set(i64::from(self.rate));
        let duty = duty_gauge()?;
        duty.set(self.duty);
        Ok([
            pairs.collect(),
            unresolved.collect(),
            rate.collect(),
            duty.collect(),
        ]
        .concat())
    }
}

collector_from_gather!(SampledCollector, "sampled-fault counters");

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tgid: u32, node: Option<u32>, address: u64) -> FaultSample {
        FaultSample {
            cpu: 0,
            cpu_node: node,
            tid: tgid,
            tgid,
            address,
            error_code: Some(6),
        }
    }

    #[test]
    fn statuses_become_pairs_or_reasons() {
        let mut s = SampledFaults::default();
        for a in [0x1000, 0x2000, 0x3000, 0x4000] {
            s.push(sample(7, Some(0), a));
        }
        s.push(sample(7, None, 0x5000));
        s.push(sample(8, Some(1), 0x1000));
        s.resolve_with(|pid, addrs| match pid {
            7 => Ok(addrs
                .iter()
                .map(|&a| match a {
                    0x1000 | 0x2000 => 1,
                    0x3000 => -libc::EFAULT,
                    0x4000 => -libc::ENOENT,
                    _ => 0,
                })
                .collect()),
            _ => Err(io::Error::from_raw_os_error(libc::ESRCH)),
        });
        let totals = s.totals();
        let totals = totals.lock().expect("not poisoned");
        assert_eq!(totals.pairs, BTreeMap::from([((0, 1), 2)]));
        assert_eq!(
            totals.unresolved,
            BTreeMap::from([
                (Unresolved::NotMapped, 1),
                (Unresolved::NotPresent, 1),
                (Unresolved::Exited, 1),
                (Unresolved::UnknownCpuNode, 1),
            ])
        );
        drop(totals);
        let key = AllocKey {
            tgid: 7,
            cpu_node: Some(0),
            mem_node: Some(1),
        };
        assert_eq!(s.take_window(), BTreeMap::from([(key, 2)]));
        assert!(s.take_window().is_empty(), "a window is taken once");
    }

    /// The real syscall on this process: a page we wrote is on a node the kernel
    /// names (and the same one `get_mempolicy(MPOL_F_NODE|MPOL_F_ADDR)` names), an
    /// address with no mapping is `-EFAULT`.
    #[test]
    fn query_mode_on_our_own_pages() {
        let mut page = vec![0u8; 8192];
        page[0] = 1;
        let addr = page.as_ptr() as u64;
        let status = query_nodes(std::process::id(), &[addr, 8]).expect("move_pages");
        // include/uapi/linux/mempolicy.h (not in the libc crate).
        const MPOL_F_NODE: libc::c_ulong = 1;
        const MPOL_F_ADDR: libc::c_ulong = 2;
        let mut node: libc::c_int = -1;
        // SAFETY: get_mempolicy writes one int; addr is mapped (our Vec).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_get_mempolicy,
                &raw mut node,
                std::ptr::null_mut::<libc::c_ulong>(),
                0 as libc::c_ulong,
                addr as usize as *mut libc::c_void,
                MPOL_F_NODE | MPOL_F_ADDR,
            )
        };
        assert_eq!(rc, 0, "get_mempolicy: {}", io::Error::last_os_error());
        assert_eq!(status, vec![node, -libc::EFAULT]);
    }
}
