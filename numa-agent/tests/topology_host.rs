//! `numa-agent topology` on the machine running the tests, checked against
//! `numactl -H` (libnuma's own reading of the same kernel) and the JSON contract of
//! issue 3. On this workplace's host that is one node with CPUs 0-1.
use std::{collections::BTreeMap, process::Command};

use serde_json::Value;

fn agent(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_numa-agent"))
        .args(args)
        .output()
        .expect("running numa-agent");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "numa-agent {args:?}: {stderr}");
    (stdout, stderr)
}

/// `numactl -H`: node -> CPUs, node -> size in MiB, distance rows.
struct Numactl {
    cpus: BTreeMap<u32, Vec<u32>>,
    size_mb: BTreeMap<u32, u64>,
    distances: BTreeMap<u32, Vec<u32>>,
    header: Vec<u32>,
}

fn numactl() -> Option<Numactl> {
    let out = match Command::new("numactl").arg("-H").output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            println!(
                "skipping the numactl comparison: numactl -H failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Err(e) => {
            println!(
                "skipping the numactl comparison: numactl not runnable ({e}); `cargo xtask setup` installs it"
            );
            return None;
        }
    };
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut n = Numactl {
        cpus: BTreeMap::new(),
        size_mb: BTreeMap::new(),
        distances: BTreeMap::new(),
        header: Vec::new(),
    };
    let mut in_distances = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("node distances:") {
            in_distances = true;
            continue;
        }
        if in_distances {
            if words.first() == Some(&"node") {
                n.header = words[1..].iter().map(|w| w.parse().expect("id")).collect();
            } else if let Some(id) = words.first().and_then(|w| w.strip_suffix(':')) {
                n.distances.insert(
                    id.parse().expect("id"),
                    words[1..]
                        .iter()
                        .map(|w| w.parse().expect("distance"))
                        .collect(),
                );
            }
            continue;
        }
        match words.as_slice() {
            ["node", id, "cpus:", cpus @ ..] => {
                n.cpus.insert(
                    id.parse().expect("id"),
                    cpus.iter().map(|c| c.parse().expect("cpu")).collect(),
                );
            }
            ["node", id, "size:", mb, "MB"] => {
                n.size_mb
                    .insert(id.parse().expect("id"), mb.parse().expect("size"));
            }
            _ => {}
        }
    }
    Some(n)
}

#[test]
fn json_follows_the_contract_and_matches_numactl() {
    let (stdout, _) = agent(&["topology", "-o", "json"]);
    let json: Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
    let top = json.as_object().expect("object");
    assert_eq!(
        top.keys().map(String::as_str).collect::<Vec<_>>(),
        ["distances", "nodes", "source"],
        "exactly the contract's keys"
    );
    assert!(
        top["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("sysfs /sys"))
    );
    let nodes = top["nodes"].as_array().expect("nodes");
    let mut ids = Vec::new();
    let mut ours: BTreeMap<u32, (Vec<u32>, Option<u64>)> = BTreeMap::new();
    for node in nodes {
        let o = node.as_object().expect("node object");
        let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["cpus", "has_cpu", "has_memory", "id", "memory_bytes"]
        );
        let id = o["id"].as_u64().expect("id") as u32;
        let cpus: Vec<u32> = o["cpus"]
            .as_array()
            .expect("cpus")
            .iter()
            .map(|c| c.as_u64().expect("cpu") as u32)
            .collect();
        assert!(
            cpus.windows(2).all(|w| w[0] < w[1]),
            "CPUs ascending: {cpus:?}"
        );
        assert_eq!(o["has_cpu"].as_bool(), Some(!cpus.is_empty()));
        ids.push(id);
        ours.insert(id, (cpus, o["memory_bytes"].as_u64()));
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "nodes ascending: {ids:?}"
    );
    println!("numa-agent topology -o json: {stdout}");

    let Some(n) = numactl() else { return };
    for (id, cpus) in &n.cpus {
        assert_eq!(
            ours.get(id).map(|(c, _)| c),
            Some(cpus),
            "node {id}: CPUs vs numactl -H"
        );
    }
    for (id, mb) in &n.size_mb {
        // numactl prints MemTotal (libnuma numa_node_size64) in MiB, rounded down.
        let bytes = ours.get(id).and_then(|(_, b)| *b).expect("memory_bytes");
        assert_eq!(bytes >> 20, *mb, "node {id}: size vs numactl -H");
    }
    for (from, row) in &n.distances {
        for (to, d) in n.header.iter().zip(row) {
            assert_eq!(
                json["distances"][from.to_string()][to.to_string()].as_u64(),
                Some(u64::from(*d)),
                "distance({from},{to}) vs numactl -H"
            );
        }
    }
}

#[test]
fn table_lists_every_node_with_its_cpus() {
    let (json, _) = agent(&["topology", "-o", "json"]);
    let json: Value = serde_json::from_str(json.trim()).expect("json");
    let (table, _) = agent(&["topology"]);
    println!("{table}");
    assert!(table.contains("distances") || table.contains("distances: unknown"));
    for node in json["nodes"].as_array().expect("nodes") {
        let id = node["id"].as_u64().expect("id");
        let cpus: Vec<u32> = node["cpus"]
            .as_array()
            .expect("cpus")
            .iter()
            .map(|c| c.as_u64().expect("cpu") as u32)
            .collect();
        let list = numa_agent::topology::format_cpulist(&cpus);
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&format!("{id} ")) && (cpus.is_empty() || l.contains(&list))),
            "node {id} with CPUs {list} in:\n{table}"
        );
    }
}
