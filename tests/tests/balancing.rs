//! NUMA-balancing probes on this host: it has one node and `kernel.numa_balancing`
//! is 0, so balancing itself never fires here (the QEMU guests prove that path, see
//! `numa-vm-guest balancing`). What the host can prove:
//! - `migrate:mm_migrate_pages` against `/proc/vmstat`: a full compaction
//!   (`vm.compact_memory`, mm/compaction.c) migrates pages with reason `compaction`
//!   through the same `migrate_pages()`, and the agent's per-reason pages must move
//!   exactly as `pgmigrate_success` / `pgmigrate_fail` did over the same interval;
//! - the hinting-fault probe is reported as it is: attached, or unavailable with the
//!   reason and its series absent (fentry is refused here), never zeros that look
//!   measured;
//! - `numa_balancing_mode` is the sysctl's value.
use numa_tests::{
    agent::Agent,
    balancing::{self, Bracket, bracket, sum},
    require_privileges,
};

#[test]
fn page_migrations_match_vmstat_and_unavailable_probes_say_so() {
    require_privileges!();
    let agent = Agent::start(&["run", "--metrics-addr", "127.0.0.1:0", "--bpf-stats"])
        .expect("agent starts");
    let keys = ["pgmigrate_success", "pgmigrate_fail"];
    let first = bracket(&agent, &keys, None).expect("first reading");
    // Compaction may find nothing left to move right after another one: try again.
    let mut last: Option<Bracket> = None;
    for _ in 0..3 {
        std::fs::write("/proc/sys/vm/compact_memory", "1").expect("compacting");
        let b = bracket(&agent, &keys, None).expect("second reading");
        let moved = b.vmstat["pgmigrate_success"] > first.vmstat["pgmigrate_success"];
        last = Some(b);
        if moved {
            break;
        }
    }
    let last = last.expect("read");
    let by_reason = balancing::check_migrations(&first, &last).unwrap_or_else(|e| panic!("{e:#}"));
    let moved = last.vmstat["pgmigrate_success"] - first.vmstat["pgmigrate_success"];
    assert!(
        moved > 0,
        "three compactions migrated no page: nothing was compared (vmstat {:?})",
        last.vmstat.get("compact_migrate_scanned")
    );
    assert!(
        by_reason.get("compaction").copied().unwrap_or(0) > 0,
        "no pages under reason=compaction: {by_reason:?}"
    );

    let attached = |probe: &str, variant: &str| {
        sum(
            &last.metrics,
            "numa_probe_attached",
            &[("probe", probe), ("variant", variant)],
        )
    };
    for probe in [
        "sched_move_numa",
        "sched_swap_numa",
        "sched_stick_numa",
        "mm_migrate_pages",
    ] {
        assert_eq!(
            attached(probe, "tracepoint"),
            1,
            "{probe} not attached:\n{}",
            last.raw_metrics
        );
    }
    let fentry = attached("task_numa_fault", "fentry") == 1;
    let hint_series = last
        .metrics
        .iter()
        .any(|s| s.name == "numa_hint_faults_total");
    if fentry {
        assert!(hint_series, "fentry attached but no numa_hint_faults_total");
    } else {
        // fentry is refused on this host (EPERM): reported as such, and not as an
        // attached = 0 probe the NumaProbeNotAttached alert would page about.
        assert!(
            last.raw_metrics.contains(
                r#"numa_probe_unavailable{probe="task_numa_fault",reason="kernel_refused"} 1"#
            ),
            "{}",
            last.raw_metrics
        );
        assert!(
            !last
                .raw_metrics
                .contains(r#"numa_probe_attached{probe="task_numa_fault""#),
            "{}",
            last.raw_metrics
        );
        assert!(
            !hint_series,
            "hint-fault series exported although the probe is unavailable"
        );
    }
    let sysctl: i64 = std::fs::read_to_string("/proc/sys/kernel/numa_balancing")
        .expect("sysctl")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(
        numa_tests::agent::sample(&last.raw_metrics, "numa_balancing_mode"),
        Some(sysctl as f64)
    );
    let stopped = agent.stop().expect("stops");
    let log = stopped.stderr.join("\n");
    if sysctl == 0 {
        assert!(log.contains("kernel.numa_balancing is 0"), "{log}");
    }
    if !fentry {
        assert!(log.contains("task_numa_fault unavailable"), "{log}");
    }
    eprintln!(
        "compaction: {moved} pages, by reason {by_reason:?}; fentry task_numa_fault: {}; cost: {}",
        if fentry { "attached" } else { "unavailable" },
        balancing::program_costs(&last.metrics, &["mm_migrate_pages"])
    );
}
