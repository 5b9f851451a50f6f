//! Group commit of the durable log. Every log-writing call of every durable stream on
//! this dispatcher goes to one of a few lanes (a task always to the same lane, so its
//! calls keep their order); a lane takes everything queued when it is free (no linger:
//! a lone call is written at once), runs the calls one after the other in one
//! transaction, each under a savepoint so that one call's failure undoes only its own
//! writes, commits once, and only then answers each call. Calls run in (tenant, task)
//! order within a batch, the order the satisfiers lock logs in, so batches never
//! deadlock with them or with each other.

use std::sync::Arc;

use adze_runtime::tasks::Tasks;
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Most calls in one transaction.
const MAX_BATCH: usize = 64;

/// What a written call hands back once its batch is committed (or is not).
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A call's writes, run inside its lane's transaction: `None` when it failed (and has
/// answered already).
type Work = Box<dyn for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Option<Finish>> + Send>;

struct Job {
    /// (tenant, task).
    log: (Uuid, Uuid),
    work: Work,
}

/// Handle to the lanes.
#[derive(Clone)]
pub(crate) struct LogWriter {
    lanes: Arc<[mpsc::Sender<Job>]>,
}

impl LogWriter {
    /// Starts `lanes` lanes as critical tasks of the dispatcher; they stop when it
    /// shuts down, after writing and answering what was queued.
    pub(crate) fn start(pool: PgPool, lanes: usize, tasks: &Tasks) -> Self {
        let senders: Vec<mpsc::Sender<Job>> = (0..lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(4_096);
                let (pool, shutdown) = (pool.clone(), tasks.shutdown().clone());
                tasks.critical("durable log writer", async move {
                    lane(pool, rx, shutdown).await;
                    Ok(())
                });
                tx
            })
            .collect();
        Self {
            lanes: senders.into(),
        }
    }

    /// Runs `work` on the log of `(tenant, task)` in a transaction of the task's lane and
    /// returns its value once that transaction is committed; its error, or the
    /// commit's, otherwise.
    pub(crate) async fn write<T, F>(
        &self,
        (tenant, task): (Uuid, Uuid),
        work: F,
    ) -> Result<T, adze_store::Error>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, adze_store::Error>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, adze_store::Error>>();
        let job = Job {
            log: (tenant, task),
            work: Box::new(move |conn| {
                Box::pin(async move {
                    match work(conn).await {
                        Ok(value) => Some(Box::new(move |committed: Result<(), String>| {
                            let _ = reply.send(committed.map(|()| value).map_err(unavailable));
                        }) as Finish),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            None
                        }
                    }
                })
            }),
        };
        let lane = &self.lanes[lane_of(task, self.lanes.len())];
        lane.send(job)
            .await
            .map_err(|_| unavailable("the dispatcher is shutting down".into()))?;
        answer
            .await
            .map_err(|_| unavailable("the log write was interrupted".into()))?
    }
}

/// The lane of `task` among `lanes`.
fn lane_of(task: Uuid, lanes: usize) -> usize {
    (task.as_u128() % lanes as u128) as usize
}

fn unavailable(message: String) -> adze_store::Error {
    adze_store::Error::Db(sqlx::Error::Protocol(message))
}

async fn lane(pool: PgPool, mut rx: mpsc::Receiver<Job>, shutdown: CancellationToken) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut jobs, MAX_BATCH) => n,
            () = shutdown.cancelled() => {
                rx.close();
                while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
                    commit(&pool, std::mem::take(&mut jobs)).await;
                }
                return;
            }
        };
        if n == 0 {
            return;
        }
        commit(&pool, std::mem::take(&mut jobs)).await;
    }
}

/// Writes one batch. A job not run (the transaction could not begin, or broke) is
/// dropped, which answers it as interrupted.
async fn commit(pool: &PgPool, mut jobs: Vec<Job>) {
    // Stable: a task's calls keep their order.
    jobs.sort_by_key(|j| j.log);
    let alone = jobs.len() == 1;
    let mut finished: Vec<Finish> = Vec::with_capacity(jobs.len());
    let outcome: Result<(), sqlx::Error> = async {
        let mut tx = pool.begin().await?;
        for job in jobs {
            if !alone {
                sqlx::query("SAVEPOINT call").execute(&mut *tx).await?;
            }
            match (job.work)(&mut tx).await {
                Some(finish) => {
                    if !alone {
                        sqlx::query("RELEASE SAVEPOINT call")
                            .execute(&mut *tx)
                            .await?;
                    }
                    finished.push(finish);
                }
                None if alone => return Ok(()),
                None => {
                    sqlx::query("ROLLBACK TO SAVEPOINT call")
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        if finished.is_empty() {
            return Ok(());
        }
        tx.commit().await
    }
    .await;
    let result = outcome.map_err(|e| format!("the log's transaction failed: {e}"));
    for finish in finished {
        finish(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_always_writes_in_the_same_lane() {
        let task = Uuid::now_v7();
        let lane = lane_of(task, 4);
        assert!(lane < 4);
        for _ in 0..10 {
            assert_eq!(lane_of(task, 4), lane);
        }
        let lanes: std::collections::HashSet<usize> =
            (0..64).map(|_| lane_of(Uuid::new_v4(), 4)).collect();
        assert!(lanes.len() > 1, "tasks spread over the lanes");
    }
}
