//! numa-sensor kernel programs. Each hook family has its own module; maps shared
//! between them live in `maps`. Programs count and filter; they never decide policy.
#![no_std]
#![no_main]

mod balancing;
mod hint_fault;
mod maps;
mod page_alloc;
mod page_fault;
mod sched_migrate;
mod task;

/// The helpers used here (`bpf_probe_read_kernel`, ring buffer) are GPL-only;
/// "Dual MIT/GPL" is accepted by the kernel's `license_is_gpl_compatible()`.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never entered.
    loop {}
}
