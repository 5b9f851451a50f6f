//! A stage of admission: between the source (the queue, or the tasks a batch listed)
//! and matchmaking, a stage admits candidates or holds them back, each with the reason
//! it waits. Concurrency keys, rate limits and worker labels are stages; each is a
//! file of its own that implements [`Stage`] and is added to the pipeline's list.

use adze_core::WaitReason;
use adze_store::admission::Candidate;
use futures::future::BoxFuture;
use sqlx::PgConnection;

/// What a stage decided about the candidates it was given, in their order.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Candidates that may go on to the next stage.
    pub admitted: Vec<Candidate>,
    /// Candidates held back, with why.
    pub deferred: Vec<(Candidate, WaitReason)>,
}

/// One stage of admission.
pub trait Stage: Send + Sync {
    /// The stage's name, for logs.
    fn name(&self) -> &'static str;

    /// Decides about `candidates` (oldest first). It may read Postgres on `conn`
    /// (inside the batch's transaction when there is one), and must keep what it is
    /// not sure of: a held-back task is looked at again on the next pass.
    fn admit<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        candidates: Vec<Candidate>,
    ) -> BoxFuture<'a, Result<Verdict, adze_store::Error>>;
}
