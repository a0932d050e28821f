//! `numa-agent policy validate FILE...`.
use anyhow::bail;
use numa_agent::policy::{load, parse::Machine};

use crate::ValidateArgs;

pub fn validate(args: &ValidateArgs) -> anyhow::Result<()> {
    // Warnings need the machine; a missing topology only drops them.
    let machine = match Machine::from_sysfs(&args.sysfs_root) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!(
                "warning: no topology under {} ({e}); node ids not checked",
                args.sysfs_root.display()
            );
            None
        }
    };
    let mut invalid = 0;
    for path in &args.files {
        let files = match load::files_of(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{e}");
                invalid += 1;
                continue;
            }
        };
        for file in files {
            match load::load_file(&file, machine.as_ref()) {
                Ok((_, policies, warnings)) => {
                    for w in warnings {
                        println!(
                            "{}:{}: warning: {}: {}",
                            file.display(),
                            w.line,
                            w.path,
                            w.message
                        );
                    }
                    for p in policies {
                        println!(
                            "{}: ok: policy {} ({} mode)",
                            file.display(),
                            p.name,
                            p.mode.as_str()
                        );
                    }
                }
                Err(load::LoadError::Invalid { path, errors }) => {
                    invalid += 1;
                    for e in errors {
                        eprintln!(
                            "{}:{}: error: {}: {}",
                            path.display(),
                            e.line,
                            e.path,
                            e.message
                        );
                    }
                }
                Err(e) => {
                    invalid += 1;
                    eprintln!("{e:#}");
                }
            }
        }
    }
    if invalid > 0 {
        bail!("{invalid} invalid policy file(s)");
    }
    Ok(())
}
