//! Policies from files and directories, reloaded on change.
//!
//! A path is a file or a directory; in a directory every `*.yaml`, `*.yml` and `*.json`
//! not starting with `.` is read, following symlinks, so a mounted ConfigMap (whose
//! files are symlinks through `..data`, swapped atomically on update) works the same.
//! Each file is all or nothing: one invalid document rejects the whole file, every
//! error is reported, and that file's previous valid version stays in force.
//! Changes are found by polling (re-reading is cheap for a few small files and works
//! for the ConfigMap symlink swap, which inotify on the file would miss).
use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

use super::{
    parse::{FieldError, Machine, parse_documents},
    spec::Policy,
};

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: rejected, {} error(s):\n{}", errors.len(), errors.iter().map(|e| format!("  {}:{e}", path.display())).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        errors: Vec<FieldError>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    Valid,
    /// The last version was rejected; `kept` says whether an earlier valid one is in force.
    Rejected {
        kept: bool,
    },
}

struct Loaded {
    text: String,
    valid: Option<Vec<Policy>>,
    state: FileState,
}

/// The policy files under the configured paths and their last valid versions.
pub struct PolicySource {
    paths: Vec<PathBuf>,
    files: BTreeMap<PathBuf, Loaded>,
}

/// What a poll found.
#[derive(Debug, Default)]
pub struct Poll {
    /// Something changed: the policy set may differ.
    pub changed: bool,
    /// Files read or re-read in this poll, with their problems (errors reject the file).
    pub problems: Vec<LoadError>,
    pub warnings: Vec<(PathBuf, FieldError)>,
}

fn is_policy_file(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
        && p.is_file()
}

/// The policy files `path` stands for.
pub fn files_of(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    if fs::metadata(path).map_err(read_err)?.is_dir() {
        let mut out: Vec<PathBuf> = fs::read_dir(path)
            .map_err(read_err)?
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| is_policy_file(p))
            .collect();
        out.sort();
        Ok(out)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

/// Read and validate one file.
pub fn load_file(
    path: &Path,
    machine: Option<&Machine>,
) -> Result<(String, Vec<Policy>, Vec<FieldError>), LoadError> {
    let text = fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parsed = parse_documents(&text, machine);
    if parsed.errors.is_empty() {
        Ok((text, parsed.policies, parsed.warnings))
    } else {
        Err(LoadError::Invalid {
            path: path.to_path_buf(),
            errors: parsed.errors,
        })
    }
}

impl PolicySource {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            files: BTreeMap::new(),
        }
    }

    /// Re-read every file; validate those whose text changed.
    pub fn poll(&mut self, machine: Option<&Machine>) -> Poll {
        let mut poll = Poll::default();
        let mut seen = Vec::new();
        for path in &self.paths {
            match files_of(path) {
                Ok(files) => seen.extend(files),
                // A directory that vanished for a moment keeps what it had.
                Err(e) => {
                    poll.problems.push(e);
                    seen.extend(self.files.keys().filter(|f| f.starts_with(path)).cloned());
                }
            }
        }
        let before = self.files.len();
        self.files.retain(|f, _| seen.contains(f));
        poll.changed |= self.files.len() != before;
        for file in seen {
            let Ok(text) = fs::read_to_string(&file) else {
                // Mid-swap or unreadable: keep what was loaded.
                continue;
            };
            if self.files.get(&file).is_some_and(|l| l.text == text) {
                continue;
            }
            let parsed = parse_documents(&text, machine);
            poll.warnings
                .extend(parsed.warnings.into_iter().map(|w| (file.clone(), w)));
            let entry = self.files.entry(file.clone()).or_insert(Loaded {
                text: String::new(),
                valid: None,
                state: FileState::Valid,
            });
            entry.text = text;
            if parsed.errors.is_empty() {
                entry.valid = Some(parsed.policies);
                entry.state = FileState::Valid;
                poll.changed = true;
            } else {
                entry.state = FileState::Rejected {
                    kept: entry.valid.is_some(),
                };
                poll.problems.push(LoadError::Invalid {
                    path: file,
                    errors: parsed.errors,
                });
            }
        }
        poll
    }

    /// Every file and its state.
    pub fn states(&self) -> Vec<(PathBuf, FileState)> {
        self.files
            .iter()
            .map(|(p, l)| (p.clone(), l.state.clone()))
            .collect()
    }

    /// The policies in force: each file's last valid version; a name already taken by
    /// an earlier file (in path order) is dropped with a warning.
    pub fn policies(&self) -> Vec<Policy> {
        let mut out: Vec<Policy> = Vec::new();
        for (path, loaded) in &self.files {
            for p in loaded.valid.iter().flatten() {
                if out.iter().any(|o| o.name == p.name) {
                    log::warn!(
                        "{}: policy {} is defined in an earlier file too; this one is ignored",
                        path.display(),
                        p.name
                    );
                } else {
                    out.push(p.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse::tests_support::SUPPLEMENT_EXAMPLE;

    #[test]
    fn directory_reload_keeps_the_last_valid_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.yaml");
        fs::write(&a, SUPPLEMENT_EXAMPLE).expect("write");
        fs::write(dir.path().join(".hidden.yaml"), "garbage: [").expect("write");
        fs::write(dir.path().join("notes.txt"), "not a policy").expect("write");
        let mut src = PolicySource::new(vec![dir.path().to_path_buf()]);
        let poll = src.poll(None);
        assert!(poll.changed && poll.problems.is_empty(), "{poll:?}");
        assert_eq!(src.policies().len(), 1);

        // Unchanged text: nothing to do.
        assert!(!src.poll(None).changed);

        // An invalid edit: rejected whole, every error named, the old version stays.
        fs::write(
            &a,
            SUPPLEMENT_EXAMPLE
                .replace("15%", "150%")
                .replace("[0,1]", "[08]"),
        )
        .expect("write");
        let poll = src.poll(None);
        assert!(!poll.changed);
        let msg = poll
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<String>();
        assert!(
            msg.contains("maxCrossAccess") && msg.contains("allowedNodes[0]"),
            "{msg}"
        );
        assert!(msg.contains("a.yaml:line 5"), "{msg}");
        assert_eq!(
            src.states(),
            vec![(a.clone(), FileState::Rejected { kept: true })]
        );
        assert_eq!(
            src.policies()[0].topology.max_cross_access.map(|r| r.ppm),
            Some(150_000)
        );

        // A valid edit replaces it; a second file with the same name is ignored.
        fs::write(&a, SUPPLEMENT_EXAMPLE.replace("15%", "20%")).expect("write");
        fs::write(dir.path().join("b.yml"), SUPPLEMENT_EXAMPLE).expect("write");
        assert!(src.poll(None).changed);
        let ps = src.policies();
        assert_eq!(ps.len(), 1);
        assert_eq!(
            ps[0].topology.max_cross_access.map(|r| r.ppm),
            Some(200_000)
        );

        // A removed file takes its policies with it.
        fs::remove_file(&a).expect("rm");
        assert!(src.poll(None).changed);
        assert_eq!(
            src.policies()[0].topology.max_cross_access.map(|r| r.ppm),
            Some(150_000)
        );
    }

    #[test]
    fn a_new_invalid_file_has_nothing_to_keep() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("p.yaml");
        fs::write(&f, "kind: NUMAPolicy\n").expect("write");
        let mut src = PolicySource::new(vec![f.clone()]);
        let poll = src.poll(None);
        assert_eq!(poll.problems.len(), 1);
        assert_eq!(src.states(), vec![(f, FileState::Rejected { kept: false })]);
        assert!(src.policies().is_empty());
    }
}
