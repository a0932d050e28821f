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
        /// Name both threads this (their `comm`, at most 15 bytes) instead of
        /// `numa-workload` / `numa-flip`.
        #[arg(long)]
        comm: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().workload {
        Workload::Flip {
            flips,
            cpus,
            no_wait,
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
                    pin::flip_between(cpus, flips)
                })
                .context("spawning the flipping thread")?;
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("flipping thread panicked"))?
                .context("flipping")?;
            println!("done");
        }
    }
    Ok(())
}
