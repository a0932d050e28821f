//! The NDJSON event stream written to a file with size-based rotation.
//!
//! Rotation follows logrotate's numbering: `events.ndjson` is the live file,
//! `events.ndjson.1` the newest full one, up to `.<keep>`; the oldest is deleted.
//! A file is rotated only between lines, so every file holds whole JSON objects and
//! can be read on its own; a single line longer than the limit gets a file to itself.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EventsFileError {
    #[error("events file {path}: {what}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("--events-file-max-bytes must be at least 1024, got {0}")]
    TooSmall(u64),
}

/// A `Write` that appends whole lines to `path`, rotating when the next line would
/// take the file past `max_bytes`.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    size: u64,
    /// Bytes of a line not yet terminated by `\n` (callers may write a line in parts).
    pending: Vec<u8>,
}

impl RotatingFile {
    /// Open (append to) `path`. `keep` rotated files are kept besides the live one;
    /// `keep = 0` truncates instead of keeping any.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> Result<Self, EventsFileError> {
        if max_bytes < 1024 {
            return Err(EventsFileError::TooSmall(max_bytes));
        }
        let (file, size) = open_append(path)?;
        Ok(Self {
            path: path.to_owned(),
            max_bytes,
            keep,
            file,
            size,
            pending: Vec::new(),
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> Result<(), EventsFileError> {
        self.file.flush().map_err(|source| EventsFileError::Io {
            path: self.path.clone(),
            what: "flushing before rotation",
            source,
        })?;
        let io_err = |path: &Path, what| {
            let path = path.to_owned();
            move |source| EventsFileError::Io { path, what, source }
        };
        if self.keep == 0 {
            fs::remove_file(&self.path).map_err(io_err(&self.path, "removing"))?;
        } else {
            let oldest = self.rotated(self.keep);
            if oldest.exists() {
                fs::remove_file(&oldest).map_err(io_err(&oldest, "removing the oldest"))?;
            }
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    fs::rename(&from, self.rotated(n + 1)).map_err(io_err(&from, "renaming"))?;
                }
            }
            fs::rename(&self.path, self.rotated(1)).map_err(io_err(&self.path, "renaming"))?;
        }
        let (file, size) = open_append(&self.path)?;
        self.file = file;
        self.size = size;
        Ok(())
    }

    fn write_line(&mut self, line: &[u8]) -> Result<(), EventsFileError> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(line)
            .map_err(|source| EventsFileError::Io {
                path: self.path.clone(),
                what: "writing",
                source,
            })?;
        self.size += line.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<(File, u64), EventsFileError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| EventsFileError::Io {
            path: path.to_owned(),
            what: "opening for append",
            source,
        })?;
    let size = file
        .metadata()
        .map_err(|source| EventsFileError::Io {
            path: path.to_owned(),
            what: "reading its size",
            source,
        })?
        .len();
    Ok((file, size))
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(nl + 1);
            let line = if self.pending.is_empty() {
                head.to_vec()
            } else {
                let mut l = std::mem::take(&mut self.pending);
                l.extend_from_slice(head);
                l
            };
            self.write_line(&line).map_err(io::Error::other)?;
            rest = tail;
        }
        self.pending.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn rotates_between_lines_and_keeps_n() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.ndjson");
        let mut f = RotatingFile::open(&path, 1024, 2).expect("opens");
        // 100-byte lines (99 + newline), each written in two parts: 10 per file.
        let line = |i: usize| format!("{{\"n\":{i:>5},\"pad\":\"{}\"}}", "x".repeat(79));
        assert_eq!(line(0).len(), 99);
        for i in 0..35 {
            let l = line(i);
            let (a, b) = l.split_at(40);
            f.write_all(a.as_bytes()).expect("write");
            f.write_all(format!("{b}\n").as_bytes()).expect("write");
        }
        f.flush().expect("flush");
        let live = lines(&path);
        let one = lines(&path.with_extension("ndjson.1"));
        let two = lines(&path.with_extension("ndjson.2"));
        assert!(!path.with_extension("ndjson.3").exists(), "keeps only 2");
        assert_eq!((two.len(), one.len(), live.len()), (10, 10, 5));
        // Every line is whole JSON, in order, oldest in .2; lines 0..10 were dropped.
        let ns: Vec<u64> = [two, one, live]
            .concat()
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["n"]
                    .as_u64()
                    .expect("n")
            })
            .collect();
        assert_eq!(ns, (10..35).collect::<Vec<_>>());
        for p in [&path, &path.with_extension("ndjson.1")] {
            assert!(fs::metadata(p).expect("meta").len() <= 1024);
        }
    }

    #[test]
    fn appends_to_an_existing_file_and_refuses_tiny_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e");
        fs::write(&path, "{\"old\":1}\n").expect("seed");
        let mut f = RotatingFile::open(&path, 4096, 1).expect("opens");
        f.write_all(b"{\"new\":2}\n").expect("write");
        f.flush().expect("flush");
        assert_eq!(lines(&path), vec!["{\"old\":1}", "{\"new\":2}"]);
        let e = RotatingFile::open(&path, 10, 1).err().expect("refused");
        assert!(e.to_string().contains("--events-file-max-bytes"), "{e}");
    }
}
