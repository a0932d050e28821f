//! A declared NUMA split of this host's CPUs: a sysfs-shaped fixture tree the agent
//! reads with `--sysfs-root`. The kernel events stay real; only cpu->node is declared.
use std::{fs, io, path::Path};

use tempfile::TempDir;

/// node0 = CPU 0, node1 = CPU 1, distances 10 local / 21 remote.
pub fn two_nodes() -> io::Result<TempDir> {
    let dir = tempfile::Builder::new().prefix("numa-split-").tempdir()?;
    let node = dir.path().join("devices/system/node");
    write(&node.join("online"), "0-1\n")?;
    write(&node.join("possible"), "0-1\n")?;
    write(&node.join("node0/cpulist"), "0\n")?;
    write(&node.join("node1/cpulist"), "1\n")?;
    write(&node.join("node0/distance"), "10 21\n")?;
    write(&node.join("node1/distance"), "21 10\n")?;
    Ok(dir)
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    fs::create_dir_all(path.parent().ok_or_else(|| io::Error::other("no parent"))?)?;
    fs::write(path, text)
}

/// As [`two_nodes`], plus this host's memory blocks (`/sys/devices/system/memory`),
/// all declared on node0: node1 has a CPU and no memory, so everything CPU 1
/// allocates is remote.
pub fn two_nodes_with_host_memory_on_node0() -> io::Result<TempDir> {
    let dir = two_nodes()?;
    declare_host_memory(dir.path(), Some(0))?;
    Ok(dir)
}

/// Declare this host's memory blocks on `node` (0, 1 or 2) in the split at `root`
/// (hot-add), or on no node (`None`: hot-remove); the node's directory is created if
/// it is not there (a possible node coming online with its memory). The block size
/// file is written either way, so the tree always says memory blocks exist.
pub fn declare_host_memory(root: &Path, node: Option<u32>) -> io::Result<()> {
    let block_size = fs::read_to_string("/sys/devices/system/memory/block_size_bytes")?;
    write(
        &root.join("devices/system/memory/block_size_bytes"),
        &block_size,
    )?;
    for entry in fs::read_dir("/sys/devices/system/node/node0")? {
        let name = entry?.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.starts_with("memory") && n[6..].parse::<u64>().is_ok())
        {
            continue;
        }
        for n in 0..3 {
            let path = root
                .join(format!("devices/system/node/node{n}"))
                .join(&name);
            if node == Some(n) {
                write(&path, "")?;
            } else if path.exists() {
                fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}
