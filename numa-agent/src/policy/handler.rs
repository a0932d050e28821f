//! The handler interface of the design supplement, in Rust:
//! `Handle(err) -> (retry, adjustedNode)`, `RecordSteal(metric)`,
//! `WithSystemsContext(provider) -> handler`, `GetErrorMetrics() -> metrics`,
//! `ApplyCRDPolicy(policy) -> error`. [`NumaErrorHandler::handle`] carries the
//! supplement's resolution flow as its default implementation:
//!
//! detect a NUMA error -> is stealing allowed for the workload's QoS class?
//!   yes -> the cross-node access/steal is permitted: within the class's `maxSteals`
//!          the steal is recorded (metrics) and the caller may retry; once the limit
//!          is exhausted, fall through to the fallback;
//!   no  -> fallback: the policy's `failurePolicies` entry for the error type, else
//!          alert only.
//! A `NUMAPolicyError` (placement) is never covered by stealing: straight to fallback.
use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use serde::Serialize;

use super::{
    parse::{FieldError, Machine, parse_documents},
    placement::{self, ActualPlacement},
    spec::{Action, ErrorType, Policy, QosClass},
};
use crate::{
    errors::{NumaAccessError, NumaPolicyError, NumaStealError},
    topology::{NodeId, Topology},
};

/// A NUMA error raised against a policy for one workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum NumaError {
    #[serde(rename = "NUMAAccessError")]
    Access(NumaAccessError),
    /// Steals over the QoS class's allowance in one window (`StealLimitExceeded`).
    #[serde(rename = "NUMAStealError")]
    Steal {
        /// The last steal of the window.
        #[serde(flatten)]
        last: NumaStealError,
        steals_in_window: u64,
        /// `None`: unlimited.
        allowance: Option<u64>,
        qos_class: Option<String>,
    },
    #[serde(rename = "NUMAPolicyError")]
    Policy(NumaPolicyError),
}

impl NumaError {
    pub fn error_type(&self) -> ErrorType {
        match self {
            Self::Access(_) => ErrorType::NumaAccessViolation,
            Self::Steal { .. } => ErrorType::StealLimitExceeded,
            Self::Policy(_) => ErrorType::NumaPolicyViolation,
        }
    }

    /// The supplement's type name, the `type` label of `numa_errors_total`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Access(_) => NumaAccessError::TYPE,
            Self::Steal { .. } => NumaStealError::TYPE,
            Self::Policy(_) => NumaPolicyError::TYPE,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Access(e) => e.to_string(),
            Self::Steal {
                last,
                steals_in_window,
                allowance,
                ..
            } => format!(
                "{steals_in_window} steals in one window, allowed {}; last: {last}",
                allowance.map_or_else(|| "unlimited".to_owned(), |a| a.to_string())
            ),
            Self::Policy(e) => e.to_string(),
        }
    }
}

/// What `handle` decided: `(retry, adjustedNode)` plus the action to take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// The access/steal is permitted: carry on.
    pub retry: bool,
    /// Where the workload should be: the allowed node nearest (by distance) to the node
    /// holding most of its memory, else to a node it runs on. `None` when not computable.
    pub adjusted_node: Option<NodeId>,
    /// `None` when permitted.
    pub action: Option<Action>,
    pub reason: String,
}

/// A steal as `RecordSteal` receives it.
#[derive(Clone, Debug)]
pub struct StealMetric {
    pub pid: u32,
    pub error: NumaStealError,
}

/// `GetErrorMetrics()`: what this handler has seen since its policy was applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorMetrics {
    /// Errors handled, by supplement type name.
    pub errors: BTreeMap<String, u64>,
    /// Steals recorded as permitted.
    pub permitted_steals: u64,
    /// Fallbacks triggered, by action.
    pub fallbacks: BTreeMap<String, u64>,
}

/// The system facts the flow needs (`WithSystemsContext(provider)`).
pub trait SystemsContext: Send + Sync {
    fn topology(&self) -> &Topology;
    /// Where process `pid` runs and keeps its memory, if it can be read.
    fn placement(&self, pid: u32) -> Option<ActualPlacement>;
}

/// The host: topology plus `/proc`.
pub struct HostSystems {
    pub topology: Topology,
    pub proc_root: PathBuf,
}

impl SystemsContext for HostSystems {
    fn topology(&self) -> &Topology {
        &self.topology
    }

    fn placement(&self, pid: u32) -> Option<ActualPlacement> {
        placement::read(&self.proc_root, pid, &self.topology).ok()
    }
}

/// Context of one error: the workload and its class.
#[derive(Clone, Copy, Debug)]
pub struct ErrorContext<'a> {
    pub pid: u32,
    pub qos_class: Option<&'a QosClass>,
    pub steals_in_window: u64,
    pub placement: Option<&'a ActualPlacement>,
}

#[derive(Debug, thiserror::Error)]
#[error("policy rejected, the previous version stays in force:\n{}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ApplyError {
    pub errors: Vec<FieldError>,
}

pub trait NumaErrorHandler {
    fn policy(&self) -> &Policy;
    fn systems(&self) -> &dyn SystemsContext;
    /// `RecordSteal(metric)`: a steal the class permits.
    fn record_steal(&mut self, metric: StealMetric);
    /// Count an error and the fallback chosen (feeds `error_metrics`).
    fn count(&mut self, error: &NumaError, fallback: Option<Action>);
    /// `WithSystemsContext(provider) -> handler`.
    fn with_systems_context(self, provider: Arc<dyn SystemsContext>) -> Self
    where
        Self: Sized;
    /// `GetErrorMetrics() -> metrics`.
    fn error_metrics(&self) -> ErrorMetrics;
    /// `ApplyCRDPolicy(policy) -> error`: validate a NUMAPolicy document and make it the
    /// handler's policy; on any error nothing changes.
    fn apply_crd_policy(&mut self, document: &str) -> Result<(), ApplyError>;

    /// `Handle(err) -> (retry, adjustedNode)`, the supplement's flow.
    fn handle(&mut self, err: &NumaError, ctx: &ErrorContext<'_>) -> Resolution {
        let stealing_allowed =
            !matches!(err, NumaError::Policy(_)) && ctx.qos_class.is_some_and(|c| c.steal_allowed);
        if stealing_allowed {
            let class = ctx.qos_class.expect("checked above");
            let within = class.max_steals.is_none_or(|m| ctx.steals_in_window <= m);
            if within {
                if let NumaError::Steal { last, .. } = err {
                    self.record_steal(StealMetric {
                        pid: ctx.pid,
                        error: last.clone(),
                    });
                }
                self.count(err, None);
                return Resolution {
                    retry: true,
                    adjusted_node: None,
                    action: None,
                    reason: format!(
                        "permitted: class {} allows stealing within its limit",
                        class.name
                    ),
                };
            }
        }
        let fallback = self
            .policy()
            .failure_policy(err.error_type())
            .map_or(Action::AlertOnly, |f| f.action);
        self.count(err, Some(fallback));
        let reason = match (stealing_allowed, ctx.qos_class) {
            (true, Some(c)) => format!("class {} steal limit exhausted: fallback", c.name),
            (false, Some(c)) if !matches!(err, NumaError::Policy(_)) => {
                format!("class {} does not allow stealing: fallback", c.name)
            }
            _ => "fallback policy".to_owned(),
        };
        Resolution {
            retry: false,
            adjusted_node: self.adjusted_node(ctx.placement),
            action: Some(fallback),
            reason,
        }
    }

    /// The allowed node nearest by distance to the node holding most of the workload's
    /// memory (moving CPUs next to memory is cheap, moving memory is not), else to the
    /// first node it runs on. Allowed: `allowedNodes` (or every node) with CPUs. Ties go
    /// to the lower id; an unknown distance counts as farthest.
    fn adjusted_node(&self, placement: Option<&ActualPlacement>) -> Option<NodeId> {
        let topo = self.systems().topology();
        let allowed: Vec<NodeId> = topo
            .nodes
            .iter()
            .filter(|n| !n.cpus.is_empty())
            .map(|n| n.id)
            .filter(|id| {
                self.policy()
                    .topology
                    .allowed_nodes
                    .as_ref()
                    .is_none_or(|a| a.contains(id))
            })
            .collect();
        let p = placement?;
        let from = p
            .main_memory_node()
            .or_else(|| p.running_nodes.first().copied())?;
        allowed
            .into_iter()
            .min_by_key(|to| (topo.distance(from, *to).unwrap_or(u32::MAX), *to))
    }
}

/// The handler of one policy.
pub struct PolicyHandler {
    policy: Policy,
    systems: Arc<dyn SystemsContext>,
    metrics: ErrorMetrics,
    machine: Option<Machine>,
}

impl PolicyHandler {
    pub fn new(policy: Policy, systems: Arc<dyn SystemsContext>) -> Self {
        Self {
            policy,
            systems,
            metrics: ErrorMetrics::default(),
            machine: None,
        }
    }
}

impl NumaErrorHandler for PolicyHandler {
    fn policy(&self) -> &Policy {
        &self.policy
    }

    fn systems(&self) -> &dyn SystemsContext {
        self.systems.as_ref()
    }

    fn record_steal(&mut self, _metric: StealMetric) {
        self.metrics.permitted_steals += 1;
    }

    fn count(&mut self, error: &NumaError, fallback: Option<Action>) {
        *self
            .metrics
            .errors
            .entry(error.type_name().to_owned())
            .or_default() += 1;
        if let Some(a) = fallback {
            *self
                .metrics
                .fallbacks
                .entry(a.as_str().to_owned())
                .or_default() += 1;
        }
    }

    fn with_systems_context(mut self, provider: Arc<dyn SystemsContext>) -> Self {
        self.machine = Some(Machine {
            topology: provider.topology().clone(),
            memory_nodes: None,
        });
        self.systems = provider;
        self
    }

    fn error_metrics(&self) -> ErrorMetrics {
        self.metrics.clone()
    }

    fn apply_crd_policy(&mut self, document: &str) -> Result<(), ApplyError> {
        let parsed = parse_documents(document, self.machine.as_ref());
        let mut errors = parsed.errors;
        if errors.is_empty() && parsed.policies.len() != 1 {
            errors.push(FieldError {
                path: "(document)".into(),
                line: 1,
                message: format!("one NUMAPolicy expected, found {}", parsed.policies.len()),
            });
        }
        if !errors.is_empty() {
            return Err(ApplyError { errors });
        }
        self.policy = parsed.policies.into_iter().next().expect("one policy");
        self.metrics = ErrorMetrics::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        policy::parse::tests_support::SUPPLEMENT_EXAMPLE, sensors::sched_migrate::StealType,
        topology::Node,
    };

    struct FakeSystems(Topology);

    impl SystemsContext for FakeSystems {
        fn topology(&self) -> &Topology {
            &self.0
        }
        fn placement(&self, _pid: u32) -> Option<ActualPlacement> {
            None
        }
    }

    /// Three nodes in a line: 0 -- 1 -- 2 (0 to 2 is farthest).
    fn systems() -> Arc<dyn SystemsContext> {
        let row = |v: [u32; 3]| BTreeMap::from([(0, v[0]), (1, v[1]), (2, v[2])]);
        Arc::new(FakeSystems(Topology::from_parts(
            (0..3).map(|id| Node::new(id, vec![id])).collect(),
            BTreeMap::from([
                (0, row([10, 20, 30])),
                (1, row([20, 10, 20])),
                (2, row([30, 20, 10])),
            ]),
            "test",
        )))
    }

    fn handler(doc: &str) -> PolicyHandler {
        let parsed = parse_documents(doc, None);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        PolicyHandler::new(parsed.policies[0].clone(), systems())
    }

    fn steal(n: u64, class: &str) -> NumaError {
        NumaError::Steal {
            last: NumaStealError {
                stolen_from_node: Some(0),
                current_node: Some(1),
                resource_id: "task:9".into(),
                steal_type: StealType::Forced,
            },
            steals_in_window: n,
            allowance: Some(5),
            qos_class: Some(class.into()),
        }
    }

    fn placement(memory: &[(NodeId, u64)], running: &[NodeId]) -> ActualPlacement {
        ActualPlacement {
            memory_kb: memory.iter().copied().collect(),
            running_nodes: running.to_vec(),
            ..ActualPlacement::default()
        }
    }

    #[test]
    fn flow_permits_within_the_class_limit_then_falls_back() {
        let mut h = handler(SUPPLEMENT_EXAMPLE);
        let high = h.policy().qos_class("high-priority").cloned();
        let p = placement(&[(2, 100)], &[2]);
        let ctx = |n| ErrorContext {
            pid: 9,
            qos_class: high.as_ref(),
            steals_in_window: n,
            placement: Some(&p),
        };
        let r = h.handle(&steal(5, "high-priority"), &ctx(5));
        assert!(r.retry && r.action.is_none(), "{r:?}");
        let r = h.handle(&steal(6, "high-priority"), &ctx(6));
        assert_eq!(
            (r.retry, r.action),
            (false, Some(Action::ThrottleWorker)),
            "{r:?}"
        );
        assert!(r.reason.contains("exhausted"));
        // Memory on node 2, allowedNodes [0,1]: nearest allowed is 1.
        assert_eq!(r.adjusted_node, Some(1));
        let m = h.error_metrics();
        assert_eq!(m.permitted_steals, 1);
        assert_eq!(m.errors.get("NUMAStealError"), Some(&2));
        assert_eq!(m.fallbacks.get("throttleWorker"), Some(&1));
    }

    #[test]
    fn flow_without_stealing_goes_to_the_fallback_policy() {
        let mut h = handler(SUPPLEMENT_EXAMPLE);
        let default = h.policy().qos_class("default").cloned();
        let p = placement(&[], &[0]);
        let ctx = ErrorContext {
            pid: 9,
            qos_class: default.as_ref(),
            steals_in_window: 1,
            placement: Some(&p),
        };
        let r = h.handle(&steal(1, "default"), &ctx);
        assert_eq!((r.retry, r.action), (false, Some(Action::ThrottleWorker)));
        assert!(r.reason.contains("does not allow stealing"), "{r:?}");
        assert_eq!(r.adjusted_node, Some(0), "no memory: where it runs");
        // No failure policy for placement errors in the example: alert only.
        let perr = NumaError::Policy(NumaPolicyError {
            required_policy: "x".into(),
            actual_placement: p.clone(),
            violation_type: "cpusOutsideAllowedNodes".into(),
        });
        assert_eq!(h.handle(&perr, &ctx).action, Some(Action::AlertOnly));
    }

    #[test]
    fn adjusted_node_is_nearest_allowed_by_distance() {
        let h = handler(&SUPPLEMENT_EXAMPLE.replace("[0,1]", "[0,2]"));
        // From node 1, nodes 0 and 2 are both at 20: the lower id wins.
        assert_eq!(h.adjusted_node(Some(&placement(&[(1, 5)], &[]))), Some(0));
        assert_eq!(
            h.adjusted_node(Some(&placement(&[(2, 5), (0, 1)], &[]))),
            Some(2)
        );
        assert_eq!(h.adjusted_node(None), None);
    }

    #[test]
    fn apply_crd_policy_keeps_the_old_policy_on_error() {
        let mut h = handler(SUPPLEMENT_EXAMPLE).with_systems_context(systems());
        let err = h
            .apply_crd_policy(&SUPPLEMENT_EXAMPLE.replace("15%", "15"))
            .expect_err("invalid");
        assert!(
            err.to_string().contains("spec.numaTopology.maxCrossAccess"),
            "{err}"
        );
        assert_eq!(
            h.policy().topology.max_cross_access.map(|r| r.ppm),
            Some(150_000)
        );
        h.apply_crd_policy(&SUPPLEMENT_EXAMPLE.replace("15%", "20%"))
            .expect("valid");
        assert_eq!(
            h.policy().topology.max_cross_access.map(|r| r.ppm),
            Some(200_000)
        );
    }
}
