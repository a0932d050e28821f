//! How long loading the topology takes on the real-machine snapshots.
//!
//! `cargo run --release -p numa-agent --example topology_load_time [-- [--rounds N] [TARBALL...]]`
//! (also `cargo xtask bench-topology`). Without tarballs: every snapshot in
//! `../shared/fixtures/sysfs/hwloc-linux`. Each is unpacked once into a temporary
//! folder (not timed), then loaded N times two ways:
//! - `sysfs`: what the agent's `cpu->node` map needs (`Topology::load`, hwloc off);
//! - `sysfs+hwloc`: the full load with the hwloc cross-check, which for a root other
//!   than `/sys` includes starting the hwloc helper process (this binary doubles as
//!   it, like `numa-agent hwloc-probe`).
//!
//! Prints min / median / max wall time per snapshot; the largest snapshot (most
//! CPUs) is marked.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use numa_agent::topology::{HwlocCheck, Topology, hwloc};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(hwloc::PROBE_SUBCOMMAND) {
        let view = hwloc::discover_here()?;
        println!("{}", serde_json::to_string(&view)?);
        return Ok(());
    }
    let mut rounds = 30usize;
    if let Some(i) = args.iter().position(|a| a == "--rounds") {
        rounds = args.get(i + 1).ok_or("--rounds needs a value")?.parse()?;
        args.drain(i..=i + 1);
    }
    let tarballs: Vec<PathBuf> = if args.is_empty() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/sysfs/hwloc-linux");
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".tar.bz2"))
            .collect();
        v.sort();
        v
    } else {
        args.iter().map(PathBuf::from).collect()
    };
    let helper = std::env::current_exe()?;
    println!(
        "{:<40} {:>5} {:>5}  {:>26}  {:>26}",
        "snapshot", "nodes", "cpus", "sysfs ms (min/med/max)", "sysfs+hwloc ms (min/med/max)"
    );
    let mut rows = Vec::new();
    for tarball in &tarballs {
        let tmp = tempfile::tempdir()?;
        let status = Command::new("tar")
            .arg("-xjf")
            .arg(tarball)
            .arg("-C")
            .arg(tmp.path())
            .status()?;
        if !status.success() {
            return Err(format!("tar -xjf {} failed", tarball.display()).into());
        }
        let top = std::fs::read_dir(tmp.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.is_dir())
            .ok_or("empty tarball")?;
        let sys = top.join("sys");
        let on = HwlocCheck::On {
            helper: Some(helper.clone()),
        };
        let sysfs = time(rounds, || Topology::load(&sys, &HwlocCheck::Off).map(drop))?;
        let full = time(rounds, || Topology::load(&sys, &on).map(drop))?;
        let t = Topology::load(&sys, &HwlocCheck::Off)?.topology;
        let name = tarball
            .file_name()
            .map(|n| n.to_string_lossy().replace(".tar.bz2", ""))
            .unwrap_or_default();
        rows.push((name, t.nodes.len(), t.online_cpus.len(), sysfs, full));
    }
    let largest = rows.iter().map(|r| r.2).max().unwrap_or(0);
    for (name, nodes, cpus, sysfs, full) in &rows {
        println!(
            "{:<40} {nodes:>5} {cpus:>5}  {:>26}  {:>26}{}",
            name,
            fmt(sysfs),
            fmt(full),
            if *cpus == largest { "  <- largest" } else { "" }
        );
    }
    println!("({rounds} rounds each, wall time, release build)");
    Ok(())
}

fn time<E>(rounds: usize, mut f: impl FnMut() -> Result<(), E>) -> Result<Vec<Duration>, E> {
    let mut v = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        f()?;
        v.push(start.elapsed());
    }
    v.sort();
    Ok(v)
}

fn fmt(v: &[Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(a), Some(b), Some(c)) => format!("{:.2}/{:.2}/{:.2}", ms(*a), ms(*b), ms(*c)),
        _ => "-".into(),
    }
}
