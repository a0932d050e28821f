//! Per-workload, per-window evaluation: what happened in one window (steals, memory
//! accesses by node pair, lost events), whether the window is complete enough to judge,
//! and the debounce streak that gates actions.
//!
//! Rules:
//! - A window's steal count is *incomplete* when the kernel lost any migration record in
//!   that window (`numa_events_lost_total` grew): a count that may be low is not judged.
//! - A window's access ratio is *incomplete* with fewer than `minSamples` samples or with
//!   any lost access sample.
//! - A complete violating window extends the streak; a complete clean window resets it;
//!   an incomplete window does neither, so it can never trigger an action on its own.
//! - An action is due when the streak reaches `debounce`.
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant, SystemTime},
};

use super::spec::ErrorType;
use crate::{errors::NumaStealError, topology::NodeId};

/// What was accessed in a [`AccessSample`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Memory,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
        }
    }
}

/// Memory accesses of one workload, counted by (CPU node, memory node): the input the
/// remote-access sensor (issue 4) is to feed via [`WindowAcc::record_access`]. No kernel
/// source produces it yet; until one does, `maxCrossAccess` is validated and evaluated
/// against whatever is fed here (tests use synthetic windows) and is otherwise inert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessSample {
    pub pid: u32,
    /// Node of the CPU that made the accesses.
    pub source_node: NodeId,
    /// Node of the memory accessed.
    pub target_node: NodeId,
    pub resource: ResourceType,
    pub count: u64,
}

/// One workload's observations in the current window.
#[derive(Clone, Debug, Default)]
pub struct WorkloadWindow {
    pub steals: u64,
    pub last_steal: Option<NumaStealError>,
    pub accesses: BTreeMap<(NodeId, NodeId, ResourceType), u64>,
}

impl WorkloadWindow {
    pub fn samples(&self) -> u64 {
        self.accesses.values().sum()
    }

    /// Cross-node share of the accesses, `None` without any.
    pub fn cross_ratio(&self) -> Option<f64> {
        let total = self.samples();
        let remote: u64 = self
            .accesses
            .iter()
            .filter(|((s, t, _), _)| s != t)
            .map(|(_, c)| c)
            .sum();
        (total > 0).then(|| remote as f64 / total as f64)
    }

    /// The remote (source, target, resource) with the most accesses.
    pub fn dominant_remote(&self) -> Option<(NodeId, NodeId, ResourceType)> {
        self.accesses
            .iter()
            .filter(|((s, t, _), _)| s != t)
            .max_by_key(|(_, c)| **c)
            .map(|(k, _)| *k)
    }
}

/// The current window of one policy: every workload's observations plus what was lost.
#[derive(Debug)]
pub struct WindowAcc {
    pub start: Instant,
    pub start_wall: SystemTime,
    pub length: Duration,
    pub workloads: HashMap<u32, WorkloadWindow>,
    pub lost_steals: u64,
    pub lost_accesses: u64,
}

impl WindowAcc {
    pub fn new(start: Instant, length: Duration) -> Self {
        Self {
            start,
            start_wall: SystemTime::now(),
            length,
            workloads: HashMap::new(),
            lost_steals: 0,
            lost_accesses: 0,
        }
    }

    pub fn end(&self) -> Instant {
        self.start + self.length
    }

    pub fn record_steal(&mut self, pid: u32, error: &NumaStealError) {
        let w = self.workloads.entry(pid).or_default();
        w.steals += 1;
        w.last_steal = Some(error.clone());
    }

    pub fn record_access(&mut self, s: AccessSample) {
        *self
            .workloads
            .entry(s.pid)
            .or_default()
            .accesses
            .entry((s.source_node, s.target_node, s.resource))
            .or_insert(0) += s.count;
    }

    /// Close this window and open the next one, aligned to the window grid (a late
    /// tick does not shift later windows). Returns the closed window.
    pub fn roll(&mut self, now: Instant) -> Self {
        let mut next_start = self.end();
        while next_start + self.length <= now {
            next_start += self.length;
        }
        let elapsed = next_start.saturating_duration_since(self.start);
        let next = Self {
            start: next_start,
            start_wall: self.start_wall + elapsed,
            ..Self::new(next_start, self.length)
        };
        std::mem::replace(self, next)
    }
}

/// Outcome of judging one workload on one check in one closed window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    Violating,
    Clean,
    Incomplete,
}

/// Consecutive complete violating windows of one (workload, error type).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Streak {
    pub count: u32,
    /// Start of the first window of the current streak.
    pub since: Option<SystemTime>,
}

#[derive(Debug, Default)]
pub struct Streaks {
    map: HashMap<(u32, ErrorType), Streak>,
}

impl Streaks {
    /// Apply one window's judgement; returns the streak after it.
    pub fn update(
        &mut self,
        pid: u32,
        error: ErrorType,
        judgement: Judgement,
        window_start: SystemTime,
    ) -> Streak {
        let s = self.map.entry((pid, error)).or_default();
        match judgement {
            Judgement::Violating => {
                s.count += 1;
                s.since.get_or_insert(window_start);
            }
            Judgement::Clean => *s = Streak::default(),
            Judgement::Incomplete => {}
        }
        *s
    }

    /// Forget workloads that are gone.
    pub fn retain(&mut self, alive: impl Fn(u32) -> bool) {
        self.map.retain(|(pid, _), _| alive(*pid));
    }
}

/// Judge steals against an allowance (`None`: unlimited).
pub fn judge_steals(steals: u64, allowance: Option<u64>, lost: u64) -> Judgement {
    match allowance {
        None => Judgement::Clean,
        Some(_) if lost > 0 => Judgement::Incomplete,
        Some(a) if steals > a => Judgement::Violating,
        Some(_) => Judgement::Clean,
    }
}

/// Judge an access window against `max` (0..=1).
pub fn judge_access(w: &WorkloadWindow, max: f64, min_samples: u64, lost: u64) -> Judgement {
    match w.cross_ratio() {
        _ if lost > 0 || w.samples() < min_samples => Judgement::Incomplete,
        Some(r) if r > max => Judgement::Violating,
        _ => Judgement::Clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pid: u32, s: NodeId, t: NodeId, count: u64) -> AccessSample {
        AccessSample {
            pid,
            source_node: s,
            target_node: t,
            resource: ResourceType::Memory,
            count,
        }
    }

    #[test]
    fn access_ratio_and_completeness_from_synthetic_windows() {
        let t0 = Instant::now();
        let mut acc = WindowAcc::new(t0, Duration::from_secs(1));
        acc.record_access(sample(7, 0, 0, 80));
        acc.record_access(sample(7, 0, 1, 15));
        acc.record_access(sample(7, 0, 2, 5));
        let w = &acc.workloads[&7];
        assert_eq!(w.samples(), 100);
        assert_eq!(w.cross_ratio(), Some(0.2));
        assert_eq!(w.dominant_remote(), Some((0, 1, ResourceType::Memory)));
        assert_eq!(judge_access(w, 0.15, 100, 0), Judgement::Violating);
        assert_eq!(
            judge_access(w, 0.20, 100, 0),
            Judgement::Clean,
            "equal is allowed"
        );
        assert_eq!(
            judge_access(w, 0.15, 101, 0),
            Judgement::Incomplete,
            "too few samples"
        );
        assert_eq!(
            judge_access(w, 0.15, 100, 1),
            Judgement::Incomplete,
            "lost samples"
        );
        assert_eq!(
            judge_access(&WorkloadWindow::default(), 0.0, 1, 0),
            Judgement::Incomplete
        );
        // 0% allows no remote access at all; 100% allows everything.
        assert_eq!(judge_access(w, 0.0, 1, 0), Judgement::Violating);
        assert_eq!(judge_access(w, 1.0, 1, 0), Judgement::Clean);
    }

    #[test]
    fn steal_judgement() {
        assert_eq!(judge_steals(6, Some(5), 0), Judgement::Violating);
        assert_eq!(
            judge_steals(5, Some(5), 0),
            Judgement::Clean,
            "maxSteals is inclusive"
        );
        assert_eq!(
            judge_steals(1, Some(0), 0),
            Judgement::Violating,
            "stealAllowed: false"
        );
        assert_eq!(judge_steals(1000, None, 0), Judgement::Clean, "unlimited");
        assert_eq!(judge_steals(6, Some(5), 1), Judgement::Incomplete);
    }

    #[test]
    fn debounce_streaks_ignore_incomplete_windows() {
        let mut s = Streaks::default();
        let e = ErrorType::StealLimitExceeded;
        let t = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(s.update(1, e, Judgement::Violating, t(10)).count, 1);
        // Incomplete windows alone never reach the debounce, nor break a streak.
        for i in 0..10 {
            assert_eq!(s.update(1, e, Judgement::Incomplete, t(11 + i)).count, 1);
            assert_eq!(s.update(2, e, Judgement::Incomplete, t(11 + i)).count, 0);
        }
        let st = s.update(1, e, Judgement::Violating, t(30));
        assert_eq!((st.count, st.since), (2, Some(t(10))));
        assert_eq!(s.update(1, e, Judgement::Clean, t(31)), Streak::default());
        assert_eq!(
            s.update(
                1,
                ErrorType::NumaAccessViolation,
                Judgement::Violating,
                t(32)
            )
            .count,
            1
        );
        s.retain(|pid| pid != 1);
        assert_eq!(s.update(1, e, Judgement::Incomplete, t(33)).count, 0);
    }

    #[test]
    fn windows_roll_on_a_fixed_grid() {
        let t0 = Instant::now();
        let len = Duration::from_millis(100);
        let mut acc = WindowAcc::new(t0, len);
        acc.record_steal(
            3,
            &NumaStealError {
                stolen_from_node: Some(0),
                current_node: Some(1),
                resource_id: "task:3".into(),
                steal_type: crate::sensors::sched_migrate::StealType::Forced,
            },
        );
        acc.lost_steals = 2;
        let closed = acc.roll(t0 + Duration::from_millis(350));
        assert_eq!(closed.workloads[&3].steals, 1);
        assert_eq!(closed.lost_steals, 2);
        assert_eq!(
            acc.start,
            t0 + Duration::from_millis(300),
            "skipped empty windows"
        );
        assert!(acc.workloads.is_empty() && acc.lost_steals == 0);
    }
}
