//! `numa-agent topology` output: the JSON contract and a `numactl -H`-like table.
use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use super::{NodeId, Topology, format_cpulist};

/// The JSON contract (issue 3), exactly these keys:
/// `{"nodes":[{"id":0,"cpus":[0,1],"memory_bytes":123,"has_cpu":true,"has_memory":true}],
///   "distances":{"0":{"0":10,"1":21}},"source":"..."}`.
/// Nodes ascending by id, CPU lists ascending; `memory_bytes` is `null` when sysfs
/// does not say; `distances` holds only known values (`{}` when none are).
#[derive(Debug, Serialize)]
pub struct TopologyJson<'a> {
    pub nodes: Vec<NodeJson<'a>>,
    pub distances: &'a BTreeMap<NodeId, BTreeMap<NodeId, u32>>,
    pub source: &'a str,
}

#[derive(Debug, Serialize)]
pub struct NodeJson<'a> {
    pub id: NodeId,
    pub cpus: &'a [u32],
    pub memory_bytes: Option<u64>,
    pub has_cpu: bool,
    pub has_memory: bool,
}

impl<'a> From<&'a Topology> for TopologyJson<'a> {
    fn from(t: &'a Topology) -> Self {
        Self {
            nodes: t
                .nodes
                .iter()
                .map(|n| NodeJson {
                    id: n.id,
                    cpus: &n.cpus,
                    memory_bytes: n.memory_bytes,
                    has_cpu: n.has_cpu,
                    has_memory: n.has_memory,
                })
                .collect(),
            distances: &t.distances,
            source: &t.source,
        }
    }
}

pub fn to_json(t: &Topology) -> String {
    // Serializing plain integers, bools and strings cannot fail.
    serde_json::to_string(&TopologyJson::from(t)).unwrap_or_default()
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What a person reads: one line per node, then the distance matrix.
pub fn to_table(t: &Topology) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "source: {}", t.source);
    let _ = writeln!(
        s,
        "{} node(s); online CPUs {} ({}); CPU ids up to {}",
        t.nodes.len(),
        format_cpulist(&t.online_cpus),
        t.online_cpus.len(),
        t.possible_cpus.saturating_sub(1)
    );
    let unknown = t.unknown_cpus();
    if !unknown.is_empty() {
        let _ = writeln!(s, "CPUs in no node: {}", format_cpulist(&unknown));
    }
    let rows: Vec<[String; 5]> = t
        .nodes
        .iter()
        .map(|n| {
            let nearest = t.nearest_memory_node(n.id);
            [
                n.id.to_string(),
                if n.cpus.is_empty() {
                    "-".into()
                } else {
                    format!("{} ({})", format_cpulist(&n.cpus), n.cpus.len())
                },
                n.memory_bytes.map_or_else(|| "unknown".into(), human_bytes),
                match (n.has_cpu, n.has_memory) {
                    (true, true) => "cpu+memory".into(),
                    (true, false) => "cpu only".into(),
                    (false, true) => "memory only".into(),
                    (false, false) => "empty".into(),
                },
                match nearest {
                    Some(id) if id == n.id => "itself".into(),
                    Some(id) => format!("node {id}"),
                    None => "unknown".into(),
                },
            ]
        })
        .collect();
    let header = ["node", "cpus", "memory", "kind", "nearest memory"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{cell:<w$}");
        }
        l.trim_end().to_owned()
    };
    let _ = writeln!(s, "{}", line(header));
    for r in &rows {
        let _ = writeln!(s, "{}", line(r.each_ref().map(String::as_str)));
    }
    if t.distances.is_empty() {
        let _ = writeln!(s, "distances: unknown (no distance files)");
        return s;
    }
    let _ = writeln!(s, "distances (row = initiator node, column = target node):");
    let ids: Vec<NodeId> = t.nodes.iter().map(|n| n.id).collect();
    let w = ids
        .iter()
        .map(|i| i.to_string().len())
        .chain(
            t.distances
                .values()
                .flat_map(|r| r.values())
                .map(|v| v.to_string().len()),
        )
        .max()
        .unwrap_or(1)
        .max(4);
    let mut head = format!("{:>w$}", "node");
    for id in &ids {
        let _ = write!(head, " {id:>w$}");
    }
    let _ = writeln!(s, "{head}");
    for from in &ids {
        let mut row = format!("{from:>w$}");
        for to in &ids {
            let cell = t.distance(*from, *to).map_or("?".into(), |d| d.to_string());
            let _ = write!(row, " {cell:>w$}");
        }
        let _ = writeln!(s, "{row}");
    }
    s
}
