//! Userspace half of the `kmem:mm_page_alloc` probe: its load-time config, and the
//! per-thread-group page counts it keeps.
use std::collections::BTreeMap;

use aya::maps::{MapData, MapError, PerCpuHashMap};
use numa_common::{AccessKey, NODE_UNKNOWN, PageAllocConfig};

use crate::{
    topology::NodeId,
    tracefs::{EventFormat, TracefsError},
};

pub const CATEGORY: &str = "kmem";
pub const EVENT: &str = "mm_page_alloc";

pub fn config_from_format(format: &EventFormat) -> Result<PageAllocConfig, TracefsError> {
    Ok(PageAllocConfig {
        pfn_offset: format.int_field("pfn", 8)?.offset,
        order_offset: format.int_field("order", 4)?.offset,
        ..PageAllocConfig::default()
    })
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
