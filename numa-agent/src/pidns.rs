//! Pid namespaces. The kernel programs report pids as the initial pid namespace
//! numbers them (`task->pid`, `bpf_get_current_pid_tgid()`). An agent in a container
//! sees its own pid namespace in its `/proc`, where those numbers name other
//! processes or none: it must read the host's `/proc` (`--proc-root /host/proc`).
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PidNsError {
    #[error(
        "{proc_root} is the /proc of a pid namespace other than the host's ({why}): the kernel \
         reports host pids, and joining them against this /proc would name the wrong processes. \
         Mount the host's /proc into the container (e.g. a hostPath volume of /proc at /host/proc, \
         or hostPID: true) and pass --proc-root /host/proc"
    )]
    NotHost { proc_root: PathBuf, why: String },
    #[error("reading {path} (is --proc-root a mounted proc filesystem?)")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Check that `proc_root` shows the initial pid namespace, and return the agent's own
/// tgid as that namespace numbers it (the `self` link of that proc mount resolves in the
/// mount's pid namespace, fs/proc/self.c).
///
/// The test: pid 2 is kthreadd (`rest_init()`, init/main.c) only in the initial pid
/// namespace; kernel threads are not visible in any other, where pid 2 is an ordinary
/// process or absent.
pub fn host_view(proc_root: &Path) -> Result<u32, PidNsError> {
    let status_path = proc_root.join("2/status");
    let not_host = |why: String| PidNsError::NotHost {
        proc_root: proc_root.to_owned(),
        why,
    };
    match fs::read_to_string(&status_path) {
        Ok(status) => {
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_owned()
            };
            if field("Name:") != "kthreadd" || field("PPid:") != "0" {
                return Err(not_host(format!(
                    "its pid 2 is `{}`, not kthreadd",
                    field("Name:")
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_host("it has no pid 2, kthreadd".into()));
        }
        Err(source) => {
            return Err(PidNsError::Read {
                path: status_path,
                source,
            });
        }
    }
    let self_link = proc_root.join("self");
    let target = fs::read_link(&self_link).map_err(|source| PidNsError::Read {
        path: self_link.clone(),
        source,
    })?;
    target.to_str().and_then(|t| t.parse().ok()).ok_or_else(|| {
        not_host(format!(
            "{} points to {}",
            self_link.display(),
            target.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_proc_without_kthreadd_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("2")).expect("mkdir");
        fs::write(dir.path().join("2/status"), "Name:\tsh\nPPid:\t1\n").expect("write");
        let e = host_view(dir.path()).expect_err("not the host").to_string();
        assert!(
            e.contains("not kthreadd") && e.contains("--proc-root /host/proc"),
            "{e}"
        );
        let empty = tempfile::tempdir().expect("tempdir");
        let e = host_view(empty.path()).expect_err("no pid 2").to_string();
        assert!(e.contains("no pid 2"), "{e}");
    }

    #[test]
    fn this_hosts_proc() {
        match host_view(Path::new("/proc")) {
            Ok(pid) => assert_eq!(pid, std::process::id()),
            // Running the unit tests inside a container: that is the refusal.
            Err(e) => eprintln!("/proc here is not the host's: {e}"),
        }
    }
}
