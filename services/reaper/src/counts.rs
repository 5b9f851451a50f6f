//! Folds the runs list's count deltas into the hourly counts
//! ([`adze_store::run_counts`]) every `count_fold_every_ms`. Counts read both, so a
//! fold that is late or fails only leaves the deltas table longer to read.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::Config;

/// Runs until `shutdown`.
pub(crate) async fn run(config: Config, pool: PgPool, shutdown: CancellationToken) {
    let period = Duration::from_millis(config.count_fold_every_ms);
    adze_runtime::tasks::every(period, &shutdown, || async {
        // A full batch means more are waiting: fold again at once.
        loop {
            match adze_store::run_counts::fold(&pool).await {
                Ok(n) if n >= adze_store::run_counts::FOLD_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "folding the run counts failed; retrying next time");
                    break;
                }
            }
        }
    })
    .await;
}
