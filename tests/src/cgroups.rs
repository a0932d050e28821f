//! Real cgroups built for a test, in the shapes kubelet and the container runtimes
//! create, removed again when the value is dropped (also when the test panics).
use std::{
    fs, io,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

/// A kernel-generated random UUID (`/proc/sys/kernel/random/uuid`, drivers/char/random.c):
/// the form Kubernetes pod UIDs take.
pub fn random_uuid() -> io::Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/uuid")?
        .trim()
        .to_owned())
}

/// 64 lowercase hex digits, like a containerd / CRI-O / docker container id.
pub fn random_container_id() -> io::Result<String> {
    Ok(format!("{}{}", random_uuid()?, random_uuid()?).replace('-', ""))
}

/// The mount point of the v1 hierarchy with `controller`, and of cgroup2, from /proc/mounts.
pub fn mount_of(controller: Option<&str>) -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        let ok = match controller {
            None => cols.get(2) == Some(&"cgroup2"),
            Some(c) => cols.get(2) == Some(&"cgroup") && cols[3].split(',').any(|o| o == c),
        };
        ok.then(|| PathBuf::from(cols[1]))
    })
}

/// A cgroup path created under one mounted hierarchy, every missing level of it.
/// Several sharing a parent: drop the ones created later first (the first one created
/// the shared levels and removes them).
pub struct TestCgroup {
    /// Full path of the leaf directory.
    pub dir: PathBuf,
    /// The path relative to the hierarchy root, as `/proc/<pid>/cgroup` shows it.
    pub path: String,
    /// Directories this value created, outermost first.
    created: Vec<PathBuf>,
}

impl TestCgroup {
    /// Create `mount/<rel>` (rel like `kubepods/burstable/pod<uid>/<id>`).
    pub fn create(mount: &Path, rel: &str) -> io::Result<Self> {
        let mut created = Vec::new();
        let mut dir = mount.to_path_buf();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            match fs::create_dir(&dir) {
                Ok(()) => created.push(dir.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    let partial = Self {
                        dir: dir.clone(),
                        path: String::new(),
                        created,
                    };
                    drop(partial);
                    return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
                }
            }
        }
        Ok(Self {
            dir,
            path: format!("/{}", rel.trim_matches('/')),
            created,
        })
    }

    /// Move the whole process `pid` (every thread) here.
    pub fn add_process(&self, pid: u32) -> io::Result<()> {
        let procs = self.dir.join("cgroup.procs");
        fs::write(&procs, pid.to_string())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", procs.display())))
    }

    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            // Processes still inside belong to the test: kill them, wait for the kernel
            // to empty the cgroup, then remove it.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
                for pid in &pids {
                    // SAFETY: signalling a process of this test's own cgroup.
                    unsafe { libc::kill(*pid, libc::SIGKILL) };
                }
                // A child cgroup someone else created keeps it busy for good.
                let has_child = fs::read_dir(dir).is_ok_and(|mut entries| {
                    entries.any(|e| e.is_ok_and(|e| e.file_type().is_ok_and(|t| t.is_dir())))
                });
                if has_child {
                    eprintln!("cleanup: {} still has child cgroups, left", dir.display());
                    break;
                }
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        eprintln!("cleanup: could not remove {}: {e}", dir.display());
                        break;
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}
