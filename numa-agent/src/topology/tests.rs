//! Hand-written sysfs trees for the irregular machines real snapshots do not all
//! cover. Each file's content is what the kernel prints (drivers/base/node.c).
use std::fs;

use super::{hwloc::HwlocNode, *};

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

/// A node directory: cpulist, distance row, meminfo with `MemTotal` in kB.
fn node(root: &Path, id: u32, cpus: &str, distance: &str, mem_kb: Option<u64>) {
    let dir = format!("devices/system/node/node{id}");
    write(root, &format!("{dir}/cpulist"), &format!("{cpus}\n"));
    if !distance.is_empty() {
        write(root, &format!("{dir}/distance"), &format!("{distance}\n"));
    }
    if let Some(kb) = mem_kb {
        write(
            root,
            &format!("{dir}/meminfo"),
            &format!("Node {id} MemTotal:       {kb} kB\nNode {id} MemFree:        1 kB\n"),
        );
    }
}

fn load(root: &Path) -> Loaded {
    Topology::load(root, &HwlocCheck::Off).expect("topology")
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
    assert_eq!(format_cpulist(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    assert_eq!(format_cpulist(&[]), "");
    assert_eq!(format_cpulist(&[5]), "5");
}

#[test]
fn multi_word_cpumaps() {
    // `%*pb`: 32-bit words, most significant first.
    assert_eq!(parse_cpumap("00000000,0000ffff"), Ok((0..16).collect()));
    assert_eq!(parse_cpumap("00000001,00000000,80000000"), Ok(vec![31, 64]));
    assert_eq!(parse_cpumap("00000000"), Ok(vec![]));
    assert!(parse_cpumap("0000zz00").is_err());
    // 128 words = 4096 CPUs: nothing is capped at 64.
    let mut words = vec!["00000000"; 128];
    words[0] = "80000000";
    assert_eq!(parse_cpumap(&words.join(",")), Ok(vec![4095]));
}

#[test]
fn declared_two_node_split() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "devices/system/node/online", "0-1\n");
    node(root, 0, "0", "10 21", None);
    node(root, 1, "1", "21 10", None);
    let t = load(root).topology;
    assert_eq!(t.nodes.len(), 2);
    assert_eq!(
        (t.node_of_cpu(0), t.node_of_cpu(1), t.node_of_cpu(2)),
        (Some(0), Some(1), None)
    );
    assert_eq!(t.distance(0, 1), Some(21));
    assert_eq!(t.cpu_to_node(), vec![Some(0), Some(1)]);
    assert_eq!(t.cpus_of(1), Some(&[1][..]));
    assert_eq!(t.cpus_of(7), None);
}

#[test]
fn distance_columns_follow_online_nodes_not_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "devices/system/node/online", "0,2,5\n");
    write(root, "devices/system/node/possible", "0-7\n");
    node(root, 0, "0", "10 20 30", Some(1024));
    node(root, 2, "1", "21 10 31", Some(1024));
    node(root, 5, "", "40 41 10", Some(1024));
    let loaded = load(root);
    let t = &loaded.topology;
    assert!(
        loaded.sysfs_warnings.is_empty(),
        "{:?}",
        loaded.sysfs_warnings
    );
    assert_eq!(t.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [0, 2, 5]);
    // Column 2 of node 0's row is node 5 (third online node), not node 2.
    assert_eq!(t.distance(0, 5), Some(30));
    assert_eq!(t.distance(0, 2), Some(20));
    assert_eq!(t.distance(2, 2), Some(10));
    assert_eq!(t.distance(0, 1), None, "node 1 is not online");
    assert_eq!(t.max_node_id(), Some(5));
    assert_eq!(t.possible_nodes, 8, "node ids 0-7 are possible");
}

#[test]
fn asymmetric_matrix_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "devices/system/node/online", "0,4\n");
    node(root, 0, "0-1", "10 28", Some(4096));
    node(root, 4, "2-3", "17 10", Some(4096));
    let t = load(root).topology;
    assert_eq!(t.distance(0, 4), Some(28), "row = initiator 0");
    assert_eq!(t.distance(4, 0), Some(17), "row = initiator 4");
}

#[test]
fn cpu_less_and_memory_less_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    // Node 0: CPUs and memory. Node 1: CPUs, no memory (MemTotal 0). Node 2: far
    // memory with no CPUs (CXL/HBM/DAX). Node 3: nearer memory-only node for node 1.
    write(root, "devices/system/node/online", "0-3\n");
    write(root, "devices/system/node/has_cpu", "0-1\n");
    write(root, "devices/system/node/has_memory", "0,2-3\n");
    node(root, 0, "0-1", "10 25 30 30", Some(8 * 1024 * 1024));
    node(root, 1, "2-3", "25 10 40 15", Some(0));
    node(root, 2, "", "30 40 10 40", Some(2 * 1024 * 1024));
    node(root, 3, "", "30 15 40 10", Some(1024 * 1024));
    let loaded = load(root);
    assert!(
        loaded.sysfs_warnings.is_empty(),
        "{:?}",
        loaded.sysfs_warnings
    );
    let t = &loaded.topology;
    let kinds: Vec<(u32, bool, bool, Option<u64>)> = t
        .nodes
        .iter()
        .map(|n| (n.id, n.has_cpu, n.has_memory, n.memory_bytes))
        .collect();
    assert_eq!(
        kinds,
        [
            (0, true, true, Some(8 << 30)),
            (1, true, false, Some(0)),
            (2, false, true, Some(2 << 30)),
            (3, false, true, Some(1 << 30)),
        ]
    );
    assert_eq!(t.nearest_memory_node(0), Some(0));
    assert_eq!(
        t.nearest_memory_node(1),
        Some(3),
        "15 to memory-only node 3 beats 25 to node 0; node 1 itself has none"
    );
    assert_eq!(t.nearest_memory_node(2), Some(2));
}

#[test]
fn nearest_memory_prefers_smallest_distance_then_lowest_id() {
    let nodes = vec![
        Node::new(0, vec![]),
        Node {
            has_memory: false,
            ..Node::new(1, vec![0])
        },
        Node::new(2, vec![]),
    ];
    let row = |v: [u32; 3]| BTreeMap::from([(0, v[0]), (1, v[1]), (2, v[2])]);
    let t = Topology::from_parts(nodes.clone(), BTreeMap::from([(1, row([20, 10, 20]))]), "t");
    assert_eq!(t.nearest_memory_node(1), Some(0), "tie: lowest id");
    let t = Topology::from_parts(nodes.clone(), BTreeMap::from([(1, row([30, 10, 20]))]), "t");
    assert_eq!(t.nearest_memory_node(1), Some(2));
    let t = Topology::from_parts(nodes, BTreeMap::new(), "t");
    assert_eq!(t.nearest_memory_node(1), None, "no distances: unknown");
}

#[test]
fn no_node_directory_means_one_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "devices/system/cpu/online", "0-3\n");
    write(dir.path(), "devices/system/cpu/possible", "0-7\n");
    let t = load(dir.path()).topology;
    assert_eq!(t.nodes.len(), 1);
    assert_eq!(
        (t.nodes[0].id, &t.nodes[0].cpus[..]),
        (0, &[0, 1, 2, 3][..])
    );
    assert_eq!(t.possible_cpus, 8, "sized from possible CPUs");
    assert!(t.distances.is_empty());
    assert_eq!(t.distance(0, 0), None, "unknown, not zero");
    assert_eq!(t.nodes[0].memory_bytes, None);
}

#[test]
fn missing_distance_file_is_unknown_not_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "devices/system/node/online", "0-1\n");
    node(root, 0, "0", "10 21", None);
    node(root, 1, "1", "", None);
    let t = load(root).topology;
    assert_eq!(t.distance(0, 1), Some(21));
    assert_eq!(t.distance(1, 0), None);
    assert_eq!(t.distance(1, 1), None);
    assert!(!t.distances.contains_key(&1));
}

#[test]
fn bad_distance_row_is_a_warning_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "devices/system/node/online", "0-1\n");
    node(root, 0, "0", "10", None);
    node(root, 1, "1", "21 10", None);
    let loaded = load(root);
    let w = loaded.sysfs_warnings.join("\n");
    assert!(
        w.contains("node0/distance") && w.contains("1 columns for 2 online nodes"),
        "{w}"
    );
    assert_eq!(loaded.topology.distance(0, 1), None);
    assert_eq!(loaded.topology.distance(1, 0), Some(21));
}

#[test]
fn cpu_in_no_node_is_unknown_never_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "devices/system/cpu/online", "0-3\n");
    write(root, "devices/system/cpu/possible", "0-5\n");
    write(root, "devices/system/node/online", "0\n");
    node(root, 0, "0-2", "10", Some(1));
    let loaded = load(root);
    let t = &loaded.topology;
    assert_eq!(t.unknown_cpus(), [3]);
    assert_eq!(t.node_of_cpu(3), None);
    assert_eq!(t.node_of_cpu(u32::MAX), None);
    assert_eq!(t.possible_cpus, 6);
    assert_eq!(
        t.cpu_to_node(),
        [Some(0), Some(0), Some(0), None, None, None]
    );
    assert!(
        loaded
            .sysfs_warnings
            .iter()
            .any(|w| w.contains("online CPUs 3 are in no node")),
        "{:?}",
        loaded.sysfs_warnings
    );
}

#[test]
fn cpu_in_several_nodes_goes_to_the_lowest_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "devices/system/node/online", "0-1\n");
    node(root, 0, "0-3", "10 10", None);
    node(root, 1, "0-3", "10 10", None);
    let loaded = load(root);
    assert_eq!(loaded.topology.node_of_cpu(2), Some(0));
    assert_eq!(loaded.topology.cpu_to_node()[2], Some(0));
    assert!(
        loaded.sysfs_warnings[0].contains("CPUs 0-3 are listed by more than one node (0,1)"),
        "{:?}",
        loaded.sysfs_warnings
    );
}

#[test]
fn old_kernel_layout_cpumap_cpu_dirs_nul_bytes() {
    // No node/online, no cpulist (only a two-word cpumap), no cpu/online: the cpuN
    // directories and their `online` files say which CPUs are up. Trailing NULs and an
    // empty has_cpu file as found in real snapshots.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(
        root,
        "devices/system/node/node0/cpumap",
        "00000000,0000000f\n\0",
    );
    write(root, "devices/system/node/node0/distance", "10 20\n");
    write(
        root,
        "devices/system/node/node1/cpumap",
        "00000001,000000f0\n",
    );
    write(root, "devices/system/node/node1/distance", "20 10\n");
    write(root, "devices/system/node/has_cpu", "");
    for cpu in [0, 1, 2, 3, 4, 5, 6, 7, 32] {
        fs::create_dir_all(root.join(format!("devices/system/cpu/cpu{cpu}"))).expect("mkdir");
    }
    write(root, "devices/system/cpu/cpu5/online", "0\n");
    write(root, "devices/system/cpu/cpu6/online", "1\n");
    let loaded = load(root);
    assert!(
        loaded.sysfs_warnings.is_empty(),
        "{:?}",
        loaded.sysfs_warnings
    );
    let t = &loaded.topology;
    assert_eq!(t.cpus_of(0), Some(&[0, 1, 2, 3][..]));
    assert_eq!(t.cpus_of(1), Some(&[4, 5, 6, 7, 32][..]));
    assert_eq!(t.online_cpus, [0, 1, 2, 3, 4, 6, 7, 32]);
    assert_eq!(t.possible_cpus, 33);
    assert_eq!(t.distance(1, 0), Some(20));
}

#[test]
fn thousands_of_cpus_and_hundreds_of_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    // 256 nodes of 16 CPUs with sparse (even) ids: 4096 CPUs, ids up to 510.
    let ids: Vec<u32> = (0..256).map(|i| i * 2).collect();
    write(root, "devices/system/node/online", &format_cpulist(&ids));
    write(root, "devices/system/cpu/online", "0-4095\n");
    for (k, &id) in ids.iter().enumerate() {
        let row: Vec<String> = (0..256)
            .map(|j| {
                if j == k {
                    "10".into()
                } else {
                    format!("{}", 20 + j % 7)
                }
            })
            .collect();
        let lo = k * 16;
        node(
            root,
            id,
            &format!("{lo}-{}", lo + 15),
            &row.join(" "),
            Some(1),
        );
    }
    let t = load(root).topology;
    assert_eq!(t.nodes.len(), 256);
    assert_eq!(t.node_of_cpu(4095), Some(510));
    assert_eq!(t.possible_cpus, 4096);
    assert_eq!(t.cpu_to_node()[4095], Some(510));
    assert_eq!(t.distance(510, 0), Some(20));
    assert_eq!(t.distance(0, 510), Some(20 + 255 % 7));
}

#[test]
fn json_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "devices/system/node/online", "0-1\n");
    node(root, 0, "1,0", "10 21", Some(1));
    node(root, 1, "", "21 10", Some(2));
    let t = load(root).topology;
    let json: serde_json::Value = serde_json::from_str(&output::to_json(&t)).expect("json");
    let expected = serde_json::json!({
        "nodes": [
            {"id": 0, "cpus": [0, 1], "memory_bytes": 1024, "has_cpu": true, "has_memory": true},
            {"id": 1, "cpus": [], "memory_bytes": 2048, "has_cpu": false, "has_memory": true},
        ],
        "distances": {"0": {"0": 10, "1": 21}, "1": {"0": 21, "1": 10}},
        "source": format!("sysfs {}", root.display()),
    });
    assert_eq!(json, expected);
    let table = output::to_table(&t);
    assert!(table.contains("memory only"), "{table}");
    assert!(table.contains("   0   10   21"), "{table}");
}

fn hwloc_view_of(t: &Topology) -> HwlocView {
    HwlocView {
        nodes: t
            .nodes
            .iter()
            .map(|n| HwlocNode {
                id: n.id,
                complete_cpus: n.cpus.clone(),
                cpus: n.cpus.clone(),
                memory_bytes: n.memory_bytes,
            })
            .collect(),
        distances: t
            .distances
            .iter()
            .map(|(&a, row)| (a, row.iter().map(|(&b, &d)| (b, u64::from(d))).collect()))
            .collect(),
        complete_cpus: t.online_cpus.clone(),
        cpus: t.online_cpus.clone(),
        messages: Vec::new(),
    }
}

#[test]
fn compare_reports_each_kind_of_disagreement() {
    let t = Topology::from_parts(
        vec![Node::new(0, vec![0, 1]), Node::new(2, vec![2, 3])],
        BTreeMap::from([
            (0, BTreeMap::from([(0, 10), (2, 21)])),
            (2, BTreeMap::from([(0, 21), (2, 10)])),
        ]),
        "t",
    );
    assert_eq!(compare(&t, &hwloc_view_of(&t)), Vec::<String>::new());

    let mut v = hwloc_view_of(&t);
    v.nodes[1].complete_cpus = vec![2];
    v.distances.get_mut(&2).expect("row").insert(0, 31);
    v.nodes.push(HwlocNode {
        id: 7,
        complete_cpus: vec![],
        cpus: vec![],
        memory_bytes: None,
    });
    let d = compare(&t, &v);
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(
        d[0].contains("nodes 7 are in hwloc but not in sysfs"),
        "{d:?}"
    );
    assert!(d[1].contains("node 2: sysfs CPUs `2-3`"), "{d:?}");
    assert!(d[2].contains("2->0: 21 vs 31"), "{d:?}");

    let mut v = hwloc_view_of(&t);
    v.distances.clear();
    let d = compare(&t, &v);
    assert!(d[0].contains("known to only one"), "{d:?}");
}
