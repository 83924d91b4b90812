//! [`TrackedUpload`]: a multipart upload to an object store that leaves a marker while it
//! runs, so that one a crash cut short can be found and aborted ([`abort_abandoned`]).
//!
//! An object store keeps the parts of an unfinished multipart upload (and bills them) until
//! the upload is completed or aborted. Dropping an upload in a live process aborts it (see
//! `PartWriter`), but a killed process aborts nothing, and object_store cannot list the
//! multipart uploads in progress. So each upload writes its id to a marker object,
//! `.groundwork-uploads/<key>`, before its first part and removes it once completed or
//! aborted; a marker older than any live upload names one to abort. Storage keys never
//! start with `.`, so markers never collide with files.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    MultipartId, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, PutResult, UploadPart,
};

/// The prefix of the markers.
pub(crate) const MARKERS: &str = ".groundwork-uploads";

/// The parts uploaded so far, by index.
type Parts = Arc<Mutex<Vec<Option<PartId>>>>;

/// A multipart upload of `path` whose id is recorded in a marker while it runs.
pub(crate) struct TrackedUpload {
    multipart: Arc<dyn MultipartStore>,
    objects: Arc<dyn ObjectStore>,
    path: Path,
    marker: Path,
    id: MultipartId,
    parts: Parts,
    next: usize,
}

impl TrackedUpload {
    /// Starts a multipart upload of `key` and records it in its marker.
    ///
    /// # Errors
    /// When the store refuses either (the multipart upload is then aborted again).
    pub(crate) async fn create(
        multipart: Arc<dyn MultipartStore>,
        objects: Arc<dyn ObjectStore>,
        key: &str,
    ) -> object_store::Result<Self> {
        let path = Path::from(key);
        let marker = marker_path(key);
        let id = multipart.create_multipart(&path).await?;
        if let Err(err) = objects.put(&marker, PutPayload::from(id.clone())).await {
            let _ = multipart.abort_multipart(&path, &id).await;
            return Err(err);
        }
        Ok(Self {
            multipart,
            objects,
            path,
            marker,
            id,
            parts: Arc::default(),
            next: 0,
        })
    }

    /// Removes the marker; a failure leaves one whose upload is gone, which a sweep removes
    /// (aborting an upload that no longer exists fails harmlessly).
    async fn forget(&self) {
        if let Err(err) = self.objects.delete(&self.marker).await {
            tracing::debug!(marker = %self.marker, error = %err, "upload marker left behind");
        }
    }
}

fn marker_path(key: &str) -> Path {
    Path::from(format!("{MARKERS}/{key}"))
}

fn lock(parts: &Parts) -> std::sync::MutexGuard<'_, Vec<Option<PartId>>> {
    parts.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for TrackedUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedUpload")
            .field("path", &self.path)
            .field("id", &self.id)
            .field("parts", &self.next)
            .finish_non_exhaustive()
    }
}

impl MultipartUpload for TrackedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let index = self.next;
        self.next += 1;
        let (multipart, path, id, parts) = (
            Arc::clone(&self.multipart),
            self.path.clone(),
            self.id.clone(),
            Arc::clone(&self.parts),
        );
        async move {
            let part = multipart.put_part(&path, &id, index, data).await?;
            let mut parts = lock(&parts);
            if parts.len() <= index {
                parts.resize(index + 1, None);
            }
            parts[index] = Some(part);
            Ok(())
        }
        .boxed()
    }

    // Spelled out as `async_trait` expands it (the trait is declared with that macro).
    fn complete<'life0, 'async_trait>(
        &'life0 mut self,
    ) -> futures_util::future::BoxFuture<'async_trait, object_store::Result<PutResult>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        async move {
            let parts: Option<Vec<PartId>> = std::mem::take(&mut *lock(&self.parts))
                .into_iter()
                .collect();
            let parts = parts.ok_or_else(|| object_store::Error::Generic {
                store: "S3",
                source: "completing a multipart upload with a part missing".into(),
            })?;
            let result = self
                .multipart
                .complete_multipart(&self.path, &self.id, parts)
                .await?;
            self.forget().await;
            Ok(result)
        }
        .boxed()
    }

    fn abort<'life0, 'async_trait>(
        &'life0 mut self,
    ) -> futures_util::future::BoxFuture<'async_trait, object_store::Result<()>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        async move {
            self.multipart.abort_multipart(&self.path, &self.id).await?;
            self.forget().await;
            Ok(())
        }
        .boxed()
    }
}

/// Aborts the multipart uploads whose markers are older than `older_than` (uploads a crash
/// cut short: a live one completes or aborts long before) and removes their markers.
/// Returns how many were aborted.
///
/// # Errors
/// When the markers cannot be listed; a marker that cannot be read or whose upload cannot
/// be aborted is skipped (and tried again at the next sweep).
pub(crate) async fn abort_abandoned(
    multipart: &dyn MultipartStore,
    objects: &dyn ObjectStore,
    older_than: Duration,
) -> object_store::Result<u64> {
    let cutoff = chrono::TimeDelta::from_std(older_than)
        .ok()
        .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
        .unwrap_or(chrono::DateTime::UNIX_EPOCH);
    let prefix = Path::from(MARKERS);
    let mut markers = objects.list(Some(&prefix));
    let mut aborted = 0;
    while let Some(meta) = markers.next().await {
        let meta = meta?;
        if meta.last_modified >= cutoff {
            continue;
        }
        let Some(key) = meta
            .location
            .as_ref()
            .strip_prefix(MARKERS)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(str::to_owned)
        else {
            continue;
        };
        let id = match objects.get(&meta.location).await {
            Ok(found) => match found.bytes().await {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(err) => {
                    tracing::debug!(marker = %meta.location, error = %err, "cannot read an upload marker");
                    continue;
                }
            },
            Err(err) => {
                tracing::debug!(marker = %meta.location, error = %err, "cannot read an upload marker");
                continue;
            }
        };
        match multipart
            .abort_multipart(&Path::from(key.as_str()), &id)
            .await
        {
            // NotFound: completed or aborted already, only the marker was left.
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(err) => {
                tracing::warn!(key, error = %err, "cannot abort an abandoned multipart upload; trying again at the next sweep");
                continue;
            }
        }
        match objects.delete(&meta.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => aborted += 1,
            Err(err) => {
                tracing::debug!(marker = %meta.location, error = %err, "upload marker left behind");
            }
        }
    }
    Ok(aborted)
}
