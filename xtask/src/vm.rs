//! `cargo xtask vm`: boot Debian's kernels in multi-node QEMU guests and run named
//! scenarios inside them; each scenario reports PASS/FAIL on the serial console.
//!
//! Why QEMU and not the host: the host has one NUMA node, so cross-node events can
//! only be declared there. A guest whose kernel really has 2 or 4 nodes (one of them
//! memory-only, with an asymmetric distance matrix) proves the same code on real
//! multi-node kernels, and on two more kernel versions than the host's.
//! TCG, not KVM: with KVM these guests hang early in boot (ARCHITECTURE.md section 4).
use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{run_checked, setup, workspace_root};

#[derive(clap::Args, Clone)]
pub struct VmArgs {
    /// Kernel series to boot (newest Debian point release of each, picked at run time).
    #[arg(long = "kernel", value_enum, default_values_t = [KernelSeries::V6_1, KernelSeries::V6_12])]
    kernels: Vec<KernelSeries>,
    /// Guest shapes to boot.
    #[arg(long = "shape", value_enum, default_values_t = [Shape::TwoNodes, Shape::FourNodes])]
    shapes: Vec<Shape>,
    /// Scenarios to run in every guest (default: all the guest knows).
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
}

impl VmArgs {
    /// Every kernel, every shape, every scenario.
    pub fn all() -> Self {
        Self {
            kernels: vec![KernelSeries::V6_1, KernelSeries::V6_12],
            shapes: vec![Shape::TwoNodes, Shape::FourNodes],
            scenarios: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelSeries {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
}

impl KernelSeries {
    fn label(self) -> &'static str {
        match self {
            Self::V6_1 => "6.1",
            Self::V6_12 => "6.12",
        }
    }

    /// The version part of a Debian package name `linux-image-<version>-amd64` in this
    /// series, if `package` is one (6.1: `6.1.0-<abi>`, 6.12: `6.12.<n>+deb12`).
    fn version_of(self, package: &str) -> Option<Vec<u32>> {
        let version = package
            .strip_prefix("linux-image-")?
            .strip_suffix("-amd64")?;
        let numbers = |rest: &str| -> Option<Vec<u32>> {
            rest.split(['.', '-']).map(|p| p.parse().ok()).collect()
        };
        match self {
            Self::V6_1 => numbers(version.strip_prefix("6.1.0-")?),
            Self::V6_12 => numbers(version.strip_prefix("6.12.")?.strip_suffix("+deb12")?),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// node0 = CPU 0, node1 = CPU 1, 512 MiB each, distance 21 both ways.
    TwoNodes,
    /// nodes 0-2 with one CPU each, node 3 memory-only; asymmetric distances.
    FourNodes,
}

impl Shape {
    fn label(self) -> &'static str {
        match self {
            Self::TwoNodes => "2-node",
            Self::FourNodes => "4-node",
        }
    }

    /// QEMU arguments for memory, CPUs and the NUMA layout. The recipe is from
    /// ARCHITECTURE.md section 4; `-numa dist` given in both directions keeps the
    /// matrix asymmetric.
    fn qemu_args(self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut push = |s: &str| args.push(s.to_owned());
        match self {
            Self::TwoNodes => {
                for a in [
                    "-m",
                    "1024",
                    "-smp",
                    "2",
                    "-object",
                    "memory-backend-ram,id=m0,size=512M",
                    "-object",
                    "memory-backend-ram,id=m1,size=512M",
                    "-numa",
                    "node,nodeid=0,cpus=0,memdev=m0",
                    "-numa",
                    "node,nodeid=1,cpus=1,memdev=m1",
                    "-numa",
                    "dist,src=0,dst=1,val=21",
                ] {
                    push(a);
                }
            }
            Self::FourNodes => {
                for a in [
                    "-m",
                    "1024",
                    "-smp",
                    "3",
                    "-object",
                    "memory-backend-ram,id=m0,size=256M",
                    "-object",
                    "memory-backend-ram,id=m1,size=256M",
                    "-object",
                    "memory-backend-ram,id=m2,size=256M",
                    "-object",
                    "memory-backend-ram,id=m3,size=256M",
                    "-numa",
                    "node,nodeid=0,cpus=0,memdev=m0",
                    "-numa",
                    "node,nodeid=1,cpus=1,memdev=m1",
                    "-numa",
                    "node,nodeid=2,cpus=2,memdev=m2",
                    "-numa",
                    "node,nodeid=3,memdev=m3",
                ] {
                    push(a);
                }
                for (src, dst, val) in FOUR_NODE_DISTANCES {
                    push("-numa");
                    push(&format!("dist,src={src},dst={dst},val={val}"));
                }
            }
        }
        args
    }
}

/// Off-diagonal distances of the 4-node guest: deliberately asymmetric
/// (0->3 is 31, 3->0 is 41) so a transposed lookup shows.
const FOUR_NODE_DISTANCES: [(u32, u32, u32); 12] = [
    (0, 1, 21),
    (1, 0, 21),
    (0, 2, 31),
    (2, 0, 31),
    (0, 3, 31),
    (3, 0, 41),
    (1, 2, 21),
    (2, 1, 21),
    (1, 3, 41),
    (3, 1, 31),
    (2, 3, 21),
    (3, 2, 21),
];

/// Longest one guest may run, boot included.
const GUEST_TIMEOUT: Duration = Duration::from_secs(420);

pub fn run(args: &VmArgs, agent: &Path, guest: &Path, workload: &Path) -> Result<()> {
    setup::ensure_apt(&["qemu-system-x86", "busybox-static", "numactl"])?;
    let dir = workspace_root().join("target/vm");
    fs::create_dir_all(&dir)?;
    let initramfs = dir.join("initramfs.cpio");
    build_initramfs(&initramfs, agent, guest, workload)?;

    let mut failures = Vec::new();
    let mut passed = 0;
    for &series in &args.kernels {
        let kernel = ensure_kernel(series, &dir.join("kernels"))?;
        for &shape in &args.shapes {
            let label = format!(
                "linux {} ({}) {}",
                series.label(),
                kernel.version,
                shape.label()
            );
            println!("== vm: {label}");
            let mut results = boot(&kernel.vmlinuz, &initramfs, shape, &args.scenarios);
            // A guest kernel that dies while booting, before /init ran anything of
            // ours, is TCG or the guest kernel failing (seen once: an int3 Oops in
            // run_timer_softirq at 1.2 s on 6.12), not a scenario: boot it once more,
            // and say so.
            if let Err(BootError::PanickedBeforeInit(line)) = &results {
                println!("   guest kernel panicked before /init ({line}); booting it once more");
                results = boot(&kernel.vmlinuz, &initramfs, shape, &args.scenarios);
            }
            let results = results
                .map_err(anyhow::Error::from)
                .with_context(|| format!("guest {label}"))?;
            for r in results {
                println!(
                    "   {} {}: {}",
                    if r.passed { "PASS" } else { "FAIL" },
                    r.name,
                    r.detail
                );
                if r.passed {
                    passed += 1;
                } else {
                    failures.push(format!("{label} {}: {}", r.name, r.detail));
                }
            }
        }
    }
    println!("vm: {passed} passed, {} failed", failures.len());
    if !failures.is_empty() {
        bail!("VM scenarios failed:\n{}", failures.join("\n"));
    }
    Ok(())
}

struct Kernel {
    version: String,
    vmlinuz: PathBuf,
}

/// The newest Debian kernel of `series`: `apt-get download`, then `dpkg-deb -x` (no
/// change to the host), cached under `cache`.
/// The newest package name of `series` in apt's lists, if any.
fn newest_kernel_package(series: KernelSeries) -> Result<Option<String>> {
    let listing = Command::new("apt-cache")
        .args(["search", "--names-only", "^linux-image-6"])
        .output()
        .context("apt-cache search")?;
    Ok(String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| series.version_of(p).map(|v| (v, p.to_owned())))
        .max()
        .map(|(_, p)| p))
}

fn ensure_kernel(series: KernelSeries, cache: &Path) -> Result<Kernel> {
    // A new machine may have no apt lists yet: update once, then look again.
    let package = match newest_kernel_package(series)? {
        Some(p) => p,
        None => {
            let mut update = Command::new("apt-get");
            update.args(["update", "-qq"]);
            run_checked(update)?;
            newest_kernel_package(series)?.with_context(|| {
                format!(
                    "no linux-image package of the {} series in apt",
                    series.label()
                )
            })?
        }
    };
    let version = package
        .trim_start_matches("linux-image-")
        .trim_end_matches("-amd64")
        .to_owned();
    let root = cache.join(&package);
    let vmlinuz = root.join(format!("boot/vmlinuz-{version}-amd64"));
    if vmlinuz.is_file() {
        return Ok(Kernel { version, vmlinuz });
    }
    println!("vm: fetching {package}");
    let download = cache.join("deb");
    fs::create_dir_all(&download)?;
    let mut get = Command::new("apt-get");
    get.args(["download", "-qq", &package])
        .current_dir(&download);
    run_checked(get)?;
    let deb = fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
    let mut extract = Command::new("dpkg-deb");
    extract.arg("-x").arg(&deb).arg(&root);
    run_checked(extract)?;
    let _ = fs::remove_file(&deb);
    if !vmlinuz.is_file() {
        bail!("{} has no {}", package, vmlinuz.display());
    }
    Ok(Kernel { version, vmlinuz })
}

struct ScenarioResult {
    name: String,
    passed: bool,
    detail: String,
}

#[derive(Debug, thiserror::Error)]
enum BootError {
    /// The kernel panicked before `/init` printed `NUMA-VM-BEGIN`.
    #[error("the guest kernel panicked before /init ran: {0}")]
    PanickedBeforeInit(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Boot one guest and collect its `NUMA-SCENARIO <name> PASS|FAIL <detail>` lines.
fn boot(
    vmlinuz: &Path,
    initramfs: &Path,
    shape: Shape,
    scenarios: &[String],
) -> Result<Vec<ScenarioResult>, BootError> {
    let mut append = String::from("console=ttyS0 panic=-1 quiet loglevel=3");
    if !scenarios.is_empty() {
        append.push_str(&format!(" numa.scenarios={}", scenarios.join(",")));
    }
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-nographic",
            "-no-reboot",
            "-nodefaults",
        ])
        .args(["-serial", "stdio"])
        .args(shape.qemu_args())
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let mut console = Vec::new();
    let mut results = Vec::new();
    let (mut ended, mut began) = (false, false);
    let mut panic = None;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let line = line.trim_end_matches('\r').to_owned();
        began |= line.starts_with("NUMA-VM-BEGIN");
        // With panic=-1 and -no-reboot qemu should exit on a panic, but a panic in
        // interrupt context can hang the reboot under TCG: stop waiting at once.
        if let Some(at) = line.find("Kernel panic - not syncing") {
            panic = Some(line[at..].to_owned());
            console.push(line);
            break;
        }
        if let Some(rest) = line.strip_prefix("NUMA-SCENARIO ") {
            let mut parts = rest.splitn(3, ' ');
            let name = parts.next().unwrap_or("?").to_owned();
            let passed = parts.next() == Some("PASS");
            results.push(ScenarioResult {
                name,
                passed,
                detail: parts.next().unwrap_or("").to_owned(),
            });
        }
        if line.starts_with("NUMA-VM-END") {
            ended = true;
        }
        console.push(line);
    }
    let _ = child.kill();
    let status = child.wait().context("waiting for qemu")?;
    if let (Some(line), false) = (&panic, began) {
        let log = workspace_root().join("target/vm/last-console.log");
        let _ = fs::write(&log, console.join("\n"));
        return Err(BootError::PanickedBeforeInit(format!(
            "{}; console in {}",
            line.trim(),
            log.display()
        )));
    }
    if !ended || results.is_empty() {
        let log = workspace_root().join("target/vm/last-console.log");
        let _ = fs::write(&log, console.join("\n"));
        let why = if let Some(line) = &panic {
            format!("the guest kernel panicked: {}", line.trim())
        } else if ended {
            "the guest ran no scenario".to_owned()
        } else {
            format!("the guest did not finish within {GUEST_TIMEOUT:?} (qemu {status})")
        };
        return Err(anyhow::anyhow!(
            "{why}; console in {}; last lines:\n{}",
            log.display(),
            console[console.len().saturating_sub(25)..].join("\n")
        )
        .into());
    }
    Ok(results)
}

/// The guest's root file system: busybox, the agent, the scenario runner, numactl
/// and the shared libraries they load, as an uncompressed newc cpio archive
/// (Documentation/driver-api/early-userspace/buffer-format.rst).
fn build_initramfs(out: &Path, agent: &Path, guest: &Path, workload: &Path) -> Result<()> {
    let mut cpio = Cpio::default();
    for dir in [
        "dev", "proc", "sys", "tmp", "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "run",
    ] {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for init's stdio before any devtmpfs exists.
    cpio.char_device("dev/console", 5, 1);
    cpio.file("init", INIT_SCRIPT.as_bytes().to_vec(), 0o755);
    let mut binaries = vec![
        (PathBuf::from("/bin/busybox"), "bin/busybox".to_owned()),
        (agent.to_path_buf(), "usr/bin/numa-agent".to_owned()),
        (guest.to_path_buf(), "usr/bin/numa-vm-guest".to_owned()),
        (workload.to_path_buf(), "usr/bin/numa-workload".to_owned()),
    ];
    binaries.push((which("numactl")?, "usr/bin/numactl".to_owned()));
    let mut libraries = std::collections::BTreeSet::new();
    for (host, inside) in &binaries {
        cpio.file(inside, stripped(host)?, 0o755);
        libraries.extend(shared_libraries(host)?);
    }
    for lib in libraries {
        let inside = lib
            .to_str()
            .context("non-UTF-8 library path")?
            .trim_start_matches('/')
            .to_owned();
        // Parents first: the kernel's unpacker does not create missing directories.
        let parents: Vec<&Path> = Path::new(&inside).ancestors().skip(1).collect();
        for parent in parents.into_iter().rev() {
            if let Some(p) = parent.to_str().filter(|p| !p.is_empty()) {
                cpio.dir(p);
            }
        }
        let bytes = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
        cpio.file(&inside, bytes, 0o755);
    }
    let bytes = cpio.finish();
    fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))
}

/// Runs as pid 1 in the guest. The agents there keep the page-fault sampler attached
/// (NUMA_FAULT_SAMPLE_DUTY=100, which also keeps the page-alloc probe attached through
/// allocation storms): each attach or detach flips a static key at the fault path, which the kernel live-patches with int3 (arch/x86/kernel/alternative.c
/// `text_poke_bp`), and under QEMU's TCG a vCPU has been seen executing that int3
/// after the patch completed ("Oops: int3" in do_user_addr_fault, Debian 6.12 guest).
/// The duty cycle itself is tested on the host's real CPU (tests/tests/page_faults.rs,
/// tests/tests/access.rs).
///
/// The scenario runner, and so the agent it starts, run under `numactl --membind=all`:
/// an MPOL_BIND policy without MPOL_F_MOF makes the NUMA-balancing scanner skip every
/// VMA of theirs (`vma_policy_mof()` in `task_numa_work()`, kernel/sched/fair.c), so
/// with the scanner tuned fast for the balancing scenario a scrape of the agent does
/// not itself take hinting faults and move `/proc/vmstat` while it is compared (a 6.1
/// 4-node guest once found no still reading in 50). The workloads set their own
/// policies with numactl, or reset them (`misplaced --reset-policy`).
const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
echo "NUMA-VM-BEGIN $(uname -r) nodes=$(cat /sys/devices/system/node/online)"
scenarios=$(sed -n 's/.*numa\.scenarios=\([^ ]*\).*/\1/p' /proc/cmdline)
NUMA_AGENT_BIN=/usr/bin/numa-agent NUMA_FAULT_SAMPLE_DUTY=100 numactl --membind=all /usr/bin/numa-vm-guest $scenarios
echo "NUMA-VM-END $?"
poweroff -f
"#;

fn which(name: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found in PATH"))
}

/// The binary without debug info: debug builds are large and the guest only runs them.
fn stripped(path: &Path) -> Result<Vec<u8>> {
    let out = std::env::temp_dir().join(format!("numa-vm-strip-{}", std::process::id()));
    let mut strip = Command::new("strip");
    strip.arg("--strip-debug").arg("-o").arg(&out).arg(path);
    run_checked(strip)?;
    let bytes = fs::read(&out)?;
    let _ = fs::remove_file(&out);
    Ok(bytes)
}

/// Libraries `ldd` says `binary` loads, the dynamic loader included; none for a static one.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    next_ino: u32,
    dirs: std::collections::BTreeSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.next_ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.next_ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        if self.dirs.insert(name.to_owned()) {
            self.entry(name, 0o040_755, &[], (0, 0));
        }
    }

    fn file(&mut self, name: &str, data: Vec<u8>, perm: u32) {
        self.entry(name, 0o100_000 | perm, &data, (0, 0));
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, &[], (major, minor));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_package_versions() {
        let v61 = KernelSeries::V6_1;
        assert_eq!(v61.version_of("linux-image-6.1.0-55-amd64"), Some(vec![55]));
        assert_eq!(v61.version_of("linux-image-6.1.0-55-cloud-amd64"), None);
        assert_eq!(v61.version_of("linux-image-6.1.0-55-amd64-unsigned"), None);
        let v612 = KernelSeries::V6_12;
        assert_eq!(
            v612.version_of("linux-image-6.12.118+deb12-amd64"),
            Some(vec![118])
        );
        assert_eq!(v612.version_of("linux-image-6.12.118+deb12-rt-amd64"), None);
        assert!(
            v612.version_of("linux-image-6.12.99+deb12-amd64")
                < v612.version_of("linux-image-6.12.118+deb12-amd64")
        );
    }

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", b"#!/bin/sh\n".to_vec(), 0o755);
        let bytes = c.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let trailer = bytes
            .windows(10)
            .position(|w| w == b"TRAILER!!!")
            .expect("trailer");
        assert!(trailer > 110);
    }
}
