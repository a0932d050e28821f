//! `NUMAPolicy` YAML -> [`Policy`], collecting *every* error with its field path and line.
//!
//! Why saphyr with `early_parse(false)`: every scalar stays a `Representation` (its
//! original text, quoting style and position), and this module decides what is a
//! number. That is what lets `allowedNodes: [08]` be refused: YAML 1.1 resolvers read
//! `010` as octal 8 and `08` as a string, YAML 1.2 core reads `08` as 8; a loader that
//! resolves scalars itself (serde_yaml and its forks) hands over `8` or `"08"` and the
//! way it was written is lost. Quoted `"1"` is likewise told from plain `1`.
use std::{collections::BTreeSet, fmt, time::Duration};

use saphyr::{MarkedYaml, ScalarStyle, YamlData, YamlLoader};
use saphyr_parser::Parser;

use super::spec::*;
use crate::topology::Topology;

/// One problem in a document: the field path (`spec.qosClasses[1].maxSteals`), the
/// line it is on (1-based) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.path, self.message)
    }
}

/// A parsed document: the policy if there was no error, else every error; warnings
/// either way.
#[derive(Debug, Default)]
pub struct Parsed {
    pub policies: Vec<Policy>,
    pub errors: Vec<FieldError>,
    pub warnings: Vec<FieldError>,
}

type Node<'a> = MarkedYaml<'a>;

struct Ctx {
    errors: Vec<FieldError>,
    warnings: Vec<FieldError>,
}

impl Ctx {
    fn err(&mut self, path: &str, node: &Node<'_>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.to_owned(),
            line: node.span.start.line(),
            message: message.into(),
        });
    }

    fn warn(&mut self, path: &str, node: &Node<'_>, message: impl Into<String>) {
        self.warnings.push(FieldError {
            path: path.to_owned(),
            line: node.span.start.line(),
            message: message.into(),
        });
    }
}

/// What validation knows of the machine, for warnings only (a policy is portable).
#[derive(Clone, Debug)]
pub struct Machine {
    pub topology: Topology,
    /// Nodes with memory (`devices/system/node/has_memory`), `None` when unknown.
    pub memory_nodes: Option<Vec<crate::topology::NodeId>>,
}

impl Machine {
    /// Read under `sysfs_root`; `has_memory` is the kernel's N_MEMORY node state
    /// (drivers/base/node.c), absent in declared splits and old snapshots.
    pub fn from_sysfs(
        sysfs_root: &std::path::Path,
    ) -> Result<Self, crate::topology::TopologyError> {
        let topology = Topology::from_sysfs(sysfs_root)?;
        let memory_nodes =
            std::fs::read_to_string(sysfs_root.join("devices/system/node/has_memory"))
                .ok()
                .and_then(|t| crate::topology::parse_cpulist(&t).ok());
        Ok(Self {
            topology,
            memory_nodes,
        })
    }
}

/// Parse every YAML document in `text` (one policy per document). `machine`, when
/// given, adds warnings for nodes this machine does not have.
pub fn parse_documents(text: &str, machine: Option<&Machine>) -> Parsed {
    let mut out = Parsed::default();
    let mut parser = Parser::new_from_str(text);
    let mut loader: YamlLoader<'_, MarkedYaml<'_>> = YamlLoader::default();
    loader.early_parse(false);
    let loaded = parser.load(&mut loader, true);
    if let Some(e) = loaded.err().or_else(|| loader.error().cloned()) {
        out.errors.push(FieldError {
            path: "(document)".into(),
            line: e.marker().line(),
            message: format!("not valid YAML: {}", e.info()),
        });
        return out;
    }
    let docs = loader.into_documents();
    if docs.is_empty() {
        out.errors.push(FieldError {
            path: "(document)".into(),
            line: 1,
            message: "empty: no NUMAPolicy document".into(),
        });
    }
    for doc in &docs {
        let mut ctx = Ctx {
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let policy = policy(&mut ctx, doc, machine);
        out.warnings.append(&mut ctx.warnings);
        match policy {
            Some(p) if ctx.errors.is_empty() => out.policies.push(p),
            _ => out.errors.append(&mut ctx.errors),
        }
    }
    if !out.errors.is_empty() {
        out.policies.clear();
    }
    out
}

// ---- generic node helpers -------------------------------------------------------

fn scalar<'n>(node: &'n Node<'_>) -> Option<(&'n str, ScalarStyle)> {
    match &node.data {
        YamlData::Representation(text, style, _) => Some((text.as_ref(), *style)),
        _ => None,
    }
}

fn is_null(node: &Node<'_>) -> bool {
    matches!(
        scalar(node),
        Some(("" | "~" | "null" | "Null" | "NULL", ScalarStyle::Plain))
    )
}

fn kind(node: &Node<'_>) -> &'static str {
    match &node.data {
        YamlData::Mapping(_) => "a mapping",
        YamlData::Sequence(_) => "a list",
        _ if is_null(node) => "empty (null)",
        _ => "a scalar",
    }
}

/// The entries of a mapping whose keys are all in `allowed`; every other key is an
/// error. `None` (and an error) when `node` is not a mapping.
fn mapping<'n, 'i>(
    ctx: &mut Ctx,
    path: &str,
    node: &'n Node<'i>,
    allowed: &[&str],
) -> Option<Vec<(&'n str, &'n Node<'i>)>> {
    let YamlData::Mapping(map) = &node.data else {
        ctx.err(
            path,
            node,
            format!("must be a mapping, found {}", kind(node)),
        );
        return None;
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let Some((key, _)) = scalar(k) else {
            ctx.err(path, k, "keys must be plain strings");
            continue;
        };
        if allowed.contains(&key) {
            out.push((key, v));
        } else {
            ctx.err(
                &join(path, key),
                k,
                format!("unknown field; expected one of: {}", allowed.join(", ")),
            );
        }
    }
    Some(out)
}

fn get<'n, 'i>(fields: &[(&str, &'n Node<'i>)], key: &str) -> Option<&'n Node<'i>> {
    fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn sequence<'n, 'i>(ctx: &mut Ctx, path: &str, node: &'n Node<'i>) -> Option<&'n [Node<'i>]> {
    match &node.data {
        YamlData::Sequence(items) => Some(items),
        _ => {
            ctx.err(path, node, format!("must be a list, found {}", kind(node)));
            None
        }
    }
}

/// A non-empty string (plain or quoted).
fn string(ctx: &mut Ctx, path: &str, node: &Node<'_>) -> Option<String> {
    match scalar(node) {
        Some(_) if is_null(node) => {
            ctx.err(path, node, "has no value");
            None
        }
        Some((text, _)) if !text.is_empty() => Some(text.to_owned()),
        Some(_) => {
            ctx.err(path, node, "must not be empty");
            None
        }
        None => {
            ctx.err(
                path,
                node,
                format!("must be a string, found {}", kind(node)),
            );
            None
        }
    }
}

/// A non-negative decimal integer written plainly: `0`, `8`, `15`. Refuses quoted
/// numbers, signs, leading zeros (`08`: YAML 1.1 and 1.2 disagree on it), hex/octal
/// forms and fractions, each with its own message.
fn uint(ctx: &mut Ctx, path: &str, node: &Node<'_>) -> Option<u64> {
    let Some((text, style)) = scalar(node) else {
        ctx.err(
            path,
            node,
            format!("must be a non-negative integer, found {}", kind(node)),
        );
        return None;
    };
    let problem = if style != ScalarStyle::Plain {
        format!("`{text}` is a quoted string; write the number without quotes")
    } else if is_null(node) {
        "has no value".to_owned()
    } else if text.starts_with('-') {
        format!("`{text}` is negative; must be a non-negative integer")
    } else if text.len() > 1 && text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit()) {
        format!(
            "`{text}` has a leading zero, which YAML 1.1 reads as octal (or as a string when \
             it has an 8 or 9) and YAML 1.2 as decimal; write `{}`",
            match text.trim_start_matches('0') {
                "" => "0",
                rest => rest,
            }
        )
    } else if !text.bytes().all(|b| b.is_ascii_digit()) {
        format!("`{text}` is not a non-negative decimal integer")
    } else {
        match text.parse::<u64>() {
            Ok(v) => return Some(v),
            Err(_) => format!("`{text}` is too large"),
        }
    };
    ctx.err(path, node, problem);
    None
}

fn boolean(ctx: &mut Ctx, path: &str, node: &Node<'_>) -> Option<bool> {
    match scalar(node) {
        Some(("true" | "True" | "TRUE", ScalarStyle::Plain)) => Some(true),
        Some(("false" | "False" | "FALSE", ScalarStyle::Plain)) => Some(false),
        Some((text, ScalarStyle::Plain))
            if matches!(
                text.to_ascii_lowercase().as_str(),
                "yes" | "no" | "on" | "off" | "y" | "n"
            ) =>
        {
            ctx.err(
                path,
                node,
                format!("`{text}` is a YAML 1.1 boolean that YAML 1.2 reads as a string; write true or false"),
            );
            None
        }
        _ => {
            ctx.err(path, node, "must be true or false");
            None
        }
    }
}

fn duration(
    ctx: &mut Ctx,
    path: &str,
    node: &Node<'_>,
    min: Duration,
    max: Duration,
) -> Option<Duration> {
    let text = string(ctx, path, node)?;
    match humantime::parse_duration(&text) {
        Ok(d) if d >= min && d <= max => Some(d),
        Ok(_) => {
            ctx.err(
                path,
                node,
                format!(
                    "`{text}` is out of range {} ..= {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
            None
        }
        Err(e) => {
            ctx.err(
                path,
                node,
                format!("`{text}` is not a duration like `10s` or `5m`: {e}"),
            );
            None
        }
    }
}

/// `"15%"` -> 150_000 ppm. Digits, an optional fraction of at most 4 digits (finer than
/// that cannot be held exactly, and is refused rather than rounded), then `%`. Returns
/// the error message on refusal.
pub fn parse_percent(text: &str, max_ppm: u64) -> Result<Ratio, String> {
    let hint = "write a percentage like \"15%\" or \"12.5%\"";
    let Some(number) = text.strip_suffix('%') else {
        return Err(if text.is_empty() {
            format!("is empty; {hint}")
        } else {
            format!("`{text}` is not a percentage (no % sign); {hint}")
        });
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if number.starts_with('-') {
        return Err(format!("`{text}` is negative; {hint}"));
    }
    if !digits(int) || (number.contains('.') && !digits(frac)) {
        return Err(format!("`{text}` is not a percentage; {hint}"));
    }
    if int.len() > 1 && int.starts_with('0') {
        return Err(format!("`{text}` has a leading zero; {hint}"));
    }
    if frac.len() > 4 {
        return Err(format!(
            "`{text}` has more than 4 decimals, which cannot be held exactly; round it yourself"
        ));
    }
    let int: u64 = int.parse().map_err(|_| format!("`{text}` is too large"))?;
    let frac_ppm: u64 = format!("{frac:0<4}").parse().unwrap_or(0);
    let ppm = int.saturating_mul(10_000).saturating_add(frac_ppm);
    if ppm > max_ppm {
        return Err(format!("`{text}` is above {}%", max_ppm as f64 / 10_000.0));
    }
    Ok(Ratio {
        ppm: u32::try_from(ppm).map_err(|_| format!("`{text}` is too large"))?,
    })
}

fn percent(ctx: &mut Ctx, path: &str, node: &Node<'_>, max_ppm: u64) -> Option<Ratio> {
    let Some((text, _)) = scalar(node) else {
        ctx.err(
            path,
            node,
            format!("must be a percentage, found {}", kind(node)),
        );
        return None;
    };
    if is_null(node) && text.is_empty() {
        ctx.err(path, node, "has no value; write a percentage like \"15%\"");
        return None;
    }
    parse_percent(text, max_ppm)
        .map_err(|m| ctx.err(path, node, m))
        .ok()
}

// ---- the document ---------------------------------------------------------------

fn policy(ctx: &mut Ctx, doc: &Node<'_>, topology: Option<&Machine>) -> Option<Policy> {
    // `status` is written by Kubernetes, never read here.
    let top = mapping(
        ctx,
        "",
        doc,
        &["apiVersion", "kind", "metadata", "spec", "status"],
    )?;
    for (key, want) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        match get(&top, key) {
            None => ctx.err(key, doc, format!("missing; must be `{want}`")),
            Some(n) => {
                if let Some(v) = string(ctx, key, n)
                    && v != want
                {
                    ctx.err(key, n, format!("`{v}` is not supported; must be `{want}`"));
                }
            }
        }
    }
    let (name, namespace) = match get(&top, "metadata") {
        None => {
            ctx.err("metadata", doc, "missing; metadata.name names the policy");
            (None, None)
        }
        Some(n) => metadata(ctx, n),
    };
    let Some(spec_node) = get(&top, "spec") else {
        ctx.err("spec", doc, "missing");
        return None;
    };
    let spec = spec(ctx, spec_node, topology);
    Some(Policy {
        name: name?,
        namespace,
        ..spec?
    })
}

fn metadata(ctx: &mut Ctx, node: &Node<'_>) -> (Option<String>, Option<String>) {
    // ObjectMeta belongs to Kubernetes (uid, resourceVersion, managedFields, ... appear in
    // exported objects): only the fields used here are checked, the rest is ignored.
    let YamlData::Mapping(map) = &node.data else {
        ctx.err(
            "metadata",
            node,
            format!("must be a mapping, found {}", kind(node)),
        );
        return (None, None);
    };
    let field = |key: &str| {
        map.iter()
            .find(|(k, _)| scalar(k).is_some_and(|(t, _)| t == key))
            .map(|(_, v)| v)
    };
    let name = match field("name") {
        None => {
            ctx.err("metadata.name", node, "missing");
            None
        }
        Some(n) => string(ctx, "metadata.name", n).and_then(|name| {
            // RFC 1123 subdomain, as Kubernetes requires of object names.
            let ok = name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                && name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && name.ends_with(|c: char| c.is_ascii_alphanumeric());
            if ok {
                Some(name)
            } else {
                ctx.err(
                    "metadata.name",
                    n,
                    format!("`{name}` is not a valid name: lowercase letters, digits, `-` and `.`, starting and ending alphanumeric, at most 253"),
                );
                None
            }
        }),
    };
    let namespace = field("namespace").and_then(|n| string(ctx, "metadata.namespace", n));
    (name, namespace)
}

fn spec(ctx: &mut Ctx, node: &Node<'_>, topology: Option<&Machine>) -> Option<Policy> {
    let fields = mapping(
        ctx,
        "spec",
        node,
        &[
            "mode",
            "selector",
            "numaTopology",
            "qosClasses",
            "defaultQoSClass",
            "failurePolicies",
            "evaluation",
        ],
    )?;
    let mut ok = true;
    let mode = match get(&fields, "mode") {
        None => Mode::Monitor,
        Some(n) => match string(ctx, "spec.mode", n).as_deref() {
            Some("monitor") => Mode::Monitor,
            Some("enforce") => Mode::Enforce,
            Some(other) => {
                ctx.err(
                    "spec.mode",
                    n,
                    format!("`{other}` is not monitor or enforce"),
                );
                ok = false;
                Mode::Monitor
            }
            None => {
                ok = false;
                Mode::Monitor
            }
        },
    };
    let selector = match get(&fields, "selector") {
        None => None,
        Some(n) => {
            let s = selector(ctx, "spec.selector", n);
            ok &= s.is_some();
            s
        }
    };
    if mode == Mode::Enforce && get(&fields, "selector").is_none() {
        ctx.err(
            "spec.selector",
            node,
            "required when spec.mode is enforce: without one a policy governs every user process, and acting on all of them is refused",
        );
        ok = false;
    }
    let topo = match get(&fields, "numaTopology") {
        None => Some(NumaTopology::default()),
        Some(n) => numa_topology(ctx, n, topology),
    };
    let classes = match get(&fields, "qosClasses") {
        None => Some(Vec::new()),
        Some(n) => qos_classes(ctx, n),
    };
    let default_class = match get(&fields, "defaultQoSClass") {
        None => Some(
            classes
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.name == "default"))
                .map(|c| c.name.clone()),
        ),
        Some(n) => match (string(ctx, "spec.defaultQoSClass", n), &classes) {
            (Some(name), Some(cs)) if cs.iter().any(|c| c.name == name) => Some(Some(name)),
            (Some(name), Some(_)) => {
                ctx.err(
                    "spec.defaultQoSClass",
                    n,
                    format!("`{name}` is not one of spec.qosClasses"),
                );
                None
            }
            _ => None,
        },
    };
    let failure = match get(&fields, "failurePolicies") {
        None => Some(Vec::new()),
        Some(n) => failure_policies(ctx, n),
    };
    let evaluation = match get(&fields, "evaluation") {
        None => Some(Evaluation::default()),
        Some(n) => evaluation(ctx, n),
    };
    if let (Some(sel), true) = (&selector, mode == Mode::Enforce)
        && sel.has_kubernetes_terms()
    {
        ctx.warn(
            "spec.selector",
            node,
            "namespaces/matchLabels match nothing on a host until pod attribution lands",
        );
    }
    if !ok {
        return None;
    }
    Some(Policy {
        name: String::new(),
        namespace: None,
        mode,
        selector,
        topology: topo?,
        qos_classes: classes?,
        default_qos_class: default_class?,
        failure_policies: failure?,
        evaluation: evaluation?,
    })
}

fn string_list(ctx: &mut Ctx, path: &str, node: &Node<'_>) -> Option<Vec<String>> {
    let items = sequence(ctx, path, node)?;
    let before = ctx.errors.len();
    let out: Vec<String> = items
        .iter()
        .enumerate()
        .filter_map(|(i, n)| string(ctx, &format!("{path}[{i}]"), n))
        .collect();
    (ctx.errors.len() == before).then_some(out)
}

fn selector(ctx: &mut Ctx, path: &str, node: &Node<'_>) -> Option<Selector> {
    let fields = mapping(
        ctx,
        path,
        node,
        &[
            "processNames",
            "cgroupPaths",
            "pids",
            "namespaces",
            "matchLabels",
        ],
    )?;
    let before = ctx.errors.len();
    let mut s = Selector::default();
    if let Some(n) = get(&fields, "processNames") {
        let p = join(path, "processNames");
        s.process_names = string_list(ctx, &p, n).unwrap_or_default();
        for (i, pat) in s.process_names.iter().enumerate() {
            if let Err(e) = glob::Pattern::new(pat) {
                ctx.err(
                    &format!("{p}[{i}]"),
                    n,
                    format!("`{pat}` is not a valid glob: {e}"),
                );
            }
        }
    }
    if let Some(n) = get(&fields, "cgroupPaths") {
        let p = join(path, "cgroupPaths");
        s.cgroup_paths = string_list(ctx, &p, n).unwrap_or_default();
        for (i, pat) in s.cgroup_paths.iter().enumerate() {
            if !pat.starts_with('/') {
                ctx.err(
                    &format!("{p}[{i}]"),
                    n,
                    format!("`{pat}` must start with `/` (paths as in /proc/<pid>/cgroup)"),
                );
            } else if let Err(e) = glob::Pattern::new(pat) {
                ctx.err(
                    &format!("{p}[{i}]"),
                    n,
                    format!("`{pat}` is not a valid glob: {e}"),
                );
            }
        }
    }
    if let Some(n) = get(&fields, "pids") {
        let p = join(path, "pids");
        if let Some(items) = sequence(ctx, &p, n) {
            for (i, item) in items.iter().enumerate() {
                let ip = format!("{p}[{i}]");
                match uint(ctx, &ip, item) {
                    Some(0) => ctx.err(&ip, item, "pid 0 is the idle task, not a process"),
                    Some(v) => match u32::try_from(v) {
                        Ok(v) => s.pids.push(v),
                        Err(_) => ctx.err(&ip, item, "too large for a pid"),
                    },
                    None => {}
                }
            }
        }
    }
    if let Some(n) = get(&fields, "namespaces") {
        s.namespaces = string_list(ctx, &join(path, "namespaces"), n).unwrap_or_default();
    }
    if let Some(n) = get(&fields, "matchLabels") {
        let p = join(path, "matchLabels");
        if let YamlData::Mapping(map) = &n.data {
            for (k, v) in map {
                let key = string(ctx, &p, k);
                let value = string(ctx, &format!("{p}.{}", key.as_deref().unwrap_or("?")), v);
                if let (Some(k), Some(v)) = (key, value) {
                    s.match_labels.push((k, v));
                }
            }
        } else {
            ctx.err(
                &p,
                n,
                format!("must be a mapping of label to value, found {}", kind(n)),
            );
        }
    }
    if fields.is_empty() {
        ctx.err(path, node, "is empty; give at least one of processNames, cgroupPaths, pids, namespaces, matchLabels, or leave the selector out");
    }
    (ctx.errors.len() == before).then_some(s)
}

fn numa_topology(
    ctx: &mut Ctx,
    node: &Node<'_>,
    machine: Option<&Machine>,
) -> Option<NumaTopology> {
    let path = "spec.numaTopology";
    let fields = mapping(ctx, path, node, &["allowedNodes", "maxCrossAccess"])?;
    let before = ctx.errors.len();
    let mut t = NumaTopology::default();
    if let Some(n) = get(&fields, "allowedNodes") {
        let p = "spec.numaTopology.allowedNodes";
        if let Some(items) = sequence(ctx, p, n) {
            if items.is_empty() {
                ctx.err(
                    p,
                    n,
                    "is empty: no node to run on; leave allowedNodes out to allow every node",
                );
            }
            let mut seen = BTreeSet::new();
            let mut nodes = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let ip = format!("{p}[{i}]");
                let Some(v) = uint(ctx, &ip, item) else {
                    continue;
                };
                let Ok(id) = u32::try_from(v) else {
                    ctx.err(&ip, item, format!("node id {v} is too large"));
                    continue;
                };
                if !seen.insert(id) {
                    ctx.err(&ip, item, format!("node {id} is listed twice"));
                    continue;
                }
                if let Some(m) = machine {
                    let topo = &m.topology;
                    match topo.nodes.iter().find(|nd| nd.id == id) {
                        None => ctx.warn(&ip, item, format!("node {id} does not exist on this machine ({})", topo.source)),
                        Some(nd) if nd.cpus.is_empty() => ctx.warn(&ip, item, format!("node {id} has no CPUs on this machine: nothing can be relocated to it")),
                        Some(_) => {}
                    }
                    if topo.nodes.iter().any(|nd| nd.id == id)
                        && m.memory_nodes.as_ref().is_some_and(|m| !m.contains(&id))
                    {
                        ctx.warn(
                            &ip,
                            item,
                            format!("node {id} has no memory on this machine"),
                        );
                    }
                }
                nodes.push(id);
            }
            t.allowed_nodes = Some(nodes);
        }
    }
    if let Some(n) = get(&fields, "maxCrossAccess") {
        t.max_cross_access = percent(ctx, "spec.numaTopology.maxCrossAccess", n, 1_000_000);
    }
    (ctx.errors.len() == before).then_some(t)
}

fn qos_classes(ctx: &mut Ctx, node: &Node<'_>) -> Option<Vec<QosClass>> {
    let path = "spec.qosClasses";
    let items = sequence(ctx, path, node)?;
    let before = ctx.errors.len();
    let mut out: Vec<QosClass> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(fields) = mapping(
            ctx,
            &p,
            item,
            &["name", "stealAllowed", "maxSteals", "selector"],
        ) else {
            continue;
        };
        let name = match get(&fields, "name") {
            None => {
                ctx.err(&format!("{p}.name"), item, "missing");
                None
            }
            Some(n) => string(ctx, &format!("{p}.name"), n),
        };
        if let Some(name) = &name
            && out.iter().any(|c| &c.name == name)
        {
            ctx.err(
                &format!("{p}.name"),
                item,
                format!("class `{name}` is defined twice"),
            );
        }
        let steal_allowed = match get(&fields, "stealAllowed") {
            None => Some(false),
            Some(n) => boolean(ctx, &format!("{p}.stealAllowed"), n),
        };
        let max_steals = match get(&fields, "maxSteals") {
            None => Some(None),
            Some(n) => uint(ctx, &format!("{p}.maxSteals"), n).map(Some),
        };
        if let (Some(false), Some(Some(m)), Some(n)) =
            (steal_allowed, max_steals, get(&fields, "maxSteals"))
            && m > 0
        {
            ctx.err(
                &format!("{p}.maxSteals"),
                n,
                format!(
                    "is {m} but stealAllowed is false: set stealAllowed: true or drop maxSteals"
                ),
            );
        }
        let selector = match get(&fields, "selector") {
            None => Some(None),
            Some(n) => selector(ctx, &format!("{p}.selector"), n).map(Some),
        };
        if let (Some(name), Some(steal_allowed), Some(max_steals), Some(selector)) =
            (name, steal_allowed, max_steals, selector)
        {
            out.push(QosClass {
                name,
                steal_allowed,
                max_steals,
                selector,
            });
        }
    }
    (ctx.errors.len() == before).then_some(out)
}

fn failure_policies(ctx: &mut Ctx, node: &Node<'_>) -> Option<Vec<FailurePolicy>> {
    let path = "spec.failurePolicies";
    let items = sequence(ctx, path, node)?;
    let before = ctx.errors.len();
    let mut out: Vec<FailurePolicy> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(fields) = mapping(
            ctx,
            &p,
            item,
            &["errorType", "action", "cooldown", "cpuQuota"],
        ) else {
            continue;
        };
        let error_type = match get(&fields, "errorType") {
            None => {
                ctx.err(&format!("{p}.errorType"), item, "missing");
                None
            }
            Some(n) => string(ctx, &format!("{p}.errorType"), n).and_then(|t| {
                let found = ErrorType::ALL.into_iter().find(|e| e.as_str() == t);
                if found.is_none() {
                    ctx.err(
                        &format!("{p}.errorType"),
                        n,
                        format!("unknown errorType `{t}`; expected one of: NUMAAccessViolation, StealLimitExceeded, NUMAPolicyViolation"),
                    );
                }
                found
            }),
        };
        if let Some(e) = error_type
            && out.iter().any(|f| f.error_type == e)
        {
            ctx.err(
                &format!("{p}.errorType"),
                item,
                format!("{} has a failure policy already", e.as_str()),
            );
        }
        let action = match get(&fields, "action") {
            None => {
                ctx.err(&format!("{p}.action"), item, "missing");
                None
            }
            Some(n) => string(ctx, &format!("{p}.action"), n).and_then(|a| match a.as_str() {
                "relocatePod" => Some(Action::RelocatePod),
                "throttleWorker" => Some(Action::ThrottleWorker),
                "alertOnly" | "none" => Some(Action::AlertOnly),
                other => {
                    ctx.err(
                        &format!("{p}.action"),
                        n,
                        format!("unknown action `{other}`; expected one of: relocatePod, throttleWorker, alertOnly, none"),
                    );
                    None
                }
            }),
        };
        let cooldown = match get(&fields, "cooldown") {
            None => Some(DEFAULT_COOLDOWN),
            Some(n) => duration(
                ctx,
                &format!("{p}.cooldown"),
                n,
                Duration::from_secs(1),
                Duration::from_secs(86_400),
            ),
        };
        let cpu_quota = match get(&fields, "cpuQuota") {
            None => Some(DEFAULT_CPU_QUOTA),
            Some(n) => {
                if action.is_some_and(|a| a != Action::ThrottleWorker) {
                    ctx.err(
                        &format!("{p}.cpuQuota"),
                        n,
                        "only applies to action throttleWorker",
                    );
                }
                // A share of one CPU: 1% ..= 100 CPUs.
                percent(ctx, &format!("{p}.cpuQuota"), n, 100_000_000).and_then(|r| {
                    if r.ppm < 10_000 {
                        ctx.err(&format!("{p}.cpuQuota"), n, "must be at least 1% of a CPU");
                        None
                    } else {
                        Some(r)
                    }
                })
            }
        };
        if let (Some(error_type), Some(action), Some(cooldown), Some(cpu_quota)) =
            (error_type, action, cooldown, cpu_quota)
        {
            out.push(FailurePolicy {
                error_type,
                action,
                cooldown,
                cpu_quota,
            });
        }
    }
    (ctx.errors.len() == before).then_some(out)
}

fn evaluation(ctx: &mut Ctx, node: &Node<'_>) -> Option<Evaluation> {
    let path = "spec.evaluation";
    let fields = mapping(
        ctx,
        path,
        node,
        &["window", "debounce", "minSamples", "maxActionsPerMinute"],
    )?;
    let before = ctx.errors.len();
    let mut e = Evaluation::default();
    if let Some(n) = get(&fields, "window")
        && let Some(d) = duration(
            ctx,
            "spec.evaluation.window",
            n,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )
    {
        e.window = d;
    }
    let mut bounded = |key: &str, lo: u64, hi: u64| -> Option<u64> {
        let n = get(&fields, key)?;
        let p = join(path, key);
        let v = uint(ctx, &p, n)?;
        if v < lo || v > hi {
            ctx.err(&p, n, format!("{v} is out of range {lo} ..= {hi}"));
            return None;
        }
        Some(v)
    };
    if let Some(v) = bounded("debounce", 1, 100) {
        e.debounce = v as u32;
    }
    if let Some(v) = bounded("minSamples", 1, u64::MAX) {
        e.min_samples = v;
    }
    if let Some(v) = bounded("maxActionsPerMinute", 1, 600) {
        e.max_actions_per_minute = v as u32;
    }
    (ctx.errors.len() == before).then_some(e)
}

#[cfg(test)]
mod tests;

/// Documents shared by tests of other policy modules.
#[cfg(test)]
pub mod tests_support {
    pub use super::tests::SUPPLEMENT_EXAMPLE;
}
