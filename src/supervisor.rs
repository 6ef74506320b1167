//! Supervised background work. Each worker runs in a task of its own; one that panics or
//! returns is logged at error level and started again after a backoff (1 s, doubling to 60 s;
//! back to 1 s once a run lasted a minute). Workers report each successful round through their
//! `Beat`, and `/readyz` shows every worker with its last successful round.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::domain::now_ms;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// One worker as `/readyz` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WorkerStatus {
    pub alive: bool,
    /// When the worker last finished a round without error (ms since the epoch).
    pub last_ok: Option<i64>,
    pub restarts: u64,
    /// Why it stopped last, if it ever did.
    pub last_failure: Option<String>,
}

/// Every supervised worker's status, by name.
#[derive(Default)]
pub struct Workers {
    status: Mutex<BTreeMap<&'static str, WorkerStatus>>,
    /// Test hook: workers that panic at their next beat.
    #[cfg(feature = "test-support")]
    poisoned: Mutex<std::collections::HashSet<&'static str>>,
}

impl Workers {
    pub fn snapshot(&self) -> BTreeMap<&'static str, WorkerStatus> {
        self.status.lock().expect("worker status poisoned").clone()
    }

    /// Whether every worker is running.
    pub fn all_alive(&self) -> bool {
        self.snapshot().values().all(|s| s.alive)
    }

    fn update(&self, name: &'static str, f: impl FnOnce(&mut WorkerStatus)) {
        f(self
            .status
            .lock()
            .expect("worker status poisoned")
            .entry(name)
            .or_default());
    }

    /// Test hook: `name` panics at its next beat, as a bug would.
    #[cfg(feature = "test-support")]
    pub fn make_panic(&self, name: &'static str) {
        self.poisoned.lock().expect("poisoned set").insert(name);
    }
}

/// A worker's handle for reporting its rounds.
#[derive(Clone)]
pub struct Beat {
    name: &'static str,
    workers: Arc<Workers>,
}

impl Beat {
    /// A round finished without error.
    pub fn ok(&self) {
        #[cfg(feature = "test-support")]
        if self
            .workers
            .poisoned
            .lock()
            .expect("poisoned set")
            .remove(self.name)
        {
            panic!("{}: made to panic by a test", self.name);
        }
        self.workers
            .update(self.name, |s| s.last_ok = Some(now_ms()));
    }
}

/// Aborts the worker's task when the supervisor's task is aborted.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `make(beat)` as the worker `name` for as long as the returned handle is not aborted,
/// starting it again whenever it panics or returns.
pub fn supervise<F, Fut>(workers: &Arc<Workers>, name: &'static str, make: F) -> JoinHandle<()>
where
    F: Fn(Beat) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let workers = workers.clone();
    workers.update(name, |s| s.alive = true);
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let beat = Beat {
                name,
                workers: workers.clone(),
            };
            workers.update(name, |s| s.alive = true);
            let started = Instant::now();
            let task = tokio::spawn(make(beat));
            let _guard = AbortOnDrop(task.abort_handle());
            let why = match task.await {
                Ok(()) => "it returned".to_string(),
                Err(e) if e.is_panic() => {
                    let payload = e.into_panic();
                    let text = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "a panic".into());
                    format!("it panicked: {text}")
                }
                Err(_) => return, // cancelled: shutting down
            };
            if started.elapsed() >= HEALTHY_RUN {
                backoff = FIRST_BACKOFF;
            }
            tracing::error!(
                worker = name,
                why,
                restart_in_ms = backoff.as_millis() as u64,
                "a background worker stopped; restarting it"
            );
            workers.update(name, |s| {
                s.alive = false;
                s.restarts += 1;
                s.last_failure = Some(why);
            });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}
