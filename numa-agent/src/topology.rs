//! The machine's NUMA topology: nodes by their OS ids, their CPUs and memory, how far
//! nodes are from each other, possible vs online CPUs. One `Topology` value is the
//! single source of truth; the BPF cpu->node map is written from it and nothing else
//! parses these sysfs files.
//!
//! Two sources must agree: sysfs read directly ([`sysfs`], the one used) and hwloc
//! ([`hwloc`], a cross-check that sees the same kernel through another parser). A
//! disagreement is reported, never silently resolved; sysfs wins.
//!
//! Nothing here is capped: node ids and CPU ids are plain integers in ordered
//! collections that grow with the machine (thousands of CPUs, hundreds of nodes).
pub mod hwloc;
pub mod output;
pub mod refresh;
mod sysfs;

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    path::{Path, PathBuf},
};

use thiserror::Error;

use self::hwloc::{HwlocError, HwlocView};
pub use self::sysfs::parse_cpumap;

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
    /// Ascending CPU ids the kernel lists for the node (offline ones included when the
    /// kernel lists them).
    pub cpus: Vec<u32>,
    /// `MemTotal` of the node; `None` when sysfs does not say (no `meminfo`).
    pub memory_bytes: Option<u64>,
    pub has_cpu: bool,
    pub has_memory: bool,
}

impl Node {
    /// A node with these CPUs and memory of unknown size (tests, declared splits).
    pub fn new(id: NodeId, mut cpus: Vec<u32>) -> Self {
        cpus.sort_unstable();
        cpus.dedup();
        Self {
            id,
            has_cpu: !cpus.is_empty(),
            cpus,
            memory_bytes: None,
            has_memory: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Ascending node ids.
    pub nodes: Vec<Node>,
    /// `distances[from][to]`, as the kernel gives it (row = initiator, asymmetry
    /// kept). A missing row or entry is unknown, not zero.
    pub distances: BTreeMap<NodeId, BTreeMap<NodeId, u32>>,
    /// Number of CPU ids (highest possible id + 1): BPF maps indexed by CPU are sized
    /// from it, so a CPU brought online later still has a slot.
    pub possible_cpus: u32,
    /// Online CPU ids, ascending.
    pub online_cpus: Vec<u32>,
    /// Number of node ids (highest possible node id + 1, at least the online ones):
    /// firmware lists nodes that memory can be hot-added to later (a CXL expander, a
    /// DIMM slot of a memory-only node) as possible but not yet online.
    pub possible_nodes: u32,
    /// Where it was read from and whether hwloc agreed, for logs and output.
    pub source: String,
}

/// A topology together with what the sources said about it.
#[derive(Debug)]
pub struct Loaded {
    pub topology: Topology,
    /// Oddities inside sysfs itself (a CPU in several nodes, a short distance row).
    pub sysfs_warnings: Vec<String>,
    /// Where hwloc and sysfs disagree; empty when they agree or hwloc was not asked.
    pub disagreements: Vec<String>,
    /// hwloc's view, or why there is none.
    pub hwloc: Option<Result<HwlocView, HwlocError>>,
}

impl Loaded {
    /// Every warning worth showing an operator, one line each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self.sysfs_warnings.clone();
        out.extend(
            self.disagreements
                .iter()
                .map(|d| format!("hwloc and sysfs disagree: {d} (using sysfs)")),
        );
        match &self.hwloc {
            Some(Err(e)) => out.push(format!("hwloc cross-check unavailable: {}", error_chain(e))),
            Some(Ok(view)) => out.extend(view.messages.iter().map(|m| format!("hwloc: {m}"))),
            None => {}
        }
        out
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(next) = cur {
        s.push_str(": ");
        s.push_str(&next.to_string());
        cur = next.source();
    }
    s
}

/// Whether to cross-check sysfs with hwloc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HwlocCheck {
    Off,
    /// Ask hwloc. Roots other than the live `/sys` are read by `helper hwloc-probe`
    /// (see [`hwloc`] for why a helper process); `None` limits the check to `/sys`.
    On {
        helper: Option<PathBuf>,
    },
}

impl Topology {
    /// Read the topology under `sysfs_root` (`/sys` on a host, `/host/sys` in a pod)
    /// from sysfs alone; oddities are logged as warnings.
    pub fn from_sysfs(sysfs_root: &Path) -> Result<Self, TopologyError> {
        let read = sysfs::read(sysfs_root)?;
        for w in &read.warnings {
            log::warn!("topology: {w}");
        }
        Ok(read.topology)
    }

    /// Read sysfs and, if asked, hwloc; compare them. sysfs wins; `source` says how
    /// the check went.
    pub fn load(sysfs_root: &Path, check: &HwlocCheck) -> Result<Loaded, TopologyError> {
        let read = sysfs::read(sysfs_root)?;
        let mut topology = read.topology;
        let hwloc = match check {
            HwlocCheck::Off => None,
            HwlocCheck::On { helper } => Some(hwloc::discover(sysfs_root, helper.as_deref())),
        };
        let disagreements = match &hwloc {
            Some(Ok(view)) => compare(&topology, view),
            _ => Vec::new(),
        };
        topology.source = match &hwloc {
            None => topology.source,
            Some(Err(_)) => format!("{}; hwloc unavailable", topology.source),
            Some(Ok(_)) if disagreements.is_empty() => format!("{}; hwloc agrees", topology.source),
            Some(Ok(_)) => format!(
                "{}; hwloc disagrees ({} difference(s)), sysfs used",
                topology.source,
                disagreements.len()
            ),
        };
        Ok(Loaded {
            topology,
            sysfs_warnings: read.warnings,
            disagreements,
            hwloc,
        })
    }

    /// Tests' two nodes: node0 = CPU 0, node1 = CPU 1, distances 10 local / 21 remote.
    #[cfg(test)]
    pub(crate) fn two_nodes_for_tests() -> Self {
        Self::from_parts(
            vec![Node::new(0, vec![0]), Node::new(1, vec![1])],
            BTreeMap::from([
                (0, BTreeMap::from([(0, 10), (1, 21)])),
                (1, BTreeMap::from([(0, 21), (1, 10)])),
            ]),
            "test",
        )
    }

    /// A topology from parts (declared splits, tests): CPUs of the nodes are taken as
    /// the online and possible ones.
    pub fn from_parts(
        mut nodes: Vec<Node>,
        distances: BTreeMap<NodeId, BTreeMap<NodeId, u32>>,
        source: impl Into<String>,
    ) -> Self {
        nodes.sort_by_key(|n| n.id);
        let online: BTreeSet<u32> = nodes.iter().flat_map(|n| n.cpus.iter().copied()).collect();
        Self {
            possible_cpus: online.last().map_or(0, |c| c + 1),
            possible_nodes: nodes.last().map_or(0, |n| n.id + 1),
            online_cpus: online.into_iter().collect(),
            nodes,
            distances,
            source: source.into(),
        }
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes
            .binary_search_by_key(&id, |n| n.id)
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// Node of `cpu`, or `None` for a CPU no node lists. A CPU several nodes list
    /// belongs to the lowest of them (a warning said so at load).
    pub fn node_of_cpu(&self, cpu: u32) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|n| n.cpus.binary_search(&cpu).is_ok())
            .map(|n| n.id)
    }

    /// CPUs of `node`, ascending; `None` for a node that does not exist.
    pub fn cpus_of(&self, node: NodeId) -> Option<&[u32]> {
        self.node(node).map(|n| n.cpus.as_slice())
    }

    /// Distance from initiator `from` to target `to`, if the kernel gave one.
    pub fn distance(&self, from: NodeId, to: NodeId) -> Option<u32> {
        self.distances.get(&from)?.get(&to).copied()
    }

    /// Highest node id, if any node exists.
    pub fn max_node_id(&self) -> Option<NodeId> {
        self.nodes.last().map(|n| n.id)
    }

    /// Nearest node with memory for an initiator on `node`: itself when it has
    /// memory, else the memory node at the smallest distance from it (lowest id on a
    /// tie, as the kernel's `find_next_best_node` prefers). `None` without distances.
    pub fn nearest_memory_node(&self, node: NodeId) -> Option<NodeId> {
        let this = self.node(node)?;
        if this.has_memory {
            return Some(node);
        }
        self.nodes
            .iter()
            .filter(|n| n.has_memory)
            .filter_map(|n| Some((self.distance(node, n.id)?, n.id)))
            .min()
            .map(|(_, id)| id)
    }

    /// Online CPUs that no node lists (just hot-plugged): counted under the unknown
    /// node until the topology is re-read.
    pub fn unknown_cpus(&self) -> Vec<u32> {
        self.online_cpus
            .iter()
            .copied()
            .filter(|&c| self.node_of_cpu(c).is_none())
            .collect()
    }

    /// `cpu -> node` for every possible CPU id, `None` where no node lists it.
    pub fn cpu_to_node(&self) -> Vec<Option<NodeId>> {
        let mut map = vec![None; self.possible_cpus as usize];
        for node in &self.nodes {
            for &cpu in &node.cpus {
                if let Some(slot) = map.get_mut(cpu as usize) {
                    // First (lowest) node wins, as in `node_of_cpu`.
                    slot.get_or_insert(node.id);
                }
            }
        }
        map
    }
}

/// Where hwloc's view differs from the sysfs topology, one line per difference.
///
/// Compared: node ids; per node, the CPUs (hwloc's `complete_cpuset`, which keeps
/// offline and disallowed CPUs like the kernel's node lists) and `local_memory`
/// against `MemTotal`; the distance matrix.
pub fn compare(sysfs: &Topology, hwloc: &HwlocView) -> Vec<String> {
    let mut out = Vec::new();
    let ours: BTreeSet<NodeId> = sysfs.nodes.iter().map(|n| n.id).collect();
    let theirs: BTreeSet<NodeId> = hwloc.nodes.iter().map(|n| n.id).collect();
    let only_sysfs: Vec<u32> = ours.difference(&theirs).copied().collect();
    let only_hwloc: Vec<u32> = theirs.difference(&ours).copied().collect();
    if !only_sysfs.is_empty() {
        out.push(format!(
            "nodes {} are in sysfs but not in hwloc",
            format_cpulist(&only_sysfs)
        ));
    }
    if !only_hwloc.is_empty() {
        out.push(format!(
            "nodes {} are in hwloc but not in sysfs",
            format_cpulist(&only_hwloc)
        ));
    }
    // hwloc leaves offline CPUs out of every cpuset, complete ones included (seen on
    // the offline-CPU snapshots), while old kernels list them in `nodeN/cpulist`:
    // compare the online part.
    let online: BTreeSet<u32> = sysfs.online_cpus.iter().copied().collect();
    let is_online = |c: &u32| online.is_empty() || online.contains(c);
    let cpu_nodes: Vec<&Node> = sysfs.nodes.iter().filter(|n| n.has_cpu).collect();
    for h in &hwloc.nodes {
        let Some(s) = sysfs.node(h.id) else { continue };
        let sysfs_cpus: Vec<u32> = s.cpus.iter().copied().filter(is_online).collect();
        let agrees = if s.has_cpu {
            sysfs_cpus == h.complete_cpus
        } else {
            // hwloc gives a CPU-less node the cpuset of its locality, the CPUs of the
            // node(s) it hangs under (from `accessN/initiators` or distances), so a
            // CPU-less node agrees if that cpuset is whole sysfs nodes' CPUs.
            let mut covered: Vec<u32> = cpu_nodes
                .iter()
                .filter(|n| {
                    n.cpus
                        .iter()
                        .filter(|c| is_online(c))
                        .all(|c| h.complete_cpus.binary_search(c).is_ok())
                })
                .flat_map(|n| n.cpus.iter().copied().filter(is_online))
                .collect();
            covered.sort_unstable();
            covered.dedup();
            covered == h.complete_cpus
        };
        if !agrees {
            out.push(format!(
                "node {}: sysfs CPUs `{}` (online part `{}`), hwloc CPUs `{}`",
                h.id,
                format_cpulist(&s.cpus),
                format_cpulist(&sysfs_cpus),
                format_cpulist(&h.complete_cpus)
            ));
        }
        if let (Some(a), Some(b)) = (s.memory_bytes, h.memory_bytes)
            && a != b
        {
            out.push(format!(
                "node {}: sysfs MemTotal {a} bytes, hwloc local memory {b} bytes",
                h.id
            ));
        }
    }
    let common: Vec<NodeId> = ours.intersection(&theirs).copied().collect();
    if common.len() <= 1 && hwloc.distances.is_empty() {
        // hwloc keeps no matrix for a single node; nothing to compare.
        return out;
    }
    let mut differing = Vec::new();
    let mut only_one_side = 0usize;
    for &a in &common {
        for &b in &common {
            let s = sysfs.distance(a, b).map(u64::from);
            let h = hwloc.distances.get(&a).and_then(|r| r.get(&b)).copied();
            match (s, h) {
                (Some(s), Some(h)) if s != h => differing.push(format!("{a}->{b}: {s} vs {h}")),
                (Some(_), None) | (None, Some(_)) => only_one_side += 1,
                _ => {}
            }
        }
    }
    if !differing.is_empty() {
        out.push(format!(
            "distances differ (sysfs vs hwloc): {}",
            differing.join(", ")
        ));
    }
    if only_one_side > 0 {
        out.push(format!(
            "{only_one_side} distance(s) known to only one of sysfs ({} rows) and hwloc ({} rows)",
            sysfs.distances.len(),
            hwloc.distances.len()
        ));
    }
    out
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

/// Ascending ids as a kernel cpulist (`0-3,8`); the inverse of [`parse_cpulist`].
pub fn format_cpulist(ids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end + 1 {
            i += 1;
            end = ids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests;
