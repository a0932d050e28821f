//! Remote memory placement seen by the kmem:mm_page_alloc probe on the real kernel,
//! with a declared split: node0 = CPU 0 and all of this host's memory blocks,
//! node1 = CPU 1 and no memory. A workload on CPU 1 places everything remotely.
use numa_tests::{
    require_privileges,
    scenarios::{self, AccessCase},
    split,
};

#[test]
fn remote_placement_is_reported_and_local_is_not() {
    require_privileges!();
    let split = split::two_nodes_with_host_memory_on_node0().expect("declared split");
    let root = split.path().to_str().expect("utf-8 path");
    let workload = std::env::var("NUMA_WORKLOAD_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/numa-workload").to_owned()
    });
    let case = |label: &str, cpu: &str, remote| AccessCase {
        label: label.to_owned(),
        command: vec![
            workload.clone(),
            "touch".into(),
            "--cpu".into(),
            cpu.into(),
            "--hold".into(),
            "1500ms".into(),
        ],
        remote,
    };
    let report = scenarios::access_placement(
        &["--sysfs-root", root],
        root,
        &[
            case("remote (CPU 1, memory on node 0)", "1", Some((1, 0))),
            case("local (CPU 0)", "0", None),
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{report}");
}
