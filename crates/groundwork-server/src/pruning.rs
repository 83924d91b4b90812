//! The background pruning of tables that would otherwise grow for ever (the inbox, the change
//! log): one loop, now and every `every`, until stopped.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use groundwork_db::DbError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Calls `prune(before)` with `before` = now − `keep`, at once and then every `every`, until
/// `stop`; logs what it removed (as `what`) and its failures, which the next round retries.
pub fn spawn_pruning<F, Fut>(
    what: &'static str,
    keep: Duration,
    every: Duration,
    stop: CancellationToken,
    mut prune: F,
) -> JoinHandle<()>
where
    F: FnMut(DateTime<Utc>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<u64, DbError>> + Send,
{
    tokio::spawn(async move {
        loop {
            let before = chrono::TimeDelta::from_std(keep)
                .ok()
                .and_then(|keep| groundwork_db::now().checked_sub_signed(keep))
                .unwrap_or(DateTime::UNIX_EPOCH);
            match prune(before).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "{what} pruned"),
                Err(err) => tracing::warn!(error = %err, "cannot prune the {what}"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}
