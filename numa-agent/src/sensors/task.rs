//! Userspace half of the `task:task_newtask` and `cgroup:cgroup_attach_task` probes:
//! their load-time configs, and the threads alive before they were attached, written
//! into the TASKS map from /proc (with each process's cgroup ids).
use std::{fs, path::Path};

use aya::maps::{HashMap as BpfHashMap, MapData, MapError};
use numa_common::{AttachConfig, CGROUP_SLOTS, NewTaskConfig, TASK_KERNEL_THREAD, TaskInfo};

use crate::{
    cgroup::Tracked,
    procfs,
    tracefs::{EventFormat, TracefsError},
};

pub const CATEGORY: &str = "task";
pub const EVENT: &str = "task_newtask";
pub const ATTACH_CATEGORY: &str = "cgroup";
pub const ATTACH_EVENT: &str = "cgroup_attach_task";

/// Offsets of `dst_root`, `dst_id` and `pid` of `cgroup_attach_task`, and the v1
/// hierarchy to follow.
pub fn attach_config_from_format(
    format: &EventFormat,
    tracked: &Tracked,
) -> Result<AttachConfig, TracefsError> {
    Ok(AttachConfig {
        dst_root_offset: format.int_field("dst_root", 4)?.offset,
        dst_id_offset: format.int_field("dst_id", 8)?.offset,
        pid_offset: format.int_field("pid", 4)?.offset,
        v1_hierarchy: tracked.v1_hierarchy_id(),
    })
}

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
    tracked: &Tracked,
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
        // The group's cgroups go on the leader's entry (see numa_common::TaskInfo).
        let cgroup_ids = fs::read_to_string(process.path().join("cgroup"))
            .map_or([0; CGROUP_SLOTS], |text| {
                tracked.ids_of(&tracked.paths_from_proc(&text))
            });
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
            let info = TaskInfo {
                tgid,
                flags,
                cgroup_ids: if tid == tgid {
                    cgroup_ids
                } else {
                    [0; CGROUP_SLOTS]
                },
            };
            match tasks.insert(tid, info, BPF_NOEXIST) {
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
    fn attach_offsets_on_this_kernels_shape() {
        // 6.18's events/cgroup/cgroup_attach_task/format.
        let text = "name: cgroup_attach_task\nID: 538\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
            \tfield:int dst_root;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:int dst_level;\toffset:12;\tsize:4;\tsigned:1;\n\
            \tfield:u64 dst_id;\toffset:16;\tsize:8;\tsigned:0;\n\
            \tfield:int pid;\toffset:24;\tsize:4;\tsigned:1;\n\
            \tfield:__data_loc char[] dst_path;\toffset:28;\tsize:4;\tsigned:0;\n";
        let f = EventFormat::parse(text, "6.18 cgroup_attach_task").expect("parses");
        let c = attach_config_from_format(&f, &Tracked::default()).expect("config");
        assert_eq!(
            c,
            AttachConfig {
                dst_root_offset: 8,
                dst_id_offset: 16,
                pid_offset: 24,
                v1_hierarchy: numa_common::HIERARCHY_NONE,
            }
        );
        // Before 5.7 dst_id was a 4-byte int (the cgroup's idr id, not its kernfs id):
        // refused by name rather than read as garbage.
        let old = EventFormat::parse(
            &text.replace(
                "u64 dst_id;\toffset:16;\tsize:8",
                "int dst_id;\toffset:16;\tsize:4",
            ),
            "old",
        )
        .expect("parses");
        let e = attach_config_from_format(&old, &Tracked::default())
            .expect_err("old layout")
            .to_string();
        assert!(e.contains("dst_id"), "{e}");
    }

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
