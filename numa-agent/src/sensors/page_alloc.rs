//! Userspace half of the `kmem:mm_page_alloc` probe: its load-time config, its attach
//! variants, the node pfn ranges it scans, and the per-thread-group page counts it
//! keeps.
use std::{collections::BTreeMap, path::Path};

use aya::maps::{Array, MapData, MapError, PerCpuHashMap};
use numa_common::{
    AccessKey, MAX_PFN_RANGES, NODE_UNKNOWN, PageAllocConfig, PfnBank, PfnRange, programs,
};

use crate::{
    memory_blocks::{MemoryBlocksError, NodePfnRange, node_pfn_ranges},
    topology::NodeId,
    tracefs::{EventFormat, TracefsError},
};

pub const CATEGORY: &str = "kmem";
pub const EVENT: &str = "mm_page_alloc";

/// Attach variants, cheapest first: (variant label, program name). The raw tracepoint
/// gets the `struct page *` and needs the calibrated page layout (`page_layout`); the
/// classic tracepoint makes the kernel fill a trace record for every page allocated,
/// which costs more per hit than the program itself (README "Cost").
pub const VARIANTS: [(&str, &str); 2] = [
    ("raw_tracepoint", programs::MM_PAGE_ALLOC_RAW),
    ("tracepoint", programs::MM_PAGE_ALLOC),
];

pub fn config_from_format(format: &EventFormat) -> Result<PageAllocConfig, TracefsError> {
    Ok(PageAllocConfig {
        pfn_offset: format.int_field("pfn", 8)?.offset,
        order_offset: format.int_field("order", 4)?.offset,
        ..PageAllocConfig::default()
    })
}

/// The node pfn ranges in the kernel, in two banks (numa-common `maps::PFN_BANK`): a
/// new table goes into the bank not in use and one write of `PFN_BANK` switches to
/// it, so memory hotplug never leaves the programs scanning a half-written table.
pub struct PfnTable {
    ranges: Array<MapData, PfnRange>,
    bank: Array<MapData, PfnBank>,
    active: Option<(u32, Vec<NodePfnRange>)>,
}

impl PfnTable {
    pub fn new(ranges: Array<MapData, PfnRange>, bank: Array<MapData, PfnBank>) -> Self {
        Self {
            ranges,
            bank,
            active: None,
        }
    }

    /// Read the node pfn ranges under `sysfs_root` and make them the table in use.
    /// Returns the number of ranges if they changed; writes nothing if they did not.
    pub fn refresh(&mut self, sysfs_root: &Path) -> Result<Option<usize>, PfnTableError> {
        let ranges = node_pfn_ranges(sysfs_root)?;
        if self.active.as_ref().is_some_and(|(_, r)| *r == ranges) {
            return Ok(None);
        }
        if ranges.is_empty() {
            log::warn!(
                "no memory blocks under {}: page placement is reported as node `unknown`",
                sysfs_root.display()
            );
        }
        if ranges.len() > MAX_PFN_RANGES as usize {
            log::warn!(
                "{} node memory ranges, more than the {MAX_PFN_RANGES} the probe scans: pages \
                 past them count as node `unknown`",
                ranges.len()
            );
        }
        let count = ranges.len();
        self.publish(ranges)?;
        Ok(Some(count))
    }

    fn publish(&mut self, ranges: Vec<NodePfnRange>) -> Result<(), MapError> {
        let bank = self.active.as_ref().map_or(0, |(b, _)| 1 - b);
        for (i, r) in ranges.iter().take(MAX_PFN_RANGES as usize).enumerate() {
            let range = PfnRange {
                start_pfn: r.start_pfn,
                end_pfn: r.end_pfn,
                node: r.node,
                _pad: 0,
            };
            self.ranges
                .set(bank * MAX_PFN_RANGES + i as u32, range, 0)?;
        }
        let count = ranges.len().min(MAX_PFN_RANGES as usize) as u32;
        self.bank.set(0, PfnBank { bank, count }, 0)?;
        self.active = Some((bank, ranges));
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PfnTableError {
    #[error(transparent)]
    MemoryBlocks(#[from] MemoryBlocksError),
    #[error("eBPF map PFN_RANGES / PFN_BANK")]
    Map(#[from] MapError),
}

/// Pages allocated by one thread group while running on `cpu_node`, placed on `mem_node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllocKey {
    pub tgid: u32,
    pub cpu_node: Option<NodeId>,
    pub mem_node: Option<NodeId>,
}

/// Read every (thread group, cpu node, memory node) page count, summed over CPUs.
pub fn read_workload_allocs(
    map: &PerCpuHashMap<MapData, AccessKey, u64>,
) -> Result<BTreeMap<AllocKey, u64>, MapError> {
    let node = |n: u32| (n != NODE_UNKNOWN).then_some(n);
    let mut out = BTreeMap::new();
    for entry in map.iter() {
        let (key, values) = entry?;
        let key = AllocKey {
            tgid: key.tgid,
            cpu_node: node(key.cpu_node),
            mem_node: node(key.mem_node),
        };
        *out.entry(key).or_default() += values.iter().sum::<u64>();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_on_every_fixture_kernel() {
        for kernel in crate::tracefs::fixtures::KERNELS {
            let f = crate::tracefs::fixtures::format(kernel, "kmem__mm_page_alloc.format");
            let cfg = config_from_format(&f).expect("config");
            assert_eq!((cfg.pfn_offset, cfg.order_offset), (8, 16), "{kernel}");
        }
    }
}
