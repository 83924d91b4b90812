//! Removing what crashes leave in the file store: the partial uploads of uploads cut short
//! (staging files on the local disk, unfinished multipart uploads on S3), and objects that
//! no file row references (an upload that stored its object but died
//! before recording it, a delete that removed the row but not the object).
//!
//! The second kind is found through the keys the database records as possibly unreferenced
//! (see [`groundwork_db::files`]), never by listing the store and comparing: a store shared
//! with another deployment, or opened against the wrong database, loses nothing.

use std::sync::Arc;
use std::time::Duration;

use groundwork_db::{Database, DbError, UnrecordedReason};
use groundwork_storage::{FileStore, StorageError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the sweep runs (and once at start).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// How long an upload may run before it counts as abandoned: its partial upload is removed
/// and its reservation claimed (its object removed). A day, far beyond any upload that is
/// still alive (100 MiB at 10 kB/s takes 3 hours). An upload that outlasts it is answered
/// 409 (or fails, on S3) and leaves nothing behind.
pub const ABANDONED_UPLOAD_AGE: Duration = Duration::from_secs(24 * 3600);

/// Keys claimed per database round trip.
const BATCH: u32 = 100;

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Partial uploads removed: staging files on the local disk, unfinished multipart
    /// uploads on S3.
    pub partial_uploads: u64,
    /// Objects of uploads abandoned before their file was recorded.
    pub abandoned_uploads: u64,
    /// Objects of deleted files whose removal had not finished.
    pub deleted_files: u64,
    /// Objects the store failed to remove (tried again at the next sweep).
    pub failures: u64,
}

/// Why a sweep stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The database could not be read or written.
    #[error("file sweep: {0}")]
    Database(#[from] DbError),
    /// The store's directory could not be read.
    #[error("file sweep: {0}")]
    Store(#[from] StorageError),
}

/// Runs one sweep of what uploads abandoned for `abandoned_after` and unfinished deletes
/// left: removes the partial uploads, then the objects of keys recorded as possibly
/// unreferenced — older reservations and the keys of deleted files — and forgets each key
/// once its object is gone.
///
/// # Errors
/// [`SweepError`] when the database or the store's directory cannot be read; what was
/// removed before stays removed, and the rest waits for the next sweep.
pub async fn sweep(
    db: &Database,
    store: &dyn FileStore,
    abandoned_after: Duration,
) -> Result<SweepReport, SweepError> {
    let mut report = SweepReport {
        partial_uploads: store.remove_partial_uploads(abandoned_after).await?,
        ..SweepReport::default()
    };
    let reserved_before = chrono::TimeDelta::from_std(abandoned_after)
        .ok()
        .and_then(|age| groundwork_db::now().checked_sub_signed(age))
        .unwrap_or(chrono::DateTime::UNIX_EPOCH);
    let mut after: Option<String> = None;
    loop {
        let claimed = db
            .files()
            .claim_unrecorded(reserved_before, after.as_deref(), BATCH)
            .await?;
        for object in &claimed {
            if let Err(err) = store.delete(&object.storage_key).await {
                tracing::warn!(key = %object.storage_key, error = %err, "cannot remove an unreferenced object; trying again at the next sweep");
                report.failures += 1;
                continue;
            }
            db.files().release_key(&object.storage_key).await?;
            match object.reason {
                UnrecordedReason::Upload => report.abandoned_uploads += 1,
                UnrecordedReason::Delete => report.deleted_files += 1,
            }
        }
        match claimed.last() {
            Some(last) if claimed.len() == BATCH as usize => {
                after = Some(last.storage_key.clone());
            }
            _ => return Ok(report),
        }
    }
}

/// Sweeps once now (as soon as the database answers) and then every [`SWEEP_INTERVAL`],
/// until `stop` is cancelled. Failures are logged and retried at the next interval.
pub fn spawn(db: Database, store: Arc<dyn FileStore>, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            // Started with the database down: the first sweep waits for it.
            tokio::select! {
                () = stop.cancelled() => return,
                ready = db.wait_ready(SWEEP_INTERVAL) => if ready.is_err() { continue },
            }
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                outcome = sweep(&db, store.as_ref(), ABANDONED_UPLOAD_AGE) => outcome,
            };
            match outcome {
                Ok(report) if report == SweepReport::default() => {}
                Ok(report) => tracing::info!(
                    partial_uploads = report.partial_uploads,
                    abandoned_uploads = report.abandoned_uploads,
                    deleted_files = report.deleted_files,
                    failures = report.failures,
                    "removed what interrupted uploads and deletes left in the file store"
                ),
                Err(err) => tracing::warn!(error = %err, "file sweep failed; trying again later"),
            }
        }
    })
}
