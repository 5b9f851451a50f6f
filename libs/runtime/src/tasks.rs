//! A service's background tasks, each spawned with its failure policy declared on the
//! line that spawns it:
//!
//! - [`Tasks::critical`]: the service cannot work without it. If it fails (or ends
//!   while the service is still running) the service's shutdown token is cancelled,
//!   so the whole service stops, and its error is what the service returns.
//! - [`Tasks::best_effort`]: useful but not vital. A failure is logged and the task is
//!   started again after a pause that doubles up to a minute.
//! - [`Tasks::serving`]: serves one client's stream beside its response. It ends with
//!   the stream, or is dropped at shutdown; it is never restarted, and nothing else
//!   depends on it.
//!
//! Every task runs on one `TaskTracker` and sees the same shutdown token;
//! [`Tasks::join`] waits for all of them.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Calls `pass` every `period` until `shutdown` (never, for a zero period); a pass that
/// falls behind delays the next rather than bunching them.
pub async fn every<F, Fut>(period: Duration, shutdown: &CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    if period.is_zero() {
        shutdown.cancelled().await;
        return;
    }
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        pass().await;
    }
}

/// The background tasks of one service.
#[derive(Clone, Debug)]
pub struct Tasks {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    failure: Arc<Mutex<Option<anyhow::Error>>>,
}

impl Tasks {
    /// Tasks stopped by `shutdown` (and stopping it when a critical one fails).
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            shutdown,
            failure: Arc::default(),
        }
    }

    /// The token every task should stop on.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Spawns a task the service cannot run without.
    pub fn critical<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let me = self.clone();
        self.tracker.spawn(async move {
            let result = caught(task).await;
            if me.shutdown.is_cancelled() {
                if let Err(e) = result {
                    tracing::warn!(task = name, error = %e, "task failed while stopping");
                }
                return;
            }
            let error = result
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("ended while the service was running"));
            tracing::error!(task = name, error = %error, "a critical task stopped; stopping the service");
            me.fail(error.context(format!("critical task {name:?} stopped")));
        });
    }

    /// Spawns a task that is restarted, after a growing pause, whenever it fails. It
    /// may return `Ok(())` only once shutdown has begun.
    pub fn best_effort<F, Fut>(&self, name: &'static str, mut start: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            let mut pause = Duration::from_millis(250);
            while !shutdown.is_cancelled() {
                match caught(start()).await {
                    Ok(()) if shutdown.is_cancelled() => return,
                    Ok(()) => tracing::warn!(task = name, "task ended; starting it again"),
                    Err(e) => {
                        tracing::warn!(task = name, error = %e, "task failed; starting it again")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(60));
            }
        });
    }

    /// Spawns the task that serves one client's stream beside its response (reading
    /// what the client sends, or following what it subscribed to). It ends with the
    /// stream, or is dropped when shutdown begins, so that [`Tasks::join`], which
    /// waits for it too, never waits for a client.
    pub fn serving<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = task => {}
                () = shutdown.cancelled() => {}
            }
        });
    }

    fn fail(&self, error: anyhow::Error) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert(error);
        self.shutdown.cancel();
    }

    /// Waits for every task to end (they end once shutdown is cancelled). The error is
    /// the first critical task's failure, if one stopped the service.
    pub async fn join(self) -> anyhow::Result<()> {
        self.tracker.close();
        self.tracker.wait().await;
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Runs `task` on a task of its own, so that a panic in it is an error here.
async fn caught<F>(task: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    match tokio::spawn(task).await {
        Ok(result) => result,
        Err(e) => Err(anyhow::anyhow!("panicked: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_failed_critical_task_stops_the_service_with_its_error() {
        let tasks = Tasks::new(CancellationToken::new());
        let stop = tasks.shutdown().clone();
        tasks.critical("waits", async move {
            stop.cancelled().await;
            Ok(())
        });
        tasks.critical("fails", async { anyhow::bail!("boom") });
        let err = tasks.clone().join().await.unwrap_err();
        assert!(format!("{err:#}").contains("boom"), "{err:#}");
        assert!(tasks.shutdown().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_critical_task_stops_the_service_and_a_best_effort_one_restarts() {
        let tasks = Tasks::new(CancellationToken::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let (counted, stop) = (runs.clone(), tasks.shutdown().clone());
        tasks.best_effort("panics", move || {
            let (runs, stop) = (counted.clone(), stop.clone());
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run");
                }
                stop.cancelled().await;
                Ok(())
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted after its panic");
        assert!(!tasks.shutdown().is_cancelled());
        tasks.critical("panics", async { panic!("critical boom") });
        let err = tasks.clone().join().await.unwrap_err();
        assert!(format!("{err:#}").contains("critical boom"), "{err:#}");
        assert!(tasks.shutdown().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_task_is_waited_for_and_dropped_at_shutdown() {
        let tasks = Tasks::new(CancellationToken::new());
        let ended = Arc::new(AtomicUsize::new(0));
        let counted = ended.clone();
        tasks.serving(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            counted.fetch_add(1, Ordering::SeqCst);
        });
        // A stream that never ends on its own (its client keeps it open).
        tasks.serving(std::future::pending());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            ended.load(Ordering::SeqCst),
            1,
            "the first ended with its stream"
        );
        assert!(
            !tasks.shutdown().is_cancelled(),
            "ending stops nothing else"
        );
        let joined = tokio::spawn(tasks.clone().join());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!joined.is_finished(), "join waits for the open stream");
        tasks.shutdown().cancel();
        let joined = tokio::time::timeout(Duration::from_secs(5), joined).await;
        assert!(
            joined
                .expect("the open stream is dropped at shutdown")
                .expect("joined")
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_best_effort_task_is_restarted_until_shutdown() {
        let tasks = Tasks::new(CancellationToken::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        tasks.best_effort("flaky", move || {
            let runs = counted.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                anyhow::bail!("try again")
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(runs.load(Ordering::SeqCst) >= 3, "restarted");
        assert!(
            !tasks.shutdown().is_cancelled(),
            "a best-effort failure stops nothing"
        );
        tasks.shutdown().cancel();
        tasks.join().await.unwrap();
    }
}
