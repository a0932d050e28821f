//! What /proc says about a thread: its thread group and whether it is a kernel thread.
use std::{fs, path::Path};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadInfo {
    pub tgid: u32,
    pub kernel_thread: bool,
}

/// Read `<proc_root>/<tid>/status` (threads that are not group leaders are reachable
/// by tid even though `readdir` does not list them). `None` once the thread is gone.
pub fn thread_info(proc_root: &Path, tid: u32) -> Option<ThreadInfo> {
    let status = fs::read_to_string(proc_root.join(tid.to_string()).join("status")).ok()?;
    parse_status(&status, tid)
}

fn parse_status(status: &str, tid: u32) -> Option<ThreadInfo> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let tgid: u32 = field("Tgid:")?.parse().ok()?;
    let kernel_thread = match field("Kthread:") {
        // `Kthread:` exists since 6.0 (fs/proc/array.c).
        Some(flag) => flag == "1",
        // Older kernels: kthreadd (pid 2) and its children are the kernel threads.
        None => tid == 2 || field("PPid:") == Some("2"),
    };
    Some(ThreadInfo {
        tgid,
        kernel_thread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let user = "Name:\tx\nTgid:\t10\nPid:\t12\nPPid:\t1\nKthread:\t0\n";
        assert_eq!(
            parse_status(user, 12),
            Some(ThreadInfo {
                tgid: 10,
                kernel_thread: false
            })
        );
        let kworker_61 = "Name:\tkworker/0:1\nTgid:\t40\nPid:\t40\nPPid:\t2\n";
        assert_eq!(
            parse_status(kworker_61, 40),
            Some(ThreadInfo {
                tgid: 40,
                kernel_thread: true
            })
        );
        assert_eq!(parse_status("Name:\tx\n", 1), None);
    }

    #[test]
    fn own_threads_resolve_to_own_pid() {
        let me = std::process::id();
        let info = thread_info(Path::new("/proc"), me).expect("own status");
        assert_eq!(
            info,
            ThreadInfo {
                tgid: me,
                kernel_thread: false
            }
        );
    }
}
