//! What an operator meets first: `--help`, and a run without privileges.
use std::{os::unix::process::CommandExt as _, process::Command};

use numa_tests::{agent::agent_bin, require_privileges};

#[test]
fn run_help_explains_every_flag() {
    let out = Command::new(agent_bin())
        .args(["run", "--help"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf-8");
    for flag in [
        "--metrics-addr",
        "--events",
        "--sysfs-root",
        "--proc-root",
        "--tracefs",
    ] {
        let line = help.lines().find(|l| l.trim_start().starts_with(flag));
        let line = line.unwrap_or_else(|| panic!("{flag} not in help:\n{help}"));
        // Each flag has an explanation: the line after the flag line is prose, not empty.
        let idx = help.lines().position(|l| l == line).expect("line");
        let next = help.lines().nth(idx + 1).unwrap_or("").trim();
        assert!(
            !next.is_empty() && !next.starts_with('-'),
            "{flag} has no explanation:\n{help}"
        );
    }
    assert!(
        help.contains("127.0.0.1:9477"),
        "default metrics address shown:\n{help}"
    );
}

#[test]
fn run_without_privileges_names_what_is_missing() {
    require_privileges!();
    // Drop to `nobody` in the child: no capabilities at all.
    let mut cmd = Command::new(agent_bin());
    cmd.args(["run", "--metrics-addr", "127.0.0.1:0"]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("runs");
    assert!(!out.status.success(), "an unprivileged run must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("missing privilege: CAP_BPF and CAP_PERFMON"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("os error"),
        "an errno leaked instead of a message: {stderr}"
    );
}
