//! `numa-agent topology`: print the NUMA topology the agent would use, and the hidden
//! `hwloc-probe` helper that reads hwloc under `HWLOC_FSROOT` in its own process.
use std::io::Write as _;

use anyhow::Context as _;
use numa_agent::topology::{HwlocCheck, Topology, hwloc, output};

use crate::{TopologyArgs, TopologyFormat};

pub fn run(args: TopologyArgs) -> anyhow::Result<()> {
    let helper = std::env::current_exe().ok();
    let check = if args.no_hwloc {
        HwlocCheck::Off
    } else {
        HwlocCheck::On { helper }
    };
    let loaded = Topology::load(&args.sysfs_root, &check).with_context(|| {
        format!(
            "reading the NUMA topology under {}",
            args.sysfs_root.display()
        )
    })?;
    // Warnings go to stderr so that `-o json` stays one clean document on stdout.
    for w in loaded.warnings() {
        log::warn!("{w}");
    }
    let text = match args.output {
        TopologyFormat::Json => output::to_json(&loaded.topology) + "\n",
        TopologyFormat::Table => output::to_table(&loaded.topology),
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("writing the topology to stdout")
}

/// Hidden `hwloc-probe`: hwloc's view of the root `HWLOC_FSROOT` names, as JSON.
pub fn hwloc_probe() -> anyhow::Result<()> {
    let view = hwloc::discover_here().context("loading the hwloc topology")?;
    let json = serde_json::to_string(&view).context("encoding the hwloc view")?;
    println!("{json}");
    Ok(())
}
