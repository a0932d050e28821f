//! The topology read directly from sysfs, the source that wins when hwloc disagrees.
//!
//! Files (drivers/base/node.c, drivers/base/cpu.c, Documentation/ABI/stable/sysfs-devices-node):
//! - `devices/system/node/{online,possible,has_cpu,has_memory}`: cpulists of node ids
//!   (`print_nodes_state`).
//! - `devices/system/node/nodeN/cpulist` (`0-3,8`) or, on kernels older than 2.6.28 and
//!   in old snapshots, only `cpumap`: a hex mask in comma-separated 32-bit words, most
//!   significant first (`bitmap_print_to_pagebuf`); old ones also hold `cpuN` links.
//! - `nodeN/distance`: one row of the SLIT-style matrix, one column per *online*
//!   node in ascending id order (`node_read_distance` walks `for_each_online_node`),
//!   so column k is the k-th online node, not node k.
//! - `nodeN/meminfo`: `Node N MemTotal:  <kB> kB` (`node_read_meminfo`).
//! - `devices/system/cpu/{online,possible}` cpulists; without them (old snapshots)
//!   the `cpuN` directories, with `cpuN/online` holding `0` for an offline CPU.
//!
//! Snapshots of real machines carry oddities this reader accepts with a warning
//! rather than an error: trailing NUL bytes, empty `has_cpu` files, every CPU listed
//! in every node, missing `online` files.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use super::{Node, NodeId, Topology, TopologyError, format_cpulist, parse_cpulist};

/// The sysfs topology and what looked wrong in it.
pub(super) struct SysfsRead {
    pub topology: Topology,
    pub warnings: Vec<String>,
}

pub(super) fn read(root: &Path) -> Result<SysfsRead, TopologyError> {
    let mut warnings = Vec::new();
    let cpu_dir = root.join("devices/system/cpu");
    let (possible, online) = read_cpus(&cpu_dir)?;
    let node_dir = root.join("devices/system/node");

    if !node_dir.is_dir() {
        // A kernel without CONFIG_NUMA has no node directory: one node 0 holding every
        // online CPU. Its memory size is not in sysfs; unknown rather than guessed.
        let cpus = online.clone();
        let topology = Topology {
            nodes: vec![Node {
                id: 0,
                has_cpu: !cpus.is_empty(),
                cpus,
                memory_bytes: None,
                has_memory: true,
            }],
            distances: BTreeMap::new(),
            possible_cpus: cpu_count(&possible, &online, &[]),
            possible_nodes: 1,
            online_cpus: online,
            source: format!(
                "sysfs {} (no devices/system/node: kernel without NUMA, one node)",
                root.display()
            ),
        };
        return Ok(SysfsRead { topology, warnings });
    }

    let online_nodes: Vec<NodeId> = match optional_list(&node_dir.join("online"))? {
        Some(ids) => ids,
        None => node_ids_in(&node_dir)?,
    };
    let has_cpu_file = optional_list(&node_dir.join("has_cpu"))?;
    let has_memory_file = optional_list(&node_dir.join("has_memory"))?;

    let mut nodes = Vec::with_capacity(online_nodes.len());
    let mut distances = BTreeMap::new();
    for &id in &online_nodes {
        let dir = node_dir.join(format!("node{id}"));
        if !dir.is_dir() {
            warnings.push(format!(
                "{} lists node {id} online but {} does not exist; node skipped",
                node_dir.join("online").display(),
                dir.display()
            ));
            continue;
        }
        let cpus = match node_cpus(&dir, &mut warnings)? {
            Some(cpus) => cpus,
            None => {
                warnings.push(format!(
                    "{} has neither cpulist, cpumap nor cpuN entries: node {id} taken as CPU-less",
                    dir.display()
                ));
                Vec::new()
            }
        };
        let memory_bytes = node_memory(&dir.join("meminfo"))?;
        let has_memory = match (memory_bytes, &has_memory_file) {
            (Some(bytes), _) => bytes > 0,
            (None, Some(list)) => list.contains(&id),
            // Nothing says otherwise: a node the kernel made online is assumed to have
            // memory (memory-less nodes came with CPU-only hot-add, which also added
            // `has_memory`, Linux 2.6.23+).
            (None, None) => true,
        };
        if let Some(list) = &has_memory_file
            && list.contains(&id) != has_memory
        {
            warnings.push(format!(
                "node {id}: {} says has_memory={} but its meminfo says {}",
                node_dir.join("has_memory").display(),
                list.contains(&id),
                has_memory
            ));
        }
        let has_cpu = !cpus.is_empty();
        // An empty has_cpu file next to nodes with CPUs is seen in snapshots; only a
        // non-empty file that contradicts a cpulist is worth a warning.
        if let Some(list) = &has_cpu_file
            && !list.is_empty()
            && list.contains(&id) != has_cpu
        {
            warnings.push(format!(
                "node {id}: {} says has_cpu={} but its CPU list is `{}`",
                node_dir.join("has_cpu").display(),
                list.contains(&id),
                format_cpulist(&cpus)
            ));
        }
        let distance_file = dir.join("distance");
        if distance_file.exists() {
            match parse_distance_row(&distance_file, &online_nodes)? {
                Ok(row) => {
                    distances.insert(id, row);
                }
                Err(why) => warnings.push(why),
            }
        }
        nodes.push(Node {
            id,
            cpus,
            memory_bytes,
            has_cpu,
            has_memory,
        });
    }

    // A CPU belongs to one node (the kernel's cpu_to_node()); some firmware makes
    // every node claim every CPU (hwloc's "buggynuma" snapshot). Keep the lowest node.
    let mut owner: BTreeMap<u32, Vec<NodeId>> = BTreeMap::new();
    for node in &nodes {
        for &cpu in &node.cpus {
            owner.entry(cpu).or_default().push(node.id);
        }
    }
    let shared: Vec<u32> = owner
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(&cpu, _)| cpu)
        .collect();
    if !shared.is_empty() {
        let ids: BTreeSet<NodeId> = shared.iter().flat_map(|c| owner[c].clone()).collect();
        warnings.push(format!(
            "CPUs {} are listed by more than one node ({}); each is taken to belong to the \
             lowest of them",
            format_cpulist(&shared),
            ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        ));
    }
    let nodeless: Vec<u32> = online
        .iter()
        .copied()
        .filter(|c| !owner.contains_key(c))
        .collect();
    if !nodeless.is_empty() {
        warnings.push(format!(
            "online CPUs {} are in no node (just hot-plugged?): counted under the unknown node \
             until the topology is re-read",
            format_cpulist(&nodeless)
        ));
    }

    let all_node_cpus: Vec<u32> = owner.keys().copied().collect();
    let possible_nodes = optional_list(&node_dir.join("possible"))?.unwrap_or_default();
    let topology = Topology {
        possible_cpus: cpu_count(&possible, &online, &all_node_cpus),
        possible_nodes: cpu_count(&possible_nodes, &online_nodes, &[]),
        nodes,
        distances,
        online_cpus: online,
        source: format!("sysfs {}", root.display()),
    };
    Ok(SysfsRead { topology, warnings })
}

/// Number of ids (CPUs, or nodes) a table indexed by them needs: the highest id
/// anything mentions, plus one.
fn cpu_count(possible: &[u32], online: &[u32], in_nodes: &[u32]) -> u32 {
    [possible.last(), online.last(), in_nodes.last()]
        .into_iter()
        .flatten()
        .max()
        .map_or(0, |c| c + 1)
}

/// `(possible, online)` CPU ids, from `cpu/{possible,online}` or the `cpuN` dirs.
fn read_cpus(cpu_dir: &Path) -> Result<(Vec<u32>, Vec<u32>), TopologyError> {
    let possible = optional_list(&cpu_dir.join("possible"))?;
    let online = optional_list(&cpu_dir.join("online"))?;
    if let (Some(p), Some(o)) = (&possible, &online) {
        return Ok((p.clone(), o.clone()));
    }
    let dirs = numbered_entries(cpu_dir, "cpu")?;
    let online = match online {
        Some(o) => o,
        None => {
            let mut o = Vec::new();
            for &cpu in &dirs {
                // cpuN/online exists only for hot-pluggable CPUs (cpu0 often lacks it).
                let file = cpu_dir.join(format!("cpu{cpu}/online"));
                if !file.exists() || read_trimmed(&file)? != "0" {
                    o.push(cpu);
                }
            }
            o
        }
    };
    Ok((possible.unwrap_or(dirs), online))
}

/// The node's CPUs from `cpulist`, else `cpumap`, else `cpuN` links. The kernel prints
/// `cpulist` and `cpumap` from the same mask (`node_read_cpumap`), so when both exist
/// and differ the tree was edited or torn: warn, and trust `cpulist`.
fn node_cpus(dir: &Path, warnings: &mut Vec<String>) -> Result<Option<Vec<u32>>, TopologyError> {
    let cpulist = dir.join("cpulist");
    let cpumap = dir.join("cpumap");
    let from_map = if cpumap.exists() {
        let text = read_trimmed(&cpumap)?;
        Some(parse_cpumap(&text).map_err(|reason| TopologyError::Parse {
            path: cpumap.clone(),
            text,
            reason,
        })?)
    } else {
        None
    };
    if cpulist.exists() {
        let from_list = parse_list_file(&cpulist)?;
        if let Some(from_map) = from_map
            && from_map != from_list
        {
            warnings.push(format!(
                "{} says `{}` but {} says `{}`; using cpulist",
                cpulist.display(),
                format_cpulist(&from_list),
                cpumap.display(),
                format_cpulist(&from_map)
            ));
        }
        return Ok(Some(from_list));
    }
    if from_map.is_some() {
        return Ok(from_map);
    }
    let links = numbered_entries(dir, "cpu")?;
    Ok((!links.is_empty()).then_some(links))
}

/// `MemTotal` of `Node N MemTotal:  123 kB` in bytes; `None` without the file or line.
fn node_memory(path: &Path) -> Result<Option<u64>, TopologyError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = read_trimmed(path)?;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        // "Node" "<id>" "MemTotal:" "<n>" "kB"
        if words.nth(2) != Some("MemTotal:") {
            continue;
        }
        let value = words.next().unwrap_or_default();
        let kb: u64 = value.parse().map_err(|e| TopologyError::Parse {
            path: path.to_path_buf(),
            text: line.to_owned(),
            reason: format!("MemTotal `{value}`: {e}"),
        })?;
        return Ok(Some(kb.saturating_mul(1024)));
    }
    Ok(None)
}

/// Contents with surrounding whitespace and NUL bytes removed: snapshot tools and
/// some kernels leave a trailing NUL after the newline.
pub(super) fn read_trimmed(path: &Path) -> Result<String, TopologyError> {
    fs::read_to_string(path)
        .map(|s| {
            s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_owned()
        })
        .map_err(|source| TopologyError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn parse_list_file(path: &Path) -> Result<Vec<u32>, TopologyError> {
    let text = read_trimmed(path)?;
    parse_cpulist(&text).map_err(|reason| TopologyError::Parse {
        path: path.to_path_buf(),
        text,
        reason,
    })
}

fn optional_list(path: &Path) -> Result<Option<Vec<u32>>, TopologyError> {
    if path.exists() {
        parse_list_file(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Ids of `<prefix>N` entries in `dir`, ascending; empty if `dir` does not exist.
fn numbered_entries(dir: &Path, prefix: &str) -> Result<Vec<u32>, TopologyError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TopologyError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut ids: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(prefix)?.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

fn node_ids_in(node_dir: &Path) -> Result<Vec<NodeId>, TopologyError> {
    numbered_entries(node_dir, "node")
}

/// A kernel cpumask in `%*pb` form: hex 32-bit words separated by commas, most
/// significant first (`00000000,0000ffff` is CPUs 0-15). Any number of words.
pub fn parse_cpumap(text: &str) -> Result<Vec<u32>, String> {
    let words: Vec<&str> = text.trim().split(',').map(str::trim).collect();
    let mut out = Vec::new();
    for (k, word) in words.iter().rev().enumerate() {
        if word.is_empty() {
            continue;
        }
        let bits = u32::from_str_radix(word, 16)
            .map_err(|e| format!("word `{word}` is not a 32-bit hex value: {e}"))?;
        let base = u32::try_from(k)
            .ok()
            .and_then(|k| k.checked_mul(32))
            .ok_or_else(|| "mask too long".to_owned())?;
        for bit in 0..32 {
            if bits & (1 << bit) != 0 {
                out.push(base + bit);
            }
        }
    }
    Ok(out)
}

/// One `distance` row mapped onto node ids; the inner `Err` is a warning (the row is
/// then unknown), the outer one an unreadable file.
fn parse_distance_row(
    path: &Path,
    online: &[NodeId],
) -> Result<Result<BTreeMap<NodeId, u32>, String>, TopologyError> {
    let text = read_trimmed(path)?;
    let mut values = Vec::new();
    for v in text.split_whitespace() {
        match v.parse::<u32>() {
            Ok(v) => values.push(v),
            Err(e) => {
                return Ok(Err(format!(
                    "{}: `{v}` is not a distance ({e}); this row is unknown",
                    path.display()
                )));
            }
        }
    }
    if values.len() != online.len() {
        return Ok(Err(format!(
            "{}: {} columns for {} online nodes ({}); this row is unknown",
            path.display(),
            values.len(),
            online.len(),
            format_cpulist(online)
        )));
    }
    Ok(Ok(online.iter().copied().zip(values).collect()))
}
