//! The policy engine: feeds observations into each policy's window, closes windows on
//! time, judges every workload in scope, hands errors to the policy's handler, and
//! applies (enforce) or records (monitor) the resolution, audited and rate-limited.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use super::{
    evaluate::{AccessSample, Judgement, Streak, Streaks, WindowAcc, judge_access, judge_steals},
    handler::{
        ErrorContext, HostSystems, NumaError, NumaErrorHandler, PolicyHandler, Resolution,
        SystemsContext,
    },
    metrics::PolicyMetrics,
    placement::{self, ActualPlacement},
    spec::{Action, ErrorType, Mode, Policy, QosClass},
    workload::{self, ProcessInfo, in_scope},
};
use crate::{
    actuators::{AuditLog, AuditRecord, Throttles, relocate, rfc3339},
    errors::{NumaAccessError, NumaPolicyError, NumaStealError},
    topology::Topology,
};

struct Runtime {
    handler: PolicyHandler,
    window: WindowAcc,
    streaks: Streaks,
    recent_actions: VecDeque<Instant>,
    cooldowns: HashMap<(u32, Action), Instant>,
    ratio_labels: HashSet<String>,
}

pub struct Engine {
    proc_root: PathBuf,
    agent_pid: u32,
    systems: Arc<HostSystems>,
    runtimes: Vec<Runtime>,
    throttles: Throttles,
    metrics: PolicyMetrics,
    audit: AuditLog,
    lost_seen: Option<u64>,
}

/// The class of a workload: the first class whose selector matches, else the default.
pub fn assign_class<'p>(policy: &'p Policy, p: &ProcessInfo) -> Option<&'p QosClass> {
    policy
        .qos_classes
        .iter()
        .find(|c| c.selector.as_ref().is_some_and(|s| s.matches(p)))
        .or_else(|| {
            policy
                .default_qos_class
                .as_deref()
                .and_then(|n| policy.qos_class(n))
        })
}

impl Engine {
    pub fn new(
        topology: Topology,
        proc_root: PathBuf,
        metrics: PolicyMetrics,
        audit: AuditLog,
    ) -> Self {
        Self {
            systems: Arc::new(HostSystems {
                topology,
                proc_root: proc_root.clone(),
            }),
            proc_root,
            agent_pid: std::process::id(),
            runtimes: Vec::new(),
            throttles: Throttles::default(),
            metrics,
            audit,
            lost_seen: None,
        }
    }

    pub fn policy_names(&self) -> Vec<String> {
        self.runtimes
            .iter()
            .map(|r| r.handler.policy().name.clone())
            .collect()
    }

    /// Put `policies` in force. An unchanged policy keeps its windows and streaks; a
    /// changed or new one starts fresh; throttles already applied are restored on
    /// schedule whatever happens to their policy.
    pub fn set_policies(&mut self, policies: Vec<Policy>, now: Instant) {
        let mut old: Vec<Runtime> = std::mem::take(&mut self.runtimes);
        self.metrics.active.reset();
        self.metrics.threshold.reset();
        for policy in policies {
            self.metrics
                .active
                .with_label_values(&[&policy.name, policy.mode.as_str()])
                .set(1);
            if let Some(max) = policy.topology.max_cross_access {
                self.metrics
                    .threshold
                    .with_label_values(&[&policy.name])
                    .set(max.as_f64());
            }
            if let Some(i) = old.iter().position(|r| *r.handler.policy() == policy) {
                self.runtimes.push(old.swap_remove(i));
                continue;
            }
            log::info!(
                "policy {} in force ({} mode, window {}, debounce {})",
                policy.name,
                policy.mode.as_str(),
                humantime::format_duration(policy.evaluation.window),
                policy.evaluation.debounce
            );
            let window = WindowAcc::new(now, policy.evaluation.window);
            let systems: Arc<dyn SystemsContext> = self.systems.clone();
            self.runtimes.push(Runtime {
                handler: PolicyHandler::new(policy, systems),
                window,
                streaks: Streaks::default(),
                recent_actions: VecDeque::new(),
                cooldowns: HashMap::new(),
                ratio_labels: HashSet::new(),
            });
        }
        for r in old {
            for l in r.ratio_labels {
                let _ = self
                    .metrics
                    .ratio
                    .remove_label_values(&[&r.handler.policy().name, &l]);
            }
        }
    }

    /// A `NUMAStealError` of a thread of process `pid` (scope is decided at window end).
    pub fn record_steal(&mut self, pid: u32, error: &NumaStealError) {
        for r in &mut self.runtimes {
            r.window.record_steal(pid, error);
        }
    }

    /// The remote-access input (issue 4 will feed it from the kernel).
    pub fn record_access(&mut self, sample: AccessSample) {
        for r in &mut self.runtimes {
            r.window.record_access(sample);
        }
    }

    /// Access samples the sensor could not deliver: the current windows' ratios are
    /// then incomplete.
    pub fn record_lost_accesses(&mut self, n: u64) {
        for r in &mut self.runtimes {
            r.window.lost_accesses += n;
        }
    }

    /// Advance time: `lost_steals_total` is the kernel's running count of migration
    /// records it could not send (any growth makes the current windows incomplete).
    pub fn tick(&mut self, now: Instant, lost_steals_total: u64) {
        let delta = lost_steals_total.saturating_sub(self.lost_seen.unwrap_or(lost_steals_total));
        self.lost_seen = Some(lost_steals_total);
        for r in &mut self.runtimes {
            r.window.lost_steals += delta;
        }
        for (t, outcome) in self.throttles.restore_due(now, false) {
            self.audit_restore(&t, outcome);
        }
        for i in 0..self.runtimes.len() {
            if now >= self.runtimes[i].window.end() {
                let closed = self.runtimes[i].window.roll(now);
                self.close(i, &closed, now);
            }
        }
    }

    /// Restore every throttle (agent stopping).
    pub fn shutdown(&mut self) {
        for (t, outcome) in self.throttles.restore_due(Instant::now(), true) {
            self.audit_restore(&t, outcome);
        }
    }

    fn audit_restore(
        &mut self,
        t: &crate::actuators::ActiveThrottle,
        o: crate::actuators::ThrottleOutcome,
    ) {
        self.metrics
            .actions
            .with_label_values(&[
                &t.policy,
                "throttleWorker",
                &format!("restore_{}", o.result),
            ])
            .inc();
        self.audit.write(&AuditRecord {
            timestamp: rfc3339(SystemTime::now()),
            policy: t.policy.clone(),
            mode: Mode::Enforce.as_str(),
            pid: t.pid,
            comm: t.comm.clone(),
            workload: t.cgroup.path.clone(),
            error: None,
            message: "cooldown ended".into(),
            action: Action::ThrottleWorker.as_str(),
            decision: "restore",
            adjusted_node: None,
            before: o.before,
            after: o.after,
            result: o.result,
            detail: o.detail,
            first_violating_window_start: None,
            violating_windows: 0,
            window_ms: 0,
        });
    }

    fn close(&mut self, i: usize, closed: &WindowAcc, now: Instant) {
        let policy = self.runtimes[i].handler.policy().clone();
        let topo = self.systems.topology.clone();
        // Placement can only be violated if some node is not allowed.
        let placement_check = policy
            .topology
            .allowed_nodes
            .as_ref()
            .filter(|a| topo.nodes.iter().any(|n| !a.contains(&n.id)));
        let mut candidates: Vec<u32> = closed.workloads.keys().copied().collect();
        if placement_check.is_some() {
            candidates.extend(workload::list_pids(&self.proc_root));
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut alive = HashSet::new();
        let mut labels_now = HashSet::new();
        for pid in candidates {
            let Some(info) = ProcessInfo::read(&self.proc_root, pid) else {
                continue;
            };
            if !in_scope(policy.selector.as_ref(), &info, self.agent_pid) {
                continue;
            }
            alive.insert(pid);
            let class = assign_class(&policy, &info).cloned();
            let w = closed.workloads.get(&pid).cloned().unwrap_or_default();
            let mut placement: Option<ActualPlacement> = None;

            // Steals against the class's allowance (no class: not limited).
            if let Some(c) = &class {
                let allowance = c.steal_allowance();
                let j = judge_steals(w.steals, allowance, closed.lost_steals);
                let err = w.last_steal.clone().map(|last| NumaError::Steal {
                    last,
                    steals_in_window: w.steals,
                    allowance,
                    qos_class: Some(c.name.clone()),
                });
                self.judged(
                    i,
                    &info,
                    ErrorType::StealLimitExceeded,
                    j,
                    err,
                    class.as_ref(),
                    w.steals,
                    &mut placement,
                    closed,
                    now,
                );
            }

            // Cross-node access ratio against maxCrossAccess.
            if let Some(max) = policy.topology.max_cross_access {
                let j = judge_access(
                    &w,
                    max.as_f64(),
                    policy.evaluation.min_samples,
                    closed.lost_accesses,
                );
                if j != Judgement::Incomplete
                    && let Some(ratio) = w.cross_ratio()
                {
                    let label = info.workload_label();
                    self.metrics
                        .ratio
                        .with_label_values(&[&policy.name, &label])
                        .set(ratio);
                    labels_now.insert(label);
                }
                let err = w.dominant_remote().map(|(s, t, res)| {
                    NumaError::Access(NumaAccessError {
                        source_node: s,
                        target_node: t,
                        resource_type: res.as_str().to_owned(),
                        distance: topo.distance(s, t),
                        qos_class: class.as_ref().map(|c| c.name.clone()),
                        allowed_nodes: policy.topology.allowed_nodes.clone(),
                        ratio: w.cross_ratio().unwrap_or(0.0),
                    })
                });
                self.judged(
                    i,
                    &info,
                    ErrorType::NumaAccessViolation,
                    j,
                    err,
                    class.as_ref(),
                    w.steals,
                    &mut placement,
                    closed,
                    now,
                );
            }

            // CPUs or memory outside allowedNodes.
            if let Some(allowed) = placement_check {
                let (j, err) = match placement::read(&self.proc_root, pid, &topo) {
                    Err(_) => (Judgement::Incomplete, None),
                    Ok(p) => {
                        let (cpu, mem) = p.outside(allowed);
                        let mut kinds = Vec::new();
                        if !cpu.is_empty() {
                            kinds.push("cpusOutsideAllowedNodes");
                        }
                        if !mem.is_empty() {
                            kinds.push("memoryOutsideAllowedNodes");
                        }
                        let err = (!kinds.is_empty()).then(|| {
                            NumaError::Policy(NumaPolicyError {
                                required_policy: format!(
                                    "{}: allowedNodes {allowed:?}",
                                    policy.name
                                ),
                                actual_placement: p.clone(),
                                violation_type: kinds.join("+"),
                            })
                        });
                        placement = Some(p);
                        (
                            if err.is_some() {
                                Judgement::Violating
                            } else {
                                Judgement::Clean
                            },
                            err,
                        )
                    }
                };
                self.judged(
                    i,
                    &info,
                    ErrorType::NumaPolicyViolation,
                    j,
                    err,
                    class.as_ref(),
                    w.steals,
                    &mut placement,
                    closed,
                    now,
                );
            }
        }
        let r = &mut self.runtimes[i];
        if placement_check.is_some() {
            // Every process was visited: forget the ones gone or out of scope.
            r.streaks.retain(|pid| alive.contains(&pid));
            r.cooldowns
                .retain(|(pid, _), until| alive.contains(pid) || *until > now);
        }
        for gone in r.ratio_labels.difference(&labels_now) {
            let _ = self
                .metrics
                .ratio
                .remove_label_values(&[&policy.name, gone]);
        }
        r.ratio_labels = labels_now;
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the judged window's whole context"
    )]
    fn judged(
        &mut self,
        i: usize,
        info: &ProcessInfo,
        error_type: ErrorType,
        j: Judgement,
        err: Option<NumaError>,
        class: Option<&QosClass>,
        steals: u64,
        placement: &mut Option<ActualPlacement>,
        closed: &WindowAcc,
        now: Instant,
    ) {
        let streak = self.runtimes[i]
            .streaks
            .update(info.pid, error_type, j, closed.start_wall);
        let (Judgement::Violating, Some(err)) = (j, err) else {
            return;
        };
        let policy = self.runtimes[i].handler.policy().clone();
        self.metrics
            .errors
            .with_label_values(&[err.type_name(), &policy.name])
            .inc();
        if placement.is_none() {
            *placement = placement::read(&self.proc_root, info.pid, &self.systems.topology).ok();
        }
        let ctx = ErrorContext {
            pid: info.pid,
            qos_class: class,
            steals_in_window: steals,
            placement: placement.as_ref(),
        };
        let resolution = self.runtimes[i].handler.handle(&err, &ctx);
        log::debug!(
            "policy {}: pid {} {}: {resolution:?}",
            policy.name,
            info.pid,
            err.message()
        );
        if resolution.retry || streak.count < policy.evaluation.debounce {
            return;
        }
        if let Some(action) = resolution.action {
            self.act(i, &policy, info, &err, &resolution, action, streak, now);
        }
    }

    #[expect(clippy::too_many_arguments, reason = "the decision's whole context")]
    fn act(
        &mut self,
        i: usize,
        policy: &Policy,
        info: &ProcessInfo,
        err: &NumaError,
        resolution: &Resolution,
        action: Action,
        streak: Streak,
        now: Instant,
    ) {
        let r = &mut self.runtimes[i];
        if r.cooldowns
            .get(&(info.pid, action))
            .is_some_and(|until| *until > now)
        {
            self.metrics
                .actions
                .with_label_values(&[&policy.name, action.as_str(), "cooldown"])
                .inc();
            return;
        }
        let fp = policy.failure_policy(err.error_type());
        let cooldown = fp.map_or(super::spec::DEFAULT_COOLDOWN, |f| f.cooldown);
        let mut record = AuditRecord {
            timestamp: String::new(),
            policy: policy.name.clone(),
            mode: policy.mode.as_str(),
            pid: info.pid,
            comm: info.comm.clone(),
            workload: info.workload_label(),
            error: serde_json::to_value(err).ok(),
            message: format!("{} ({})", err.message(), resolution.reason),
            action: action.as_str(),
            decision: if policy.mode == Mode::Enforce {
                "did"
            } else {
                "would"
            },
            adjusted_node: resolution.adjusted_node,
            before: None,
            after: None,
            result: "would",
            detail: String::new(),
            first_violating_window_start: streak.since.map(rfc3339),
            violating_windows: streak.count,
            window_ms: u64::try_from(policy.evaluation.window.as_millis()).unwrap_or(u64::MAX),
        };
        // Rate limit per policy: a rolling minute.
        while r
            .recent_actions
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            r.recent_actions.pop_front();
        }
        if policy.mode == Mode::Enforce
            && action != Action::AlertOnly
            && r.recent_actions.len() >= policy.evaluation.max_actions_per_minute as usize
        {
            record.result = "rate_limited";
            record.detail = format!("{} actions in the last minute", r.recent_actions.len());
        } else {
            r.cooldowns.insert((info.pid, action), now + cooldown);
            if policy.mode == Mode::Enforce && action != Action::AlertOnly {
                r.recent_actions.push_back(now);
            }
            match (policy.mode, action) {
                (_, Action::AlertOnly) => {
                    record.result = "recorded";
                }
                (Mode::Monitor, Action::ThrottleWorker) => {
                    record.before =
                        crate::actuators::cgroup::CpuCgroup::of_process(&self.proc_root, info.pid)
                            .and_then(|cg| cg.read_limit())
                            .ok()
                            .map(|l| l.describe());
                    record.detail = "monitor mode: would lower the cgroup CPU quota".into();
                }
                (Mode::Monitor, Action::RelocatePod) => {
                    record.before =
                        placement::read(&self.proc_root, info.pid, &self.systems.topology)
                            .ok()
                            .map(|p| format!("cpus {}", p.cpus_allowed));
                    record.detail = format!(
                        "monitor mode: would move every thread to node {:?} and migrate its pages",
                        resolution.adjusted_node
                    );
                }
                (Mode::Enforce, Action::ThrottleWorker) => {
                    let share = fp.map_or(super::spec::DEFAULT_CPU_QUOTA, |f| f.cpu_quota);
                    let (proc_root, selector, agent) = (
                        self.proc_root.clone(),
                        policy.selector.clone(),
                        self.agent_pid,
                    );
                    let o = self.throttles.throttle(
                        &self.proc_root,
                        info.pid,
                        &info.comm,
                        &policy.name,
                        share,
                        cooldown,
                        |procs| {
                            for &p in procs {
                                match ProcessInfo::read(&proc_root, p) {
                                    Some(pi) if in_scope(selector.as_ref(), &pi, agent) => {}
                                    Some(pi) => {
                                        return Err(format!(
                                            "process {p} ({}) is not governed by the policy",
                                            pi.comm
                                        ));
                                    }
                                    None => {}
                                }
                            }
                            Ok(())
                        },
                    );
                    (record.result, record.before, record.after, record.detail) =
                        (o.result, o.before, o.after, o.detail);
                }
                (Mode::Enforce, Action::RelocatePod) => {
                    self.relocate(info, resolution, &mut record)
                }
            }
        }
        record.timestamp = rfc3339(SystemTime::now());
        self.metrics
            .actions
            .with_label_values(&[&policy.name, action.as_str(), record.result])
            .inc();
        log::info!(
            "policy {}: {} {} on pid {} ({}): {}",
            policy.name,
            record.decision,
            action.as_str(),
            info.pid,
            record.result,
            record.detail
        );
        self.audit.write(&record);
    }

    fn relocate(&self, info: &ProcessInfo, resolution: &Resolution, record: &mut AuditRecord) {
        let topo = &self.systems.topology;
        let Some(node) = resolution
            .adjusted_node
            .and_then(|n| topo.nodes.iter().find(|x| x.id == n))
        else {
            record.result = "refused";
            record.detail = "no allowed node with CPUs to relocate to".into();
            return;
        };
        let before = placement::read(&self.proc_root, info.pid, topo).ok();
        record.before = before
            .as_ref()
            .map(|p| format!("cpus {} memory_kb {:?}", p.cpus_allowed, p.memory_kb));
        let from: Vec<u32> = topo
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| *id != node.id)
            .collect();
        let o = relocate::relocate(&self.proc_root, info.pid, &node.cpus, &from, node.id);
        let after = placement::read(&self.proc_root, info.pid, topo).ok();
        record.after = after
            .as_ref()
            .map(|p| format!("cpus {} memory_kb {:?}", p.cpus_allowed, p.memory_kb));
        record.result = o.result();
        record.detail = format!(
            "host relocation to node {} (Kubernetes eviction is a later issue): {}",
            node.id,
            o.detail()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        path::Path,
        process::{Child, Command},
        sync::Mutex,
    };

    use super::*;
    use crate::policy::{evaluate::ResourceType, parse::parse_documents};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn records(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf8");
            text.lines()
                .map(|l| serde_json::from_str(l).expect("json line"))
                .collect()
        }
    }

    struct Sleeper(Child);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn two_nodes() -> Topology {
        Topology::two_nodes_for_tests()
    }

    fn status_cpus(pid: u32) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("status")
            .lines()
            .find_map(|l| {
                l.strip_prefix("Cpus_allowed_list:")
                    .map(|v| v.trim().to_owned())
            })
            .expect("Cpus_allowed_list")
    }

    /// The remote-access input is synthetic here (no kernel source feeds it yet): a real
    /// process as the workload, windows of made-up access counts.
    #[test]
    fn access_ratio_windows_debounce_incomplete_and_monitor_mode() {
        let child = Sleeper(Command::new("sleep").arg("30").spawn().expect("sleep"));
        let pid = child.0.id();
        let doc = format!(
            "apiVersion: concurrency.gokore.io/v1alpha1\nkind: NUMAPolicy\nmetadata: {{name: ratio-test}}\nspec:\n  selector: {{pids: [{pid}]}}\n  numaTopology: {{maxCrossAccess: 10%}}\n  evaluation: {{window: 100ms, debounce: 2, minSamples: 10}}\n  failurePolicies:\n    - {{errorType: NUMAAccessViolation, action: relocatePod}}\n"
        );
        let parsed = parse_documents(&doc, None);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let audit = Shared::default();
        let metrics = PolicyMetrics::new().expect("metrics");
        let registry = prometheus::Registry::new();
        metrics.register(&registry).expect("register");
        let mut engine = Engine::new(
            two_nodes(),
            PathBuf::from("/proc"),
            metrics.clone(),
            AuditLog::to_writer(Box::new(audit.clone())),
        );
        let t0 = Instant::now();
        engine.set_policies(parsed.policies, t0);
        let cpus_before = status_cpus(pid);
        let feed = |e: &mut Engine, local: u64, remote: u64| {
            for (t, count) in [(0, local), (1, remote)] {
                e.record_access(AccessSample {
                    pid,
                    source_node: 0,
                    target_node: t,
                    resource: ResourceType::Memory,
                    count,
                });
            }
        };
        let ms = |n| t0 + Duration::from_millis(n);

        feed(&mut engine, 50, 50); // window 1: violating (0.5 > 0.1), streak 1 < debounce
        engine.tick(ms(100), 0);
        assert!(audit.records().is_empty());
        feed(&mut engine, 50, 50); // window 2: lost samples -> incomplete
        engine.record_lost_accesses(1);
        engine.tick(ms(200), 0);
        feed(&mut engine, 1, 4); // window 3: too few samples -> incomplete
        engine.tick(ms(300), 0);
        // Another unrelated pid is not in the selector: never judged.
        engine.record_access(AccessSample {
            pid: 1,
            source_node: 0,
            target_node: 1,
            resource: ResourceType::Memory,
            count: 1000,
        });
        engine.tick(ms(400), 0); // window 4: no samples for the workload -> incomplete
        assert!(
            audit.records().is_empty(),
            "incomplete windows never act: {:?}",
            audit.records()
        );
        feed(&mut engine, 60, 40); // window 5: violating, streak 2 = debounce -> action
        engine.tick(ms(500), 0);
        let recs = audit.records();
        assert_eq!(recs.len(), 1, "{recs:#?}");
        let r = &recs[0];
        assert_eq!(
            (r["decision"].as_str(), r["result"].as_str()),
            (Some("would"), Some("would"))
        );
        assert_eq!(r["action"], "relocatePod");
        assert_eq!(r["pid"].as_u64(), Some(u64::from(pid)));
        assert_eq!(r["error"]["type"], "NUMAAccessError");
        assert_eq!(
            (
                r["error"]["source_node"].as_u64(),
                r["error"]["target_node"].as_u64()
            ),
            (Some(0), Some(1))
        );
        assert_eq!(r["error"]["distance"].as_u64(), Some(21));
        assert_eq!(r["error"]["ratio"].as_f64(), Some(0.4));
        assert_eq!(r["violating_windows"].as_u64(), Some(2));
        assert!(
            r["message"].as_str().is_some_and(
                |m| m.starts_with("NUMA node 0 cannot access memory on node 1 (distance 21)")
            ),
            "{r}"
        );
        feed(&mut engine, 0, 100); // window 6: still violating, but in cooldown
        engine.tick(ms(600), 0);
        assert_eq!(audit.records().len(), 1, "cooldown holds");
        assert_eq!(
            status_cpus(pid),
            cpus_before,
            "monitor mode changed nothing"
        );
        let errors = metrics
            .errors
            .with_label_values(&["NUMAAccessError", "ratio-test"])
            .get();
        assert_eq!(errors, 3, "one error per complete violating window");
        let label = ProcessInfo::read(Path::new("/proc"), pid)
            .expect("alive")
            .workload_label();
        assert_eq!(
            metrics
                .ratio
                .with_label_values(&["ratio-test", &label])
                .get(),
            1.0
        );
        assert_eq!(
            metrics.threshold.with_label_values(&["ratio-test"]).get(),
            0.1
        );
        assert_eq!(
            metrics
                .actions
                .with_label_values(&["ratio-test", "relocatePod", "would"])
                .get(),
            1
        );
    }
}
