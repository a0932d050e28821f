//! The few bpf(2) and perf_event_open(2) calls aya does not expose for our purposes:
//! reading a program's run statistics by fd (`BPF_OBJ_GET_INFO_BY_FD`), and loading a
//! trivial program of a given type at a given hook to learn whether this kernel lets
//! it attach (`check`). Struct layouts are the kernel's UAPI (include/uapi/linux/bpf.h,
//! include/uapi/linux/perf_event.h) via aya-obj's generated bindings.
use std::{
    io,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};

fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: attr is a valid, fully initialised bpf_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a union of integer structs: all-zero is its documented default
    // (the kernel rejects non-zero unused tail bytes, bpf_check_uarg_tail_zero()).
    unsafe { std::mem::zeroed() }
}

fn owned_fd(rc: i64) -> io::Result<OwnedFd> {
    let fd = i32::try_from(rc).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What `BPF_OBJ_GET_INFO_BY_FD` says about a program's cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    /// Nanoseconds spent running the program while stats were enabled
    /// (`bpf_prog_info.run_time_ns`, kernel/bpf/syscall.c bpf_prog_get_stats()).
    pub run_time_ns: u64,
    /// Times the program ran while stats were enabled (`run_cnt`).
    pub run_count: u64,
    /// Times it was not run because it was already running on that CPU (`recursion_misses`).
    pub recursion_misses: u64,
}

/// Read a program's statistics from its fd.
pub fn program_stats(fd: BorrowedFd<'_>) -> io::Result<ProgramStats> {
    // SAFETY: plain integer struct, zero is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    // Writing a union member is safe; only reading one is not.
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = size_of::<bpf_prog_info>() as u32;
    attr.info.info = std::ptr::from_mut(&mut info) as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(ProgramStats {
        run_time_ns: info.run_time_ns,
        run_count: info.run_cnt,
        recursion_misses: info.recursion_misses,
    })
}

/// A program the kernel refused, with its errno and the verifier's first words.
#[derive(Debug)]
pub struct LoadFailure {
    pub error: io::Error,
    pub verifier_log: String,
}

/// `r0 = 0; exit`: the smallest program every type accepts.
const TRIVIAL: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];

/// Load `r0 = 0; exit` as `prog_type` with the given expected attach type and BTF id.
pub fn load_trivial(
    prog_type: u32,
    expected_attach_type: u32,
    attach_btf_id: u32,
) -> Result<OwnedFd, LoadFailure> {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut attr = zeroed_attr();
    // SAFETY: writing the prog-load member of the union; the pointers outlive the call.
    unsafe {
        let u = &mut attr.__bindgen_anon_3;
        u.prog_type = prog_type;
        u.insn_cnt = TRIVIAL.len() as u32;
        u.insns = TRIVIAL.as_ptr() as u64;
        u.license = license.as_ptr() as u64;
        u.expected_attach_type = expected_attach_type;
        u.attach_btf_id = attach_btf_id;
        u.log_level = 1;
        u.log_size = log.len() as u32;
        u.log_buf = log.as_mut_ptr() as u64;
        let name = b"numa_check";
        for (dst, src) in u.prog_name.iter_mut().zip(name) {
            *dst = *src as libc::c_char;
        }
    }
    match sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
        Ok(rc) => owned_fd(rc).map_err(|error| LoadFailure {
            error,
            verifier_log: String::new(),
        }),
        Err(error) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let verifier_log = String::from_utf8_lossy(&log[..end])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            Err(LoadFailure {
                error,
                verifier_log,
            })
        }
    }
}

/// `BPF_RAW_TRACEPOINT_OPEN`: attaches raw tracepoints (by `name`) and BTF-typed
/// tracing programs (fentry, tp_btf: `name` is None, the target is the load-time BTF id).
/// Dropping the returned link fd detaches.
pub fn raw_tracepoint_open(
    prog: BorrowedFd<'_>,
    name: Option<&std::ffi::CStr>,
) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // `name` outlives the call.
    attr.raw_tracepoint.prog_fd = prog.as_raw_fd() as u32;
    attr.raw_tracepoint.name = name.map_or(0, |n| n.as_ptr() as u64);
    owned_fd(sys_bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr)?)
}

/// PERF_TYPE_TRACEPOINT (include/uapi/linux/perf_event.h).
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// PERF_TYPE_SOFTWARE and PERF_COUNT_SW_PAGE_FAULTS (include/uapi/linux/perf_event.h).
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_PAGE_FAULTS: u64 = 2;
/// _IOW('$', 8, __u32).
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
/// PERF_FLAG_FD_CLOEXEC (include/uapi/linux/perf_event.h).
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// PERF_ATTR_SIZE_VER1: up to and including `config2`.
const PERF_ATTR_SIZE: usize = 72;

/// perf_event_open on CPU 0 for all tasks, then PERF_EVENT_IOC_SET_BPF, the way perf
/// and libbpf attach tracepoint and kprobe programs. Dropping the fd detaches.
fn perf_attach(
    prog: BorrowedFd<'_>,
    pmu_type: u32,
    config: u64,
    config1: u64,
) -> io::Result<OwnedFd> {
    // perf_event_attr: u32 type @0, u32 size @4, u64 config @8, u64 sample_period @16,
    // u64 config1 (kprobe_func) @56, u64 config2 (probe_offset) @64.
    let mut attr = [0u8; PERF_ATTR_SIZE];
    attr[0..4].copy_from_slice(&pmu_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&(PERF_ATTR_SIZE as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&config.to_ne_bytes());
    attr[16..24].copy_from_slice(&1u64.to_ne_bytes());
    attr[56..64].copy_from_slice(&config1.to_ne_bytes());
    // SAFETY: a valid perf_event_attr buffer of the declared size; pointers in it
    // (config1) outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let perf = owned_fd(fd)?;
    // SAFETY: ioctl on a perf fd we own, with a program fd as its integer argument.
    let rc = unsafe {
        libc::ioctl(
            perf.as_fd().as_raw_fd(),
            PERF_EVENT_IOC_SET_BPF,
            prog.as_raw_fd(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(perf)
}

/// Attach a `BPF_PROG_TYPE_TRACEPOINT` program to tracepoint `id` (tracefs
/// `events/<category>/<name>/id`).
pub fn attach_perf_tracepoint(prog: BorrowedFd<'_>, id: u64) -> io::Result<OwnedFd> {
    perf_attach(prog, PERF_TYPE_TRACEPOINT, id, 0)
}

/// Attach a `BPF_PROG_TYPE_PERF_EVENT` program to the software page-fault counter of
/// CPU 0, every process (PERF_TYPE_SOFTWARE, PERF_COUNT_SW_PAGE_FAULTS), as the agent's
/// `perf_event` page-fault variant does on every CPU.
pub fn attach_perf_software_page_faults(prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    perf_attach(prog, PERF_TYPE_SOFTWARE, PERF_COUNT_SW_PAGE_FAULTS, 0)
}

/// Attach a `BPF_PROG_TYPE_KPROBE` program at the entry of `func` through the kprobe
/// PMU (`pmu_type` from /sys/bus/event_source/devices/kprobe/type).
pub fn attach_perf_kprobe(
    prog: BorrowedFd<'_>,
    pmu_type: u32,
    func: &std::ffi::CStr,
) -> io::Result<OwnedFd> {
    perf_attach(prog, pmu_type, 0, func.as_ptr() as u64)
}
