//! Userspace half of the `task:task_newtask` probe: its load-time config, and the
//! threads alive before it was attached, written into the TASKS map from /proc.
use std::{fs, path::Path};

use aya::maps::{HashMap as BpfHashMap, MapData, MapError};
use numa_common::{NewTaskConfig, TASK_KERNEL_THREAD, TaskInfo};

use crate::{
    procfs,
    tracefs::{EventFormat, TracefsError},
};

pub const CATEGORY: &str = "task";
pub const EVENT: &str = "task_newtask";

pub fn config_from_format(format: &EventFormat) -> Result<NewTaskConfig, TracefsError> {
    Ok(NewTaskConfig {
        pid_offset: format.int_field("pid", 4)?.offset,
        clone_flags_offset: format.int_field("clone_flags", 8)?.offset,
    })
}

/// Record every thread under `proc_root` in TASKS. Runs after `task_newtask` is
/// attached, so a thread created meanwhile is in the map either way. Returns how
/// many threads were written.
pub fn seed_from_proc(
    tasks: &mut BpfHashMap<&mut MapData, u32, TaskInfo>,
    proc_root: &Path,
) -> Result<usize, MapError> {
    let mut written = 0;
    let Ok(processes) = fs::read_dir(proc_root) else {
        return Ok(0);
    };
    for process in processes.filter_map(Result::ok) {
        let Some(tgid) = process
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(threads) = fs::read_dir(process.path().join("task")) else {
            continue; // exited meanwhile
        };
        for thread in threads.filter_map(Result::ok) {
            let Some(tid) = thread
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(info) = procfs::thread_info(proc_root, tid) else {
                continue;
            };
            let flags = if info.kernel_thread {
                TASK_KERNEL_THREAD
            } else {
                0
            };
            // NOEXIST: an entry the kernel program wrote meanwhile is newer than /proc.
            match tasks.insert(tid, TaskInfo { tgid, flags }, BPF_NOEXIST) {
                Ok(()) => written += 1,
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(written)
}

/// BPF_NOEXIST (include/uapi/linux/bpf.h): insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newtask_offsets_on_this_kernels_shape() {
        let text = "name: task_newtask\nID: 205\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
            \tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\
            \tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;\n\
            \tfield:short oom_score_adj;\toffset:40;\tsize:2;\tsigned:1;\n";
        let f = EventFormat::parse(text, "6.18 task_newtask").expect("parses");
        assert_eq!(
            config_from_format(&f).expect("config"),
            NewTaskConfig {
                pid_offset: 8,
                clone_flags_offset: 32
            }
        );
    }
}
