//! `numa-agent attach`: the sensor scoped to one workload, without a daemon. This
//! module holds what is independent of the terminal: the target, per-node CPU time
//! sampling, and the per-interval state the live view and `--json` both render.
pub mod target;
pub mod view;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    errors::node_label,
    steal::StealReport,
    topology::{NodeId, Topology, format_cpulist},
};

/// How many recent NUMA errors the view keeps.
pub const RECENT: usize = 50;

/// CPU time of the target's threads per NUMA node, sampled from /proc.
///
/// Each thread's run time comes from `/proc/PID/task/TID/schedstat` (first field,
/// nanoseconds on a CPU; fs/proc/base.c proc_pid_schedstat()) and is charged to the
/// node of the CPU it last ran on (`processor`, field 39 of .../stat). A thread that
/// moved during the interval has all of that interval's time charged to where it is
/// at the sample: exact for threads that stay put, approximate for those that move.
pub struct CpuSampler {
    proc_root: PathBuf,
    last: HashMap<u32, u64>,
    primed: bool,
}

/// One thread's sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadSample {
    pub run_ns: u64,
    pub cpu: u32,
}

/// Parse `schedstat` ("run_ns wait_ns slices") and `stat` (field 39, `processor`).
pub fn parse_thread(schedstat: &str, stat: &str) -> Option<ThreadSample> {
    let run_ns = schedstat.split_whitespace().next()?.parse().ok()?;
    // Fields after the comm's closing parenthesis start at field 3 (state).
    let after = &stat[stat.rfind(')')? + 1..];
    let cpu = after.split_whitespace().nth(39 - 3)?.parse().ok()?;
    Some(ThreadSample { run_ns, cpu })
}

impl CpuSampler {
    pub fn new(proc_root: PathBuf) -> Self {
        Self {
            proc_root,
            last: HashMap::new(),
            primed: false,
        }
    }

    /// Nanoseconds of CPU time per node since the previous call (the first call only
    /// records where each thread stands). Threads born in between count from zero.
    pub fn sample(
        &mut self,
        tgids: &BTreeSet<u32>,
        topology: &Topology,
    ) -> BTreeMap<Option<NodeId>, u64> {
        let mut now = HashMap::new();
        let mut per_node = BTreeMap::new();
        for tgid in tgids {
            let task_dir = self.proc_root.join(tgid.to_string()).join("task");
            let Ok(tasks) = fs::read_dir(&task_dir) else {
                continue;
            };
            for task in tasks.flatten() {
                let Some(tid) = task
                    .file_name()
                    .to_str()
                    .and_then(|t| t.parse::<u32>().ok())
                else {
                    continue;
                };
                let read = |f: &str| fs::read_to_string(task.path().join(f)).ok();
                let (Some(schedstat), Some(stat)) = (read("schedstat"), read("stat")) else {
                    continue;
                };
                let Some(s) = parse_thread(&schedstat, &stat) else {
                    continue;
                };
                now.insert(tid, s.run_ns);
                let before = match self.last.get(&tid) {
                    Some(&ns) => ns,
                    None if self.primed => 0,
                    None => s.run_ns,
                };
                *per_node.entry(topology.node_of_cpu(s.cpu)).or_insert(0) +=
                    s.run_ns.saturating_sub(before);
            }
        }
        self.last = now;
        self.primed = true;
        per_node
    }
}

/// How the view orders its tables (the `s` key cycles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Node,
    CpuTime,
    Migrations,
}

impl SortKey {
    pub fn next(self) -> Self {
        match self {
            Self::Node => Self::CpuTime,
            Self::CpuTime => Self::Migrations,
            Self::Migrations => Self::Node,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::CpuTime => "CPU time",
            Self::Migrations => "migrations",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeRow {
    pub node: Option<NodeId>,
    pub cpus: String,
    pub cpu_seconds: f64,
    pub cpu_seconds_total: f64,
    pub migrations_in: u64,
    pub migrations_out: u64,
}

/// (from node, to node) of a migration; `None` is a CPU in no node.
pub type NodePair = (Option<NodeId>, Option<NodeId>);

/// One direction of cross-node movement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairCount {
    pub last: u64,
    pub total: u64,
    current: u64,
}

/// Everything the live view shows, updated per record and per interval.
pub struct AttachState {
    pub target: String,
    pub pids: BTreeSet<u32>,
    pub nodes: Vec<NodeRow>,
    pub pairs: BTreeMap<NodePair, PairCount>,
    pub recent: VecDeque<String>,
    pub errors_total: u64,
    pub sort: SortKey,
    pub elapsed_seconds: u64,
    pub last_interval_seconds: f64,
    /// Pages placed for the target in the interval being closed, (local, remote), from
    /// the page-allocation probe; `None` when it was not read (never a made-up 0).
    pub accesses: Option<(u64, u64)>,
}

/// What `--json` writes once per interval (schema in README.md).
#[derive(Debug, Serialize)]
pub struct IntervalRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: String,
    pub target: String,
    pub pids: Vec<u32>,
    pub interval_seconds: f64,
    pub nodes: Vec<IntervalNode>,
    pub migrations: Vec<IntervalPair>,
    /// Pages placed for the target in the interval on its CPU's node (`local`) or another
    /// node (`remote`), from kmem:mm_page_alloc; `null` when not read.
    pub local_accesses: Option<u64>,
    pub remote_accesses: Option<u64>,
    pub remote_access_ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct IntervalNode {
    pub node: Option<NodeId>,
    pub cpu_seconds: f64,
    pub migrations_in: u64,
    pub migrations_out: u64,
}

#[derive(Debug, Serialize)]
pub struct IntervalPair {
    pub from_node: Option<NodeId>,
    pub to_node: Option<NodeId>,
    pub count: u64,
}

impl AttachState {
    pub fn new(target: String, topology: &Topology) -> Self {
        Self {
            target,
            pids: BTreeSet::new(),
            nodes: topology
                .nodes
                .iter()
                .map(|n| NodeRow {
                    node: Some(n.id),
                    cpus: if n.cpus.is_empty() {
                        "-".into()
                    } else {
                        format_cpulist(&n.cpus)
                    },
                    ..NodeRow::default()
                })
                .collect(),
            pairs: BTreeMap::new(),
            recent: VecDeque::new(),
            errors_total: 0,
            sort: SortKey::Node,
            elapsed_seconds: 0,
            last_interval_seconds: 0.0,
            accesses: None,
        }
    }

    fn row(&mut self, node: Option<NodeId>) -> &mut NodeRow {
        if let Some(i) = self.nodes.iter().position(|r| r.node == node) {
            return &mut self.nodes[i];
        }
        self.nodes.push(NodeRow {
            node,
            cpus: "?".into(),
            ..NodeRow::default()
        });
        self.nodes.last_mut().expect("just pushed")
    }

    /// A NUMAStealError of the target, with its wall-clock time for the list.
    pub fn record_steal(&mut self, report: &StealReport, time: &str) {
        let (from, to) = (report.error.stolen_from_node, report.error.current_node);
        self.pairs.entry((from, to)).or_default().current += 1;
        self.errors_total += 1;
        // `HH:MM:SS.mmm` of an RFC 3339 timestamp.
        let clock = time.get(11..23).unwrap_or(time);
        self.recent.push_front(format!(
            "{clock} NUMAStealError {} ({}) {}->{} {}",
            report.error.resource_id,
            report.migration.comm,
            node_label(from),
            node_label(to),
            report.error.steal_type.as_str()
        ));
        self.recent.truncate(RECENT);
    }

    /// Close an interval of `seconds` with the CPU time sampled for it.
    pub fn end_interval(
        &mut self,
        cpu_ns: &BTreeMap<Option<NodeId>, u64>,
        seconds: f64,
        timestamp: String,
    ) -> IntervalRecord {
        for row in &mut self.nodes {
            row.cpu_seconds = 0.0;
            row.migrations_in = 0;
            row.migrations_out = 0;
        }
        for (node, ns) in cpu_ns {
            let row = self.row(*node);
            row.cpu_seconds = *ns as f64 / 1e9;
            row.cpu_seconds_total += *ns as f64 / 1e9;
        }
        let mut migrations = Vec::new();
        let pairs: Vec<_> = self.pairs.keys().copied().collect();
        for (from, to) in pairs {
            let count = {
                let p = self.pairs.get_mut(&(from, to)).expect("key");
                p.last = std::mem::take(&mut p.current);
                p.total += p.last;
                p.last
            };
            self.row(from).migrations_out += count;
            self.row(to).migrations_in += count;
            if count > 0 {
                migrations.push(IntervalPair {
                    from_node: from,
                    to_node: to,
                    count,
                });
            }
        }
        self.last_interval_seconds = seconds;
        IntervalRecord {
            kind: "AttachInterval",
            timestamp,
            target: self.target.clone(),
            pids: self.pids.iter().copied().collect(),
            interval_seconds: seconds,
            nodes: self
                .nodes
                .iter()
                .map(|r| IntervalNode {
                    node: r.node,
                    cpu_seconds: r.cpu_seconds,
                    migrations_in: r.migrations_in,
                    migrations_out: r.migrations_out,
                })
                .collect(),
            migrations,
            local_accesses: self.accesses.map(|a| a.0),
            remote_accesses: self.accesses.map(|a| a.1),
            remote_access_ratio: self
                .accesses
                .filter(|(l, r)| l + r > 0)
                .map(|(l, r)| r as f64 / (l + r) as f64),
        }
    }

    /// Node rows in the current sort order (largest first for the measures).
    pub fn sorted_nodes(&self) -> Vec<&NodeRow> {
        let mut rows: Vec<&NodeRow> = self.nodes.iter().collect();
        match self.sort {
            SortKey::Node => rows.sort_by_key(|r| r.node.unwrap_or(u32::MAX)),
            SortKey::CpuTime => rows.sort_by(|a, b| b.cpu_seconds.total_cmp(&a.cpu_seconds)),
            SortKey::Migrations => {
                rows.sort_by_key(|r| std::cmp::Reverse(r.migrations_in + r.migrations_out))
            }
        }
        rows
    }

    /// Migration pairs in the current sort order.
    pub fn sorted_pairs(&self) -> Vec<(NodePair, PairCount)> {
        let mut pairs: Vec<_> = self.pairs.iter().map(|(k, v)| (*k, *v)).collect();
        if self.sort != SortKey::Node {
            pairs.sort_by_key(|(_, c)| std::cmp::Reverse((c.last, c.total)));
        }
        pairs
    }
}

/// Where `/proc` is, for the sampler and the target (tests point it elsewhere).
pub fn default_proc_root() -> &'static Path {
    Path::new("/proc")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        errors::NumaStealError,
        sensors::sched_migrate::{Migration, StealType},
        topology::Node,
    };

    fn topology() -> Topology {
        Topology::from_parts(
            vec![Node::new(0, vec![0]), Node::new(1, vec![1])],
            BTreeMap::new(),
            "test",
        )
    }

    fn report(from: u32, to: u32) -> StealReport {
        StealReport {
            error: NumaStealError {
                stolen_from_node: Some(from),
                current_node: Some(to),
                resource_id: "task:7".into(),
                steal_type: StealType::Forced,
            },
            migration: Migration {
                boot_ns: 0,
                tid: 7,
                src_cpu: from,
                dst_cpu: to,
                src_node: Some(from),
                dst_node: Some(to),
                steal_type: StealType::Forced,
                actor_tid: 1,
                actor_tgid: 1,
                tgid: Some(7),
                cgroup_ids: Default::default(),
                comm: "w".into(),
            },
            pid: Some(7),
            distance: Some(21),
        }
    }

    #[test]
    fn intervals_count_pairs_and_nodes() {
        let mut s = AttachState::new("pid 7".into(), &topology());
        for _ in 0..3 {
            s.record_steal(&report(0, 1), "2026-12-03T16:00:00.123456789Z");
        }
        s.record_steal(&report(1, 0), "2026-12-03T16:00:00.200000000Z");
        let cpu = BTreeMap::from([(Some(0), 250_000_000), (Some(1), 500_000_000)]);
        let rec = s.end_interval(&cpu, 1.0, "t".into());
        s.sort = SortKey::CpuTime;
        assert_eq!(s.sorted_nodes()[0].node, Some(1), "node 1 ran longer");
        s.sort = SortKey::Node;
        assert_eq!(s.sorted_nodes()[0].node, Some(0));
        assert_eq!(rec.migrations.len(), 2);
        assert_eq!(
            (
                rec.migrations[0].from_node,
                rec.migrations[0].to_node,
                rec.migrations[0].count
            ),
            (Some(0), Some(1), 3)
        );
        assert_eq!(
            (rec.nodes[0].migrations_out, rec.nodes[0].migrations_in),
            (3, 1)
        );
        assert_eq!(rec.nodes[1].cpu_seconds, 0.5);
        assert_eq!(rec.remote_access_ratio, None);
        assert_eq!(
            s.recent[0],
            "16:00:00.200 NUMAStealError task:7 (w) 1->0 forced"
        );
        // The next interval starts from zero but totals carry on.
        let rec = s.end_interval(&BTreeMap::new(), 1.0, "t".into());
        assert!(rec.migrations.is_empty());
        assert_eq!(s.pairs[&(Some(0), Some(1))].total, 3);
        let json = serde_json::to_value(&rec).expect("json");
        assert_eq!(json["type"], "AttachInterval");
        assert!(json["remote_accesses"].is_null());
    }

    #[test]
    fn thread_files_parse_and_sampler_sees_own_cpu_time() {
        let stat = "42 (a b) c) R 1 42 42 0 -1 4194304 100 0 0 0 5 3 0 0 20 0 1 0 100 1000 10 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_thread("123456 7 8\n", stat),
            Some(ThreadSample {
                run_ns: 123456,
                cpu: 1
            })
        );
        let mut sampler = CpuSampler::new("/proc".into());
        let me = BTreeSet::from([std::process::id()]);
        let t = Topology::from_parts(
            vec![Node::new(0, (0..1024).collect())],
            BTreeMap::new(),
            "test",
        );
        assert!(
            sampler.sample(&me, &t).values().all(|&ns| ns == 0),
            "first sample only primes"
        );
        // Spin until the kernel's own per-thread CPU clock (CLOCK_THREAD_CPUTIME_ID)
        // has advanced 50 ms, whatever else the machine runs.
        let thread_ns = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid clock id and out-pointer.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
        };
        let start = thread_ns();
        while thread_ns() - start < 50_000_000 {
            std::hint::black_box(0u64);
        }
        let ns: u64 = sampler.sample(&me, &t).values().sum();
        // sum_exec_runtime behind schedstat may lag the clock by up to a tick.
        assert!(
            ns >= 40_000_000,
            "sampled {ns} ns for 50 ms of thread CPU time"
        );
    }
}
