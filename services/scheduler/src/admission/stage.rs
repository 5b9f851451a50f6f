//! A stage of admission: between the source (the queue, or the tasks a batch listed)
//! and matchmaking, a stage admits candidates, holds them back with the reason they
//! wait, or has them cancelled (a concurrency strategy). Concurrency keys, rate limits
//! and worker labels are stages; each is a file of its own that implements [`Stage`]
//! and is added to the pipeline's list.

use std::collections::HashMap;

use adze_bus::messages::CancelCause;
use adze_core::WaitReason;
use adze_store::admission::Candidate;
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

/// What a stage decided about the candidates it was given, in their order.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Candidates that may go on to the next stage.
    pub admitted: Vec<Candidate>,
    /// Candidates held back, with why.
    pub deferred: Vec<(Candidate, WaitReason)>,
    /// Of the held-back tasks, those that wait off the ready queue under a key, until
    /// the stage reads them from there ([`Stage::waiting`]): task id → key.
    pub waits_under: HashMap<Uuid, String>,
    /// Runs and tasks to cancel.
    pub cancels: Vec<CancelOrder>,
    /// Of the held-back tasks, those that may not start before a time (a rate limit's
    /// next window): task id → when. They leave the queue until then.
    pub not_before: HashMap<Uuid, chrono::DateTime<chrono::Utc>>,
}

/// Runs or tasks a stage has ended, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelOrder {
    /// Tenant.
    pub tenant_id: Uuid,
    /// Ids of runs (all their unfinished tasks) or of tasks.
    pub ids: Vec<Uuid>,
    /// Why, as the tasks' error reads.
    pub reason: String,
    /// How they end.
    pub ending: Ending,
}

/// How a stage ends the tasks of a [`CancelOrder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ending {
    /// Cancelled (a concurrency strategy, a `cancel_if`), for `cause`.
    Cancel(CancelCause),
    /// Skipped (a `skip_if`): they succeed without running; only queued tasks.
    Skip,
}

/// One stage of admission.
pub trait Stage: Send + Sync {
    /// The stage's name, for logs.
    fn name(&self) -> &'static str;

    /// A pass begins: what the stage counted in the previous one is forgotten.
    fn begin(&self) {}

    /// Tasks the stage held back under a key earlier that may go on now; they join
    /// the source's candidates of the pass. Called once per pass that reads the
    /// queue, after [`Stage::begin`].
    fn waiting<'a>(
        &'a self,
        _conn: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<Vec<Candidate>, adze_store::Error>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Whether tasks wait under this stage's keys: then no pass leaves the queue
    /// drained, so each pass looks whether they may go.
    fn has_waiting(&self) -> bool {
        false
    }

    /// Candidates this stage admitted that were not assigned after all (no worker had
    /// room, or the task changed meanwhile): what the stage took for them can be given
    /// back.
    fn returned<'a>(&'a self, _candidates: &'a [Candidate]) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Decides about `candidates` (oldest first). It may read Postgres on `conn`
    /// (inside the batch's transaction when there is one), and must keep what it is
    /// not sure of: a held-back task is looked at again on the next pass.
    fn admit<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        candidates: Vec<Candidate>,
    ) -> BoxFuture<'a, Result<Verdict, adze_store::Error>>;
}
