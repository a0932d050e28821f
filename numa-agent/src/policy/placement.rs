//! Where a process actually is: the CPUs its threads may run on and run on now, and the
//! nodes its memory lives on. This is the `ActualPlacement` of a `NUMAPolicyError`.
//!
//! Sources (fs/proc/array.c, fs/proc/task_mmu.c):
//! - `/proc/<pid>/task/<tid>/status` `Cpus_allowed_list:` per thread (a cpulist);
//! - `/proc/<pid>/task/<tid>/stat` field 39 `processor`: the CPU it last ran on;
//! - `/proc/<pid>/numa_maps`: one line per mapping with `N<node>=<pages>` and
//!   `kernelpagesize_kB=<k>`.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::Path,
};

use serde::Serialize;

use crate::topology::{NodeId, Topology, format_cpulist, parse_cpulist};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ActualPlacement {
    /// Union of every thread's `Cpus_allowed_list`, as a cpulist string.
    pub cpus_allowed: String,
    /// Nodes of those CPUs.
    pub cpu_nodes: Vec<NodeId>,
    /// Nodes of the CPUs its threads last ran on.
    pub running_nodes: Vec<NodeId>,
    /// Resident memory per node, in kB, from numa_maps.
    pub memory_kb: BTreeMap<NodeId, u64>,
}

impl ActualPlacement {
    /// Nodes this placement touches that are not in `allowed`.
    pub fn outside(&self, allowed: &[NodeId]) -> (Vec<NodeId>, Vec<NodeId>) {
        let cpu = self
            .cpu_nodes
            .iter()
            .copied()
            .filter(|n| !allowed.contains(n))
            .collect();
        let mem = self
            .memory_kb
            .iter()
            .filter(|(n, kb)| **kb > 0 && !allowed.contains(n))
            .map(|(n, _)| *n)
            .collect();
        (cpu, mem)
    }

    /// Node holding most of its memory (ties: lowest id).
    pub fn main_memory_node(&self) -> Option<NodeId> {
        self.memory_kb
            .iter()
            .filter(|(_, kb)| **kb > 0)
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(n, _)| *n)
    }
}

/// Read the placement of process `pid`.
pub fn read(proc_root: &Path, pid: u32, topology: &Topology) -> io::Result<ActualPlacement> {
    let dir = proc_root.join(pid.to_string());
    let mut allowed = BTreeSet::new();
    let mut running = BTreeSet::new();
    for task in fs::read_dir(dir.join("task"))? {
        let task = task?.path();
        // A thread may exit between readdir and read: skip it.
        if let Ok(status) = fs::read_to_string(task.join("status"))
            && let Some(list) = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        {
            allowed.extend(parse_cpulist(list.trim()).map_err(io::Error::other)?);
        }
        if let Ok(stat) = fs::read_to_string(task.join("stat"))
            && let Some(cpu) = stat_processor(&stat)
            && let Some(node) = topology.node_of_cpu(cpu)
        {
            running.insert(node);
        }
    }
    let cpu_nodes: BTreeSet<NodeId> = allowed
        .iter()
        .filter_map(|c| topology.node_of_cpu(*c))
        .collect();
    let memory_kb = parse_numa_maps(&fs::read_to_string(dir.join("numa_maps"))?);
    Ok(ActualPlacement {
        cpus_allowed: format_cpulist(&allowed.into_iter().collect::<Vec<_>>()),
        cpu_nodes: cpu_nodes.into_iter().collect(),
        running_nodes: running.into_iter().collect(),
        memory_kb,
    })
}

/// Field 39 (`processor`) of a `stat` line. The comm (field 2) is in parentheses and
/// may hold spaces or `)`, so fields are counted after the last `)`.
fn stat_processor(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state); field 39 is index 36 there.
    rest.split_whitespace().nth(36)?.parse().ok()
}

/// kB per node over all mappings of a numa_maps text.
pub fn parse_numa_maps(text: &str) -> BTreeMap<NodeId, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let page_kb: u64 = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("kernelpagesize_kB="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        for field in line.split_whitespace() {
            if let Some((node, pages)) = field
                .strip_prefix('N')
                .and_then(|f| f.split_once('='))
                .and_then(|(n, p)| Some((n.parse::<NodeId>().ok()?, p.parse::<u64>().ok()?)))
            {
                *out.entry(node).or_insert(0) += pages * page_kb;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numa_maps_lines() {
        // Lines as fs/proc/task_mmu.c show_numa_map() prints them.
        let text = "55d0c0a00000 default file=/usr/bin/cat mapped=5 N0=5 kernelpagesize_kB=4\n\
                    7f0000000000 default anon=3 dirty=3 active=0 N0=1 N1=2 kernelpagesize_kB=4\n\
                    7f2000000000 bind:1 anon=1 dirty=1 N1=1 kernelpagesize_kB=2048\n\
                    7ffd00000000 default stack anon=2 dirty=2 N0=2 kernelpagesize_kB=4\n";
        let kb = parse_numa_maps(text);
        assert_eq!(kb, BTreeMap::from([(0, 32), (1, 8 + 2048)]));
        let p = ActualPlacement {
            memory_kb: kb,
            cpu_nodes: vec![0, 1],
            ..ActualPlacement::default()
        };
        assert_eq!(p.main_memory_node(), Some(1));
        assert_eq!(p.outside(&[0]), (vec![1], vec![1]));
        assert_eq!(p.outside(&[0, 1]), (vec![], vec![]));
    }

    #[test]
    fn stat_processor_after_tricky_comm() {
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[36] = "1".into();
        let stat = format!("42 (a) b (c) {}", fields.join(" "));
        assert_eq!(stat_processor(&stat), Some(1));
    }

    #[test]
    fn cpulists_round_trip() {
        assert_eq!(format_cpulist(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(format_cpulist(&[]), "");
        assert_eq!(
            parse_cpulist(&format_cpulist(&[3, 4, 9])),
            Ok(vec![3, 4, 9])
        );
    }

    #[test]
    fn own_placement_matches_proc_status() {
        // Oracle: the kernel's own /proc/self/status for this (main) thread.
        let topo = Topology::from_sysfs(Path::new("/sys")).expect("topology");
        let p = read(Path::new("/proc"), std::process::id(), &topo).expect("placement");
        let status = fs::read_to_string("/proc/self/status").expect("status");
        let own = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list")
            .trim();
        let own = parse_cpulist(own).expect("cpulist");
        let union = parse_cpulist(&p.cpus_allowed).expect("cpulist");
        assert!(
            own.iter().all(|c| union.contains(c)),
            "{own:?} in {union:?}"
        );
        assert!(
            p.memory_kb.values().sum::<u64>() > 0,
            "a running test has resident memory"
        );
        assert!(!p.running_nodes.is_empty());
    }
}
