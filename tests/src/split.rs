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
    let block_size = fs::read_to_string("/sys/devices/system/memory/block_size_bytes")?;
    write(
        &dir.path().join("devices/system/memory/block_size_bytes"),
        &block_size,
    )?;
    for entry in fs::read_dir("/sys/devices/system/node/node0")? {
        let name = entry?.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with("memory") && n[6..].parse::<u64>().is_ok())
        {
            write(&dir.path().join("devices/system/node/node0").join(name), "")?;
        }
    }
    Ok(dir)
}
