//! Policy metrics. Labels are bounded: policy names, error types, actions, results,
//! policy files, and the workload's cgroup path (dropped when the workload is gone);
//! never a pid or comm.
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct PolicyMetrics {
    pub errors: IntCounterVec,
    pub actions: IntCounterVec,
    pub ratio: GaugeVec,
    pub threshold: GaugeVec,
    pub active: IntGaugeVec,
    pub file_valid: IntGaugeVec,
}

impl PolicyMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            errors: IntCounterVec::new(
                Opts::new(
                    "numa_errors_total",
                    "NUMA errors raised against a policy: one per workload per complete violating window",
                ),
                &["type", "policy"],
            )?,
            actions: IntCounterVec::new(
                Opts::new(
                    "numa_policy_actions_total",
                    "Policy actions by result: would (monitor mode), ok, partial, failed, refused, unchanged, rate_limited, recorded, restored",
                ),
                &["policy", "action", "result"],
            )?,
            ratio: GaugeVec::new(
                Opts::new(
                    "numa_workload_cross_access_ratio",
                    "Cross-node share (0-1) of a workload's memory accesses in the last complete window",
                ),
                &["policy", "workload"],
            )?,
            threshold: GaugeVec::new(
                Opts::new(
                    "numa_policy_max_cross_access_ratio",
                    "A policy's maxCrossAccess as a 0-1 ratio",
                ),
                &["policy"],
            )?,
            active: IntGaugeVec::new(
                Opts::new("numa_policy_active", "1 for each policy in force, by mode"),
                &["policy", "mode"],
            )?,
            file_valid: IntGaugeVec::new(
                Opts::new(
                    "numa_policy_file_valid",
                    "1 when a policy file's last load was valid; 0 when it was rejected (its previous valid version, if any, stays in force)",
                ),
                &["file"],
            )?,
        })
    }

    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.errors.clone()))?;
        registry.register(Box::new(self.actions.clone()))?;
        registry.register(Box::new(self.ratio.clone()))?;
        registry.register(Box::new(self.threshold.clone()))?;
        registry.register(Box::new(self.active.clone()))?;
        registry.register(Box::new(self.file_valid.clone()))
    }
}
