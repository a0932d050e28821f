//! Which physical pages belong to which node: the memory blocks each node lists in
//! sysfs (drivers/base/memory.c). Block `memoryN` covers physical addresses
//! `[N * block_size, (N + 1) * block_size)`; `block_size_bytes` is hex without `0x`.
//! Contiguous blocks of a node are merged so the eBPF program scans few ranges.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::topology::NodeId;

/// x86_64 and arm64 (4 KiB) base page size; pfn = physical address >> 12.
const PAGE_SHIFT: u32 = 12;

#[derive(Debug, Error)]
pub enum MemoryBlocksError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: `{text}` is not a hexadecimal block size")]
    BlockSize { path: PathBuf, text: String },
}

/// Page frames `[start_pfn, end_pfn)` on `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePfnRange {
    pub node: NodeId,
    pub start_pfn: u64,
    pub end_pfn: u64,
}

/// Every node's pfn ranges under `sysfs_root`, merged and sorted by start. Empty when
/// the kernel exposes no memory blocks (no CONFIG_MEMORY_HOTPLUG sysfs): pages are then
/// of unknown node, which the agent reports as such.
pub fn node_pfn_ranges(sysfs_root: &Path) -> Result<Vec<NodePfnRange>, MemoryBlocksError> {
    let size_path = sysfs_root.join("devices/system/memory/block_size_bytes");
    if !size_path.exists() {
        return Ok(Vec::new());
    }
    let text = fs::read_to_string(&size_path).map_err(|source| MemoryBlocksError::Read {
        path: size_path.clone(),
        source,
    })?;
    let block_bytes = u64::from_str_radix(text.trim().trim_start_matches("0x"), 16)
        .ok()
        .filter(|b| *b > 0)
        .ok_or_else(|| MemoryBlocksError::BlockSize {
            path: size_path.clone(),
            text: text.trim().to_owned(),
        })?;
    let pages_per_block = block_bytes >> PAGE_SHIFT;

    let node_dir = sysfs_root.join("devices/system/node");
    let mut blocks: Vec<(NodeId, u64)> = Vec::new();
    let entries = match fs::read_dir(&node_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(MemoryBlocksError::Read {
                path: node_dir,
                source,
            });
        }
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(node) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("node")?.parse::<NodeId>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        let listing = fs::read_dir(&dir).map_err(|source| MemoryBlocksError::Read {
            path: dir.clone(),
            source,
        })?;
        for block in listing.filter_map(Result::ok) {
            if let Some(index) = block
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("memory")?.parse::<u64>().ok())
            {
                blocks.push((node, index));
            }
        }
    }
    blocks.sort_unstable_by_key(|&(node, index)| (index, node));
    let mut ranges: Vec<NodePfnRange> = Vec::new();
    for (node, index) in blocks {
        let start = index * pages_per_block;
        let end = start + pages_per_block;
        match ranges.last_mut() {
            Some(last) if last.node == node && last.end_pfn == start => last.end_pfn = end,
            _ => ranges.push(NodePfnRange {
                node,
                start_pfn: start,
                end_pfn: end,
            }),
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }

    #[test]
    fn blocks_merge_per_node_in_address_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        touch(root, "devices/system/memory/block_size_bytes", "8000000\n"); // 128 MiB
        for i in [0, 1, 2, 5] {
            touch(root, &format!("devices/system/node/node0/memory{i}"), "");
        }
        for i in [3, 4] {
            touch(root, &format!("devices/system/node/node1/memory{i}"), "");
        }
        let per_block = 0x800_0000u64 >> 12;
        assert_eq!(
            node_pfn_ranges(root).expect("ranges"),
            vec![
                NodePfnRange {
                    node: 0,
                    start_pfn: 0,
                    end_pfn: 3 * per_block
                },
                NodePfnRange {
                    node: 1,
                    start_pfn: 3 * per_block,
                    end_pfn: 5 * per_block
                },
                NodePfnRange {
                    node: 0,
                    start_pfn: 5 * per_block,
                    end_pfn: 6 * per_block
                },
            ]
        );
    }

    #[test]
    fn no_memory_blocks_means_unknown_not_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(node_pfn_ranges(dir.path()).expect("ranges"), vec![]);
        touch(dir.path(), "devices/system/memory/block_size_bytes", "zz");
        let e = node_pfn_ranges(dir.path())
            .expect_err("bad size")
            .to_string();
        assert!(e.contains("block_size_bytes") && e.contains("`zz`"), "{e}");
    }

    #[test]
    fn this_host_has_its_memory_on_a_node() {
        let ranges = node_pfn_ranges(Path::new("/sys")).expect("host ranges");
        if Path::new("/sys/devices/system/memory/block_size_bytes").exists() {
            assert!(
                !ranges.is_empty(),
                "memory blocks exist but no node lists any"
            );
        }
    }
}
