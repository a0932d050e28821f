//! Making a thread migrate: `sched_setaffinity` on a running thread returns only
//! after the CPU stopper has moved it (`affine_move_task()`, kernel/sched/core.c),
//! so each call that changes the allowed CPU is one migration.
use std::io;

pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Restrict the calling thread to `cpu`.
pub fn pin_self(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for cpu < 1024.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPU the calling thread runs on now.
pub fn current_cpu() -> usize {
    // SAFETY: sched_getcpu has no preconditions.
    unsafe { libc::sched_getcpu() as usize }
}

/// Alternate the calling thread between `cpus[0]` and `cpus[1]` `flips` times,
/// checking after each move that it really runs on the new CPU.
pub fn flip_between(cpus: [usize; 2], flips: usize) -> io::Result<()> {
    pin_self(cpus[0])?;
    for i in 0..flips {
        let cpu = cpus[(i + 1) % 2];
        pin_self(cpu)?;
        if current_cpu() != cpu {
            return Err(io::Error::other(format!(
                "pinned to CPU {cpu} but running on {}",
                current_cpu()
            )));
        }
    }
    Ok(())
}
