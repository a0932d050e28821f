//! Which capabilities the process holds, so a run without them says what is
//! missing instead of surfacing EPERM from the first bpf(2) call.
use std::fs;

/// Capability numbers from include/uapi/linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability set, from the `CapEff:` line of /proc/self/status.
pub fn effective_caps() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Loading tracing programs and reading tracefs needs CAP_BPF plus CAP_PERFMON
/// (kernel 5.8+), or CAP_SYS_ADMIN. Returns the names of what is missing.
pub fn missing_for_tracing(caps: u64) -> Vec<&'static str> {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// A one-paragraph message for an operator, or `None` when privileges suffice.
pub fn check_tracing() -> Option<String> {
    let caps = effective_caps()?;
    let missing = missing_for_tracing(caps);
    (!missing.is_empty()).then(|| {
        format!(
            "missing privilege: {} (effective capabilities {caps:#x}). numa-agent loads eBPF \
             programs and reads tracefs: run it as root, or grant CAP_BPF and CAP_PERFMON \
             (plus CAP_SYS_ADMIN where tracefs must be mounted), e.g. \
             `sudo setcap cap_bpf,cap_perfmon+ep numa-agent`",
            missing.join(" and ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_split_capabilities() {
        assert_eq!(
            parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
        assert!(missing_for_tracing(0x1ff_ffff_ffff).is_empty());
        assert!(missing_for_tracing((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert_eq!(missing_for_tracing(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert_eq!(missing_for_tracing(0), vec!["CAP_BPF", "CAP_PERFMON"]);
    }
}
