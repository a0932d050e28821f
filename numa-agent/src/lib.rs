//! numa-sensor agent library: topology, tracefs, sensors (eBPF), NUMA errors,
//! metrics and events. The `numa-agent` binary wires them together.
/// `prometheus::core::Collector` for a type with `descs: Vec<Desc>` and
/// `fn gather(&self) -> Result<Vec<MetricFamily>, E>`: a read that fails is logged,
/// naming `$what`, and the scrape goes on without those series.
macro_rules! collector_from_gather {
    ($ty:ty, $what:literal) => {
        impl prometheus::core::Collector for $ty {
            fn desc(&self) -> Vec<&prometheus::core::Desc> {
                self.descs.iter().collect()
            }

            fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
                self.gather().unwrap_or_else(|e| {
                    log::warn!(concat!("reading ", $what, " for /metrics failed: {}"), e);
                    Vec::new()
                })
            }
        }
    };
}

pub mod access;
pub mod actuators;
pub mod alloc_storm;
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
