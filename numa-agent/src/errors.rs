//! The NUMA error types of the design supplement. Each is a plain value with the
//! supplement's fields (snake_case in JSON); `Display` gives the operator message.
use std::fmt;

use serde::Serialize;

use crate::{sensors::sched_migrate::StealType, topology::NodeId};

/// A task moved off the node it ran on (`NUMAStealError{StolenFromNode, CurrentNode,
/// ResourceID, StealType}`). Node ids are `None` for a CPU no node lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NumaStealError {
    pub stolen_from_node: Option<NodeId>,
    pub current_node: Option<NodeId>,
    /// The moved thread, as `task:<tid>`.
    pub resource_id: String,
    pub steal_type: StealType,
}

impl NumaStealError {
    pub const TYPE: &'static str = "NUMAStealError";
}

/// `Some(3)` -> `3`, `None` -> `unknown`: how node ids read in messages and labels.
pub fn node_label(node: Option<NodeId>) -> String {
    node.map_or_else(|| "unknown".to_owned(), |n| n.to_string())
}

impl fmt::Display for NumaStealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} was stolen from NUMA node {} to node {} ({})",
            self.resource_id,
            node_label(self.stolen_from_node),
            node_label(self.current_node),
            self.steal_type.as_str()
        )
    }
}

impl std::error::Error for NumaStealError {}

/// A workload's memory accesses crossed nodes beyond its policy's `maxCrossAccess`
/// (`NUMAAccessError{SourceNode, TargetNode, ResourceType, Distance, QoSClass,
/// AllowedNodes}`): the dominant remote pair of the window is named.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NumaAccessError {
    /// Node the accessing CPUs belong to.
    pub source_node: NodeId,
    /// Node holding what was accessed.
    pub target_node: NodeId,
    /// What was accessed: `memory`.
    pub resource_type: String,
    pub distance: Option<u32>,
    pub qos_class: Option<String>,
    pub allowed_nodes: Option<Vec<NodeId>>,
    /// Cross-node share of the window's accesses, 0..=1.
    pub ratio: f64,
}

impl NumaAccessError {
    pub const TYPE: &'static str = "NUMAAccessError";
}

impl fmt::Display for NumaAccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The supplement's message: `NUMA node %d cannot access %s on node %d (distance %d)`.
        write!(
            f,
            "NUMA node {} cannot access {} on node {} (distance {})",
            self.source_node,
            self.resource_type,
            self.target_node,
            self.distance
                .map_or_else(|| "unknown".to_owned(), |d| d.to_string())
        )
    }
}

impl std::error::Error for NumaAccessError {}

/// A workload runs or keeps memory outside its policy's `allowedNodes`
/// (`NUMAPolicyError{RequiredPolicy, ActualPlacement, ViolationType}`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NumaPolicyError {
    /// The policy and what it requires, e.g. `ai-worker-policy: allowedNodes [0]`.
    pub required_policy: String,
    pub actual_placement: crate::policy::placement::ActualPlacement,
    /// `cpusOutsideAllowedNodes`, `memoryOutsideAllowedNodes`, or both joined by `+`.
    pub violation_type: String,
}

impl NumaPolicyError {
    pub const TYPE: &'static str = "NUMAPolicyError";
}

impl fmt::Display for NumaPolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.actual_placement;
        write!(
            f,
            "{} violated ({}): may run on CPUs {} (nodes {:?}), memory kB per node {:?}",
            self.required_policy, self.violation_type, p.cpus_allowed, p.cpu_nodes, p.memory_kb
        )
    }
}

impl std::error::Error for NumaPolicyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_error_message_is_the_supplements() {
        let e = NumaAccessError {
            source_node: 0,
            target_node: 1,
            resource_type: "memory".into(),
            distance: Some(21),
            qos_class: Some("default".into()),
            allowed_nodes: Some(vec![0]),
            ratio: 0.5,
        };
        assert_eq!(
            e.to_string(),
            "NUMA node 0 cannot access memory on node 1 (distance 21)"
        );
    }

    #[test]
    fn message_and_json_fields() {
        let e = NumaStealError {
            stolen_from_node: Some(0),
            current_node: None,
            resource_id: "task:42".into(),
            steal_type: StealType::Forced,
        };
        assert_eq!(
            e.to_string(),
            "task:42 was stolen from NUMA node 0 to node unknown (forced)"
        );
        let json = serde_json::to_value(&e).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"stolen_from_node":0,"current_node":null,"resource_id":"task:42","steal_type":"forced"})
        );
    }
}
