//! numa-sensor agent library: topology, tracefs, sensors (eBPF), NUMA errors,
//! metrics and events. The `numa-agent` binary wires them together.
pub mod attach;
pub mod bpf_sys;
pub mod check;
pub mod errors;
pub mod events;
pub mod events_file;
pub mod metrics;
pub mod operator_metrics;
pub mod privileges;
pub mod procfs;
pub mod sensors;
pub mod steal;
pub mod topology;
pub mod tracefs;
