//! [`ObjectFileStore`]: the [`FileStore`] over any [`ObjectStore`].

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResult, GetResultPayload, MultipartUpload, ObjectStore,
    ObjectStoreExt, PutPayload,
};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use crate::local::LocalUpload;
use crate::name::is_valid_key;
use crate::tracked::TrackedUpload;
use crate::{ByteRange, ByteStream, Download, FileStore, StorageError, StoredObject};

/// How an upload is cut into parts and how many are written at once.
///
/// An upload holds at most `(in_flight + 2) * part_size` bytes (the parts being written,
/// the part being hashed and the part being filled), whatever the file size.
#[derive(Debug, Clone, Copy)]
struct PartLayout {
    part_size: usize,
    in_flight: usize,
}

/// Object stores: S3 wants at least 5 MiB for every part but the last (and R2 equal sizes);
/// two 8 MiB parts in flight bound an upload to 32 MiB.
const STORE_PARTS: PartLayout = PartLayout {
    part_size: 8 * 1024 * 1024,
    in_flight: 2,
};

/// The local disk: parts are plain positional writes, so they can be small enough to still
/// be in the CPU cache when they are hashed and copied to the page cache (2 MiB ran 5–10 %
/// faster than 8 MiB in `storage_bench put` runs of 1 GiB); bound 12 MiB.
const LOCAL_PARTS: PartLayout = PartLayout {
    part_size: 2 * 1024 * 1024,
    in_flight: 4,
};

/// Bytes read from a local file per blocking read when downloading (one chunk is read
/// ahead while the previous one is sent).
const READ_CHUNK: usize = 512 * 1024;

/// A [`FileStore`] over an [`ObjectStore`]: local disk, memory or S3, as built by
/// [`open`](crate::open).
///
/// Cheap to clone (an `Arc` inside). Every operation must run inside a Tokio runtime.
#[derive(Clone)]
pub struct ObjectFileStore {
    store: Arc<dyn ObjectStore>,
    description: Arc<str>,
    /// For a local-disk store, its directory: uploads then go through [`LocalUpload`]
    /// (durable, written back while they arrive) instead of the store's own multipart upload.
    local_root: Option<Arc<std::path::Path>>,
    /// For an object store with a multipart API (S3): uploads then go through
    /// [`TrackedUpload`], which a sweep can abort after a crash.
    multipart: Option<Arc<dyn MultipartStore>>,
}

impl fmt::Debug for ObjectFileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectFileStore")
            .field("store", &self.description)
            .finish()
    }
}

impl ObjectFileStore {
    /// Wraps `store`; `description` is what [`FileStore::describe`] answers and must not hold
    /// secrets.
    #[must_use]
    pub fn new(store: Arc<dyn ObjectStore>, description: impl Into<String>) -> Self {
        Self {
            store,
            description: description.into().into(),
            local_root: None,
            multipart: None,
        }
    }

    /// An object store with a multipart API (S3): uploads are [`TrackedUpload`]s, and
    /// [`FileStore::remove_partial_uploads`] aborts those a crash left unfinished.
    pub(crate) fn tracked(
        store: Arc<dyn ObjectStore>,
        multipart: Arc<dyn MultipartStore>,
        description: impl Into<String>,
    ) -> Self {
        Self {
            multipart: Some(multipart),
            ..Self::new(store, description)
        }
    }

    /// A local-disk store over `store` (a `LocalFileSystem` rooted at `root`) whose uploads
    /// are written by [`LocalUpload`].
    pub(crate) fn local_disk(
        store: Arc<dyn ObjectStore>,
        root: &std::path::Path,
        description: impl Into<String>,
    ) -> Self {
        Self {
            local_root: Some(root.into()),
            ..Self::new(store, description)
        }
    }

    async fn put_inner(
        &self,
        key: &str,
        mut body: ByteStream,
        limit: u64,
    ) -> Result<StoredObject, StorageError> {
        let path = key_path(key)?;
        let (upload, layout) = match (&self.local_root, &self.multipart) {
            (Some(root), _) => LocalUpload::create(root, key)
                .await
                .map(|upload| (Box::new(upload) as Box<dyn MultipartUpload>, LOCAL_PARTS)),
            (None, Some(multipart)) => {
                TrackedUpload::create(Arc::clone(multipart), Arc::clone(&self.store), key)
                    .await
                    .map(|upload| (Box::new(upload) as Box<dyn MultipartUpload>, STORE_PARTS))
            }
            (None, None) => {
                (self.store.put_multipart(&path).await).map(|upload| (upload, STORE_PARTS))
            }
        }
        .map_err(|err| StorageError::from_store_write(err, key))?;
        let mut writer = PartWriter::new(upload, layout, key);
        let mut size: u64 = 0;

        let received = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(body_error)?;
                size = size.saturating_add(chunk.len() as u64);
                if size > limit {
                    return Err(StorageError::TooLarge { limit });
                }
                writer.write(chunk).await?;
            }
            Ok(())
        }
        .await;
        if let Err(err) = received {
            writer.abort().await;
            tracing::debug!(key, error = %err, "upload aborted, partial object removed");
            return Err(err);
        }
        let sha256 = writer.finish().await?;
        tracing::debug!(key, size, sha256, "upload stored");
        Ok(StoredObject {
            key: key.to_owned(),
            size,
            sha256,
        })
    }

    async fn get_inner(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<Download, StorageError> {
        let path = key_path(key)?;
        let store_err = |err| StorageError::from_store(err, key);
        let mut options = GetOptions::default();
        if let Some(range) = range {
            // Resolved here rather than by the store, so that every backend answers an
            // unsatisfiable range the same way (S3 would answer 416 with a generic error).
            let meta = self.store.head(&path).await.map_err(store_err)?;
            let (start, end) = range.resolve(meta.size)?;
            options.range = Some(GetRange::Bounded(start..end + 1));
        }
        let result = self
            .store
            .get_opts(&path, options)
            .await
            .map_err(store_err)?;
        let size = result.meta.size;
        let (start, end) = (
            result.range.start,
            result.range.end.saturating_sub(1).max(result.range.start),
        );
        let body = body_stream(result, key);
        Ok(Download {
            size,
            start,
            end,
            body,
        })
    }

    async fn delete_inner(&self, key: &str) -> Result<(), StorageError> {
        let path = key_path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(StorageError::from_store(err, key)),
        }
    }
}

impl FileStore for ObjectFileStore {
    fn put(
        &self,
        key: &str,
        body: ByteStream,
        limit: u64,
    ) -> BoxFuture<'_, Result<StoredObject, StorageError>> {
        let key = key.to_owned();
        async move { self.put_inner(&key, body, limit).await }.boxed()
    }

    fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> BoxFuture<'_, Result<Download, StorageError>> {
        let key = key.to_owned();
        async move { self.get_inner(&key, range).await }.boxed()
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), StorageError>> {
        let key = key.to_owned();
        async move { self.delete_inner(&key).await }.boxed()
    }

    fn remove_partial_uploads(
        &self,
        older_than: std::time::Duration,
    ) -> BoxFuture<'_, Result<u64, StorageError>> {
        if let Some(multipart) = self.multipart.clone() {
            let store = Arc::clone(&self.store);
            return async move {
                crate::tracked::abort_abandoned(multipart.as_ref(), store.as_ref(), older_than)
                    .await
                    .map_err(|err| {
                        StorageError::Unavailable(format!(
                            "listing unfinished uploads: {}",
                            groundwork_core::error_chain(&err)
                        ))
                    })
            }
            .boxed();
        }
        let Some(root) = self.local_root.clone() else {
            return Box::pin(std::future::ready(Ok(0)));
        };
        async move {
            tokio::task::spawn_blocking(move || {
                crate::local::remove_stale_staging(&root, older_than).map_err(|err| {
                    StorageError::Unavailable(format!(
                        "reading `{}`: {}",
                        root.display(),
                        groundwork_core::error_chain(&err)
                    ))
                })
            })
            .await
            .map_err(|join| StorageError::Unavailable(format!("sweeping failed: {join}")))?
        }
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        async move {
            if let Some(root) = &self.local_root {
                let meta = tokio::fs::metadata(root.as_ref()).await.map_err(|err| {
                    StorageError::Unavailable(format!("`{}`: {err}", root.display()))
                })?;
                if !meta.is_dir() {
                    return Err(StorageError::Unavailable(format!(
                        "`{}` is not a directory",
                        root.display()
                    )));
                }
                if meta.permissions().readonly() {
                    return Err(StorageError::Unavailable(format!(
                        "`{}` is read-only",
                        root.display()
                    )));
                }
                return Ok(());
            }
            // A listing under a prefix that holds nothing: cheap, and unlike a HEAD (whose
            // 404 cannot say whether the object or the bucket is missing) it fails when the
            // bucket does not exist or the credentials are refused.
            let probe = Path::from(".groundwork-readiness-probe");
            match self.store.list_with_delimiter(Some(&probe)).await {
                Ok(_) => Ok(()),
                Err(err) => Err(StorageError::Unavailable(format!(
                    "{}: {}",
                    self.description,
                    groundwork_core::error_chain(&err)
                ))),
            }
        }
        .boxed()
    }

    fn describe(&self) -> String {
        self.description.to_string()
    }
}

fn key_path(key: &str) -> Result<Path, StorageError> {
    if !is_valid_key(key) {
        return Err(StorageError::InvalidKey(key.to_owned()));
    }
    Path::parse(key).map_err(|_| StorageError::InvalidKey(key.to_owned()))
}

/// An error from the body stream: kept when it already says why, otherwise a body failure.
fn body_error(err: StorageError) -> StorageError {
    match err {
        StorageError::Body(_) | StorageError::TooLarge { .. } => err,
        other => StorageError::Body(other.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Gathers the body into fixed-size parts and writes them through a multipart upload, at
/// most [`PartLayout::in_flight`] at a time, and computes the SHA-256 of the parts.
///
/// A part is a list of the body's own chunks (split at part boundaries, never copied), so a
/// byte is written to memory once, by the network stack: copying 1 GiB into fresh 8 MiB
/// buffers cost as much as writing it to the page cache. Only small chunks are copied,
/// gathered into [`COALESCE_BYTES`] pieces, so that a body sent a few bytes at a time cannot
/// make a part's list of chunks outgrow the part.
///
/// A full part is hashed by a blocking task while the next one fills, so that hashing (one
/// core, 1.1–1.5 GB/s with SHA-NI on the 2-core benchmark machine) overlaps with receiving
/// and writing instead of adding to them; it is still the bottleneck of an upload there.
/// Parts are hashed in order: the next hash starts once the previous one is done.
///
/// Dropped before [`finish`](Self::finish) or [`abort`](Self::abort) (the request future was
/// cancelled), it aborts the upload in the background so that no partial object or
/// dangling S3 multipart upload is left behind.
struct PartWriter {
    upload: Option<Box<dyn MultipartUpload>>,
    layout: PartLayout,
    /// The chunks of the part being filled, in order.
    part: Vec<Bytes>,
    /// Bytes in `part` plus `small`.
    part_len: usize,
    /// Small chunks being gathered into one piece of `part`.
    small: BytesMut,
    in_flight: JoinSet<object_store::Result<()>>,
    hasher: Hasher,
    key: String,
}

/// Chunks shorter than this are copied into a shared piece instead of kept as they are.
const SMALL_CHUNK: usize = 16 * 1024;

/// The size of a piece gathered from small chunks.
const COALESCE_BYTES: usize = 64 * 1024;

/// The running SHA-256: idle, or updating with a part in a blocking task.
enum Hasher {
    Idle(Box<Sha256>),
    Busy(tokio::task::JoinHandle<Box<Sha256>>),
}

/// Parts smaller than this are hashed in place (cheaper than a blocking task).
const INLINE_HASH_BYTES: usize = 64 * 1024;

impl PartWriter {
    fn new(upload: Box<dyn MultipartUpload>, layout: PartLayout, key: &str) -> Self {
        Self {
            upload: Some(upload),
            layout,
            part: Vec::new(),
            part_len: 0,
            small: BytesMut::new(),
            in_flight: JoinSet::new(),
            hasher: Hasher::Idle(Box::default()),
            key: key.to_owned(),
        }
    }

    async fn write(&mut self, mut chunk: Bytes) -> Result<(), StorageError> {
        while !chunk.is_empty() {
            let take = (self.layout.part_size - self.part_len).min(chunk.len());
            let now = chunk.split_to(take);
            self.part_len += take;
            if now.len() < SMALL_CHUNK {
                if self.small.is_empty() {
                    self.small.reserve(COALESCE_BYTES);
                }
                self.small.extend_from_slice(&now);
                if self.small.len() >= COALESCE_BYTES {
                    self.part.push(self.small.split().freeze());
                }
            } else {
                self.gather_small();
                self.part.push(now);
            }
            if self.part_len == self.layout.part_size {
                self.flush_part().await?;
            }
        }
        Ok(())
    }

    /// Moves the gathered small chunks into the part (before a chunk that follows them).
    fn gather_small(&mut self) {
        if !self.small.is_empty() {
            self.part.push(self.small.split().freeze());
        }
    }

    /// Hashes and sends the part being filled, if it holds anything.
    async fn flush_part(&mut self) -> Result<(), StorageError> {
        self.gather_small();
        if self.part_len == 0 {
            return Ok(());
        }
        let part = std::mem::take(&mut self.part);
        self.part_len = 0;
        self.hash(part.clone()).await?;
        self.send(part.into_iter().collect()).await
    }

    /// Starts writing `part` once fewer than [`PartLayout::in_flight`] parts are in flight.
    async fn send(&mut self, part: PutPayload) -> Result<(), StorageError> {
        while self.in_flight.len() >= self.layout.in_flight {
            self.join_one().await?;
        }
        let upload = self.upload.as_mut().ok_or_else(|| {
            StorageError::Unavailable(format!("upload of `{}` already ended", self.key))
        })?;
        self.in_flight.spawn(upload.put_part(part));
        Ok(())
    }

    /// Adds `part` to the hash, once the previous part is hashed.
    async fn hash(&mut self, part: Vec<Bytes>) -> Result<(), StorageError> {
        let mut hasher = self.idle_hasher().await?;
        let len: usize = part.iter().map(Bytes::len).sum();
        self.hasher = if len < INLINE_HASH_BYTES {
            part.iter().for_each(|chunk| hasher.update(chunk));
            Hasher::Idle(hasher)
        } else {
            Hasher::Busy(tokio::task::spawn_blocking(move || {
                part.iter().for_each(|chunk| hasher.update(chunk));
                hasher
            }))
        };
        Ok(())
    }

    /// The hasher, after waiting for the part it is hashing.
    async fn idle_hasher(&mut self) -> Result<Box<Sha256>, StorageError> {
        match std::mem::replace(&mut self.hasher, Hasher::Idle(Box::default())) {
            Hasher::Idle(hasher) => Ok(hasher),
            Hasher::Busy(task) => task.await.map_err(|join| {
                StorageError::Unavailable(format!("hashing `{}` failed: {join}", self.key))
            }),
        }
    }

    /// Waits for one part in flight; `Ok` when none is left.
    async fn join_one(&mut self) -> Result<(), StorageError> {
        match self.in_flight.join_next().await {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(err))) => Err(StorageError::from_store(err, &self.key)),
            Some(Err(join)) => Err(StorageError::Unavailable(format!(
                "writing a part of `{}` failed: {join}",
                self.key
            ))),
        }
    }

    /// Writes the last part and makes the object visible; aborts the upload on failure.
    /// Returns the SHA-256 in lowercase hex.
    async fn finish(mut self) -> Result<String, StorageError> {
        let result = self.complete().await;
        if result.is_err() {
            self.abort().await;
        }
        result
    }

    async fn complete(&mut self) -> Result<String, StorageError> {
        self.flush_part().await?;
        let sha256 = hex(&self.idle_hasher().await?.finalize());
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        let mut upload = self.upload.take().ok_or_else(|| {
            StorageError::Unavailable(format!("upload of `{}` already ended", self.key))
        })?;
        match upload.complete().await {
            Ok(_) => Ok(sha256),
            Err(err) => {
                // Put back so that `abort` cleans up.
                self.upload = Some(upload);
                Err(StorageError::from_store(err, &self.key))
            }
        }
    }

    /// Stops the parts in flight and removes what was written (logs when that fails).
    async fn abort(&mut self) {
        self.in_flight.shutdown().await;
        self.part = Vec::new();
        self.small = BytesMut::new();
        if let Some(mut upload) = self.upload.take()
            && let Err(err) = upload.abort().await
        {
            tracing::warn!(
                key = %self.key,
                error = %groundwork_core::error_chain(&err),
                "cannot abort the partial upload"
            );
        }
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        self.in_flight.abort_all();
        let key = std::mem::take(&mut self.key);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = upload.abort().await {
                    tracing::warn!(
                        key,
                        error = %groundwork_core::error_chain(&err),
                        "cannot abort a cancelled upload"
                    );
                }
            });
        }
    }
}

/// The body of a get: the store's stream, or for a local file chunked blocking reads with
/// one chunk read ahead.
fn body_stream(result: GetResult, key: &str) -> ByteStream {
    let key = key.to_owned();
    match result.payload {
        GetResultPayload::File(file, _path) => file_stream(file, result.range, key),
        GetResultPayload::Stream(stream) => stream
            .map_err(move |err| StorageError::from_store(err, &key))
            .boxed(),
    }
}

type ReadAhead = tokio::task::JoinHandle<std::io::Result<(std::fs::File, Bytes)>>;

/// Streams `range` of `file`: each chunk is read by a blocking task, and the next read
/// starts as soon as a chunk is handed out, so disk and network overlap while at most two
/// chunks are in memory. No thread is held while the consumer is slow.
fn file_stream(file: std::fs::File, range: std::ops::Range<u64>, key: String) -> ByteStream {
    let length = range.end.saturating_sub(range.start);
    if length == 0 {
        return futures_util::stream::empty().boxed();
    }
    let first = read_chunk(file, Some(range.start), length);
    futures_util::stream::try_unfold(
        (Some(first), length, key),
        |(pending, remaining, key): (Option<ReadAhead>, u64, String)| async move {
            let Some(pending) = pending else {
                return Ok(None);
            };
            let unavailable =
                |what: String| StorageError::Unavailable(format!("reading `{key}`: {what}"));
            let (file, chunk) = pending
                .await
                .map_err(|join| unavailable(join.to_string()))?
                .map_err(|err| unavailable(err.to_string()))?;
            if chunk.is_empty() {
                return Err(unavailable("the file is shorter than its size".to_owned()));
            }
            let remaining = remaining.saturating_sub(chunk.len() as u64);
            let next = (remaining > 0).then(|| read_chunk(file, None, remaining));
            Ok(Some((chunk, (next, remaining, key))))
        },
    )
    .boxed()
}

/// Reads up to [`READ_CHUNK`] of the `remaining` bytes (after seeking to `seek`, if given).
fn read_chunk(mut file: std::fs::File, seek: Option<u64>, remaining: u64) -> ReadAhead {
    tokio::task::spawn_blocking(move || {
        if let Some(offset) = seek {
            file.seek(SeekFrom::Start(offset))?;
        }
        let want = remaining.min(READ_CHUNK as u64);
        let mut buffer = Vec::with_capacity(READ_CHUNK.min(usize::try_from(want).unwrap_or(0)));
        (&mut file).take(want).read_to_end(&mut buffer)?;
        Ok((file, Bytes::from(buffer)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f, 0xf0]), "00ab0ff0");
    }
}
