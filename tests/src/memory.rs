//! Memory a workload places on purpose, and where the kernel says it went:
//! `/proc/<pid>/numa_maps` (fs/proc/task_mmu.c `show_numa_map`) prints, per mapping,
//! `N<node>=<pages>` for the pages resident on each node: an oracle nobody here wrote.
use std::{collections::BTreeMap, fs, io};

/// Pages per node of the mapping that starts at `addr`, from numa_maps text.
pub fn numa_maps_pages(numa_maps: &str, addr: usize) -> Option<BTreeMap<u32, u64>> {
    let line = numa_maps.lines().find(|l| {
        l.split_whitespace()
            .next()
            .and_then(|a| usize::from_str_radix(a, 16).ok())
            == Some(addr)
    })?;
    Some(
        line.split_whitespace()
            .filter_map(|f| {
                let (node, pages) = f.strip_prefix('N')?.split_once('=')?;
                Some((node.parse().ok()?, pages.parse().ok()?))
            })
            .collect(),
    )
}

/// Map `bytes` of anonymous memory without transparent huge pages, write one byte
/// per page so each is allocated now, and return numa_maps' `N<node>=<pages>` for it
/// (space-separated), and how long the writes took (the page faults, nothing else:
/// what a benchmark of the fault path compares) in wall time and in this thread's CPU
/// time. The mapping is left in place: the caller's process holds it.
pub fn touch_and_locate(bytes: usize) -> io::Result<(String, TouchTime)> {
    let p = map_base_pages(bytes)?;
    // SAFETY: a fresh private anonymous mapping; only written within its length.
    let (addr, elapsed) = unsafe {
        let page = 4096;
        let start = (std::time::Instant::now(), thread_cpu_time());
        for off in (0..bytes).step_by(page) {
            std::ptr::write_volatile(p.cast::<u8>().add(off), 1);
        }
        let elapsed = TouchTime {
            wall: start.0.elapsed(),
            cpu: thread_cpu_time().saturating_sub(start.1),
        };
        (p as usize, elapsed)
    };
    let maps = fs::read_to_string("/proc/self/numa_maps")?;
    let pages =
        numa_maps_pages(&maps, addr).ok_or_else(|| io::Error::other("mapping not in numa_maps"))?;
    let placement = pages
        .iter()
        .map(|(n, p)| format!("N{n}={p}"))
        .collect::<Vec<_>>()
        .join(" ");
    Ok((placement, elapsed))
}

/// How long [`churn`] goes on: a number of repetitions, or whole repetitions until
/// this much wall time has passed (tests that need the load to span several agent
/// windows, whatever the machine's speed).
#[derive(Clone, Copy, Debug)]
pub enum ChurnLength {
    Reps(usize),
    Wall(std::time::Duration),
}

/// Map `bytes` of anonymous memory without huge pages, write one byte per page, unmap
/// it, over and over for `length`: every page is a fresh fault and a fresh page
/// allocation, the kernel path the sensor's page-fault and page-alloc programs sit on.
/// Returns this thread's CPU time for each repetition, from mmap to the last write:
/// the unmap, which no probe sits on, is left out so the figure is the faults'.
pub fn churn(bytes: usize, length: ChurnLength) -> io::Result<Vec<std::time::Duration>> {
    let started = std::time::Instant::now();
    let mut times = Vec::new();
    while match length {
        ChurnLength::Reps(reps) => times.len() < reps,
        ChurnLength::Wall(wall) => started.elapsed() < wall,
    } {
        let start = thread_cpu_time();
        let p = map_base_pages(bytes)?;
        // SAFETY: a fresh private anonymous mapping, only written within its length
        // and unmapped before the next one.
        unsafe {
            for off in (0..bytes).step_by(4096) {
                std::ptr::write_volatile(p.cast::<u8>().add(off), 1);
            }
            times.push(thread_cpu_time().saturating_sub(start));
            libc::munmap(p, bytes);
        }
    }
    Ok(times)
}

/// A fresh private anonymous mapping of `bytes` without transparent huge pages: each
/// 4 KiB page is one fault and one allocation event when first written, so counts
/// are exact in pages (and one hinting fault per page under NUMA balancing).
pub fn map_base_pages(bytes: usize) -> io::Result<*mut libc::c_void> {
    // SAFETY: mmap of a new anonymous region touches no existing memory; madvise
    // only advises on the region just mapped.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        libc::madvise(p, bytes, libc::MADV_NOHUGEPAGE);
        Ok(p)
    }
}

/// Minor faults the kernel counted for this process so far (getrusage `ru_minflt`).
pub fn minor_faults() -> u64 {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer; RUSAGE_SELF always exists.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_minflt as u64
}

/// Time a touch loop took: wall clock, and CPU time of the touching thread (user and
/// kernel, so the page faults and every eBPF program run on them, but not time the
/// thread spent preempted).
#[derive(Clone, Copy, Debug)]
pub struct TouchTime {
    pub wall: std::time::Duration,
    pub cpu: std::time::Duration,
}

fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numa_maps_line() {
        let text = "7f0000000000 default anon=16384 dirty=16384 active=0 N0=100 N1=16284 kernelpagesize_kB=4\n\
                    7f1000000000 default file=/lib/x.so mapped=3 N0=3 kernelpagesize_kB=4\n";
        let pages = numa_maps_pages(text, 0x7f00_0000_0000).expect("found");
        assert_eq!(pages, BTreeMap::from([(0, 100), (1, 16284)]));
        assert!(numa_maps_pages(text, 0x1234).is_none());
    }

    #[test]
    fn touching_places_every_page_somewhere() {
        let (placement, _) = touch_and_locate(4 << 20).expect("touch");
        let total: u64 = placement
            .split_whitespace()
            .filter_map(|f| f.split_once('=')?.1.parse::<u64>().ok())
            .sum();
        assert_eq!(total, 1024, "{placement}");
    }
}
