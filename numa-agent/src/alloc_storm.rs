//! Allocation storms: when the page-alloc probe would cost a CPU too much, it goes on
//! the page-fault sampler's duty cycle until the storm passes.
//!
//! The probe runs once per `mm_page_alloc` event on the host (any task, kernel ones
//! included); each run costs a fixed dispatch (README "Cost": ~100 ns here, whatever
//! the program does), so what it costs a CPU is its allocation rate times that.
//! Below `--alloc-storm-rate` allocations per second on every CPU (default 100000:
//! about 1% of a CPU at 100 ns) it counts every page. When one CPU goes over in a
//! measurement of at least [`MIN_MEASUREMENT`] (checks come every second), the probe
//! is taken off its hook until the next access window and then attached only for the
//! window's first part (`--fault-sample-duty`), like the sampler; the storm ends when
//! an attached part sees every CPU below half the rate. So a burst of fewer than
//! 0.9 x the rate allocations on one CPU never starts a storm and is counted whole
//! (a 64 MiB first touch is 16384).
//!
//! The switch is host-wide (a tracepoint is attached for every CPU or none). While
//! the probe is detached its pages are not counted: ratios stay what the attached
//! parts saw, page counts shrink by the share exported as `numa_page_alloc_duty` and
//! written in each access event (`page_alloc_share`).
use std::time::{Duration, Instant};

/// Default `--alloc-storm-rate`: allocations per second on one CPU.
pub const DEFAULT_STORM_RATE: u64 = 100_000;

/// How often the rate is checked while the probe counts every page.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Outside a storm, no measurement is shorter (a check right after a storm ended, or
/// one that came early): the baseline is kept and the next one spans both, so a burst
/// is always judged over most of a second. In a storm the measurement is the window's
/// attached part, however short.
pub const MIN_MEASUREMENT: Duration = Duration::from_millis(900);

/// A storm began or ended, with the busiest CPU of the measurement that decided it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Change {
    Began { cpu: usize, per_second: f64 },
    Ended { cpu: usize, per_second: f64 },
}

/// The storm state and how long the probe was attached in the current window.
#[derive(Debug)]
pub struct AllocStorm {
    /// Allocations per second on one CPU that make a storm; 0 never does.
    threshold: u64,
    storm: bool,
    /// Per-CPU run counts (numa-common `AllocRun::hits`) at the start of the
    /// measurement, and when it started.
    baseline: Option<(Instant, Vec<u64>)>,
    attached_since: Option<Instant>,
    attached_in_window: Duration,
    window_start: Instant,
}

impl AllocStorm {
    /// The probe is attached at `now`, counting every page.
    pub fn new(threshold: u64, now: Instant) -> Self {
        Self {
            threshold,
            storm: false,
            baseline: None,
            attached_since: Some(now),
            attached_in_window: Duration::ZERO,
            window_start: now,
        }
    }

    pub fn in_storm(&self) -> bool {
        self.storm
    }

    /// The probe went on (`true`) or off its hook at `now`.
    pub fn set_attached(&mut self, now: Instant, on: bool) {
        match (on, self.attached_since) {
            (true, None) => self.attached_since = Some(now),
            (false, Some(since)) => {
                self.attached_in_window += now.saturating_duration_since(since);
                self.attached_since = None;
            }
            _ => {}
        }
    }

    /// The share (0-1) of the window that ends at `now` the probe was attached; the
    /// next window starts.
    pub fn take_window_share(&mut self, now: Instant) -> f64 {
        let mut attached = std::mem::take(&mut self.attached_in_window);
        if let Some(since) = self.attached_since {
            attached += now.saturating_duration_since(since);
            self.attached_since = Some(now);
        }
        let length = now.saturating_duration_since(self.window_start);
        self.window_start = now;
        if length.is_zero() {
            return 1.0;
        }
        (attached.as_secs_f64() / length.as_secs_f64()).min(1.0)
    }

    /// Measure from `hits` at `now` on (the probe was just attached).
    pub fn rebase(&mut self, now: Instant, hits: Vec<u64>) {
        self.baseline = Some((now, hits));
    }

    /// The busiest CPU's allocations per second since the baseline, with the probe
    /// attached all that time, and whether that begins or ends a storm. Outside a
    /// storm call it on every check; in a storm at the end of each attached part.
    pub fn measure(&mut self, now: Instant, hits: Vec<u64>) -> Option<Change> {
        // In a storm, only a part the probe really was attached can tell: after a
        // failed re-attach the counts stand still, which would read as a quiet CPU and
        // end the storm with the probe off its hook. The next attach rebases.
        if self.storm && self.attached_since.is_none() {
            return None;
        }
        let Some((since, before)) = self.baseline.take() else {
            self.baseline = Some((now, hits));
            return None;
        };
        let elapsed = now.saturating_duration_since(since);
        if elapsed.is_zero() || (!self.storm && elapsed < MIN_MEASUREMENT) {
            self.baseline = Some((since, before));
            return None;
        }
        let (cpu, runs) = hits
            .iter()
            .zip(before.iter().chain(std::iter::repeat(&0)))
            .map(|(now, then)| now.saturating_sub(*then))
            .enumerate()
            .max_by_key(|&(_, runs)| runs)?;
        self.baseline = Some((now, hits));
        if self.threshold == 0 {
            return None;
        }
        let per_second = runs as f64 / elapsed.as_secs_f64();
        let threshold = self.threshold as f64;
        match self.storm {
            false if per_second > threshold => {
                self.storm = true;
                Some(Change::Began { cpu, per_second })
            }
            true if per_second < threshold / 2.0 => {
                self.storm = false;
                Some(Change::Ended { cpu, per_second })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_sustained_rate_on_one_cpu_begins_a_storm_and_half_of_it_ends_it() {
        let t0 = Instant::now();
        let mut s = AllocStorm::new(100_000, t0);
        assert_eq!(
            s.measure(t0, vec![0, 0]),
            None,
            "first call only sets the baseline"
        );
        // 90k/s on CPU 0, 60k/s on CPU 1: each under the threshold, whatever the sum.
        assert_eq!(s.measure(at(t0, 1000), vec![90_000, 60_000]), None);
        assert!(!s.in_storm());
        assert_eq!(
            s.measure(at(t0, 2000), vec![100_000, 180_000]),
            Some(Change::Began {
                cpu: 1,
                per_second: 120_000.0
            })
        );
        assert!(s.in_storm());
        // In a storm: above half the threshold it goes on, below it ends.
        s.rebase(at(t0, 5000), vec![100_000, 200_000]);
        assert_eq!(s.measure(at(t0, 5500), vec![100_000, 230_000]), None);
        assert!(s.in_storm());
        // The attached part of a 1 s window at duty 10% is 100 ms: short, but decides.
        s.rebase(at(t0, 10_000), vec![100_000, 300_000]);
        assert_eq!(
            s.measure(at(t0, 10_100), vec![100_000, 304_000]),
            Some(Change::Ended {
                cpu: 1,
                per_second: 40_000.0
            })
        );
        assert!(!s.in_storm());
    }

    #[test]
    fn a_short_burst_or_a_short_measurement_decides_nothing() {
        let t0 = Instant::now();
        let mut s = AllocStorm::new(100_000, t0);
        s.rebase(t0, vec![0]);
        // 16k allocations in 30 ms: 530k/s for a moment, 16k over the whole second.
        assert_eq!(
            s.measure(at(t0, 50), vec![16_000]),
            None,
            "too short to judge"
        );
        assert_eq!(s.measure(at(t0, 1000), vec![16_000]), None);
        assert!(!s.in_storm());
        // 80k allocations within 0.3 s, right after a check: 267k/s for a moment, but
        // judged over the 1.3 s since the last full measurement, under 100k/s.
        assert_eq!(s.measure(at(t0, 1300), vec![96_000]), None);
        assert_eq!(s.measure(at(t0, 2300), vec![96_000]), None);
        assert!(!s.in_storm());
    }

    #[test]
    fn a_storm_does_not_end_while_the_probe_is_off_its_hook() {
        let t0 = Instant::now();
        let mut s = AllocStorm::new(100_000, t0);
        s.rebase(t0, vec![0]);
        assert!(matches!(
            s.measure(at(t0, 1000), vec![500_000]),
            Some(Change::Began { .. })
        ));
        s.set_attached(at(t0, 1000), false);
        // The window's re-attach failed: the count stands still while it is off.
        assert_eq!(s.measure(at(t0, 5500), vec![500_000]), None);
        assert!(s.in_storm());
        s.set_attached(at(t0, 10_000), true);
        s.rebase(at(t0, 10_000), vec![500_000]);
        assert_eq!(s.measure(at(t0, 10_500), vec![750_000]), None);
        assert!(s.in_storm(), "500k/s in an attached part goes on");
    }

    #[test]
    fn zero_never_makes_a_storm() {
        let t0 = Instant::now();
        let mut s = AllocStorm::new(0, t0);
        s.rebase(t0, vec![0]);
        assert_eq!(s.measure(at(t0, 1000), vec![10_000_000]), None);
        assert!(!s.in_storm());
    }

    #[test]
    fn the_window_share_counts_the_attached_parts() {
        let t0 = Instant::now();
        let mut s = AllocStorm::new(100_000, t0);
        s.set_attached(at(t0, 1000), false);
        s.set_attached(at(t0, 1000), false); // idempotent
        assert!((s.take_window_share(at(t0, 5000)) - 0.2).abs() < 1e-9);
        s.set_attached(at(t0, 5000), true);
        s.set_attached(at(t0, 5500), false);
        assert!((s.take_window_share(at(t0, 10_000)) - 0.1).abs() < 1e-9);
        s.set_attached(at(t0, 10_000), true);
        assert!((s.take_window_share(at(t0, 15_000)) - 1.0).abs() < 1e-9);
        assert!((s.take_window_share(at(t0, 16_000)) - 1.0).abs() < 1e-9);
    }
}
