//! `numa-agent check`: print the preflight report; the exit code says whether `run`
//! can work here (0 yes, 1 no).
use std::process::ExitCode;

use numa_agent::check::{self, CheckInput};

use crate::CheckArgs;

pub fn check(args: CheckArgs) -> ExitCode {
    let report = check::run(&CheckInput {
        sysfs_root: args.sysfs_root,
        tracefs: args.tracefs,
    });
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("numa-agent: error: encoding the report: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", check::render(&report));
    }
    if report.run_can_work {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
