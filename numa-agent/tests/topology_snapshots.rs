//! `Topology` against sysfs snapshots of real machines (hwloc's own test-suite,
//! `../shared/fixtures/sysfs/hwloc-linux`). Oracles: each snapshot's own
//! `node*/cpulist` / `cpumap` files, and hwloc's `.console` rendering beside it
//! (`NUMANode ... (P#n ...)` with the PUs under it, the "processors not represented"
//! mask, the NUMALatency matrix). hwloc is also run on each snapshot through the
//! agent's `hwloc-probe` helper (HWLOC_FSROOT), and any disagreement must be reported.
//!
//! Run with `--nocapture` to see the per-snapshot summary.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use numa_agent::topology::{
    HwlocCheck, Loaded, Topology, format_cpulist, parse_cpulist, parse_cpumap,
};

fn fixtures_dir() -> PathBuf {
    std::env::var_os("NUMA_SYSFS_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/sysfs/hwloc-linux"),
        PathBuf::from,
    )
}

fn snapshots() -> Vec<PathBuf> {
    let dir = fixtures_dir();
    let mut out: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "the real-machine snapshots are expected in {} (set NUMA_SYSFS_FIXTURES): {e}",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".tar.bz2"))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no *.tar.bz2 in {}", dir.display());
    out
}

fn name_of(tarball: &Path) -> String {
    tarball
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.bz2"))
        .expect("tarball name")
        .to_owned()
}

/// Unpack into `dest` and return the snapshot's root (the tarball's single top
/// directory, whose name does not always match the tarball's).
fn untar(tarball: &Path, dest: &Path) -> PathBuf {
    let out = Command::new("tar")
        .arg("-xjf")
        .arg(tarball)
        .arg("-C")
        .arg(dest)
        .output()
        .expect("running tar (Debian packages tar and bzip2; `cargo xtask setup`)");
    assert!(
        out.status.success(),
        "tar -xjf {}: {}",
        tarball.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let tops: Vec<PathBuf> = fs::read_dir(dest)
        .expect("read dest")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(tops.len(), 1, "{}: {tops:?}", tarball.display());
    tops.into_iter().next().expect("top dir")
}

/// A node's CPUs read straight from the snapshot: `(cpulist, cpumap)`, each if present.
fn snapshot_node_cpus(node_dir: &Path) -> (Option<Vec<u32>>, Option<Vec<u32>>) {
    let read = |f: &str| {
        fs::read_to_string(node_dir.join(f)).ok().map(|s| {
            s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_owned()
        })
    };
    let list = read("cpulist").map(|t| parse_cpulist(&t).expect("cpulist"));
    let map = read("cpumap").map(|t| parse_cpumap(&t).expect("cpumap"));
    (list, map)
}

/// What hwloc's console rendering says.
#[derive(Debug, Default)]
struct Console {
    /// NUMANode P# -> PUs (P#) under the normal object it is attached to.
    nodes: BTreeMap<u32, BTreeSet<u32>>,
    /// "N processors not represented in topology: 0x..." (offline or disallowed).
    not_represented: BTreeSet<u32>,
    /// NUMALatency matrix by P#.
    latency: BTreeMap<(u32, u32), u32>,
    /// `LinuxCgroup=` other than `/`: the rendering shows only what the cgroup allows.
    restricted: bool,
}

fn p_index(line: &str) -> Option<u32> {
    let rest = &line[line.find("(P#")? + 3..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

fn l_index(line: &str) -> Option<u32> {
    let rest = &line[line.find("L#")? + 2..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

fn parse_console(text: &str) -> Console {
    let mut c = Console::default();
    let lines: Vec<&str> = text.lines().collect();
    let tree_end = lines
        .iter()
        .position(|l| l.starts_with("depth "))
        .unwrap_or(lines.len());
    let tree: Vec<(usize, &str)> = lines[..tree_end]
        .iter()
        .map(|l| (l.len() - l.trim_start().len(), l.trim_start()))
        .collect();
    let kind = |l: &str| -> String {
        l.split([' ', '(', '['])
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let mut logical_to_p = BTreeMap::new();
    for (i, &(indent, line)) in tree.iter().enumerate() {
        if kind(line) != "NUMANode" {
            continue;
        }
        let p = p_index(line).expect("NUMANode P#");
        if let Some(l) = l_index(line) {
            logical_to_p.insert(l, p);
        }
        // Parent: nearest line above with a smaller indent that is not a memory-side
        // object (NUMANode hangs under MemCache on memory-side-cache machines).
        let mut want = indent;
        let mut parent = None;
        for j in (0..i).rev() {
            let (ind, l) = tree[j];
            if ind < want {
                if kind(l) == "MemCache" {
                    want = ind;
                    continue;
                }
                parent = Some((j, ind));
                break;
            }
        }
        let pus = match parent {
            None => BTreeSet::new(),
            Some((j, pind)) => tree[j + 1..]
                .iter()
                .take_while(|(ind, _)| *ind > pind)
                .filter(|(_, l)| kind(l) == "PU")
                .filter_map(|(_, l)| p_index(l))
                .collect(),
        };
        c.nodes.insert(p, pus);
    }
    for (k, line) in lines.iter().enumerate() {
        if let Some(rest) = line
            .split("processors not represented in topology: ")
            .nth(1)
        {
            let mask = rest.trim().replace("0x", "");
            c.not_represented = parse_cpumap(&mask).expect("mask").into_iter().collect();
        }
        if line.contains("LinuxCgroup=") && !line.contains("LinuxCgroup=/ ") {
            c.restricted = true;
        }
        if line.starts_with("Relative latency matrix (name NUMALatency") {
            let header: Vec<u32> = lines[k + 1]
                .split_whitespace()
                .skip(1)
                .map(|v| v.parse().expect("header index"))
                .collect();
            for row in &lines[k + 2..k + 2 + header.len()] {
                let mut v = row
                    .split_whitespace()
                    .map(|v| v.parse::<u32>().expect("value"));
                let from = v.next().expect("row index");
                for (to, d) in header.iter().zip(v) {
                    c.latency.insert((logical_to_p[&from], logical_to_p[to]), d);
                }
            }
        }
    }
    c
}

/// Every check for one snapshot; returns failures (empty = pass) and a summary line.
fn check_snapshot(tarball: &Path, helper: &Path) -> (Vec<String>, String) {
    let name = name_of(tarball);
    let tmp = tempfile::tempdir().expect("tempdir");
    let top = untar(tarball, tmp.path());
    let sys = top.join("sys");
    let mut fails = Vec::new();
    let loaded: Loaded = match Topology::load(
        &sys,
        &HwlocCheck::On {
            helper: Some(helper.to_path_buf()),
        },
    ) {
        Ok(l) => l,
        Err(e) => return (vec![format!("{name}: load failed: {e:#?}")], String::new()),
    };
    let t = &loaded.topology;

    // 1. Node ids and CPU sets equal the snapshot's own node directories.
    let node_root = sys.join("devices/system/node");
    let mut snap_nodes: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut inconsistencies: Vec<String> = Vec::new();
    if node_root.is_dir() {
        for e in fs::read_dir(&node_root).expect("node dir").flatten() {
            let fname = e.file_name();
            let Some(id) = fname
                .to_str()
                .and_then(|n| n.strip_prefix("node"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let (list, map) = snapshot_node_cpus(&e.path());
            if let (Some(l), Some(m)) = (&list, &map)
                && l != m
            {
                // The kernel prints both from one mask: an edited snapshot. It must
                // be reported, and cpulist used.
                let file = format!("node{id}/cpulist");
                if !loaded.sysfs_warnings.iter().any(|w| w.contains(&file)) {
                    fails.push(format!(
                        "{name}: node{id} cpulist != cpumap was not reported"
                    ));
                }
                inconsistencies.push(format!(
                    "node{id} cpulist {} != cpumap {}",
                    format_cpulist(l),
                    format_cpulist(m)
                ));
            }
            snap_nodes.insert(id, list.or(map).unwrap_or_default());
        }
    } else {
        let online = fs::read_to_string(sys.join("devices/system/cpu/online")).expect("cpu/online");
        snap_nodes.insert(0, parse_cpulist(&online).expect("cpu/online"));
    }
    let ours: BTreeMap<u32, Vec<u32>> = t.nodes.iter().map(|n| (n.id, n.cpus.clone())).collect();
    if ours != snap_nodes {
        fails.push(format!(
            "{name}: nodes/CPUs {ours:?} differ from the snapshot's files {snap_nodes:?}"
        ));
    }
    for n in &t.nodes {
        if n.has_cpu == n.cpus.is_empty() {
            fails.push(format!(
                "{name}: node {} has_cpu={} with CPUs {:?}",
                n.id, n.has_cpu, n.cpus
            ));
        }
    }

    // 2. hwloc's console rendering.
    let console_path = tarball.with_file_name(format!("{name}.console"));
    let console_text = fs::read_to_string(&console_path).unwrap_or_default();
    let mut console_note = String::from("console ok");
    if console_text.trim().is_empty() {
        console_note = format!("console check skipped: {} is empty", console_path.display());
        println!("{name}: {console_note}");
    } else {
        let c = parse_console(&console_text);
        let online: BTreeSet<u32> = t.online_cpus.iter().copied().collect();
        let cpu_nodes: BTreeSet<u32> = t
            .nodes
            .iter()
            .filter(|n| n.has_cpu)
            .flat_map(|n| n.cpus.clone())
            .collect();
        for (&id, pus) in &c.nodes {
            let Some(node) = t.node(id) else {
                fails.push(format!("{name}: console node {id} is not in the topology"));
                continue;
            };
            if node.has_cpu {
                // The console shows a node's online, allowed PUs.
                let expected: BTreeSet<u32> = node
                    .cpus
                    .iter()
                    .copied()
                    .filter(|c| {
                        (online.is_empty() || online.contains(c)) && !cpu_nodes_shared(t, *c, id)
                    })
                    .filter(|cpu| !c.not_represented.contains(cpu))
                    .collect();
                if &expected != pus {
                    fails.push(format!(
                        "{name}: node {id}: console PUs {} vs topology {}",
                        fmt(pus),
                        fmt(&expected)
                    ));
                }
            } else if !pus.is_subset(&cpu_nodes) {
                // A CPU-less node hangs under the CPUs nearest to it.
                fails.push(format!(
                    "{name}: CPU-less node {id} under PUs {} outside every node",
                    fmt(pus)
                ));
            }
        }
        let console_ids: BTreeSet<u32> = c.nodes.keys().copied().collect();
        let our_ids: BTreeSet<u32> = ours.keys().copied().collect();
        if console_ids != our_ids {
            if c.restricted {
                console_note = format!(
                    "console restricted by a cgroup: shows nodes {} of {}",
                    fmt(&console_ids),
                    fmt(&our_ids)
                );
            } else if loaded.disagreements.is_empty() {
                fails.push(format!(
                    "{name}: console nodes {} vs topology {} and no disagreement was reported",
                    fmt(&console_ids),
                    fmt(&our_ids)
                ));
            } else {
                console_note = format!(
                    "console shows nodes {} of {}: reported as a disagreement",
                    fmt(&console_ids),
                    fmt(&our_ids)
                );
            }
        }
        for (&(a, b), &d) in &c.latency {
            if t.distance(a, b) != Some(d) {
                fails.push(format!(
                    "{name}: distance({a},{b}) console {d}, topology {:?}",
                    t.distance(a, b)
                ));
            }
        }
    }

    // 3. hwloc on the snapshot: available, and agreeing or disagreeing out loud.
    let hwloc_note = match &loaded.hwloc {
        Some(Ok(_)) if loaded.disagreements.is_empty() => "hwloc agrees".to_owned(),
        Some(Ok(_)) => format!(
            "hwloc DISAGREES (reported): {}",
            loaded.disagreements.join("; ")
        ),
        Some(Err(e)) => {
            fails.push(format!("{name}: hwloc could not read the snapshot: {e}"));
            format!("hwloc FAILED: {e}")
        }
        None => unreachable!("hwloc was asked"),
    };
    if !loaded.disagreements.is_empty() && !t.source.contains("hwloc disagrees") {
        fails.push(format!("{name}: disagreement not in source `{}`", t.source));
    }
    if !inconsistencies.is_empty() {
        console_note.push_str(&format!(
            "; snapshot inconsistent with itself: {}",
            inconsistencies.join(", ")
        ));
    }
    let summary = format!(
        "{name}: {} node(s) {}, {} online CPU(s); {console_note}; {hwloc_note}{}",
        t.nodes.len(),
        fmt(&t.nodes.iter().map(|n| n.id).collect()),
        t.online_cpus.len(),
        if loaded.sysfs_warnings.is_empty() {
            String::new()
        } else {
            format!("; sysfs warnings: {}", loaded.sysfs_warnings.join("; "))
        }
    );
    (fails, summary)
}

/// Whether `cpu` is also listed by a node with a lower id (then it belongs to that one).
fn cpu_nodes_shared(t: &Topology, cpu: u32, id: u32) -> bool {
    t.node_of_cpu(cpu).is_some_and(|owner| owner < id)
}

fn fmt(set: &BTreeSet<u32>) -> String {
    format!(
        "[{}]",
        format_cpulist(&set.iter().copied().collect::<Vec<_>>())
    )
}

#[test]
fn every_real_machine_snapshot() {
    let helper = Path::new(env!("CARGO_BIN_EXE_numa-agent"));
    let mut fails = Vec::new();
    for tarball in snapshots() {
        let (f, summary) = check_snapshot(&tarball, helper);
        println!("{summary}");
        fails.extend(f);
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

#[test]
fn console_parser_reads_hwloc_renderings() {
    // The parser itself, on a rendering with memory-side caches, a CPU-less node,
    // a not-represented mask and a latency matrix by logical index.
    let text = "\
Machine (P#0 total=3GiB)
  Group L#0
    MemCache L#0 (size=1GiB)
      NUMANode L#0 (P#4 local=1GiB)
    NUMANode(HBM) L#1 (P#9 local=1GiB)
    Core L#0 (P#0)
      PU L#0 (P#0)
      PU L#1 (P#3)
  Group L#1
    NUMANode L#2 (P#1 local=1GiB)
    PU L#2 (P#1)
depth 0:  1 Machine (type #0)
Relative latency matrix (name NUMALatency kind 5) between 3 NUMANodes (depth -3) by logical indexes:
 index     0     1     2
     0    10    20    30
     1    21    10    31
     2    32    33    10
2 processors not represented in topology: 0x00000014
Topology infos: LinuxCgroup=/x Backend=Linux
";
    let c = parse_console(text);
    assert_eq!(c.nodes[&4], BTreeSet::from([0, 3]));
    assert_eq!(c.nodes[&9], BTreeSet::from([0, 3]));
    assert_eq!(c.nodes[&1], BTreeSet::from([1]));
    assert_eq!(c.not_represented, BTreeSet::from([2, 4]));
    assert_eq!(c.latency[&(9, 4)], 21);
    assert_eq!(c.latency[&(1, 9)], 33);
    assert!(c.restricted);
}
