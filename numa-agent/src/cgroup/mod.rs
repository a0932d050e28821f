//! cgroups: which mode the host runs (v2, hybrid, v1), which hierarchies attribution
//! reads, and mapping between a cgroup's id and its path.
//!
//! A cgroup's id (what `bpf_get_current_cgroup_id()` and the `cgroup_attach_task`
//! tracepoint's `dst_id` report) is its kernfs node id, which is also the inode number
//! of its directory in the mounted hierarchy (`kernfs_ino()`, fs/kernfs/kernfs-internal.h;
//! `cgroup_id()`, include/linux/cgroup.h). Ids are per hierarchy and never reused
//! within a boot (kernfs allocates them cyclically with a generation in the high
//! bits), so an id -> path cache needs no invalidation when processes exec or exit.
pub mod path;

use std::{
    collections::HashMap,
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use numa_common::{CGROUP_SLOT_V1, CGROUP_SLOT_V2, CGROUP_SLOTS, HIERARCHY_NONE};
use serde::Serialize;
use thiserror::Error;

pub use path::{CgroupAttribution, QosClass, Runtime, WorkloadKind};

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How cgroups are mounted on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only cgroup2 (`0::` is the only line of `/proc/<pid>/cgroup`).
    V2,
    /// v1 controller hierarchies plus cgroup2 (systemd's "hybrid", usually at
    /// `/sys/fs/cgroup/unified`) with no controllers on it.
    Hybrid,
    /// v1 hierarchies only.
    V1,
    /// No cgroup filesystem mounted: nothing can be attributed beyond the process.
    None,
}

impl CgroupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::Hybrid => "hybrid",
            Self::V1 => "v1",
            Self::None => "none",
        }
    }
}

/// A mounted v1 hierarchy and the controllers (or `name=..`) bound to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Mount {
    pub controllers: Vec<String>,
    pub mount: PathBuf,
}

/// The cgroup mounts of `/proc/mounts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLayout {
    pub mode: CgroupMode,
    pub v1: Vec<V1Mount>,
    pub unified: Option<PathBuf>,
}

/// v1 subsystem names (`/proc/cgroups`, kernel/cgroup/cgroup.c `cgroup_subsys_name`):
/// mount options naming them are controllers, everything else (`rw`, `relatime`,
/// `nsdelegate`, ...) is not.
const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "io",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

impl CgroupLayout {
    /// Parse `/proc/mounts` text (fstab format, proc(5)): `fs_spec mountpoint type options 0 0`.
    /// The first mount of each hierarchy wins (bind mounts repeat it elsewhere).
    pub fn from_mounts(text: &str) -> Self {
        let mut v1: Vec<V1Mount> = Vec::new();
        let mut unified = None;
        for line in text.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let [_, mount, fstype, options, ..] = cols[..] else {
                continue;
            };
            let mount = PathBuf::from(unescape_octal(mount));
            match fstype {
                "cgroup2" if unified.is_none() => unified = Some(mount),
                "cgroup" => {
                    let controllers: Vec<String> = options
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .map(str::to_owned)
                        .collect();
                    if !controllers.is_empty() && !v1.iter().any(|m| m.controllers == controllers) {
                        v1.push(V1Mount { controllers, mount });
                    }
                }
                _ => {}
            }
        }
        let mode = match (v1.is_empty(), unified.is_some()) {
            (true, true) => CgroupMode::V2,
            (false, true) => CgroupMode::Hybrid,
            (false, false) => CgroupMode::V1,
            (true, false) => CgroupMode::None,
        };
        Self { mode, v1, unified }
    }

    pub fn detect(mounts: &Path) -> Result<Self, CgroupError> {
        let text = fs::read_to_string(mounts).map_err(|source| CgroupError::Read {
            path: mounts.to_owned(),
            source,
        })?;
        Ok(Self::from_mounts(&text))
    }

    /// The v1 hierarchy attribution reads: `memory` (kubelet's cgroupfs driver creates
    /// its tree in every controller, and container runtimes always use memory), else
    /// systemd's `name=systemd`.
    pub fn primary_v1(&self) -> Option<&V1Mount> {
        ["memory", "name=systemd"].iter().find_map(|c| {
            self.v1
                .iter()
                .find(|m| m.controllers.iter().any(|x| x == c))
        })
    }
}

/// `/proc/mounts` escapes space, tab, newline and backslash as `\ooo` (fs/proc_namespace.c).
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/<pid>/cgroup` (cgroups(7)): `hierarchy-id:controller-list:path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcCgroupLine {
    pub hierarchy: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroupLine> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let hierarchy = it.next()?.parse().ok()?;
            let controllers = it
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            Some(ProcCgroupLine {
                hierarchy,
                controllers,
                path: it.next()?.to_owned(),
            })
        })
        .collect()
}

/// A hierarchy attribution reads, with where it is mounted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hierarchy {
    /// `memory`, `name=systemd` or `unified` (cgroup2).
    pub name: String,
    /// The `/proc/<pid>/cgroup` hierarchy id (0 for cgroup2).
    pub id: u32,
    pub mount: PathBuf,
}

/// The hierarchies the kernel side tracks, by slot (numa_common::CGROUP_SLOT_*).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracked {
    pub slots: [Option<Hierarchy>; CGROUP_SLOTS],
    pub mode: Option<CgroupMode>,
}

impl Tracked {
    /// From the mounts and the agent's own `/proc/self/cgroup` (which gives the
    /// hierarchy id of each mounted v1 controller set).
    pub fn new(layout: &CgroupLayout, self_cgroup: &str) -> Self {
        let mut slots: [Option<Hierarchy>; CGROUP_SLOTS] = Default::default();
        if let Some(v1) = layout.primary_v1() {
            let line = parse_proc_cgroup(self_cgroup)
                .into_iter()
                .find(|l| l.hierarchy != 0 && l.controllers == v1.controllers);
            if let Some(line) = line {
                slots[CGROUP_SLOT_V1] = Some(Hierarchy {
                    name: v1.controllers.join(","),
                    id: line.hierarchy,
                    mount: v1.mount.clone(),
                });
            }
        }
        if let Some(mount) = &layout.unified {
            slots[CGROUP_SLOT_V2] = Some(Hierarchy {
                name: "unified".into(),
                id: 0,
                mount: mount.clone(),
            });
        }
        Self {
            slots,
            mode: Some(layout.mode),
        }
    }

    /// Hierarchy id for `AttachConfig::v1_hierarchy`.
    pub fn v1_hierarchy_id(&self) -> u32 {
        self.slots[CGROUP_SLOT_V1]
            .as_ref()
            .map_or(HIERARCHY_NONE, |h| h.id)
    }

    /// The tracked slots' cgroup paths from a `/proc/<pid>/cgroup` text.
    pub fn paths_from_proc(&self, text: &str) -> [Option<String>; CGROUP_SLOTS] {
        let lines = parse_proc_cgroup(text);
        let mut out: [Option<String>; CGROUP_SLOTS] = Default::default();
        for (slot, h) in self.slots.iter().enumerate() {
            let Some(h) = h else { continue };
            out[slot] = lines
                .iter()
                .find(|l| l.hierarchy == h.id)
                .map(|l| l.path.clone());
        }
        out
    }

    /// Cgroup ids (directory inode numbers) of the tracked slots' paths; 0 if unknown.
    pub fn ids_of(&self, paths: &[Option<String>; CGROUP_SLOTS]) -> [u64; CGROUP_SLOTS] {
        let mut ids = [0; CGROUP_SLOTS];
        for (slot, h) in self.slots.iter().enumerate() {
            if let (Some(h), Some(p)) = (h, &paths[slot]) {
                ids[slot] = fs::metadata(join_cgroup(&h.mount, p)).map_or(0, |m| m.ino());
            }
        }
        ids
    }
}

/// `mount` joined with a cgroup path that starts with `/`.
pub fn join_cgroup(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

/// The attribution of a set of cgroup paths (one per tracked slot), in the order the
/// issue asks for: the v1 line (memory / name=systemd) first, then the cgroup2 line;
/// the first that names a pod or container wins, else the first systemd unit.
pub fn attribute(paths: &[Option<String>; CGROUP_SLOTS]) -> (Option<usize>, CgroupAttribution) {
    let parsed: Vec<(usize, CgroupAttribution)> = paths
        .iter()
        .enumerate()
        .filter_map(|(slot, p)| p.as_deref().map(|p| (slot, path::parse(p))))
        .collect();
    if let Some((slot, a)) = parsed.iter().find(|(_, a)| a.is_container_or_pod()) {
        return (Some(*slot), a.clone());
    }
    if let Some((slot, a)) = parsed.iter().find(|(_, a)| a.kind == WorkloadKind::Unit) {
        return (Some(*slot), a.clone());
    }
    // Unattributed: still name the cgroup the process is in (v1 line first).
    let slot = parsed.first().map(|(slot, _)| *slot);
    (slot, CgroupAttribution::unattributed())
}

/// id -> path for the tracked hierarchies, filled by walking the mounted hierarchy when
/// an id is not known. A walk happens at most once per `min_rewalk` per slot, so ids of
/// cgroups removed before the agent saw them cost one walk, not one per event.
pub struct IdPaths {
    tracked: Tracked,
    paths: [HashMap<u64, String>; CGROUP_SLOTS],
    last_walk: [Option<Instant>; CGROUP_SLOTS],
    min_rewalk: Duration,
}

impl IdPaths {
    pub fn new(tracked: Tracked) -> Self {
        Self {
            tracked,
            paths: Default::default(),
            last_walk: [None; CGROUP_SLOTS],
            min_rewalk: Duration::from_millis(200),
        }
    }

    pub fn tracked(&self) -> &Tracked {
        &self.tracked
    }

    pub fn path(&mut self, slot: usize, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.paths[slot].get(&id) {
            return Some(p.clone());
        }
        let mount = self.tracked.slots[slot].as_ref()?.mount.clone();
        if self.last_walk[slot].is_some_and(|t| t.elapsed() < self.min_rewalk) {
            return None;
        }
        self.last_walk[slot] = Some(Instant::now());
        let mut found = HashMap::new();
        walk(&mount, "", &mut found);
        // Keep ids of removed cgroups only until the map would grow past twice what
        // exists: events of exited processes in a just-removed cgroup still resolve,
        // and churn of cgroups cannot grow the map without bound.
        if self.paths[slot].len() + found.len() > 2 * found.len() + 1024 {
            self.paths[slot].clear();
        }
        self.paths[slot].extend(found);
        self.paths[slot].get(&id).cloned()
    }

    /// Whether the cgroup `path` of `slot` still exists.
    pub fn exists(&self, slot: usize, path: &str) -> bool {
        self.tracked.slots[slot]
            .as_ref()
            .is_some_and(|h| join_cgroup(&h.mount, path).is_dir())
    }

    pub fn len(&self) -> usize {
        self.paths.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn walk(dir: &Path, rel: &str, out: &mut HashMap<u64, String>) {
    let Ok(meta) = fs::metadata(dir) else { return };
    out.insert(
        meta.ino(),
        if rel.is_empty() {
            "/".into()
        } else {
            rel.to_owned()
        },
    );
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let name = e.file_name();
            let child = format!("{rel}/{}", name.to_string_lossy());
            walk(&e.path(), &child, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host's /proc/mounts (hybrid).
    const HYBRID: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/devices cgroup rw,relatime,devices 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,relatime,blkio 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
    /// A systemd host on pure cgroup v2 (Debian 12 / Fedora default).
    const V2: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0
";
    /// A v1-only host (CentOS 7 style): combined cpu,cpuacct and no cgroup2.
    const V1: &str = "\
tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpuacct,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
";
    const HYBRID_SELF: &str =
        "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/3c7d\n1:cpu:/\n0::/\n";

    #[test]
    fn modes() {
        let h = CgroupLayout::from_mounts(HYBRID);
        assert_eq!(h.mode, CgroupMode::Hybrid);
        assert_eq!(
            h.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(h.v1.len(), 9);
        assert_eq!(
            h.primary_v1().map(|m| m.mount.clone()),
            Some("/sys/fs/cgroup/memory".into())
        );
        let v2 = CgroupLayout::from_mounts(V2);
        assert_eq!((v2.mode, v2.primary_v1()), (CgroupMode::V2, None));
        let v1 = CgroupLayout::from_mounts(V1);
        assert_eq!(v1.mode, CgroupMode::V1);
        assert_eq!(v1.v1[0].controllers, vec!["name=systemd".to_owned()]);
        assert_eq!(
            v1.v1[1].controllers,
            vec!["cpuacct".to_owned(), "cpu".to_owned()]
        );
        assert_eq!(
            CgroupLayout::from_mounts("proc /proc proc rw 0 0\n").mode,
            CgroupMode::None
        );
        assert_eq!(unescape_octal(r"/a\040b"), "/a b");
    }

    #[test]
    fn tracked_hierarchies() {
        let t = Tracked::new(&CgroupLayout::from_mounts(HYBRID), HYBRID_SELF);
        assert_eq!(t.v1_hierarchy_id(), 4);
        assert_eq!(t.slots[CGROUP_SLOT_V2].as_ref().map(|h| h.id), Some(0));
        let t = Tracked::new(&CgroupLayout::from_mounts(V2), "0::/user.slice\n");
        assert_eq!(t.v1_hierarchy_id(), HIERARCHY_NONE);
        assert_eq!(
            t.paths_from_proc("0::/system.slice/sshd.service\n"),
            [None, Some("/system.slice/sshd.service".into())]
        );
    }

    /// `/proc/<pid>/cgroup` of a container in each mode: the right line is read.
    #[test]
    fn attribution_per_mode() {
        let uid = "0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011";
        let id = "3f5c1a2b4d6e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";
        let hybrid = Tracked::new(&CgroupLayout::from_mounts(HYBRID), HYBRID_SELF);
        // Hybrid, cgroupfs driver: the pod is in the memory line, not in 0::/.
        let text = format!("9:name=systemd:/\n4:memory:/kubepods/burstable/pod{uid}/{id}\n0::/\n");
        let (slot, a) = attribute(&hybrid.paths_from_proc(&text));
        assert_eq!(
            (slot, a.pod_uid.as_deref(), a.container_id.as_deref()),
            (Some(CGROUP_SLOT_V1), Some(uid), Some(id))
        );
        // Hybrid, systemd driver: systemd mirrors its tree into the unified hierarchy.
        let u_ = uid.replace('-', "_");
        let text = format!(
            "4:memory:/process_api/x\n0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u_}.slice/cri-containerd-{id}.scope\n"
        );
        let (slot, a) = attribute(&hybrid.paths_from_proc(&text));
        assert_eq!(
            (slot, a.qos),
            (Some(CGROUP_SLOT_V2), Some(QosClass::BestEffort))
        );
        // Pure v2.
        let v2 = Tracked::new(&CgroupLayout::from_mounts(V2), "0::/\n");
        let text = format!("0::/kubepods.slice/kubepods-pod{u_}.slice/crio-{id}.scope\n");
        let (_, a) = attribute(&v2.paths_from_proc(&text));
        assert_eq!(
            (a.runtime, a.qos),
            (Some(Runtime::Crio), Some(QosClass::Guaranteed))
        );
        // v1 with memory at hierarchy 3.
        let v1 = Tracked::new(
            &CgroupLayout::from_mounts(V1),
            "3:memory:/\n2:cpuacct,cpu:/\n1:name=systemd:/\n",
        );
        let (_, a) = attribute(&v1.paths_from_proc(&format!(
            "3:memory:/kubepods/pod{uid}/{id}\n1:name=systemd:/system.slice/kubelet.service\n"
        )));
        assert_eq!(a.kind, WorkloadKind::PodContainer);
        // A service; and a process in no recognisable cgroup.
        let (_, a) = attribute(&hybrid.paths_from_proc("9:name=systemd:/system.slice/cron.service\n4:memory:/system.slice/cron.service\n0::/system.slice/cron.service\n"));
        assert_eq!(a.unit.as_deref(), Some("cron.service"));
        let (slot, a) = attribute(&hybrid.paths_from_proc(HYBRID_SELF));
        assert_eq!(
            (slot, a.kind),
            (Some(CGROUP_SLOT_V1), WorkloadKind::Unattributed)
        );
    }

    #[test]
    fn ids_are_directory_inodes_on_this_host() {
        let Ok(layout) = CgroupLayout::detect(Path::new("/proc/self/mounts")) else {
            return;
        };
        let self_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let tracked = Tracked::new(&layout, &self_cgroup);
        let paths = tracked.paths_from_proc(&self_cgroup);
        let ids = tracked.ids_of(&paths);
        let mut idp = IdPaths::new(tracked.clone());
        for slot in 0..CGROUP_SLOTS {
            if ids[slot] == 0 {
                eprintln!("slot {slot}: not mounted here, nothing to check");
                continue;
            }
            assert_eq!(idp.path(slot, ids[slot]), paths[slot], "slot {slot}");
        }
    }
}
