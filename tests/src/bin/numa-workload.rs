//! Workloads the tests and benchmarks drive: each causes one kind of NUMA event
//! on purpose, so the sensor's output can be checked against the kernel's own.
use std::{
    io::{self, Write},
    thread,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use numa_tests::pin;

#[derive(Parser)]
#[command(about = "numa-sensor test workloads")]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Move one thread alternately between two CPUs `--flips` times. Prints the
    /// thread id, waits for a line on stdin (time to set up tracing), then flips and
    /// prints `done`.
    Flip {
        #[arg(long, default_value_t = 200)]
        flips: usize,
        #[arg(long, num_args = 2, default_values_t = [0, 1])]
        cpus: Vec<usize>,
        /// Start at once instead of waiting for a line on stdin.
        #[arg(long)]
        no_wait: bool,
        /// Sleep this long between flips (a steady, gentle migration rate).
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
        /// Name both threads this (their `comm`, at most 15 bytes) instead of
        /// `numa-workload` / `numa-flip`.
        #[arg(long)]
        comm: Option<String>,
    },
    /// Map `--mib` MiB of anonymous memory without huge pages, write every page
    /// (first touch allocates it on the node the memory policy picks), print where
    /// the kernel put it according to /proc/self/numa_maps, then stay alive `--hold`.
    Touch {
        #[arg(long, default_value_t = 64)]
        mib: usize,
        /// Pin to this CPU first (else run where numactl or the scheduler put us).
        #[arg(long)]
        cpu: Option<usize>,
        #[arg(long, default_value = "2s", value_parser = humantime_duration)]
        hold: std::time::Duration,
    },
    /// Map, touch and unmap `--mib` MiB `--reps` times, or for `--duration` (every
    /// page a first-touch fault and a page allocation), then print each repetition's
    /// CPU time in ns, sorted (`rep_cpu_ns <n>...`: the page-fault-heavy load of the
    /// benchmark, which sums it up as a low percentile and a trimmed mean), then
    /// `minflt <n>`: the faults the kernel counted for the process (getrusage).
    Churn {
        #[arg(long, default_value_t = 8)]
        mib: usize,
        #[arg(long, default_value_t = 300)]
        reps: usize,
        /// Instead of `--reps`: whole repetitions until this much wall time has passed.
        #[arg(long, conflicts_with = "reps", value_parser = humantime_duration)]
        duration: Option<std::time::Duration>,
        /// Pin to this CPU first.
        #[arg(long)]
        cpu: Option<usize>,
    },
    /// Touch `--mib` MiB where the memory policy puts it, then (optionally) reset the
    /// policy to default, pin to a node or unpin, and keep writing every page for
    /// `--duration`: memory misplaced for NUMA balancing to find. Prints placement
    /// before and after (numa_maps) and the task's `numa_pages_migrated`.
    Misplaced {
        #[arg(long, default_value_t = 32)]
        mib: usize,
        #[arg(long, default_value = "10s", value_parser = humantime_duration)]
        duration: std::time::Duration,
        #[arg(long)]
        reset_policy: bool,
        #[arg(long)]
        pin_node: Option<u32>,
        #[arg(long)]
        unpin: bool,
        /// Allow every online CPU this long into the touch loop.
        #[arg(long, value_parser = humantime_duration)]
        unpin_after: Option<std::time::Duration>,
        /// Wait for a line on stdin before exiting (after printing `holding`).
        #[arg(long)]
        hold: bool,
    },
}

fn humantime_duration(text: &str) -> Result<std::time::Duration, String> {
    let ms = text
        .strip_suffix("ms")
        .map(|v| v.parse::<u64>())
        .or_else(|| {
            text.strip_suffix('s')
                .map(|v| v.parse::<u64>().map(|s| s * 1000))
        })
        .ok_or_else(|| format!("`{text}`: use <N>s or <N>ms"))?
        .map_err(|e| format!("`{text}`: {e}"))?;
    Ok(std::time::Duration::from_millis(ms))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().workload {
        Workload::Flip {
            flips,
            cpus,
            no_wait,
            pause_ms,
            comm,
        } => {
            let cpus = [cpus[0], cpus[1]];
            if let Some(name) = &comm {
                let c = std::ffi::CString::new(name.as_str()).context("--comm")?;
                // SAFETY: PR_SET_NAME copies at most 16 bytes from a NUL-terminated string.
                unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
            }
            let worker = thread::Builder::new()
                .name(comm.unwrap_or_else(|| "numa-flip".into()))
                .spawn(move || -> io::Result<()> {
                    println!("tid {}", pin::gettid());
                    io::stdout().flush()?;
                    if !no_wait {
                        io::stdin().read_line(&mut String::new())?;
                    }
                    if pause_ms == 0 {
                        return pin::flip_between(cpus, flips);
                    }
                    for i in 0..flips {
                        pin::pin_self(cpus[i % 2])?;
                        thread::sleep(std::time::Duration::from_millis(pause_ms));
                    }
                    Ok(())
                })
                .context("spawning the flipping thread")?;
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("flipping thread panicked"))?
                .context("flipping")?;
            println!("done");
        }
        Workload::Misplaced {
            mib,
            duration,
            reset_policy,
            pin_node,
            unpin,
            unpin_after,
            hold,
        } => numa_tests::balancing::run_misplaced(&numa_tests::balancing::Misplaced {
            mib,
            duration,
            reset_policy,
            pin_node,
            unpin,
            unpin_after,
            hold,
        })?,
        Workload::Churn {
            mib,
            reps,
            duration,
            cpu,
        } => {
            if let Some(cpu) = cpu {
                pin::pin_self(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
            }
            use numa_tests::memory::ChurnLength;
            let length = duration.map_or(ChurnLength::Reps(reps), ChurnLength::Wall);
            let mut times = numa_tests::memory::churn(mib << 20, length)?;
            times.sort();
            let ns: Vec<String> = times.iter().map(|t| t.as_nanos().to_string()).collect();
            println!("rep_cpu_ns {}", ns.join(" "));
            println!("minflt {}", numa_tests::memory::minor_faults());
        }
        Workload::Touch { mib, cpu, hold } => {
            if let Some(cpu) = cpu {
                pin::pin_self(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
            }
            let (placement, elapsed) = numa_tests::memory::touch_and_locate(mib << 20)?;
            eprintln!("touch_ns {}", elapsed.wall.as_nanos());
            eprintln!("touch_cpu_ns {}", elapsed.cpu.as_nanos());
            println!("pid {} numa_maps {placement}", std::process::id());
            io::stdout().flush()?;
            thread::sleep(hold);
            println!("done");
        }
    }
    Ok(())
}
