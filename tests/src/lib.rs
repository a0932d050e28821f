//! Helpers for the privileged integration tests: the kernel's own ftrace output as
//! an oracle, a declared NUMA split of this host's CPUs, the agent as a child
//! process, and a thread that migrates on command.
pub mod agent;
pub mod balancing;
pub mod cgroups;
pub mod fault_scenarios;
pub mod ftrace;
pub mod memory;
pub mod pin;
pub mod prom;
pub mod scenarios;
pub mod split;
pub mod workload;

/// Why a privileged test cannot run here, or `None` when it can.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (loads eBPF programs, writes tracefs)".into());
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return Some(format!(
            "needs at least 2 CPUs to migrate between, have {cpus}"
        ));
    }
    None
}

/// Skip the calling test with a printed reason when it cannot run here.
#[macro_export]
macro_rules! require_privileges {
    () => {
        if let Some(reason) = $crate::skip_reason() {
            eprintln!("SKIPPED {}: {reason}", module_path!());
            return;
        }
    };
}
