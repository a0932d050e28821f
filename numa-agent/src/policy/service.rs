//! The policy engine inside `numa-agent run`: initial load (every file must be valid),
//! a ticker that closes windows, a poller that reloads changed files, and shutdown
//! (restores every throttle). `run.rs` only calls into this.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use prometheus::Registry;
use thiserror::Error;
use tokio::sync::watch;

use super::{
    engine::Engine,
    evaluate::AccessSample,
    load::{FileState, LoadError, PolicySource},
    metrics::PolicyMetrics,
    parse::Machine,
};
use crate::{actuators::AuditLog, errors::NumaStealError, topology::Topology};

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("invalid policy, not starting:\n{}", .0.iter().map(|e| format!("{e}")).collect::<Vec<_>>().join("\n"))]
    Load(Vec<LoadError>),
    #[error("opening the audit log {path}")]
    Audit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registering policy metrics")]
    Metrics(#[from] prometheus::Error),
}

pub struct PolicyService {
    engine: Mutex<Engine>,
    source: Mutex<PolicySource>,
    machine: Machine,
    metrics: PolicyMetrics,
}

/// How often windows are checked for their end: bounds the lag of an action behind its
/// window (the shortest window allowed is 100 ms).
pub const TICK: Duration = Duration::from_millis(50);
/// How often policy files are re-read.
pub const RELOAD: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; carry on with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PolicyService {
    pub fn start(
        paths: Vec<PathBuf>,
        sysfs_root: &Path,
        proc_root: PathBuf,
        topology: &Topology,
        registry: &Registry,
        audit_log: Option<&PathBuf>,
    ) -> Result<Arc<Self>, ServiceError> {
        let machine = Machine::from_sysfs(sysfs_root).unwrap_or_else(|_| Machine {
            topology: topology.clone(),
            memory_nodes: None,
        });
        let mut source = PolicySource::new(paths);
        let poll = source.poll(Some(&machine));
        for (file, w) in &poll.warnings {
            log::warn!("{}:{}: {}: {}", file.display(), w.line, w.path, w.message);
        }
        if !poll.problems.is_empty() {
            return Err(ServiceError::Load(poll.problems));
        }
        let metrics = PolicyMetrics::new()?;
        metrics.register(registry)?;
        let audit = match audit_log {
            Some(path) => AuditLog::to_file(path).map_err(|source| ServiceError::Audit {
                path: path.clone(),
                source,
            })?,
            None => AuditLog::to_log(),
        };
        let mut engine = Engine::new(topology.clone(), proc_root, metrics.clone(), audit);
        engine.set_policies(source.policies(), Instant::now());
        if engine.policy_names().is_empty() {
            log::warn!("no NUMAPolicy found under the --policy paths: nothing is evaluated");
        }
        let svc = Self {
            engine: Mutex::new(engine),
            source: Mutex::new(source),
            machine,
            metrics,
        };
        svc.export_file_states();
        Ok(Arc::new(svc))
    }

    fn export_file_states(&self) {
        self.metrics.file_valid.reset();
        for (file, state) in lock(&self.source).states() {
            self.metrics
                .file_valid
                .with_label_values(&[file.display().to_string()])
                .set(i64::from(state == FileState::Valid));
        }
    }

    pub fn record_steal(&self, pid: Option<u32>, error: &NumaStealError) {
        if let Some(pid) = pid {
            lock(&self.engine).record_steal(pid, error);
        }
    }

    /// The remote-access input of issue 4 (nothing feeds it yet).
    pub fn record_access(&self, sample: AccessSample) {
        lock(&self.engine).record_access(sample);
    }

    pub fn tick(&self, lost_steals_total: u64) {
        lock(&self.engine).tick(Instant::now(), lost_steals_total);
    }

    /// Re-read the policy files; a changed valid set is put in force, an invalid file
    /// is logged with every error and its previous version kept.
    pub fn reload(&self) {
        let mut source = lock(&self.source);
        let poll = source.poll(Some(&self.machine));
        for (file, w) in &poll.warnings {
            log::warn!("{}:{}: {}: {}", file.display(), w.line, w.path, w.message);
        }
        for p in &poll.problems {
            log::error!("{p}");
        }
        if poll.changed {
            let policies = source.policies();
            drop(source);
            log::info!("policies reloaded: {} in force", policies.len());
            lock(&self.engine).set_policies(policies, Instant::now());
        } else {
            drop(source);
        }
        self.export_file_states();
    }

    pub fn shutdown(&self) {
        lock(&self.engine).shutdown();
    }
}

/// Tick and reload until `stop` turns true. `lost` reads the kernel's running count of
/// migration records lost.
pub async fn drive(
    svc: Arc<PolicyService>,
    lost: impl Fn() -> u64 + Send + 'static,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_reload = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let svc2 = svc.clone();
        let n = lost();
        let reload = last_reload.elapsed() >= RELOAD;
        if reload {
            last_reload = Instant::now();
        }
        // File and /proc reads and cgroup writes block: keep them off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            svc2.tick(n);
            if reload {
                svc2.reload();
            }
        })
        .await;
    }
}
