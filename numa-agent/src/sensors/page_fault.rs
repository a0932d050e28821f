//! Userspace half of the `exceptions:page_fault_user` probe (x86 only): its load-time
//! config, the attach variants in order of preference, and decoding of its samples.
use numa_common::{ERROR_CODE_UNKNOWN, FaultConfig, FaultRecord, NODE_UNKNOWN, Probe, programs};

use crate::{
    topology::NodeId,
    tracefs::{EventFormat, TracefsError},
};

pub const CATEGORY: &str = "exceptions";
pub const EVENT: &str = "page_fault_user";

/// Default `--fault-sample-rate`: one user fault in 64 per CPU. At that rate the
/// sampled path (ring-buffer record, then `move_pages` in the agent) is paid by under
/// 2% of faults, and a 64 MiB first-touch run still yields 256 samples. See README
/// "Sampled page faults" for the measured cost.
pub const DEFAULT_SAMPLE_RATE: u32 = 64;

/// Default `--fault-sample-duty`: the sampler is attached for the first 10% of each
/// access window (0.5 s of the default 5 s). Attached, its hook costs every user fault
/// on the host about as much as the page-alloc probe does whatever the rate, because
/// the kernel enables the software counter or the tracepoint for all of them; the
/// duty cycle cuts that cost tenfold, and a fault-heavy workload still gives each
/// window hundreds of samples. README "Cost" has the measurements.
pub const DEFAULT_SAMPLE_DUTY: u8 = 10;

/// Attach variants, cheapest first: (variant label, program name). `perf_event` lets
/// the kernel's software page-fault counter pick the samples, so no program runs on
/// the other faults (but the error code is unknown); `tp_btf` and `raw_tracepoint`
/// receive the tracepoint's arguments directly and count down per CPU; the classic
/// tracepoint makes the kernel build a trace record for every fault first.
pub const VARIANTS: [(&str, &str); 4] = [
    ("perf_event", programs::PAGE_FAULT_SAMPLE),
    ("tp_btf", programs::PAGE_FAULT_USER_BTF),
    ("raw_tracepoint", programs::PAGE_FAULT_USER_RAW),
    ("tracepoint", programs::PAGE_FAULT_USER_TP),
];

/// The probe's config: sampling rate, and the field offsets the classic-tracepoint
/// variant reads, from this kernel's format file. Refuses a layout that lacks
/// `address` or `error_code` or sizes them other than 8 bytes.
pub fn config_from_format(
    format: &EventFormat,
    sample_rate: u32,
) -> Result<FaultConfig, TracefsError> {
    Ok(FaultConfig {
        sample_rate: sample_rate.max(1),
        agent_tgid: 0,
        address_offset: format.int_field("address", 8)?.offset,
        error_code_offset: format.int_field("error_code", 8)?.offset,
    })
}

/// A decoded fault sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultSample {
    pub cpu: u32,
    pub cpu_node: Option<NodeId>,
    pub tid: u32,
    pub tgid: u32,
    pub address: u64,
    /// x86 page-fault error code; `None` from the perf-event variant.
    pub error_code: Option<u64>,
}

/// Decode one ring-buffer record of this probe; `None` if it is not one.
pub fn decode(bytes: &[u8]) -> Option<FaultSample> {
    if bytes.len() < size_of::<FaultRecord>() {
        return None;
    }
    // SAFETY: length checked; FaultRecord is integers only, read unaligned.
    let r: FaultRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    if r.probe != Probe::PageFaultUser as u32 {
        return None;
    }
    Some(FaultSample {
        cpu: r.cpu,
        cpu_node: (r.cpu_node != NODE_UNKNOWN).then_some(r.cpu_node),
        tid: r.tid,
        tgid: r.tgid,
        address: r.address,
        error_code: (r.error_code != ERROR_CODE_UNKNOWN).then_some(r.error_code),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_on_every_fixture_kernel() {
        for kernel in crate::tracefs::fixtures::KERNELS {
            let f = crate::tracefs::fixtures::format(kernel, "exceptions__page_fault_user.format");
            let cfg = config_from_format(&f, 0).expect("config");
            assert_eq!(
                (cfg.address_offset, cfg.error_code_offset, cfg.sample_rate),
                (8, 24, 1),
                "{kernel}: offsets, and rate 0 is clamped to every fault"
            );
        }
    }

    #[test]
    fn a_layout_without_error_code_is_refused() {
        let text = "name: page_fault_user\nID: 1\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:unsigned long address;\toffset:8;\tsize:8;\tsigned:0;\n\
            \tfield:unsigned int error_code;\toffset:16;\tsize:4;\tsigned:0;\n";
        let f = EventFormat::parse(text, "made-up").expect("parses");
        let err = config_from_format(&f, 64).expect_err("4-byte error_code");
        assert!(err.to_string().contains("error_code"), "{err}");
    }

    #[test]
    fn decodes_its_own_records_only() {
        let record = FaultRecord {
            probe: Probe::PageFaultUser as u32,
            cpu: 1,
            cpu_node: NODE_UNKNOWN,
            tid: 11,
            tgid: 10,
            _pad: 0,
            address: 0x7f00_0000_1234,
            error_code: 6,
        };
        // SAFETY: viewing a repr(C) integer-only value as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const record).cast::<u8>(), size_of::<FaultRecord>())
        };
        let s = decode(bytes).expect("decoded");
        assert_eq!(
            (s.cpu_node, s.tgid, s.address, s.error_code),
            (None, 10, 0x7f00_0000_1234, Some(6))
        );
        let unknown = FaultRecord {
            error_code: ERROR_CODE_UNKNOWN,
            ..record
        };
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const unknown).cast::<u8>(), size_of::<FaultRecord>())
        };
        assert_eq!(decode(bytes).expect("decoded").error_code, None);
        let mut other = bytes.to_vec();
        other[0] = Probe::SchedMigrateTask as u8;
        assert!(decode(&other).is_none());
        assert!(decode(&bytes[..8]).is_none());
    }
}
