//! The validated `NUMAPolicy` model (`concurrency.gokore.io/v1alpha1`). Parsing and
//! validation live in `parse.rs`; every default is documented here and in README.md.
use std::time::Duration;

use crate::topology::NodeId;

pub const API_VERSION: &str = "concurrency.gokore.io/v1alpha1";
pub const KIND: &str = "NUMAPolicy";

/// A policy that passed validation. Nothing here is half-checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub name: String,
    /// `metadata.namespace` (Kubernetes); informational on a host.
    pub namespace: Option<String>,
    pub mode: Mode,
    /// `None`: the documented default scope, every user process except kernel threads
    /// and the agent itself. Only allowed in monitor mode.
    pub selector: Option<Selector>,
    pub topology: NumaTopology,
    pub qos_classes: Vec<QosClass>,
    /// Class of workloads that no class's `selector` picks: `spec.defaultQoSClass`, else
    /// the class named `default` if there is one, else none (steals are not limited).
    pub default_qos_class: Option<String>,
    pub failure_policies: Vec<FailurePolicy>,
    pub evaluation: Evaluation,
}

/// `spec.mode`. Default `monitor`: decisions are recorded as "would", nothing changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Monitor,
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Monitor => "monitor",
            Self::Enforce => "enforce",
        }
    }
}

/// Which workloads a policy (or a QoS class) governs. A process matches when it
/// satisfies every field given (AND), and any entry of a list (OR).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    /// Glob patterns on the process name (`/proc/<pid>/comm`, 15 bytes at most).
    pub process_names: Vec<String>,
    /// Glob patterns on the process's cgroup paths (any hierarchy in `/proc/<pid>/cgroup`).
    pub cgroup_paths: Vec<String>,
    pub pids: Vec<u32>,
    /// Kubernetes namespace and labels of the pod. Pod attribution is not built yet, so
    /// on a host these match nothing (validation warns).
    pub namespaces: Vec<String>,
    pub match_labels: Vec<(String, String)>,
}

impl Selector {
    pub fn has_kubernetes_terms(&self) -> bool {
        !self.namespaces.is_empty() || !self.match_labels.is_empty()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NumaTopology {
    /// `None`: every node is allowed.
    pub allowed_nodes: Option<Vec<NodeId>>,
    /// `None`: no limit on the cross-node access ratio.
    pub max_cross_access: Option<Ratio>,
}

/// A ratio 0..=1 held exactly as parts per million (`"12.5%"` is 125_000), so a
/// percentage written with up to four decimals is never rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ratio {
    pub ppm: u32,
}

impl Ratio {
    pub fn as_f64(self) -> f64 {
        f64::from(self.ppm) / 1_000_000.0
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct QosClass {
    pub name: String,
    /// Default `false`.
    pub steal_allowed: bool,
    /// Cross-node migrations (NUMAStealErrors of any thread of the workload) allowed per
    /// evaluation window. `None` with `steal_allowed`: unlimited. Always `Some(0)` or
    /// `None` when stealing is not allowed (any steal exceeds the allowance).
    pub max_steals: Option<u64>,
    /// Workloads this class applies to; the first class whose selector matches wins.
    pub selector: Option<Selector>,
}

impl QosClass {
    /// Steals a workload of this class may make in one window.
    pub fn steal_allowance(&self) -> Option<u64> {
        if self.steal_allowed {
            self.max_steals
        } else {
            Some(0)
        }
    }
}

/// The three error kinds a policy maps to actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorType {
    /// Cross-node access ratio above `maxCrossAccess` (a `NUMAAccessError`).
    NumaAccessViolation,
    /// More steals in a window than the QoS class allows (a `NUMAStealError` over the limit).
    StealLimitExceeded,
    /// CPUs or memory outside `allowedNodes` (a `NUMAPolicyError`).
    NumaPolicyViolation,
}

impl ErrorType {
    pub const ALL: [Self; 3] = [
        Self::NumaAccessViolation,
        Self::StealLimitExceeded,
        Self::NumaPolicyViolation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NumaAccessViolation => "NUMAAccessViolation",
            Self::StealLimitExceeded => "StealLimitExceeded",
            Self::NumaPolicyViolation => "NUMAPolicyViolation",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    RelocatePod,
    ThrottleWorker,
    /// Record and count only (`alertOnly` or `none`).
    AlertOnly,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RelocatePod => "relocatePod",
            Self::ThrottleWorker => "throttleWorker",
            Self::AlertOnly => "alertOnly",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FailurePolicy {
    pub error_type: ErrorType,
    pub action: Action,
    /// Default 5 minutes: no repeat of this action on the same workload before it ends;
    /// a throttle is restored when it ends.
    pub cooldown: Duration,
    /// `throttleWorker` only: the CPU quota set, as a share of one CPU. Default 50%.
    pub cpu_quota: Ratio,
}

pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);
/// Shares of one CPU, in ppm: 50%.
pub const DEFAULT_CPU_QUOTA: Ratio = Ratio { ppm: 500_000 };

#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Default 10 s. Steals, access ratio and placement are judged once per window.
    pub window: Duration,
    /// Default 3: consecutive complete violating windows before an action.
    pub debounce: u32,
    /// Default 100: an access-ratio window with fewer samples is incomplete.
    pub min_samples: u64,
    /// Default 6: actions of this policy (any workload) per rolling minute.
    pub max_actions_per_minute: u32,
}

impl Default for Evaluation {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            debounce: 3,
            min_samples: 100,
            max_actions_per_minute: 6,
        }
    }
}

impl Policy {
    /// The failure policy for `error`, or `None` (the fallback is then alert only).
    pub fn failure_policy(&self, error: ErrorType) -> Option<&FailurePolicy> {
        self.failure_policies.iter().find(|p| p.error_type == error)
    }

    pub fn qos_class(&self, name: &str) -> Option<&QosClass> {
        self.qos_classes.iter().find(|c| c.name == name)
    }
}
