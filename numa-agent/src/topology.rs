//! The machine's NUMA topology: which node each CPU belongs to and how far nodes
//! are from each other. One `Topology` value is the single source of truth; the BPF
//! cpu->node map is written from it and nothing else parses these sysfs files.
//!
//! Read from `<sysfs-root>/devices/system/node` (drivers/base/node.c):
//! `online` and `possible` are cpulists of node ids, `nodeN/cpulist` the CPUs of
//! node N, `nodeN/distance` one row of the SLIT-style matrix with one column per
//! *online* node, in ascending id order (column k is the k-th online node).
use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// A NUMA node id as the kernel numbers it. Never re-indexed: ids can be sparse.
pub type NodeId = u32;

#[derive(Debug, Error)]
pub enum TopologyError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: cannot parse `{text}`: {reason}")]
    Parse {
        path: PathBuf,
        text: String,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    /// Ascending CPU ids.
    pub cpus: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Ascending node ids.
    pub nodes: Vec<Node>,
    /// `distances[from][to]`, as the kernel gives it (row = initiator). Empty when the
    /// kernel exposes no `distance` files: unknown, not zero.
    pub distances: BTreeMap<NodeId, BTreeMap<NodeId, u32>>,
    /// Number of possible CPU ids (highest possible id + 1): BPF maps indexed by CPU
    /// are sized from it, so a CPU brought online later still has a slot.
    pub possible_cpus: u32,
    /// Where it was read from, for logs and `topology` output.
    pub source: String,
}

impl Topology {
    /// Read the topology under `sysfs_root` (`/sys` on a host, `/host/sys` in a pod).
    pub fn from_sysfs(sysfs_root: &Path) -> Result<Self, TopologyError> {
        let node_dir = sysfs_root.join("devices/system/node");
        let possible_cpus = possible_cpu_count(sysfs_root)?;
        if !node_dir.is_dir() {
            // A kernel without CONFIG_NUMA: one node 0 holding every online CPU.
            let online = sysfs_root.join("devices/system/cpu/online");
            let cpus = parse_cpulist_file(&online)?;
            let possible_cpus = possible_cpus.max(cpus.last().map_or(0, |c| c + 1));
            return Ok(Self {
                nodes: vec![Node { id: 0, cpus }],
                distances: BTreeMap::new(),
                possible_cpus,
                source: format!("sysfs {} (no NUMA: one node)", sysfs_root.display()),
            });
        }

        let online_file = node_dir.join("online");
        let online: Vec<NodeId> = if online_file.exists() {
            parse_cpulist_file(&online_file)?
        } else {
            node_ids_in(&node_dir)?
        };
        let mut nodes = Vec::with_capacity(online.len());
        let mut distances = BTreeMap::new();
        for &id in &online {
            let dir = node_dir.join(format!("node{id}"));
            let cpus = parse_cpulist_file(&dir.join("cpulist"))?;
            nodes.push(Node { id, cpus });
            let distance_file = dir.join("distance");
            if distance_file.exists() {
                let row = parse_distance_row(&distance_file, &online)?;
                distances.insert(id, row);
            }
        }
        // A matrix with missing rows is as unknown as no matrix at all.
        if distances.len() != nodes.len() {
            distances.clear();
        }
        let max_cpu = nodes.iter().flat_map(|n| n.cpus.last()).max();
        let possible_cpus = possible_cpus.max(max_cpu.map_or(0, |c| c + 1));
        Ok(Self {
            nodes,
            distances,
            possible_cpus,
            source: format!("sysfs {}", sysfs_root.display()),
        })
    }

    /// Node of `cpu`, or `None` for a CPU no node lists.
    pub fn node_of_cpu(&self, cpu: u32) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|n| n.cpus.binary_search(&cpu).is_ok())
            .map(|n| n.id)
    }

    /// Distance from initiator `from` to target `to`, if the kernel gave one.
    pub fn distance(&self, from: NodeId, to: NodeId) -> Option<u32> {
        self.distances.get(&from)?.get(&to).copied()
    }

    /// Highest node id, if any node exists.
    pub fn max_node_id(&self) -> Option<NodeId> {
        self.nodes.last().map(|n| n.id)
    }

    /// `cpu -> node` for every possible CPU id, `None` where no node lists it.
    pub fn cpu_to_node(&self) -> Vec<Option<NodeId>> {
        let mut map = vec![None; self.possible_cpus as usize];
        for node in &self.nodes {
            for &cpu in &node.cpus {
                if let Some(slot) = map.get_mut(cpu as usize) {
                    *slot = Some(node.id);
                }
            }
        }
        map
    }
}

fn read_trimmed(path: &Path) -> Result<String, TopologyError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| TopologyError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// `devices/system/cpu/possible` as a count; 0 when the file is absent (snapshots).
fn possible_cpu_count(sysfs_root: &Path) -> Result<u32, TopologyError> {
    let path = sysfs_root.join("devices/system/cpu/possible");
    if !path.exists() {
        return Ok(0);
    }
    Ok(parse_cpulist_file(&path)?.last().map_or(0, |c| c + 1))
}

fn node_ids_in(node_dir: &Path) -> Result<Vec<NodeId>, TopologyError> {
    let entries = fs::read_dir(node_dir).map_err(|source| TopologyError::Read {
        path: node_dir.to_path_buf(),
        source,
    })?;
    let mut ids: Vec<NodeId> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

fn parse_cpulist_file(path: &Path) -> Result<Vec<u32>, TopologyError> {
    let text = read_trimmed(path)?;
    parse_cpulist(&text).map_err(|reason| TopologyError::Parse {
        path: path.to_path_buf(),
        text,
        reason,
    })
}

/// A kernel "cpulist" (`bitmap_parselist`, lib/bitmap-str.c): `0-3,8,10-11`, possibly
/// empty, possibly with a `:used/group` stride (`0-15:2/4`). Result ascending, unique.
pub fn parse_cpulist(text: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (range, stride) = match part.split_once(':') {
            Some((r, s)) => {
                let (used, group) = s
                    .split_once('/')
                    .ok_or_else(|| format!("stride `{s}` is not used/group"))?;
                let used: u32 = used.parse().map_err(|e| format!("`{used}`: {e}"))?;
                let group: u32 = group.parse().map_err(|e| format!("`{group}`: {e}"))?;
                if group == 0 || used > group {
                    return Err(format!("bad stride `{s}`"));
                }
                (r, Some((used, group)))
            }
            None => (part, None),
        };
        let (lo, hi) = match range.split_once('-') {
            Some((lo, hi)) => (lo, hi),
            None => (range, range),
        };
        let lo: u32 = lo.parse().map_err(|e| format!("`{lo}`: {e}"))?;
        let hi: u32 = hi.parse().map_err(|e| format!("`{hi}`: {e}"))?;
        if lo > hi {
            return Err(format!("range `{range}` runs backwards"));
        }
        for id in lo..=hi {
            if stride.is_none_or(|(used, group)| (id - lo) % group < used) {
                out.push(id);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn parse_distance_row(
    path: &Path,
    online: &[NodeId],
) -> Result<BTreeMap<NodeId, u32>, TopologyError> {
    let text = read_trimmed(path)?;
    let parse_err = |reason: String| TopologyError::Parse {
        path: path.to_path_buf(),
        text: text.clone(),
        reason,
    };
    let values: Vec<u32> = text
        .split_whitespace()
        .map(|v| {
            v.parse::<u32>()
                .map_err(|e| parse_err(format!("`{v}`: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if values.len() != online.len() {
        return Err(parse_err(format!(
            "{} columns for {} online nodes",
            values.len(),
            online.len()
        )));
    }
    Ok(online.iter().copied().zip(values).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }

    #[test]
    fn cpulists() {
        assert_eq!(
            parse_cpulist("0-3,8,10-11\n"),
            Ok(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpulist(""), Ok(vec![]));
        assert_eq!(parse_cpulist("0-7:2/4"), Ok(vec![0, 1, 4, 5]));
        assert!(parse_cpulist("3-1").is_err());
        assert!(parse_cpulist("a").is_err());
    }

    #[test]
    fn declared_two_node_split() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, "devices/system/node/online", "0-1\n");
        write(root, "devices/system/node/node0/cpulist", "0\n");
        write(root, "devices/system/node/node1/cpulist", "1\n");
        write(root, "devices/system/node/node0/distance", "10 21\n");
        write(root, "devices/system/node/node1/distance", "21 10\n");
        let t = Topology::from_sysfs(root).expect("topology");
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(
            (t.node_of_cpu(0), t.node_of_cpu(1), t.node_of_cpu(2)),
            (Some(0), Some(1), None)
        );
        assert_eq!(t.distance(0, 1), Some(21));
        assert_eq!(t.cpu_to_node(), vec![Some(0), Some(1)]);
    }

    #[test]
    fn distance_columns_follow_online_nodes_not_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, "devices/system/node/online", "0,2,5\n");
        for (id, cpus, row) in [
            (0, "0", "10 20 30"),
            (2, "1", "21 10 31"),
            (5, "", "40 41 10"),
        ] {
            write(root, &format!("devices/system/node/node{id}/cpulist"), cpus);
            write(root, &format!("devices/system/node/node{id}/distance"), row);
        }
        let t = Topology::from_sysfs(root).expect("topology");
        assert_eq!(t.distance(0, 5), Some(30));
        assert_eq!(
            t.distance(5, 0),
            Some(40),
            "asymmetry kept, row = initiator"
        );
        assert_eq!(t.distance(2, 2), Some(10));
        assert_eq!(t.max_node_id(), Some(5));
    }

    #[test]
    fn no_node_directory_means_one_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "devices/system/cpu/online", "0-3\n");
        let t = Topology::from_sysfs(dir.path()).expect("topology");
        assert_eq!(
            t.nodes,
            vec![Node {
                id: 0,
                cpus: vec![0, 1, 2, 3]
            }]
        );
        assert!(t.distances.is_empty());
        assert_eq!(t.distance(0, 0), None, "unknown, not zero");
    }

    #[test]
    fn bad_distance_row_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, "devices/system/node/online", "0-1\n");
        write(root, "devices/system/node/node0/cpulist", "0");
        write(root, "devices/system/node/node1/cpulist", "1");
        write(root, "devices/system/node/node0/distance", "10");
        write(root, "devices/system/node/node1/distance", "21 10");
        let e = Topology::from_sysfs(root)
            .expect_err("short row")
            .to_string();
        assert!(
            e.contains("node0/distance") && e.contains("1 columns for 2 online nodes"),
            "{e}"
        );
    }
}
