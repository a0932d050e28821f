//! The shipped alert rules, checked by Prometheus's own `promtool`: syntax
//! (`check rules`), behaviour (`test rules`: every alert fires and stays quiet in the
//! cases of deploy/prometheus/numa-alerts.test.yml), and the PrometheusRule carrying
//! exactly the same groups as the plain rules file.
use std::{path::PathBuf, process::Command};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn promtool() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/promtool");
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: promtool not installed (Debian package `prometheus`; `cargo xtask setup`)"
        );
        None
    }
}

/// What `promtool check rules` says of a file with every shipped alert (7 today).
fn rules_found() -> String {
    format!(
        "SUCCESS: {} rules found",
        numa_tests::prom::shipped_alerts().len()
    )
}

fn promtool_ok(args: &[&str]) -> String {
    let out = Command::new("/usr/bin/promtool")
        .args(args)
        .current_dir(deploy())
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn rules_pass_promtool_check() {
    let Some(_) = promtool() else { return };
    let text = promtool_ok(&["check", "rules", "numa-alerts.rules.yml"]);
    assert!(text.contains(&rules_found()), "{text}");
}

#[test]
fn every_alert_fires_and_stays_quiet_in_promtool_tests() {
    let Some(_) = promtool() else { return };
    let tests = std::fs::read_to_string(deploy().join("numa-alerts.test.yml")).expect("tests");
    for alert in numa_tests::prom::shipped_alerts() {
        // Each alert is tested at least once with `exp_alerts: []` and once firing.
        let cases: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|c| c.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{alert}: no not-firing case"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "{alert}: no firing case"
        );
    }
    let text = promtool_ok(&["test", "rules", "numa-alerts.test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn prometheus_rule_carries_the_same_groups() {
    let plain = std::fs::read_to_string(deploy().join("numa-alerts.rules.yml")).expect("rules");
    let cr = std::fs::read_to_string(deploy().join("numa-alerts.prometheusrule.yaml"))
        .expect("PrometheusRule");
    assert!(cr.contains("kind: PrometheusRule\n"), "{cr}");
    assert!(
        cr.contains("apiVersion: monitoring.coreos.com/v1\n"),
        "{cr}"
    );
    let spec = &cr[cr.find("\nspec:\n").expect("spec") + 7..];
    let dedented: String = spec
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let groups = &plain[plain.find("groups:").expect("groups")..];
    assert_eq!(
        dedented, groups,
        "PrometheusRule spec differs from the rules file"
    );
    // And promtool accepts the CR's spec as a rules file on its own.
    let Some(_) = promtool() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spec.yml");
    std::fs::write(&path, &dedented).expect("write");
    let text = promtool_ok(&["check", "rules", path.to_str().expect("utf-8")]);
    assert!(text.contains(&rules_found()), "{text}");
}
