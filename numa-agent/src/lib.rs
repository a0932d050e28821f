//! numa-sensor agent library: topology, tracefs, sensors (eBPF), NUMA errors,
//! metrics and events. The `numa-agent` binary wires them together.
pub mod access;
pub mod actuators;
pub mod attach;
pub mod balancing;
pub mod bpf_sys;
pub mod cgroup;
pub mod check;
pub mod errors;
pub mod events;
pub mod events_file;
pub mod memory_blocks;
pub mod metrics;
pub mod operator_metrics;
pub mod pidns;
pub mod policy;
pub mod privileges;
pub mod procfs;
pub mod sampled_faults;
pub mod sensors;
pub mod steal;
pub mod topology;
pub mod tracefs;
pub mod workload;
