//! The kernel's own record of events, as the oracle the sensor is checked against: a
//! private tracefs instance (`instances/<name>`, Documentation/trace/ftrace.rst) so
//! the tests neither depend on nor disturb the global trace buffer.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// The tracefs mount from /proc/mounts, mounting it on /sys/kernel/tracing if absent.
pub fn tracefs_root() -> io::Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts")?;
    if let Some(dir) = mounts.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(2) == Some(&"tracefs")).then(|| PathBuf::from(cols[1]))
    }) {
        return Ok(dir);
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()?;
    if !status.success() {
        return Err(io::Error::other("mounting tracefs failed"));
    }
    Ok(PathBuf::from("/sys/kernel/tracing"))
}

/// Lines an instance at `dir` dropped for lack of buffer space, summed over CPUs
/// (`per_cpu/cpuN/stats`, `overrun:`).
pub fn overruns(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for cpu in fs::read_dir(dir.join("per_cpu"))? {
        let stats = fs::read_to_string(cpu?.path().join("stats"))?;
        total += stats
            .lines()
            .find_map(|l| l.strip_prefix("overrun:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// One `sched_migrate_task` line of the trace text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrateLine {
    pub pid: u32,
    pub orig_cpu: u32,
    pub dest_cpu: u32,
}

pub struct Instance {
    dir: PathBuf,
}

/// Write a tracefs control file, naming it in the error.
pub fn write(path: &Path, text: &str) -> io::Result<()> {
    fs::write(path, text).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Instance {
    /// A new instance named `name` recording every `sched:sched_migrate_task`; callers
    /// pick their thread out of [`Instance::migrations`] by the event's `pid` field
    /// (the migrated task). Unfiltered, so a thread created after this call is seen
    /// over its whole life, however early it first moves.
    pub fn migrations(name: &str) -> io::Result<Self> {
        let dir = tracefs_root()?.join("instances").join(name);
        if dir.exists() {
            fs::remove_dir(&dir)?;
        }
        fs::create_dir(&dir)?;
        let instance = Self { dir };
        let event = instance.dir.join("events/sched/sched_migrate_task");
        write(&instance.dir.join("buffer_size_kb"), "4096")?;
        write(&event.join("enable"), "1")?;
        write(&instance.dir.join("tracing_on"), "1")?;
        Ok(instance)
    }

    pub fn stop(&self) -> io::Result<()> {
        write(&self.dir.join("tracing_on"), "0")
    }

    /// Every `sched_migrate_task` line of thread `tid` in the buffer, oldest first.
    pub fn migrations_of(&self, tid: u32) -> io::Result<Vec<MigrateLine>> {
        let text = fs::read_to_string(self.dir.join("trace"))?;
        Ok(parse_migrations(&text)
            .into_iter()
            .filter(|l| l.pid == tid)
            .collect())
    }

    /// Lines the kernel dropped for lack of buffer space.
    pub fn overruns(&self) -> io::Result<u64> {
        overruns(&self.dir)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = write(
            &self.dir.join("events/sched/sched_migrate_task/enable"),
            "0",
        );
        let _ = fs::remove_dir(&self.dir);
    }
}

/// `<task>-<pid> [cpu] flags ts: sched_migrate_task: comm=.. pid=N prio=N orig_cpu=N dest_cpu=N`
/// (the event's `print fmt`). Keys are read from the right, so a comm holding spaces is fine.
pub fn parse_migrations(text: &str) -> Vec<MigrateLine> {
    text.lines()
        .filter_map(|line| {
            let (_, fields) = line.split_once("sched_migrate_task: ")?;
            let value = |key: &str| {
                fields
                    .split_whitespace()
                    .rev()
                    .find_map(|kv| kv.strip_prefix(key)?.parse::<u32>().ok())
            };
            Some(MigrateLine {
                pid: value("pid=")?,
                orig_cpu: value("orig_cpu=")?,
                dest_cpu: value("dest_cpu=")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trace_lines() {
        let text = "# tracer: nop\n#\n numa-flip-4242 [000] d..5. 10.5: sched_migrate_task: \
                    comm=numa flip pid=4242 prio=120 orig_cpu=0 dest_cpu=1\n";
        assert_eq!(
            parse_migrations(text),
            vec![MigrateLine {
                pid: 4242,
                orig_cpu: 0,
                dest_cpu: 1
            }]
        );
    }
}
