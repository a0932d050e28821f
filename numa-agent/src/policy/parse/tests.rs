//! Valid and invalid NUMAPolicy documents, next to the model.
use std::collections::BTreeMap;

use super::*;
use crate::topology::Node as TopoNode;

/// The design supplement's example, byte for byte as the issue quotes it.
pub const SUPPLEMENT_EXAMPLE: &str = r#"apiVersion: concurrency.gokore.io/v1alpha1
kind: NUMAPolicy
metadata: {name: ai-worker-policy}
spec:
  numaTopology: {allowedNodes: [0,1], maxCrossAccess: 15%}
  qosClasses:
    - {name: high-priority, stealAllowed: true, maxSteals: 5}
    - {name: default, stealAllowed: false}
  failurePolicies:
    - {errorType: NUMAAccessViolation, action: relocatePod}
    - {errorType: StealLimitExceeded, action: throttleWorker}
"#;

fn ok(text: &str) -> Policy {
    let parsed = parse_documents(text, None);
    assert!(
        parsed.errors.is_empty(),
        "unexpected errors: {:#?}",
        parsed.errors
    );
    assert_eq!(parsed.policies.len(), 1);
    parsed.policies.into_iter().next().expect("one policy")
}

fn errors(text: &str) -> Vec<String> {
    let parsed = parse_documents(text, None);
    assert!(
        parsed.policies.is_empty(),
        "accepted: {:#?}",
        parsed.policies
    );
    assert!(!parsed.errors.is_empty());
    parsed.errors.iter().map(ToString::to_string).collect()
}

fn with_topology(topology: &str) -> String {
    SUPPLEMENT_EXAMPLE.replace("{allowedNodes: [0,1], maxCrossAccess: 15%}", topology)
}

fn has(errs: &[String], path: &str, needle: &str) {
    assert!(
        errs.iter()
            .any(|e| e.contains(&format!("{path}: ")) && e.contains(needle)),
        "no error at {path} containing {needle:?} in {errs:#?}"
    );
}

#[test]
fn supplement_example_is_valid_with_documented_defaults() {
    let p = ok(SUPPLEMENT_EXAMPLE);
    assert_eq!(p.name, "ai-worker-policy");
    assert_eq!(p.mode, Mode::Monitor, "default mode");
    assert_eq!(
        p.selector, None,
        "no selector: the documented default scope"
    );
    assert_eq!(p.topology.allowed_nodes, Some(vec![0, 1]));
    assert_eq!(p.topology.max_cross_access, Some(Ratio { ppm: 150_000 }));
    assert_eq!(p.topology.max_cross_access.map(Ratio::as_f64), Some(0.15));
    assert_eq!(p.qos_classes.len(), 2);
    assert_eq!(p.qos_classes[0].steal_allowance(), Some(5));
    assert_eq!(p.qos_classes[1].steal_allowance(), Some(0));
    assert_eq!(p.default_qos_class.as_deref(), Some("default"));
    assert_eq!(p.failure_policies.len(), 2);
    assert_eq!(p.failure_policies[0].action, Action::RelocatePod);
    assert_eq!(
        p.failure_policies[1].error_type,
        ErrorType::StealLimitExceeded
    );
    assert_eq!(p.failure_policies[1].cooldown, DEFAULT_COOLDOWN);
    assert_eq!(p.evaluation, Evaluation::default());
}

#[test]
fn max_cross_access_accepted_forms() {
    for (text, ppm) in [
        ("15%", 150_000),
        ("0%", 0),
        ("100%", 1_000_000),
        ("\"15%\"", 150_000),
        // Decided: fractional percentages are exact up to 4 decimals, never truncated.
        ("12.5%", 125_000),
        ("0.0001%", 1),
    ] {
        let p = ok(&with_topology(&format!("{{maxCrossAccess: {text}}}")));
        assert_eq!(p.topology.max_cross_access, Some(Ratio { ppm }), "{text}");
    }
}

#[test]
fn max_cross_access_refused_forms() {
    for (text, needle) in [
        ("15", "no % sign"),
        ("0.15", "no % sign"),
        ("150%", "above 100%"),
        ("-5%", "negative"),
        ("\"15 percent\"", "no % sign"),
        ("15 percent", "no % sign"),
        ("\"\"", "empty"),
        ("''", "empty"),
        ("12.34567%", "more than 4 decimals"),
        ("1e1%", "not a percentage"),
        ("15 %", "not a percentage"),
        ("[15%]", "found a list"),
    ] {
        let errs = errors(&with_topology(&format!("{{maxCrossAccess: {text}}}")));
        has(&errs, "spec.numaTopology.maxCrossAccess", needle);
    }
}

#[test]
fn allowed_nodes_forms() {
    assert_eq!(
        ok(&with_topology("{allowedNodes: [0]}"))
            .topology
            .allowed_nodes,
        Some(vec![0])
    );
    assert_eq!(
        ok(&with_topology("{allowedNodes: [1, 7, 10]}"))
            .topology
            .allowed_nodes,
        Some(vec![1, 7, 10])
    );
    let block = SUPPLEMENT_EXAMPLE.replace(
        "{allowedNodes: [0,1], maxCrossAccess: 15%}",
        "\n    allowedNodes:\n      - 0\n      - 3\n",
    );
    assert_eq!(ok(&block).topology.allowed_nodes, Some(vec![0, 3]));
    for (list, path, needle) in [
        ("[08]", "allowedNodes[0]", "leading zero"),
        ("[0, 010]", "allowedNodes[1]", "write `10`"),
        ("[00]", "allowedNodes[0]", "write `0`"),
        ("[-1]", "allowedNodes[0]", "negative"),
        ("['1']", "allowedNodes[0]", "quoted string"),
        ("[\"0\"]", "allowedNodes[0]", "quoted string"),
        (
            "[1.0]",
            "allowedNodes[0]",
            "not a non-negative decimal integer",
        ),
        (
            "[0x1]",
            "allowedNodes[0]",
            "not a non-negative decimal integer",
        ),
        (
            "[0o7]",
            "allowedNodes[0]",
            "not a non-negative decimal integer",
        ),
        (
            "[+1]",
            "allowedNodes[0]",
            "not a non-negative decimal integer",
        ),
        (
            "[one]",
            "allowedNodes[0]",
            "not a non-negative decimal integer",
        ),
        ("[0, 0]", "allowedNodes[1]", "listed twice"),
        ("[4294967296]", "allowedNodes[0]", "too large"),
        ("[]", "allowedNodes", "is empty"),
        ("0-1", "allowedNodes", "must be a list"),
        ("[[0]]", "allowedNodes[0]", "found a list"),
    ] {
        let errs = errors(&with_topology(&format!("{{allowedNodes: {list}}}")));
        has(&errs, &format!("spec.numaTopology.{path}"), needle);
    }
}

#[test]
fn allowed_nodes_warn_about_this_machine() {
    let machine = Machine {
        topology: crate::topology::Topology::from_parts(
            vec![TopoNode::new(0, vec![0]), TopoNode::new(1, vec![])],
            BTreeMap::new(),
            "test",
        ),
        memory_nodes: Some(vec![0]),
    };
    let parsed = parse_documents(&with_topology("{allowedNodes: [0, 1, 2]}"), Some(&machine));
    assert!(parsed.errors.is_empty(), "{:#?}", parsed.errors);
    assert_eq!(parsed.policies.len(), 1, "warnings do not reject");
    let w: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
    has(&w, "spec.numaTopology.allowedNodes[1]", "no CPUs");
    has(&w, "spec.numaTopology.allowedNodes[1]", "no memory");
    has(&w, "spec.numaTopology.allowedNodes[2]", "does not exist");
    assert!(!w.iter().any(|m| m.contains("allowedNodes[0]")), "{w:#?}");
}

#[test]
fn qos_class_rules() {
    let doc = |classes: &str| {
        SUPPLEMENT_EXAMPLE.replace(
            "    - {name: high-priority, stealAllowed: true, maxSteals: 5}\n    - {name: default, stealAllowed: false}\n",
            classes,
        )
    };
    has(
        &errors(&doc(
            "    - {name: default, stealAllowed: false, maxSteals: 3}\n",
        )),
        "spec.qosClasses[0].maxSteals",
        "stealAllowed is false",
    );
    // maxSteals 0 with stealing off says the same thing twice: fine.
    ok(&doc(
        "    - {name: default, stealAllowed: false, maxSteals: 0}\n",
    ));
    // stealAllowed without maxSteals: unlimited.
    let p = ok(&doc("    - {name: default, stealAllowed: true}\n"));
    assert_eq!(p.qos_classes[0].steal_allowance(), None);
    has(
        &errors(&doc("    - {name: default, stealAllowed: yes}\n")),
        "spec.qosClasses[0].stealAllowed",
        "YAML 1.1 boolean",
    );
    has(
        &errors(&doc("    - {name: a}\n    - {name: a}\n")),
        "spec.qosClasses[1].name",
        "defined twice",
    );
    has(
        &errors(&doc("    - {name: a, maxSteal: 1}\n")),
        "spec.qosClasses[0].maxSteal",
        "unknown field",
    );
    // No class named default: nothing is the default unless said.
    let p = ok(&doc(
        "    - {name: gold, stealAllowed: true, maxSteals: 2, selector: {processNames: [\"ai-*\"]}}\n",
    ));
    assert_eq!(p.default_qos_class, None);
    assert_eq!(
        p.qos_classes[0]
            .selector
            .as_ref()
            .map(|s| s.process_names.clone()),
        Some(vec!["ai-*".to_owned()])
    );
}

#[test]
fn failure_policy_rules() {
    let doc = |fp: &str| {
        SUPPLEMENT_EXAMPLE.replace(
            "    - {errorType: NUMAAccessViolation, action: relocatePod}\n    - {errorType: StealLimitExceeded, action: throttleWorker}\n",
            fp,
        )
    };
    has(
        &errors(&doc(
            "    - {errorType: NUMAAccessError, action: relocatePod}\n",
        )),
        "spec.failurePolicies[0].errorType",
        "unknown errorType",
    );
    has(
        &errors(&doc(
            "    - {errorType: StealLimitExceeded, action: evictPod}\n",
        )),
        "spec.failurePolicies[0].action",
        "unknown action",
    );
    has(
        &errors(&doc(
            "    - {errorType: StealLimitExceeded, action: alertOnly}\n    - {errorType: StealLimitExceeded, action: none}\n",
        )),
        "spec.failurePolicies[1].errorType",
        "already",
    );
    has(
        &errors(&doc(
            "    - {errorType: StealLimitExceeded, action: alertOnly, cpuQuota: 20%}\n",
        )),
        "spec.failurePolicies[0].cpuQuota",
        "only applies to action throttleWorker",
    );
    has(
        &errors(&doc(
            "    - {errorType: StealLimitExceeded, action: throttleWorker, cooldown: soon}\n",
        )),
        "spec.failurePolicies[0].cooldown",
        "not a duration",
    );
    let p = ok(&doc(
        "    - {errorType: StealLimitExceeded, action: throttleWorker, cooldown: 30s, cpuQuota: 25%}\n    - {errorType: NUMAPolicyViolation, action: none}\n",
    ));
    assert_eq!(p.failure_policies[0].cooldown, Duration::from_secs(30));
    assert_eq!(p.failure_policies[0].cpu_quota, Ratio { ppm: 250_000 });
    assert_eq!(p.failure_policies[1].action, Action::AlertOnly);
}

#[test]
fn mode_selector_and_evaluation() {
    let base = SUPPLEMENT_EXAMPLE.replace("spec:\n", "spec:\n  mode: enforce\n");
    has(
        &errors(&base),
        "spec.selector",
        "required when spec.mode is enforce",
    );
    let p = ok(&base.replace(
        "spec:\n",
        "spec:\n  selector: {processNames: [numa-*], cgroupPaths: [\"/numa-test-*\"], pids: [42]}\n  evaluation: {window: 500ms, debounce: 2, minSamples: 10, maxActionsPerMinute: 60}\n",
    ));
    assert_eq!(p.mode, Mode::Enforce);
    let s = p.selector.expect("selector");
    assert_eq!(
        (s.process_names, s.cgroup_paths, s.pids),
        (
            vec!["numa-*".to_owned()],
            vec!["/numa-test-*".to_owned()],
            vec![42]
        )
    );
    assert_eq!(p.evaluation.window, Duration::from_millis(500));
    assert_eq!(p.evaluation.debounce, 2);
    has(
        &errors(&SUPPLEMENT_EXAMPLE.replace("spec:\n", "spec:\n  mode: Enforce\n")),
        "spec.mode",
        "not monitor or enforce",
    );
    has(
        &errors(&SUPPLEMENT_EXAMPLE.replace("spec:\n", "spec:\n  selector: {}\n")),
        "spec.selector",
        "is empty",
    );
    has(
        &errors(&SUPPLEMENT_EXAMPLE.replace(
            "spec:\n",
            "spec:\n  selector: {cgroupPaths: [system.slice]}\n",
        )),
        "spec.selector.cgroupPaths[0]",
        "must start with `/`",
    );
    has(
        &errors(&SUPPLEMENT_EXAMPLE.replace("spec:\n", "spec:\n  evaluation: {debounce: 0}\n")),
        "spec.evaluation.debounce",
        "out of range",
    );
    has(
        &errors(&SUPPLEMENT_EXAMPLE.replace("spec:\n", "spec:\n  evaluation: {window: 10ms}\n")),
        "spec.evaluation.window",
        "out of range",
    );
}

#[test]
fn every_error_is_reported_at_once_with_path_and_line() {
    let text = "apiVersion: concurrency.gokore.io/v1beta1
kind: NUMAPolicy
metadata: {name: Bad_Name}
spec:
  mode: enforce
  numaTopology: {allowedNodes: [08, 1], maxCrossAccess: 15}
  qosClasses:
    - {name: default, stealAllowed: false, maxSteals: 5}
  failurePolicies:
    - {errorType: Nope, action: relocatePod}
  extra: 1
";
    let errs = errors(text);
    for (path, line) in [
        ("apiVersion", 1),
        ("metadata.name", 3),
        ("spec.numaTopology.allowedNodes[0]", 6),
        ("spec.numaTopology.maxCrossAccess", 6),
        ("spec.qosClasses[0].maxSteals", 8),
        ("spec.failurePolicies[0].errorType", 10),
        ("spec.extra", 11),
        ("spec.selector", 5),
    ] {
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&format!("line {line}: {path}: "))),
            "no error for {path} on line {line}: {errs:#?}"
        );
    }
    assert_eq!(errs.len(), 8, "{errs:#?}");
}

#[test]
fn structure_and_yaml_errors() {
    has(&errors("kind: NUMAPolicy\n"), "apiVersion", "missing");
    has(&errors(""), "(document)", "empty");
    has(&errors("a: [1\n"), "(document)", "not valid YAML");
    has(&errors("- 1\n"), "", "must be a mapping");
    // Duplicate keys are a YAML error, not a silent override.
    has(
        &errors(&format!("{SUPPLEMENT_EXAMPLE}kind: NUMAPolicy\n")),
        "(document)",
        "not valid YAML",
    );
    // Two documents, one bad: the file is rejected whole.
    let parsed = parse_documents(
        &format!(
            "{SUPPLEMENT_EXAMPLE}---\n{}",
            SUPPLEMENT_EXAMPLE.replace("15%", "15")
        ),
        None,
    );
    assert!(
        parsed.policies.is_empty() && parsed.errors.len() == 1,
        "{parsed:#?}"
    );
}
