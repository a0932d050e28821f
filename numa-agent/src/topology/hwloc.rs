//! hwloc's view of the NUMA topology, the second source `Topology` is checked against.
//!
//! hwloc (through hwlocality) is built with `INCLUDE_DISALLOWED` so that an agent
//! restricted by a cgroup cpuset still models the whole machine: tracepoints fire on
//! every CPU, not only on the ones the agent may run on.
//!
//! hwloc's Linux backend reads its filesystem root from the `HWLOC_FSROOT`
//! environment variable, with `getenv`, at topology load (hwloc 2.x
//! `hwloc/topology-linux.c`, `hwloc_linux_component_instantiate` and
//! `hwloc_linux_get_allowed_resources_hook`); hwloc 2.x has no API to pass it. Setting
//! an environment variable in a running multi-threaded process is undefined
//! behaviour (it races every other thread's `getenv`, Rust 2024 makes `set_var`
//! unsafe for that reason). So this process never sets it: the live `/sys` is read
//! in-process with the real root, and any other root is read by a helper process (the
//! agent's own hidden `hwloc-probe` subcommand) that is *born* with `HWLOC_FSROOT` in
//! its environment and prints an [`HwlocView`] as JSON on stdout.
use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    process::Command,
};

use hwlocality::{
    Topology as HwlocTopology,
    object::{attributes::ObjectAttributes, distance::DistancesKind, types::ObjectType},
    topology::builder::BuildFlags,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::NodeId;

/// Environment variables that redirect hwloc away from the Linux backend or the
/// root we ask for (hwloc `doc/hwloc.doxy`, "Environment Variables"); the helper
/// process starts without them.
const REDIRECTING_ENV: &[&str] = &[
    "HWLOC_XMLFILE",
    "HWLOC_SYNTHETIC",
    "HWLOC_COMPONENTS",
    "HWLOC_CPUID_PATH",
    "HWLOC_THISSYSTEM",
    "HWLOC_ALLOW",
];

/// Hidden subcommand of the `numa-agent` binary that runs [`discover_here`] and prints
/// the result as JSON.
pub const PROBE_SUBCOMMAND: &str = "hwloc-probe";

#[derive(Debug, Error)]
pub enum HwlocError {
    #[error("hwloc could not build a topology ({api} failed)")]
    Build {
        api: &'static str,
        #[source]
        source: hwlocality::errors::RawHwlocError,
    },
    #[error("hwloc build flags rejected")]
    Flags(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("hwloc reads a filesystem root holding `sys/`; {sysfs_root} is not named `sys`")]
    NoFsRoot { sysfs_root: PathBuf },
    #[error(
        "reading {fsroot} with hwloc needs the helper process (HWLOC_FSROOT is read from the \
         environment), and none was given"
    )]
    NoHelper { fsroot: PathBuf },
    #[error("starting the hwloc helper {helper}")]
    Spawn {
        helper: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the hwloc helper failed for HWLOC_FSROOT={fsroot} ({status}): {stderr}")]
    Helper {
        fsroot: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("the hwloc helper printed something that is not a topology view")]
    Output(#[source] serde_json::Error),
}

/// What hwloc says about the NUMA nodes. `deny_unknown_fields`: the helper and the
/// agent are the same binary, so any difference is a bug worth failing on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HwlocView {
    /// NUMA nodes by OS index, ascending.
    pub nodes: Vec<HwlocNode>,
    /// `NUMALatency` matrix (kind FROM_OS + MEANS_LATENCY, the kernel's SLIT/`distance`
    /// values), row = initiator, keyed by OS index. Empty when hwloc has none.
    pub distances: BTreeMap<NodeId, BTreeMap<NodeId, u64>>,
    /// Every PU hwloc knows, including disallowed and offline ones.
    pub complete_cpus: Vec<u32>,
    /// PUs hwloc represents as objects (online ones).
    pub cpus: Vec<u32>,
    /// Lines hwloc printed on stderr while loading (helper process only): hwloc
    /// reports what it thinks are operating-system bugs there.
    #[serde(default)]
    pub messages: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HwlocNode {
    pub id: NodeId,
    /// `complete_cpuset`: the node's CPUs, offline and disallowed ones included.
    pub complete_cpus: Vec<u32>,
    /// `cpuset`: the node's online CPUs.
    pub cpus: Vec<u32>,
    /// `local_memory` in bytes, if hwloc found it.
    pub memory_bytes: Option<u64>,
}

fn bitmap_ids<'a>(set: impl IntoIterator<Item = hwlocality::bitmap::BitmapIndex> + 'a) -> Vec<u32> {
    set.into_iter()
        .filter_map(|i| u32::try_from(usize::from(i)).ok())
        .collect()
}

/// Load hwloc's topology with whatever root this process's environment names (the
/// real one unless it was started with `HWLOC_FSROOT`).
pub fn discover_here() -> Result<HwlocView, HwlocError> {
    let topology = HwlocTopology::builder()
        .with_flags(BuildFlags::INCLUDE_DISALLOWED)
        .map_err(|e| HwlocError::Flags(Box::new(e)))?
        .build()
        .map_err(|source| HwlocError::Build {
            api: source.api,
            source,
        })?;
    let mut nodes: Vec<HwlocNode> = topology
        .objects_with_type(ObjectType::NUMANode)
        .filter_map(|obj| {
            let id = NodeId::try_from(obj.os_index()?).ok()?;
            let memory_bytes = match obj.attributes() {
                Some(ObjectAttributes::NUMANode(attr)) => attr.local_memory().map(u64::from),
                _ => None,
            };
            Some(HwlocNode {
                id,
                complete_cpus: obj
                    .complete_cpuset()
                    .map(|s| bitmap_ids(s.iter_set()))
                    .unwrap_or_default(),
                cpus: obj
                    .cpuset()
                    .map(|s| bitmap_ids(s.iter_set()))
                    .unwrap_or_default(),
                memory_bytes,
            })
        })
        .collect();
    nodes.sort_by_key(|n| n.id);

    let mut distances: BTreeMap<NodeId, BTreeMap<NodeId, u64>> = BTreeMap::new();
    // The Linux backend names the kernel's matrix "NUMALatency" (FROM_OS, MEANS_LATENCY).
    let matrices = topology
        .distances(Some(DistancesKind::FROM_OS | DistancesKind::MEANS_LATENCY))
        .map_err(|source| HwlocError::Build {
            api: source.api,
            source,
        })?;
    for matrix in &matrices {
        let all_nodes = matrix
            .objects()
            .all(|o| o.is_some_and(|o| o.object_type() == ObjectType::NUMANode));
        if !all_nodes {
            continue;
        }
        for ((from, to), value) in matrix.object_distances() {
            let id = |o: Option<&hwlocality::object::TopologyObject>| {
                o.and_then(|o| o.os_index())
                    .and_then(|i| NodeId::try_from(i).ok())
            };
            if let (Some(from), Some(to)) = (id(from), id(to)) {
                distances.entry(from).or_default().insert(to, value);
            }
        }
    }
    Ok(HwlocView {
        nodes,
        distances,
        complete_cpus: bitmap_ids(topology.complete_cpuset().iter_set()),
        cpus: bitmap_ids(topology.cpuset().iter_set()),
        messages: Vec::new(),
    })
}

/// hwloc's view of the machine whose sysfs is mounted at `sysfs_root`.
///
/// The live `/sys` (with no `HWLOC_FSROOT` inherited) is read in-process. Any other
/// root must be `<fsroot>/sys`, and is read by `helper hwloc-probe` started with
/// `HWLOC_FSROOT=<fsroot>`; `helper` is normally the agent's own executable.
pub fn discover(sysfs_root: &Path, helper: Option<&Path>) -> Result<HwlocView, HwlocError> {
    let live = sysfs_root == Path::new("/sys")
        && std::env::var_os("HWLOC_FSROOT").is_none_or(|v| v == "/");
    let redirected = REDIRECTING_ENV
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if live && !redirected {
        return discover_here();
    }
    let fsroot = if sysfs_root.file_name().is_some_and(|n| n == "sys") {
        sysfs_root
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"))
    } else {
        return Err(HwlocError::NoFsRoot {
            sysfs_root: sysfs_root.to_path_buf(),
        });
    };
    let fsroot = if fsroot.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        fsroot
    };
    let Some(helper) = helper else {
        return Err(HwlocError::NoHelper { fsroot });
    };
    let mut cmd = Command::new(helper);
    cmd.arg(PROBE_SUBCOMMAND).env("HWLOC_FSROOT", &fsroot);
    for var in REDIRECTING_ENV {
        cmd.env_remove(var);
    }
    let out = cmd.output().map_err(|source| HwlocError::Spawn {
        helper: helper.to_path_buf(),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(HwlocError::Helper {
            fsroot,
            status: out.status.to_string(),
            stderr: stderr.trim().to_owned(),
        });
    }
    let mut view: HwlocView = serde_json::from_slice(&out.stdout).map_err(HwlocError::Output)?;
    // hwloc frames its operating-system warnings in `*` boxes over many lines
    // (hwloc/topology.c, `report_insert_error`): keep them as one message.
    let text: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim().trim_start_matches('*').trim())
        .filter(|l| !l.is_empty())
        .collect();
    view.messages = if text.is_empty() {
        Vec::new()
    } else {
        vec![text.join(" ")]
    };
    Ok(view)
}
