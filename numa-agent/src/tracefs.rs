//! tracefs: where it is mounted, and what an event's `format` file says.
//!
//! Field offsets used by the eBPF programs come from here at load time, never from
//! constants: kernels lay events out differently (6.1 has `char comm[16]`@8 in
//! `sched_migrate_task`, 6.18 a 4-byte `__data_loc char[] comm`@8 and every later
//! field 12 bytes earlier; some vendor kernels add bytes to the common header).
//! The format is produced by `trace_format_open()`/`f_show()` in
//! kernel/trace/trace_events.c: one `\tfield:<decl>;\toffset:N;\tsize:N;\tsigned:N;`
//! line per field, common fields first, then a blank line, then the event's own.
use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Where tracefs is expected, newest convention first (Documentation/trace/ftrace.rst).
const TRACEFS_CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "tracefs is not mounted and mounting it on {path} failed ({source}); mount it with \
         `mount -t tracefs nodev {path}` or run with CAP_SYS_ADMIN"
    )]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Format {
        path: String,
        line: usize,
        reason: String,
    },
    #[error(
        "tracepoint {event}: field `{field}` {problem}; this kernel's layout is not supported \
         (format file: {path})"
    )]
    Field {
        event: String,
        field: String,
        problem: String,
        path: String,
    },
}

/// A mounted tracefs.
#[derive(Clone, Debug)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Use tracefs at `root` as is (tests, or a caller that already knows).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Find tracefs from `/proc/mounts`; mount it on `/sys/kernel/tracing` if it is
    /// absent and we are allowed to.
    pub fn discover() -> Result<Self, TracefsError> {
        let mounts = read("/proc/mounts")?;
        if let Some(root) = find_in_mounts(&mounts) {
            return Ok(Self { root });
        }
        let target = Path::new(TRACEFS_CANDIDATES[0]);
        mount_tracefs(target).map_err(|source| TracefsError::Mount {
            path: target.to_path_buf(),
            source,
        })?;
        Ok(Self {
            root: target.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of `events/<category>/<name>/format`.
    pub fn format_path(&self, category: &str, name: &str) -> PathBuf {
        self.root
            .join("events")
            .join(category)
            .join(name)
            .join("format")
    }

    /// Read and parse the `format` file of `category:name`.
    pub fn event_format(&self, category: &str, name: &str) -> Result<EventFormat, TracefsError> {
        let path = self.format_path(category, name);
        let text = read(&path)?;
        EventFormat::parse(&text, &path.display().to_string())
    }
}

fn read(path: impl AsRef<Path>) -> Result<String, TracefsError> {
    let path = path.as_ref();
    fs::read_to_string(path).map_err(|source| TracefsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The tracefs mount point from `/proc/mounts` text: a `tracefs` mount, preferring
/// `/sys/kernel/tracing`; else `tracing/` under a mounted debugfs (older kernels
/// automount tracefs there on first access).
pub fn find_in_mounts(mounts: &str) -> Option<PathBuf> {
    let mut tracefs = Vec::new();
    let mut debugfs = Vec::new();
    for line in mounts.lines() {
        let mut cols = line.split_whitespace();
        let (Some(_source), Some(target), Some(fstype)) = (cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        // /proc/mounts escapes spaces and friends as octal (\040); tracefs paths have none.
        match fstype {
            "tracefs" => tracefs.push(PathBuf::from(target)),
            "debugfs" => debugfs.push(PathBuf::from(target).join("tracing")),
            _ => {}
        }
    }
    let preferred = Path::new(TRACEFS_CANDIDATES[0]);
    if let Some(p) = tracefs.iter().find(|p| p.as_path() == preferred) {
        return Some(p.clone());
    }
    tracefs
        .into_iter()
        .next()
        .or_else(|| debugfs.into_iter().find(|p| p.join("events").is_dir()))
}

fn mount_tracefs(target: &Path) -> io::Result<()> {
    let cstr = |s: &str| CString::new(s).map_err(io::Error::other);
    let target_c = CString::new(target.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let (source, fstype) = (cstr("nodev")?, cstr("tracefs")?);
    // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C type as declared, without the name (`char[16]`, `pid_t`, `char[]`).
    pub c_type: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
    /// `__data_loc`: the field is a u32 locating a variable-length array in the record
    /// (low 16 bits offset, high 16 bits length).
    pub data_loc: bool,
    /// Element count of a fixed array field (`char comm[16]` -> 16).
    pub array_len: Option<u32>,
    /// Whether the field belongs to the common header (`common_*`, before the blank line).
    pub common: bool,
}

/// A parsed `format` file.
#[derive(Clone, Debug)]
pub struct EventFormat {
    pub name: String,
    pub id: u32,
    pub fields: Vec<Field>,
    /// The `print fmt:` line, without the prefix (holds `__print_symbolic` tables).
    pub print_fmt: String,
    /// Path or label the text came from, for error messages.
    pub source: String,
}

impl EventFormat {
    /// Parse the text of a `format` file; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, TracefsError> {
        let err = |line: usize, reason: String| TracefsError::Format {
            path: source.to_owned(),
            line,
            reason,
        };
        let (mut name, mut id, mut print_fmt) = (None, None, String::new());
        let mut fields = Vec::new();
        let mut in_common = true;
        let mut seen_field = false;
        for (idx, raw) in text.lines().enumerate() {
            let lineno = idx + 1;
            let line = raw.trim();
            if line.is_empty() {
                // The blank line after the first fields ends the common header.
                if seen_field {
                    in_common = false;
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("name:") {
                name = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("ID:") {
                id = Some(
                    rest.trim()
                        .parse()
                        .map_err(|e| err(lineno, format!("bad ID `{}`: {e}", rest.trim())))?,
                );
            } else if let Some(rest) = line.strip_prefix("print fmt:") {
                print_fmt = rest.trim().to_owned();
            } else if line.starts_with("field:") {
                let field = parse_field(line, in_common).map_err(|reason| err(lineno, reason))?;
                seen_field = true;
                fields.push(field);
            } else if line == "format:" {
            } else {
                return Err(err(lineno, format!("unexpected line `{line}`")));
            }
        }
        let name = name.ok_or_else(|| err(1, "no `name:` line".into()))?;
        let id = id.ok_or_else(|| err(1, "no `ID:` line".into()))?;
        if fields.is_empty() {
            return Err(err(1, "no `field:` lines".into()));
        }
        Ok(Self {
            name,
            id,
            fields,
            print_fmt,
            source: source.to_owned(),
        })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// A field the caller reads as an integer of `size` bytes; refuses anything else
    /// with a message naming the event, the field and the format file.
    pub fn int_field(&self, name: &str, size: u32) -> Result<&Field, TracefsError> {
        let field = self.require(name)?;
        if field.data_loc || field.array_len.is_some() || field.size != size {
            return Err(self.field_error(
                name,
                format!(
                    "is `{}` of {} bytes, expected a {size}-byte integer",
                    field.c_type, field.size
                ),
            ));
        }
        Ok(field)
    }

    /// A string field: an inline `char[N]` array or a `__data_loc char[]`.
    pub fn string_field(&self, name: &str) -> Result<&Field, TracefsError> {
        let field = self.require(name)?;
        let inline = field.array_len.is_some() && field.c_type.starts_with("char");
        let data_loc = field.data_loc && field.c_type.starts_with("char") && field.size == 4;
        if !(inline || data_loc) {
            return Err(self.field_error(
                name,
                format!(
                    "is `{}`, expected `char[N]` or `__data_loc char[]`",
                    field.c_type
                ),
            ));
        }
        Ok(field)
    }

    fn require(&self, name: &str) -> Result<&Field, TracefsError> {
        self.field(name)
            .ok_or_else(|| self.field_error(name, "is missing".to_owned()))
    }

    fn field_error(&self, field: &str, problem: String) -> TracefsError {
        TracefsError::Field {
            event: self.name.clone(),
            field: field.to_owned(),
            problem,
            path: self.source.clone(),
        }
    }
}

/// `field:<decl>;\toffset:N;\tsize:N;\tsigned:N;` (`signed` is absent on very old kernels).
fn parse_field(line: &str, common: bool) -> Result<Field, String> {
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once(':')
            .ok_or_else(|| format!("`{part}` is not `key:value`"))?;
        let number = || {
            value
                .trim()
                .parse::<u32>()
                .map_err(|e| format!("bad {key} `{value}`: {e}"))
        };
        match key {
            "field" => decl = Some(value.trim()),
            "offset" => offset = Some(number()?),
            "size" => size = Some(number()?),
            "signed" => signed = number()? != 0,
            _ => {} // Future keys are ignored, not fatal.
        }
    }
    let decl = decl.ok_or("no field declaration")?;
    let offset = offset.ok_or("no offset")?;
    let size = size.ok_or("no size")?;

    let (data_loc, decl) = match decl.strip_prefix("__data_loc ") {
        Some(rest) => (true, rest.trim()),
        None => (false, decl),
    };
    // `__rel_loc` (relative location, 5.18+) is not read by our programs; keep it opaque.
    let (mut c_type, mut name) = match decl.rsplit_once(char::is_whitespace) {
        Some((ty, name)) => (ty.trim().to_owned(), name.trim().to_owned()),
        None => return Err(format!("cannot split `{decl}` into type and name")),
    };
    let mut array_len = None;
    if let Some(open) = name.find('[') {
        // `char comm[16]`: the array suffix belongs to the type.
        let suffix = name[open..].to_owned();
        let len = suffix.trim_start_matches('[').trim_end_matches(']');
        if !len.is_empty() {
            array_len = Some(
                len.parse::<u32>()
                    .map_err(|e| format!("bad array length in `{decl}`: {e}"))?,
            );
        }
        name.truncate(open);
        c_type.push_str(&suffix);
    }
    if name.is_empty() {
        return Err(format!("no field name in `{decl}`"));
    }
    Ok(Field {
        name,
        c_type,
        offset,
        size,
        signed,
        data_loc,
        array_len,
        common,
    })
}

/// Real format files from ../shared/fixtures/tracefs (read-only, never written), for
/// every probe's offset tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::{fs, path::Path};

    use super::EventFormat;

    /// The kernels whose format files the fixtures hold.
    pub const KERNELS: [&str; 3] = ["linux-6.1-debian", "linux-6.12-debian", "linux-6.18"];

    /// The text of `<kernel>/<file>` and the path it was read from.
    pub fn text(kernel: &str, file: &str) -> (String, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/tracefs")
            .join(kernel)
            .join(file);
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", path.display()));
        (text, path.display().to_string())
    }

    /// `<kernel>/<file>` parsed.
    pub fn format(kernel: &str, file: &str) -> EventFormat {
        let (text, source) = text(kernel, file);
        EventFormat::parse(&text, &source).unwrap_or_else(|e| panic!("{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::{fixtures::text as shared_fixture, *};

    fn migrate_format(kernel: &str) -> EventFormat {
        let (text, source) = shared_fixture(kernel, "sched__sched_migrate_task.format");
        EventFormat::parse(&text, &source).expect("fixture parses")
    }

    #[test]
    fn sched_migrate_task_on_6_1_has_inline_comm() {
        let f = migrate_format("linux-6.1-debian");
        assert_eq!((f.name.as_str(), f.id), ("sched_migrate_task", 318));
        let comm = f.string_field("comm").expect("comm");
        assert_eq!(
            (comm.offset, comm.size, comm.array_len, comm.data_loc),
            (8, 16, Some(16), false)
        );
        assert_eq!(f.int_field("pid", 4).expect("pid").offset, 24);
        assert_eq!(f.int_field("orig_cpu", 4).expect("orig_cpu").offset, 32);
        assert_eq!(f.int_field("dest_cpu", 4).expect("dest_cpu").offset, 36);
        assert!(f.field("common_pid").expect("common_pid").common);
        assert!(!f.field("pid").expect("pid").common);
        assert!(f.field("pid").expect("pid").signed);
    }

    #[test]
    fn sched_migrate_task_on_6_18_has_data_loc_comm() {
        let f = migrate_format("linux-6.18");
        let comm = f.string_field("comm").expect("comm");
        assert_eq!((comm.offset, comm.size, comm.data_loc), (8, 4, true));
        assert_eq!(comm.c_type, "char[]");
        assert_eq!(f.int_field("pid", 4).expect("pid").offset, 12);
        assert_eq!(f.int_field("orig_cpu", 4).expect("orig_cpu").offset, 20);
        assert_eq!(f.int_field("dest_cpu", 4).expect("dest_cpu").offset, 24);
    }

    #[test]
    fn sched_migrate_task_on_6_12_matches_6_1_layout() {
        let f = migrate_format("linux-6.12-debian");
        assert_eq!(f.int_field("dest_cpu", 4).expect("dest_cpu").offset, 36);
        assert!(!f.field("comm").expect("comm").signed);
    }

    #[test]
    fn vendor_kernel_with_12_byte_common_header() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/tracefs/vendor-12byte-header/sched__sched_migrate_task.format");
        let text = fs::read_to_string(&path).expect("testdata readable");
        let f = EventFormat::parse(&text, "vendor").expect("parses");
        let common: Vec<_> = f
            .fields
            .iter()
            .filter(|f| f.common)
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(
            common,
            [
                "common_type",
                "common_flags",
                "common_preempt_count",
                "common_pid",
                "common_preempt_lazy_count"
            ]
        );
        assert_eq!(f.string_field("comm").expect("comm").offset, 12);
        assert_eq!(f.int_field("pid", 4).expect("pid").offset, 16);
        assert_eq!(f.int_field("orig_cpu", 4).expect("orig_cpu").offset, 24);
        assert_eq!(f.int_field("dest_cpu", 4).expect("dest_cpu").offset, 28);
    }

    #[test]
    fn every_shared_fixture_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tracefs");
        let mut parsed = 0;
        for kernel in fs::read_dir(&root).expect("fixtures dir") {
            for file in fs::read_dir(kernel.expect("entry").path()).expect("kernel dir") {
                let path = file.expect("entry").path();
                let text = fs::read_to_string(&path).expect("readable");
                let f = EventFormat::parse(&text, &path.display().to_string())
                    .unwrap_or_else(|e| panic!("{e}"));
                assert!(
                    f.fields.iter().any(|f| !f.common),
                    "{}: no event fields",
                    path.display()
                );
                parsed += 1;
            }
        }
        assert!(
            parsed >= 21,
            "expected the 3 kernels x 7 events, parsed {parsed}"
        );
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let f = migrate_format("linux-6.18");
        let missing = f
            .int_field("orig_node", 4)
            .expect_err("no such field")
            .to_string();
        assert!(
            missing.contains("sched_migrate_task") && missing.contains("`orig_node` is missing"),
            "{missing}"
        );
        let mistyped = f
            .int_field("comm", 4)
            .expect_err("comm is a string")
            .to_string();
        assert!(
            mistyped.contains("`comm`") && mistyped.contains("expected a 4-byte integer"),
            "{mistyped}"
        );
        let not_string = f
            .string_field("pid")
            .expect_err("pid is an int")
            .to_string();
        assert!(not_string.contains("expected `char[N]`"), "{not_string}");
    }

    #[test]
    fn malformed_lines_report_their_line_number() {
        let text = "name: x\nID: 1\nformat:\n\tfield:int a;\toffset:zero;\tsize:4;\tsigned:1;\n";
        let e = EventFormat::parse(text, "t.format")
            .expect_err("bad offset")
            .to_string();
        assert!(e.starts_with("t.format:4: bad offset `zero`"), "{e}");
        let e = EventFormat::parse("ID: 3\nformat:\n", "u")
            .expect_err("no name")
            .to_string();
        assert!(e.contains("no `name:` line"), "{e}");
    }

    #[test]
    fn mounts_prefer_sys_kernel_tracing() {
        let mounts = "debugfs /sys/kernel/debug debugfs rw 0 0\n\
                      tracefs /mnt/t tracefs rw 0 0\n\
                      tracefs /sys/kernel/tracing tracefs rw,nosuid 0 0\n";
        assert_eq!(
            find_in_mounts(mounts),
            Some(PathBuf::from("/sys/kernel/tracing"))
        );
        let only_other = "tracefs /mnt/t tracefs rw 0 0\n";
        assert_eq!(find_in_mounts(only_other), Some(PathBuf::from("/mnt/t")));
        assert_eq!(find_in_mounts("proc /proc proc rw 0 0\n"), None);
    }
}
