//! Workload identity: thread -> process (tgid) -> cgroup -> container -> pod.
//!
//! What is captured where, and why:
//! - The kernel records, per process, the cgroup id on the v1 hierarchy attribution
//!   reads and on cgroup2 (TASKS map: inherited at fork in `task_newtask`, updated by
//!   `cgroup_attach_task`, seeded from /proc for processes alive at start) and copies
//!   them into each migration record. So a process that exits before the agent reads
//!   its records is still charged to its cgroup: nothing about it is looked up in /proc.
//! - Userspace maps cgroup id -> path by walking the mounted hierarchy (`cgroup::IdPaths`);
//!   ids are never reused within a boot, so that cache needs no exec/exit invalidation.
//! - Only when the kernel had no id (a process that existed before the agent and was
//!   evicted from TASKS, or a child created with clone3 CLONE_INTO_CGROUP) does the agent
//!   read `<proc>/<tgid>/cgroup`; such an event is marked `cgroup_source: "proc"`, or
//!   `"none"` when the process is already gone.
//!
//! Limits: the id is the process's (its leader's entry); a single thread moved on its
//! own (v1 `tasks` file, v2 threaded cgroups) is charged to its process's cgroup. A
//! cgroup removed before the agent first resolved its id is reported by id, without a
//! path, and unattributed.
use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use numa_common::CGROUP_SLOTS;
use prometheus::{
    IntCounterVec, IntGaugeVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use serde::Serialize;
use thiserror::Error;

use crate::{
    cgroup::{
        self, CgroupAttribution, CgroupError, CgroupLayout, CgroupMode, IdPaths, Tracked,
        WorkloadKind,
    },
    pidns::{self, PidNsError},
    sensors::{AttributionSetup, sched_migrate::Migration},
};

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("checking --proc-root")]
    ProcRoot(#[source] PidNsError),
    #[error("detecting the cgroup mode")]
    Mounts(#[source] CgroupError),
    #[error("reading the agent's own cgroups from {path}")]
    OwnCgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The agent's host tgid (refusing a `/proc` of another pid namespace) and the cgroup
/// hierarchies to follow, from this mount namespace's `/proc/self/mounts` and the
/// agent's own `/proc/<tgid>/cgroup` (which gives each hierarchy's id).
pub fn attribution_setup(proc_root: &Path) -> Result<AttributionSetup, SetupError> {
    let agent_tgid = pidns::host_view(proc_root).map_err(SetupError::ProcRoot)?;
    let layout =
        CgroupLayout::detect(Path::new("/proc/self/mounts")).map_err(SetupError::Mounts)?;
    let path = proc_root.join(format!("{agent_tgid}/cgroup"));
    let own = fs::read_to_string(&path).map_err(|source| SetupError::OwnCgroup {
        path: path.clone(),
        source,
    })?;
    let tracked = Tracked::new(&layout, &own);
    let followed: Vec<String> = tracked
        .slots
        .iter()
        .flatten()
        .map(|h| format!("{} (hierarchy {}) at {}", h.name, h.id, h.mount.display()))
        .collect();
    log::info!(
        "cgroup mode {}: attributing from {}",
        layout.mode.as_str(),
        if followed.is_empty() {
            "nothing".into()
        } else {
            followed.join(", ")
        }
    );
    Ok(AttributionSetup {
        agent_tgid,
        tracked,
    })
}

/// A cgroup a process is in, on one tracked hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupRef {
    /// `memory`, `name=systemd` or `unified`.
    pub hierarchy: String,
    /// Cgroup id (kernfs id = inode of its directory); 0 when not known.
    pub id: u64,
    /// Path relative to the hierarchy root; `null` if the id could not be resolved.
    pub path: Option<String>,
}

/// Where the cgroup ids of an event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupSource {
    /// Recorded by the kernel at event time.
    Kernel,
    /// Read from `<proc>/<tgid>/cgroup` when the record arrived.
    Proc,
    /// Neither: the process was gone and the kernel had not recorded it.
    None,
}

/// Who an event is charged to. Threads always fold into their process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Host thread-group id; `null` only if neither the kernel nor /proc knew it.
    pub pid: Option<u32>,
    /// The process's command (its leader's comm).
    pub command: String,
    pub cgroups: Vec<CgroupRef>,
    pub cgroup_source: CgroupSource,
    #[serde(flatten)]
    pub attribution: CgroupAttribution,
    /// The bounded, cgroup-derived name used in metrics (see [`workload_name`]).
    pub name: String,
}

/// `pod_uid/container_id[..12]`, `pod_uid`, `container_id[..12]`, the systemd unit, or
/// `unattributed`: one per container / pod / unit, never per process.
pub fn workload_name(a: &CgroupAttribution) -> String {
    let short = |id: &Option<String>| {
        id.as_deref()
            .map_or("", |i| &i[..i.len().min(12)])
            .to_owned()
    };
    match a.kind {
        WorkloadKind::PodContainer => format!(
            "{}/{}",
            a.pod_uid.as_deref().unwrap_or_default(),
            short(&a.container_id)
        ),
        WorkloadKind::Pod => a.pod_uid.clone().unwrap_or_default(),
        WorkloadKind::Container => short(&a.container_id),
        WorkloadKind::Unit => a.unit.clone().unwrap_or_default(),
        WorkloadKind::Unattributed => "unattributed".into(),
    }
}

pub struct WorkloadResolver {
    id_paths: IdPaths,
    proc_root: PathBuf,
}

impl WorkloadResolver {
    pub fn new(id_paths: IdPaths, proc_root: PathBuf) -> Self {
        Self {
            id_paths,
            proc_root,
        }
    }

    /// The workload of a migrated thread whose thread group is `pid`.
    pub fn resolve(&mut self, m: &Migration, pid: Option<u32>) -> Workload {
        let tracked = self.id_paths.tracked().clone();
        let mut ids = m.cgroup_ids;
        let mut paths: [Option<String>; CGROUP_SLOTS] = Default::default();
        for slot in 0..CGROUP_SLOTS {
            paths[slot] = self.id_paths.path(slot, ids[slot]);
        }
        let mut source = CgroupSource::Kernel;
        let missing = (0..CGROUP_SLOTS).any(|s| tracked.slots[s].is_some() && ids[s] == 0);
        if missing {
            source = CgroupSource::None;
            if let Some(text) = pid
                .and_then(|p| fs::read_to_string(self.proc_root.join(format!("{p}/cgroup"))).ok())
            {
                source = CgroupSource::Proc;
                let from_proc = tracked.paths_from_proc(&text);
                let proc_ids = tracked.ids_of(&from_proc);
                for slot in 0..CGROUP_SLOTS {
                    if ids[slot] == 0 {
                        ids[slot] = proc_ids[slot];
                        paths[slot] = from_proc[slot].clone();
                    }
                }
            } else if ids.iter().any(|&id| id != 0) {
                source = CgroupSource::Kernel;
            }
        }
        let (_, attribution) = cgroup::attribute(&paths);
        let cgroups = tracked
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, h)| {
                h.as_ref().map(|h| CgroupRef {
                    hierarchy: h.name.clone(),
                    id: ids[slot],
                    path: paths[slot].clone(),
                })
            })
            .collect();
        let command = match pid {
            Some(p) if p == m.tid => m.comm.clone(),
            Some(p) => fs::read_to_string(self.proc_root.join(format!("{p}/comm")))
                .map_or_else(|_| m.comm.clone(), |c| c.trim_end().to_owned()),
            None => m.comm.clone(),
        };
        Workload {
            pid,
            command,
            cgroups,
            cgroup_source: source,
            name: workload_name(&attribution),
            attribution,
        }
    }

    /// The directory whose existence says the workload is still there (for series
    /// removal); `None` for unattributed workloads, which never go.
    pub fn liveness_dir(&self, w: &Workload) -> Option<PathBuf> {
        if w.attribution.kind == WorkloadKind::Unattributed {
            return None;
        }
        let (slot, _) = cgroup::attribute(&std::array::from_fn(|s| {
            w.cgroups.get(s).and_then(|c| c.path.clone())
        }));
        let slot = slot?;
        let mount = &self.id_paths.tracked().slots[slot].as_ref()?.mount;
        let path = w.cgroups.get(slot)?.path.as_deref()?;
        Some(cgroup::join_cgroup(mount, path))
    }

    pub fn cached_ids(&self) -> usize {
        self.id_paths.len()
    }
}

/// Labels of a per-workload series: bounded by the workloads in scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    workload: String,
    kind: &'static str,
    pod_uid: String,
    container_id: String,
    qos: &'static str,
}

struct Series {
    steals: u64,
    liveness: Option<PathBuf>,
    gone_since: Option<Instant>,
}

/// Per-workload counters. A counter only grows while its workload exists: processes
/// never own a series, so one exiting takes nothing away. A workload whose cgroup
/// directory has been gone for `grace` loses its series (checked at scrape time and
/// at most every 10 s while recording).
#[derive(Clone)]
pub struct WorkloadMetrics {
    inner: Arc<Mutex<Inner>>,
    grace: Duration,
    mode: CgroupMode,
    descs: Vec<Desc>,
}

struct Inner {
    series: HashMap<Key, Series>,
    last_sweep: Instant,
}

fn kind_label(k: WorkloadKind) -> &'static str {
    match k {
        WorkloadKind::PodContainer => "pod_container",
        WorkloadKind::Pod => "pod",
        WorkloadKind::Container => "container",
        WorkloadKind::Unit => "unit",
        WorkloadKind::Unattributed => "unattributed",
    }
}

fn steals_vec() -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(
        Opts::new(
            "numa_workload_steal_errors_total",
            "NUMAStealError events per workload (container, pod, systemd unit); processes fold into their workload",
        ),
        &["workload", "kind", "pod_uid", "container_id", "qos"],
    )
}

fn mode_vec() -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(
        Opts::new(
            "numa_cgroup_mode",
            "1 for the cgroup mode detected from /proc/mounts (v2, hybrid, v1, none)",
        ),
        &["mode"],
    )
}

fn series_vec() -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(
        Opts::new(
            "numa_workload_series",
            "Workloads with a per-workload series (including ones gone, within the grace period)",
        ),
        &[],
    )
}

impl WorkloadMetrics {
    pub fn new(mode: CgroupMode, grace: Duration) -> Result<Self, prometheus::Error> {
        let descs = [
            steals_vec()?.desc(),
            mode_vec()?.desc(),
            series_vec()?.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                series: HashMap::new(),
                last_sweep: Instant::now(),
            })),
            grace,
            mode,
            descs,
        })
    }

    pub fn record_steal(&self, w: &Workload, liveness: Option<PathBuf>) {
        let a = &w.attribution;
        let key = Key {
            workload: w.name.clone(),
            kind: kind_label(a.kind),
            pod_uid: a.pod_uid.clone().unwrap_or_default(),
            container_id: a.container_id.clone().unwrap_or_default(),
            qos: a.qos.map_or("", |q| q.as_str()),
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let s = inner.series.entry(key).or_insert(Series {
            steals: 0,
            liveness: None,
            gone_since: None,
        });
        s.steals += 1;
        if s.liveness.is_none() {
            s.liveness = liveness;
        }
        s.gone_since = None;
        if inner.last_sweep.elapsed() > Duration::from_secs(10) {
            self.sweep(&mut inner);
        }
    }

    fn sweep(&self, inner: &mut Inner) {
        inner.last_sweep = Instant::now();
        let grace = self.grace;
        inner.series.retain(|_, s| {
            let Some(dir) = &s.liveness else { return true };
            if dir.is_dir() {
                s.gone_since = None;
                return true;
            }
            let since = *s.gone_since.get_or_insert_with(Instant::now);
            since.elapsed() < grace
        });
    }

    /// Number of per-workload series currently exported.
    pub fn series(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .series
            .len()
    }

    fn gather(&self) -> Result<Vec<MetricFamily>, prometheus::Error> {
        let steals = steals_vec()?;
        let n = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            self.sweep(&mut inner);
            for (k, s) in &inner.series {
                steals
                    .with_label_values(&[
                        k.workload.as_str(),
                        k.kind,
                        &k.pod_uid,
                        &k.container_id,
                        k.qos,
                    ])
                    .inc_by(s.steals);
            }
            inner.series.len()
        };
        let mode = mode_vec()?;
        mode.with_label_values(&[self.mode.as_str()]).set(1);
        let series = series_vec()?;
        series.with_label_values(&[] as &[&str]).set(n as i64);
        let mut families = [steals.collect(), mode.collect(), series.collect()].concat();
        // A family without samples is not valid exposition text.
        families.retain(|f| !f.get_metric().is_empty());
        Ok(families)
    }
}

collector_from_gather!(WorkloadMetrics, "workload counters");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::path;

    fn workload(cgroup_path: &str, liveness: &Path) -> (Workload, Option<PathBuf>) {
        let attribution = path::parse(cgroup_path);
        (
            Workload {
                pid: Some(1),
                command: "x".into(),
                cgroups: vec![],
                cgroup_source: CgroupSource::Kernel,
                name: workload_name(&attribution),
                attribution,
            },
            Some(liveness.to_owned()),
        )
    }

    #[test]
    fn counters_fold_processes_and_series_go_after_grace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("cg");
        fs::create_dir(&live).expect("mkdir");
        let m = WorkloadMetrics::new(CgroupMode::Hybrid, Duration::from_millis(200)).expect("new");
        let id = "3f5c1a2b4d6e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";
        let p = format!("/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011/{id}");
        for pid in 0..50 {
            let (mut w, l) = workload(&p, &live);
            w.pid = Some(pid); // 50 different processes: one workload
            m.record_steal(&w, l);
        }
        let text = render(&m);
        assert!(
            text.contains(r#"numa_cgroup_mode{mode="hybrid"} 1"#),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("numa_workload_steal_errors_total{"))
            .expect("a series");
        assert!(line.ends_with(" 50"), "{line}");
        assert!(
            line.contains(r#"qos="Burstable""#) && line.contains(id),
            "{line}"
        );
        assert_eq!(m.series(), 1);
        // The cgroup goes: the series stays through the grace period, then is dropped.
        fs::remove_dir(&live).expect("rmdir");
        assert!(render(&m).contains(" 50"));
        std::thread::sleep(Duration::from_millis(250));
        let text = render(&m);
        assert!(
            !text.contains("numa_workload_steal_errors_total{"),
            "{text}"
        );
        assert_eq!(m.series(), 0);
    }

    /// A hierarchy in a temporary directory: ids are directory inodes, as in cgroupfs.
    #[test]
    fn resolution_from_the_kernel_id_then_proc_then_nothing() {
        use std::os::unix::fs::MetadataExt as _;

        use numa_common::CGROUP_SLOT_V1;

        use crate::{
            cgroup::{Hierarchy, Tracked},
            sensors::sched_migrate::StealType,
        };
        let mount = tempfile::tempdir().expect("tempdir");
        let uid = "0f1e2d3c-4b5a-6978-8a9b-acbdcedf0011";
        let id = "3f5c1a2b4d6e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";
        let rel = format!("/kubepods/besteffort/pod{uid}/{id}");
        let dir = cgroup::join_cgroup(mount.path(), &rel);
        fs::create_dir_all(&dir).expect("mkdir");
        let ino = fs::metadata(&dir).expect("stat").ino();
        let mut tracked = Tracked::default();
        tracked.slots[CGROUP_SLOT_V1] = Some(Hierarchy {
            name: "memory".into(),
            id: 4,
            mount: mount.path().to_owned(),
        });
        let proc_root = tempfile::tempdir().expect("tempdir");
        let mut r = WorkloadResolver::new(IdPaths::new(tracked), proc_root.path().to_owned());
        let m = Migration {
            boot_ns: 1,
            tid: 11,
            src_cpu: 0,
            dst_cpu: 1,
            src_node: Some(0),
            dst_node: Some(1),
            steal_type: StealType::Forced,
            actor_tid: 3,
            actor_tgid: 3,
            tgid: Some(10),
            comm: "worker".into(),
            cgroup_ids: [ino, 0],
        };
        // The kernel's id: no /proc needed (there is none for pid 10 here).
        let w = r.resolve(&m, Some(10));
        assert_eq!(w.cgroup_source, CgroupSource::Kernel);
        assert_eq!(w.attribution.kind, WorkloadKind::PodContainer);
        assert_eq!(w.cgroups[0].path.as_deref(), Some(rel.as_str()));
        assert_eq!(
            (w.command.as_str(), w.name.as_str()),
            ("worker", &*format!("{uid}/3f5c1a2b4d6e"))
        );
        assert_eq!(r.liveness_dir(&w), Some(dir.clone()));
        // No id from the kernel, process alive: /proc decides.
        fs::create_dir(proc_root.path().join("10")).expect("mkdir");
        fs::write(
            proc_root.path().join("10/cgroup"),
            format!("4:memory:{rel}\n0::/\n"),
        )
        .expect("write");
        fs::write(proc_root.path().join("10/comm"), "server\n").expect("write");
        let w = r.resolve(
            &Migration {
                cgroup_ids: [0; CGROUP_SLOTS],
                ..m.clone()
            },
            Some(10),
        );
        assert_eq!(
            (w.cgroup_source, w.cgroups[0].id),
            (CgroupSource::Proc, ino)
        );
        assert_eq!(
            (w.attribution.kind, w.command.as_str()),
            (WorkloadKind::PodContainer, "server")
        );
        // Neither: unattributed, never a guess.
        let w = r.resolve(
            &Migration {
                cgroup_ids: [0; CGROUP_SLOTS],
                ..m.clone()
            },
            Some(99),
        );
        assert_eq!(
            (w.cgroup_source, w.attribution.kind),
            (CgroupSource::None, WorkloadKind::Unattributed)
        );
        assert_eq!(r.liveness_dir(&w), None);
        // An id of a cgroup that no longer exists: reported by id, unattributed.
        let w = r.resolve(
            &Migration {
                cgroup_ids: [ino + 1_000_000, 0],
                ..m
            },
            Some(10),
        );
        assert_eq!(
            (w.cgroups[0].id, w.cgroups[0].path.clone()),
            (ino + 1_000_000, None)
        );
        assert_eq!(w.attribution.kind, WorkloadKind::Unattributed);
    }

    fn render(m: &WorkloadMetrics) -> String {
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &m.collect(), &mut buf)
            .expect("encode");
        String::from_utf8(buf).expect("utf8")
    }
}
