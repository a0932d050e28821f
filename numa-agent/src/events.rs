//! The NDJSON event stream: one JSON object per line, schema documented in README.md.
use std::{
    io::{self, Write},
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::{
    errors::{NumaAccessError, NumaStealError},
    steal::StealReport,
    workload::Workload,
};

/// Converts `bpf_ktime_get_boot_ns()` values to wall-clock time. The offset between
/// CLOCK_REALTIME and CLOCK_BOOTTIME is taken once at start; a later `settimeofday`
/// shifts reported times by the same step, which is what an operator expects.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    realtime_minus_boot_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl BootClock {
    pub fn new() -> Self {
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            realtime_minus_boot_ns: real - boot,
        }
    }

    pub fn to_system_time(self, boot_ns: u64) -> SystemTime {
        let ns = i128::from(boot_ns) + self.realtime_minus_boot_ns;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns.max(0)).unwrap_or(u64::MAX))
    }

    pub fn rfc3339(self, boot_ns: u64) -> String {
        humantime::format_rfc3339_nanos(self.to_system_time(boot_ns)).to_string()
    }
}

impl Default for BootClock {
    fn default() -> Self {
        Self::new()
    }
}

/// A `NUMAStealError` as written to the stream.
#[derive(Debug, Serialize)]
pub struct StealEvent<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: String,
    #[serde(flatten)]
    pub error: &'a NumaStealError,
    /// Thread-group id of the moved thread; `null` if it exited before the agent looked.
    pub pid: Option<u32>,
    pub tid: u32,
    pub comm: &'a str,
    pub src_cpu: u32,
    pub dst_cpu: u32,
    /// `distance(stolen_from_node, current_node)` from the topology, if known.
    pub distance: Option<u32>,
    /// The thread in whose context the kernel moved the task (the waker, the
    /// balancer, the stopper): 0 is the idle task.
    pub actor_tid: u32,
    /// Who the event is charged to: process, cgroups, container, pod, QoS.
    pub workload: &'a Workload,
    pub message: String,
}

impl<'a> StealEvent<'a> {
    /// The event for `report`, charged to `workload`, at `timestamp`.
    pub fn new(report: &'a StealReport, workload: &'a Workload, timestamp: String) -> Self {
        let m = &report.migration;
        Self {
            kind: NumaStealError::TYPE,
            timestamp,
            error: &report.error,
            pid: report.pid,
            tid: m.tid,
            comm: &m.comm,
            src_cpu: m.src_cpu,
            dst_cpu: m.dst_cpu,
            distance: report.distance,
            actor_tid: m.actor_tid,
            workload,
            message: report.error.to_string(),
        }
    }
}

/// A `NUMAAccessError` as written to the stream: one per workload per window over
/// the threshold.
#[derive(Debug, Serialize)]
pub struct AccessEvent<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: String,
    #[serde(flatten)]
    pub error: &'a NumaAccessError,
    pub pid: u32,
    /// `null` if the process exited before the window closed.
    pub comm: Option<String>,
    /// `pid:<tgid>` until cgroup/container attribution names it better.
    pub workload: String,
    /// Which evidence decided: `page_alloc` or `sampled_faults` (README, access ratio).
    pub source: crate::access::AccessSource,
    /// Pages allocated in the window, local / remote to the allocating CPU's node.
    pub local_pages: u64,
    pub remote_pages: u64,
    /// Sampled faults resolved in the window, local / remote; `null` when the
    /// page-fault probe is not attached (never a 0 that was not measured).
    pub sampled_local: Option<u64>,
    pub sampled_remote: Option<u64>,
    pub window_seconds: f64,
    /// Share of the window the page-alloc probe was attached: 1 unless an allocation
    /// storm put it on the duty cycle, when the page counts cover only that share.
    pub page_alloc_share: f64,
    pub message: String,
}

/// Writes events as NDJSON; flushing is left to the caller (once per batch).
pub struct EventWriter<W: Write> {
    out: W,
}

impl<W: Write> EventWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    pub fn write<T: Serialize>(&mut self, event: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::sched_migrate::StealType;

    #[test]
    fn one_line_per_event_with_the_seed_fields() {
        let error = NumaStealError {
            stolen_from_node: Some(0),
            current_node: Some(1),
            resource_id: "task:9".into(),
            steal_type: StealType::Wakeup,
        };
        let event = StealEvent {
            kind: NumaStealError::TYPE,
            timestamp: "2026-12-03T00:00:00.000000000Z".into(),
            error: &error,
            pid: Some(8),
            tid: 9,
            comm: "w",
            src_cpu: 0,
            dst_cpu: 1,
            distance: Some(21),
            actor_tid: 3,
            workload: &Workload {
                pid: Some(8),
                command: "w".into(),
                cgroups: vec![],
                cgroup_source: crate::workload::CgroupSource::Kernel,
                name: "unattributed".into(),
                attribution: crate::cgroup::CgroupAttribution::unattributed(),
            },
            message: error.to_string(),
        };
        let mut w = EventWriter::new(Vec::new());
        w.write(&event).expect("write");
        w.write(&event).expect("write");
        let text = String::from_utf8(w.out).expect("utf8");
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(v["type"], "NUMAStealError");
        assert_eq!(
            (v["stolen_from_node"].as_u64(), v["current_node"].as_u64()),
            (Some(0), Some(1))
        );
        assert_eq!((v["pid"].as_u64(), v["tid"].as_u64()), (Some(8), Some(9)));
        assert_eq!(v["steal_type"], "wakeup");
        assert_eq!(v["workload"]["kind"], "unattributed");
        assert_eq!(v["workload"]["pod_uid"], serde_json::Value::Null);
    }

    #[test]
    fn boot_clock_is_close_to_now() {
        let clock = BootClock::new();
        let now_boot = u64::try_from(clock_ns(libc::CLOCK_BOOTTIME)).expect("positive");
        let t = clock.to_system_time(now_boot);
        let skew = SystemTime::now().duration_since(t).unwrap_or_default();
        assert!(skew < Duration::from_secs(1), "skew {skew:?}");
    }
}
