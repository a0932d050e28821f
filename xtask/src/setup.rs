//! Toolchain bootstrap, idempotent: each step checks before it acts and prints only
//! when it changes something (ARCHITECTURE.md section 4 has the recipe's facts).
use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{run_checked, workspace_root};

/// Debian packages the build and the tests need.
pub const APT_PACKAGES: &[&str] = &[
    // `numactl` runs test workloads on chosen nodes and reports placement.
    "numactl",
    // `unshare` and `mount` put the agent in its own pid namespace in the attribution
    // tests (--proc-root refusal). Essential on Debian; listed for slim images.
    "util-linux",
    "mount",
    // hwlocality (numa-agent's topology cross-check) links the system hwloc 2.x found
    // through pkg-config; hwloc's Linux backend links libudev.
    "libhwloc-dev",
    "libudev-dev",
    "pkg-config",
    // The topology tests unpack hwloc's real-machine sysfs snapshots (*.tar.bz2).
    "bzip2",
    // `prometheus` brings the server and `promtool`: tests scrape the agent with a real
    // Prometheus, lint the scraped text, and check and unit-test the shipped alert rules.
    "prometheus",
    // `tmux` runs `numa-agent attach`'s live view in a real 80x24 terminal in tests.
    "tmux",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    ensure_apt(APT_PACKAGES)?;
    ensure_rust_src()?;
    ensure_bpf_linker()
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("{cmd:?} printed non-UTF-8"))
}

/// Install the Debian packages not yet installed (one `apt-get update` first).
pub fn ensure_apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| !String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing Debian packages {}", missing.join(" "));
    run_checked(apt_get(&["update", "-qq"]))?;
    let mut install = apt_get(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(&missing);
    run_checked(install)
}

fn apt_get(args: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// The nightly toolchain's sysroot; on a machine without nightly, install it first
/// (minimal profile plus rust-src, which `-Z build-std` needs).
fn nightly_sysroot() -> Result<PathBuf> {
    let print = || output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]));
    let sysroot = match print() {
        Ok(s) => s,
        Err(_) => {
            println!("setup: installing the nightly toolchain (the eBPF programs need it)");
            let mut cmd = Command::new("rustup");
            cmd.args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]);
            run_checked(cmd).context("installing the nightly toolchain with rustup")?;
            print().context("the nightly toolchain is installed but `rustc +nightly` fails")?
        }
    };
    Ok(PathBuf::from(sysroot.trim()))
}

fn ensure_rust_src() -> Result<()> {
    let src = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if src.is_dir() {
        return Ok(());
    }
    println!("setup: adding rust-src to the nightly toolchain (-Z build-std needs it)");
    let mut cmd = Command::new("rustup");
    cmd.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
    run_checked(cmd)
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
}

/// bpf-linker built against the nightly's own LLVM: a plain `cargo install bpf-linker`
/// fails to link here. The nightly ships `libLLVM.so.<ver>-rust-<ver>-nightly`; link
/// it as `<prefix>/lib/libLLVM.so` for llvm-sys, and put the sysroot's lib dir in the
/// binary's rpath so it finds the library at run time.
fn ensure_bpf_linker() -> Result<()> {
    if bpf_linker_ok() {
        return Ok(());
    }
    let sysroot = nightly_sysroot()?;
    let lib_dir = sysroot.join("lib");
    let libllvm = find_libllvm(&lib_dir)?;
    let verbose = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("`rustc +nightly -vV` names no LLVM version")?
        .to_owned();

    let prefix = workspace_root().join("target/xtask/llvm-prefix");
    fs::create_dir_all(prefix.join("lib")).context("creating the LLVM prefix")?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = fs::remove_file(&link);
    symlink(&libllvm, &link).with_context(|| format!("linking {}", link.display()))?;

    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} (about 2 minutes)"
    );
    let mut cmd = Command::new("cargo");
    cmd.args(["install", "bpf-linker", "--locked", "--force"])
        .args(["--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", lib_dir.display()),
        );
    run_checked(cmd)?;
    if !bpf_linker_ok() {
        bail!("bpf-linker was installed but `bpf-linker --version` still fails");
    }
    Ok(())
}

fn find_libllvm(lib_dir: &Path) -> Result<PathBuf> {
    // Newer nightlies ship `libLLVM-<ver>-rust-*.so` as a one-line linker script
    // (`INPUT(libLLVM.so.<ver>...)`) next to the real library: take the ELF file.
    let is_elf = |p: &Path| {
        let mut magic = [0u8; 4];
        fs::File::open(p)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|()| &magic == b"\x7fELF")
    };
    fs::read_dir(lib_dir)
        .with_context(|| format!("listing {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") || n.starts_with("libLLVM-"))
                && is_elf(p)
        })
        .with_context(|| format!("no libLLVM shared library in {}", lib_dir.display()))
}
