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

/// A workload's memory lives on a node other than the one it runs on
/// (`NUMAAccessError{SourceNode, TargetNode, ResourceType, Distance, QoSClass,
/// AllowedNodes}`): `source_node` is the node of the CPUs it ran on, `target_node` the
/// node of the memory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NumaAccessError {
    pub source_node: NodeId,
    pub target_node: NodeId,
    /// What was accessed: `memory` (pages) for now.
    pub resource_type: String,
    /// `distance(source_node, target_node)`: the row of the source, as sysfs gives it.
    pub distance: Option<u32>,
    /// The workload's QoS class, once attribution knows it.
    pub qos_class: Option<String>,
    /// Nodes a policy allows; empty without a policy.
    pub allowed_nodes: Vec<NodeId>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
