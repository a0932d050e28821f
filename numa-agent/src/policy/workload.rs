//! Workloads on a host: a process (thread group), what /proc says about it, whether a
//! policy's selector picks it, and whether the agent may ever act on it.
use std::{fs, path::Path};

use super::spec::Selector;

/// One `/proc/<pid>/cgroup` line: `hierarchy-ID:controller-list:cgroup-path`
/// (Documentation/admin-guide/cgroup-v1/cgroups.rst; `0::/path` is cgroup v2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLine {
    pub hierarchy: u32,
    /// Empty for the v2 line; `name=systemd` style names are kept as given.
    pub controllers: Vec<String>,
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub kernel_thread: bool,
    pub cgroups: Vec<CgroupLine>,
}

impl ProcessInfo {
    /// `None` once the process is gone (or `pid` is a thread, not a group leader).
    pub fn read(proc_root: &Path, pid: u32) -> Option<Self> {
        let dir = proc_root.join(pid.to_string());
        let status = fs::read_to_string(dir.join("status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        if field("Tgid:")?.parse::<u32>().ok()? != pid {
            return None;
        }
        let kernel_thread = match field("Kthread:") {
            // `Kthread:` exists since 6.0 (fs/proc/array.c).
            Some(flag) => flag == "1",
            None => pid == 2 || field("PPid:") == Some("2"),
        };
        let comm = field("Name:").unwrap_or_default().to_owned();
        let cgroups = fs::read_to_string(dir.join("cgroup"))
            .map(|t| parse_cgroups(&t))
            .unwrap_or_default();
        Some(Self {
            pid,
            comm,
            kernel_thread,
            cgroups,
        })
    }

    /// The cgroup that names this workload in metrics: the v1 `cpu` hierarchy's path when
    /// there is one (hybrid hosts), else the v2 path. Bounded by cgroups, never a pid.
    pub fn workload_label(&self) -> String {
        self.cgroups
            .iter()
            .find(|c| c.controllers.iter().any(|x| x == "cpu"))
            .or_else(|| self.cgroups.iter().find(|c| c.hierarchy == 0))
            .map_or_else(|| "/".to_owned(), |c| c.path.clone())
    }
}

pub fn parse_cgroups(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            let path = parts.next()?.to_owned();
            Some(CgroupLine {
                hierarchy,
                controllers,
                path,
            })
        })
        .collect()
}

/// Every process id under `proc_root`.
pub fn list_pids(proc_root: &Path) -> Vec<u32> {
    fs::read_dir(proc_root)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Selector {
    /// Every field given must match (AND); any entry of a field's list (OR). Kubernetes
    /// terms match nothing on a host until pod attribution exists.
    pub fn matches(&self, p: &ProcessInfo) -> bool {
        if self.has_kubernetes_terms() {
            return false;
        }
        let glob = |pat: &str, text: &str| glob::Pattern::new(pat).is_ok_and(|g| g.matches(text));
        (self.pids.is_empty() || self.pids.contains(&p.pid))
            && (self.process_names.is_empty()
                || self.process_names.iter().any(|pat| glob(pat, &p.comm)))
            && (self.cgroup_paths.is_empty()
                || self
                    .cgroup_paths
                    .iter()
                    .any(|pat| p.cgroups.iter().any(|c| glob(pat, &c.path))))
    }
}

/// Why the agent must not act on (or count against a policy) this process, if so:
/// itself, kernel threads, and init.
pub fn never_touch(p: &ProcessInfo, agent_pid: u32) -> Option<&'static str> {
    if p.pid == agent_pid {
        Some("the agent itself")
    } else if p.kernel_thread {
        Some("a kernel thread")
    } else if p.pid == 1 {
        Some("init (pid 1)")
    } else {
        None
    }
}

/// Whether a policy governs `p`: its selector, or without one the documented default
/// scope (every user process), and never what [`never_touch`] excludes.
pub fn in_scope(selector: Option<&Selector>, p: &ProcessInfo, agent_pid: u32) -> bool {
    never_touch(p, agent_pid).is_none() && selector.is_none_or(|s| s.matches(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, comm: &str, cgroup: &str) -> ProcessInfo {
        ProcessInfo {
            pid,
            comm: comm.into(),
            kernel_thread: false,
            cgroups: parse_cgroups(cgroup),
        }
    }

    #[test]
    fn cgroup_lines_hybrid_and_v2() {
        let hybrid = "9:name=systemd:/\n1:cpu:/numa-test-7\n0::/\n";
        let p = process(7, "w", hybrid);
        assert_eq!(p.cgroups.len(), 3);
        assert_eq!(p.cgroups[1].controllers, vec!["cpu".to_owned()]);
        assert_eq!(p.workload_label(), "/numa-test-7");
        let v2 = process(7, "w", "0::/system.slice/db.service\n");
        assert_eq!(v2.workload_label(), "/system.slice/db.service");
    }

    #[test]
    fn selector_semantics() {
        let p = process(42, "ai-worker", "1:cpu:/pods/a\n0::/\n");
        let sel = |names: &[&str], cg: &[&str], pids: &[u32]| Selector {
            process_names: names.iter().map(|s| (*s).to_owned()).collect(),
            cgroup_paths: cg.iter().map(|s| (*s).to_owned()).collect(),
            pids: pids.to_vec(),
            ..Selector::default()
        };
        assert!(sel(&["ai-*"], &[], &[]).matches(&p));
        assert!(!sel(&["db"], &[], &[]).matches(&p));
        assert!(sel(&["db", "ai-worker"], &["/pods/*"], &[42]).matches(&p));
        assert!(
            !sel(&["ai-*"], &["/other/*"], &[]).matches(&p),
            "fields AND"
        );
        assert!(!sel(&[], &[], &[43]).matches(&p));
        let k8s = Selector {
            namespaces: vec!["default".into()],
            ..Selector::default()
        };
        assert!(!k8s.matches(&p), "no pod attribution on a host yet");
    }

    #[test]
    fn never_touch_self_kernel_threads_and_init() {
        let me = ProcessInfo::read(Path::new("/proc"), std::process::id()).expect("own status");
        assert_eq!(
            never_touch(&me, std::process::id()),
            Some("the agent itself")
        );
        assert!(!in_scope(None, &me, std::process::id()));
        assert_eq!(never_touch(&me, 0), None);
        if let Some(kthreadd) = ProcessInfo::read(Path::new("/proc"), 2) {
            assert_eq!(never_touch(&kthreadd, 0), Some("a kernel thread"));
        }
        assert_eq!(
            never_touch(&process(1, "init", ""), 0),
            Some("init (pid 1)")
        );
    }
}
