//! CPU quota of a process's cgroup, for `throttleWorker`: cgroup v2 `cpu.max`
//! ("$MAX $PERIOD", `max` = unlimited; Documentation/admin-guide/cgroup-v2.rst) or v1
//! `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1 = unlimited;
//! Documentation/scheduler/sched-bwc.rst). Hybrid hosts (v1 `cpu` controller plus an
//! empty cgroup2 at /sys/fs/cgroup/unified) use v1, as the kernel does.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::policy::workload::parse_cgroups;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write `{value}` to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: cannot parse `{text}`")]
    Parse { path: PathBuf, text: String },
    #[error(
        "process {pid} has no cgroup with the cpu controller (checked /proc/{pid}/cgroup and the mounts)"
    )]
    NoCpuController { pid: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The cgroup directory that holds a process's CPU bandwidth limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuCgroup {
    pub version: Version,
    pub dir: PathBuf,
    /// Path as `/proc/<pid>/cgroup` shows it, `/` for the root.
    pub path: String,
}

/// A CPU bandwidth limit: `quota_us` per `period_us`, `None` = unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuLimit {
    pub quota_us: Option<u64>,
    pub period_us: u64,
}

impl CpuLimit {
    /// As the file shows it: `max 100000` / `-1` style is per version, so a neutral form.
    pub fn describe(self) -> String {
        match self.quota_us {
            None => format!("unlimited (period {}us)", self.period_us),
            Some(q) => format!("{q}us per {}us", self.period_us),
        }
    }
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    })
}

/// Mount points of cgroup filesystems from a `/proc/self/mountinfo` text: `(root,
/// mount point, fstype, super options)` (Documentation/filesystems/proc.rst 3.5).
fn cgroup_mounts(mountinfo: &str) -> Vec<(String, PathBuf, String, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split_whitespace().collect();
            let post: Vec<&str> = post.split_whitespace().collect();
            let fstype = *post.first()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some((
                (*pre.get(3)?).to_owned(),
                PathBuf::from(pre.get(4)?),
                fstype.to_owned(),
                (*post.get(2).unwrap_or(&"")).to_owned(),
            ))
        })
        .collect()
}

impl CpuCgroup {
    /// The cgroup limiting `pid`'s CPU: the v1 hierarchy with `cpu` if one is mounted,
    /// else the v2 one if its `cpu.max` exists.
    pub fn of_process(proc_root: &Path, pid: u32) -> Result<Self, CgroupError> {
        let cg_file = proc_root.join(pid.to_string()).join("cgroup");
        let lines = parse_cgroups(&read(&cg_file)?);
        let mounts = cgroup_mounts(&read(&proc_root.join("self/mountinfo"))?);
        let under = |root: &str, mount: &Path, path: &str| {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(path)
                .trim_start_matches('/');
            mount.join(rel)
        };
        if let Some(line) = lines
            .iter()
            .find(|l| l.controllers.iter().any(|c| c == "cpu"))
            && let Some((root, mount, _, _)) = mounts
                .iter()
                .find(|(_, _, t, opts)| t == "cgroup" && opts.split(',').any(|o| o == "cpu"))
        {
            return Ok(Self {
                version: Version::V1,
                dir: under(root, mount, &line.path),
                path: line.path.clone(),
            });
        }
        if let Some(line) = lines.iter().find(|l| l.hierarchy == 0)
            && let Some((root, mount, _, _)) = mounts.iter().find(|(_, _, t, _)| t == "cgroup2")
        {
            let dir = under(root, mount, &line.path);
            if dir.join("cpu.max").exists() {
                return Ok(Self {
                    version: Version::V2,
                    dir,
                    path: line.path.clone(),
                });
            }
        }
        Err(CgroupError::NoCpuController { pid })
    }

    /// The file that holds the quota (what an operator would `cat`).
    pub fn quota_file(&self) -> PathBuf {
        match self.version {
            Version::V1 => self.dir.join("cpu.cfs_quota_us"),
            Version::V2 => self.dir.join("cpu.max"),
        }
    }

    pub fn read_limit(&self) -> Result<CpuLimit, CgroupError> {
        match self.version {
            Version::V1 => {
                let qf = self.dir.join("cpu.cfs_quota_us");
                let pf = self.dir.join("cpu.cfs_period_us");
                let (q, p) = (read(&qf)?, read(&pf)?);
                let quota: i64 = q.parse().map_err(|_| CgroupError::Parse {
                    path: qf.clone(),
                    text: q.clone(),
                })?;
                let period: u64 = p
                    .parse()
                    .map_err(|_| CgroupError::Parse { path: pf, text: p })?;
                Ok(CpuLimit {
                    quota_us: u64::try_from(quota).ok(),
                    period_us: period,
                })
            }
            Version::V2 => {
                let f = self.dir.join("cpu.max");
                let text = read(&f)?;
                let bad = || CgroupError::Parse {
                    path: f.clone(),
                    text: text.clone(),
                };
                let (q, p) = text.split_once(' ').ok_or_else(bad)?;
                Ok(CpuLimit {
                    quota_us: if q == "max" {
                        None
                    } else {
                        Some(q.parse().map_err(|_| bad())?)
                    },
                    period_us: p.parse().map_err(|_| bad())?,
                })
            }
        }
    }

    /// Set the quota (the period is left as it is).
    pub fn write_quota(&self, quota_us: Option<u64>, period_us: u64) -> Result<(), CgroupError> {
        match self.version {
            Version::V1 => write(
                &self.dir.join("cpu.cfs_quota_us"),
                &quota_us.map_or_else(|| "-1".to_owned(), |q| q.to_string()),
            ),
            Version::V2 => write(
                &self.dir.join("cpu.max"),
                &format!(
                    "{} {period_us}",
                    quota_us.map_or_else(|| "max".to_owned(), |q| q.to_string())
                ),
            ),
        }
    }

    /// Every process in this cgroup (a throttle limits all of them).
    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        let f = self.dir.join("cgroup.procs");
        Ok(read(&f)?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_cgroup_lines() {
        // Lines of this host's /proc/self/mountinfo (hybrid layout).
        let text = "35 25 0:30 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755\n\
                    36 35 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                    37 35 0:32 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
                    45 35 0:40 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let m = cgroup_mounts(text);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0],
            (
                "/".into(),
                "/sys/fs/cgroup/cpu".into(),
                "cgroup".into(),
                "rw,cpu".into()
            )
        );
        assert_eq!(m[2].2, "cgroup2");
    }

    #[test]
    fn this_process_has_a_cpu_cgroup() {
        // Oracle: the kernel's own files. Root cgroups on v1 have cfs files only in
        // children, so only check that the lookup lands on an existing directory.
        match CpuCgroup::of_process(Path::new("/proc"), std::process::id()) {
            Ok(cg) => assert!(cg.dir.is_dir(), "{cg:?}"),
            Err(e) => eprintln!("SKIPPED: no cpu controller here: {e}"),
        }
    }
}
