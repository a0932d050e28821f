//! Rebuild the eBPF object when bpf-linker changes: cargo does not track the linker.
//! Also declare `bpf_target_arch`: aya-build passes it when it builds this crate for
//! the kernel; a host-side `cargo check`/`clippy` gets it from the host triple here
//! (as aya's template does), so arch-gated code is checked too and no
//! `unexpected_cfgs` warning hides a misspelt arch.
use which::which;

fn main() {
    if let Err(err) = aya_build::emit_bpf_target_arch_cfg() {
        println!("cargo:warning=bpf_target_arch: {err}");
    }
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
