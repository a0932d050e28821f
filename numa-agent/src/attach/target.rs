//! What `attach` watches: a process, every process of a command name, the processes
//! of a cgroup, or of a container's cgroup. Resolved to thread-group ids from /proc
//! and cgroupfs every second, so processes that start later join and the view ends
//! when none is left.
use std::{
    collections::BTreeSet,
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TargetError {
    #[error("process {pid} does not exist (no {path})")]
    NoSuchPid { pid: u32, path: PathBuf },
    #[error("no running process is named {name:?} (as in /proc/PID/comm, at most 15 bytes)")]
    NoSuchComm { name: String },
    #[error(
        "cgroup {given} not found: looked for {tried:?}; give the directory under a cgroup \
         mount, or the path as /proc/PID/cgroup shows it"
    )]
    NoSuchCgroup { given: PathBuf, tried: Vec<PathBuf> },
    #[error(
        "no cgroup named after container {id:?} under {roots:?}: expected a directory such as \
         docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope or docker/<id>"
    )]
    NoSuchContainer { id: String, roots: Vec<PathBuf> },
    #[error("container id {0:?} is too short: give at least 12 hex digits")]
    ShortContainerId(String),
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    /// Processes whose `/proc/PID/comm` equals the name.
    Comm(String),
    /// A cgroup directory (holding `cgroup.procs`).
    Cgroup(PathBuf),
    /// A container's cgroup, found by its id; `dir` as for `Cgroup`.
    Container {
        id: String,
        dir: PathBuf,
    },
}

impl Target {
    /// A short description for the view's title and the log.
    pub fn describe(&self) -> String {
        match self {
            Self::Pid(pid) => format!("pid {pid}"),
            Self::Comm(name) => format!("comm {name}"),
            Self::Cgroup(dir) => format!("cgroup {}", dir.display()),
            Self::Container { id, .. } => format!("container {}", &id[..id.len().min(12)]),
        }
    }

    /// The thread groups in the target now. Empty means it is gone.
    pub fn tgids(&self, proc_root: &Path) -> BTreeSet<u32> {
        let me = std::process::id();
        match self {
            Self::Pid(pid) => alive(proc_root, *pid).then_some(*pid).into_iter().collect(),
            Self::Comm(name) => processes(proc_root)
                .filter(|&pid| pid != me && comm(proc_root, pid).as_deref() == Some(name))
                .filter(|&pid| alive(proc_root, pid))
                .collect(),
            Self::Cgroup(dir) | Self::Container { dir, .. } => {
                cgroup_procs(dir).into_iter().filter(|&p| p != me).collect()
            }
        }
    }

    /// Whether a process not seen at the last refresh belongs to the target (a
    /// process that started within the last second).
    pub fn admits(&self, proc_root: &Path, pid: u32) -> bool {
        match self {
            Self::Pid(p) => *p == pid,
            Self::Comm(name) => comm(proc_root, pid).as_deref() == Some(name),
            Self::Cgroup(dir) | Self::Container { dir, .. } => cgroup_procs(dir).contains(&pid),
        }
    }
}

/// `/proc/PID` exists and is not a zombie (state `Z` or `X` in /proc/PID/stat: exited,
/// waiting to be reaped; it will not run or migrate again).
pub fn alive(proc_root: &Path, pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the state follows the last `)` (comm may hold parentheses).
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

fn comm(proc_root: &Path, pid: u32) -> Option<String> {
    fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
        .ok()
        .map(|s| s.trim_end_matches('\n').to_owned())
}

fn processes(proc_root: &Path) -> impl Iterator<Item = u32> {
    fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
}

/// `cgroup.procs` of a cgroup (v1 or v2: one tgid per line); empty once it is removed.
fn cgroup_procs(dir: &Path) -> BTreeSet<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Mount points of cgroup hierarchies in /proc/mounts: cgroup2 first (on a hybrid
/// host it holds every process), then the v1 ones.
pub fn cgroup_roots(mounts: &str) -> Vec<PathBuf> {
    let mut v2 = Vec::new();
    let mut v1 = Vec::new();
    for line in mounts.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        match (cols.get(1), cols.get(2)) {
            (Some(dir), Some(&"cgroup2")) => v2.push(PathBuf::from(dir)),
            (Some(dir), Some(&"cgroup")) => v1.push(PathBuf::from(dir)),
            _ => {}
        }
    }
    v2.extend(v1);
    v2
}

pub fn pid(proc_root: &Path, pid: u32) -> Result<Target, TargetError> {
    if alive(proc_root, pid) {
        Ok(Target::Pid(pid))
    } else {
        Err(TargetError::NoSuchPid {
            pid,
            path: proc_root.join(pid.to_string()),
        })
    }
}

pub fn comm_target(proc_root: &Path, name: &str) -> Result<Target, TargetError> {
    let t = Target::Comm(name.to_owned());
    if t.tgids(proc_root).is_empty() {
        return Err(TargetError::NoSuchComm {
            name: name.to_owned(),
        });
    }
    Ok(t)
}

/// `given` as a directory with `cgroup.procs`, or as a path relative to one of the
/// hierarchies (the form `/proc/PID/cgroup` prints, e.g. `/system.slice/x.service`).
pub fn cgroup(given: &Path, mounts: &str) -> Result<Target, TargetError> {
    let mut tried = vec![given.to_owned()];
    if given.join("cgroup.procs").is_file() {
        return Ok(Target::Cgroup(given.to_owned()));
    }
    let relative = given.strip_prefix("/").unwrap_or(given);
    for root in cgroup_roots(mounts) {
        let dir = root.join(relative);
        if dir.join("cgroup.procs").is_file() {
            return Ok(Target::Cgroup(dir));
        }
        tried.push(dir);
    }
    Err(TargetError::NoSuchCgroup {
        given: given.to_owned(),
        tried,
    })
}

/// Find the cgroup of container `id` (full or at least 12 hex digits) by the names
/// runtimes give it: docker `docker-<id>.scope` (systemd driver) or `docker/<id>`
/// (cgroupfs), containerd `cri-containerd-<id>.scope`, CRI-O `crio-<id>.scope`
/// (never `crio-conmon-<id>.scope`, the monitor's), podman `libpod-<id>.scope`.
/// A best-effort search until workload attribution (issue 5) lands.
pub fn container(id: &str, mounts: &str) -> Result<Target, TargetError> {
    if id.len() < 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TargetError::ShortContainerId(id.to_owned()));
    }
    let roots = cgroup_roots(mounts);
    for root in &roots {
        if let Some(dir) = find_container_dir(root, id, 0) {
            return Ok(Target::Container {
                id: id.to_owned(),
                dir,
            });
        }
    }
    Err(TargetError::NoSuchContainer {
        id: id.to_owned(),
        roots,
    })
}

/// Whether a cgroup directory name is the container `id`'s own cgroup.
pub fn is_container_dir(name: &str, id: &str) -> bool {
    if name.contains("conmon") {
        return false;
    }
    let bare = name
        .strip_suffix(".scope")
        .unwrap_or(name)
        .rsplit(['-', '/'])
        .next()
        .unwrap_or(name);
    bare.len() >= id.len() && bare.starts_with(id) && bare.bytes().all(|b| b.is_ascii_hexdigit())
}

fn find_container_dir(dir: &Path, id: &str, depth: usize) -> Option<PathBuf> {
    // kubepods.slice/kubepods-burstable.slice/<pod>.slice/<container>.scope is depth 4.
    if depth > 6 {
        return None;
    }
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let path = entry.path();
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| is_container_dir(n, id))
        {
            return Some(path);
        }
        if let Some(found) = find_container_dir(&path, id, depth + 1) {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_dir_names() {
        let id = "3f2a9c1b7d4e";
        for name in [
            "docker-3f2a9c1b7d4e5f60718293a4b5c6d7e8f9012345678901234567890abcdef12.scope",
            "cri-containerd-3f2a9c1b7d4e5f60718293a4b5c6d7e8f9012345678901234567890abcdef12.scope",
            "crio-3f2a9c1b7d4e5f60718293a4b5c6d7e8f9012345678901234567890abcdef12.scope",
            "3f2a9c1b7d4e5f60718293a4b5c6d7e8f9012345678901234567890abcdef12",
        ] {
            assert!(is_container_dir(name, id), "{name}");
        }
        for name in [
            "crio-conmon-3f2a9c1b7d4e5f60718293a4b5c6d7e8f9012345678901234567890abcdef12.scope",
            "docker-aaaa9c1b7d4e.scope",
            "system.slice",
            "3f2a9c1b7d4",
        ] {
            assert!(!is_container_dir(name, id), "{name}");
        }
        assert!(matches!(
            container("abc", ""),
            Err(TargetError::ShortContainerId(_))
        ));
    }

    #[test]
    fn cgroup_roots_put_v2_first() {
        let mounts = "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup_roots(mounts),
            vec![
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/sys/fs/cgroup/cpu")
            ]
        );
    }

    #[test]
    fn own_process_is_alive_and_resolves() {
        let me = std::process::id();
        let proc_root = Path::new("/proc");
        assert!(alive(proc_root, me));
        assert_eq!(pid(proc_root, me).expect("me"), Target::Pid(me));
        assert!(matches!(
            pid(proc_root, u32::MAX - 3),
            Err(TargetError::NoSuchPid { .. })
        ));
        // `comm` never matches the agent itself.
        let my_comm = comm(proc_root, me).expect("comm");
        assert!(!Target::Comm(my_comm).tgids(proc_root).contains(&me));
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        // Not reaped yet: it becomes a zombie once it has exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(Path::new("/proc"), pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} still running"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            Path::new("/proc").join(pid.to_string()).exists(),
            "zombie still listed"
        );
        child.wait().expect("reap");
    }
}
