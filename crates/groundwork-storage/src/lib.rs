//! Groundwork's file storage: streaming uploads and downloads behind the [`FileStore`]
//! trait, over the local disk, memory or an S3-compatible store ([object_store]).
//!
//! * [`open`] picks the backend from a storage URL (`GROUNDWORK_STORAGE_URL`, default
//!   [`DEFAULT_STORAGE_URL`]): `file://PATH`, `memory://` or `s3://BUCKET?endpoint=…`.
//! * [`FileStore::put`] streams a body to the store in parts (8 MiB in a multipart upload on
//!   S3), computing the size and SHA-256 on the way, and stops as soon as the size limit is
//!   passed: nothing partial is left and the object becomes visible only once complete.
//!   An upload buffers at most 32 MiB, whatever the file size. On the local disk an upload
//!   is durable once `put` returns (fsynced while it is written, then renamed into place).
//! * [`FileStore::get`] streams an object or one byte range of it ([`parse_range`],
//!   [`ByteRange`]); [`etag`], [`if_none_match`] and [`if_range`] serve conditional requests;
//!   [`content_disposition`] and [`disposition_file_name`] carry file names in headers.
//! * Storage keys come from [`new_key`], never from user input; user-supplied names go
//!   through [`sanitize_name`] and are only displayed.
//!
//! ```
//! use futures_util::{StreamExt, TryStreamExt};
//! use groundwork_storage::{ByteRange, FileStore, StorageError, StorageOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), StorageError> {
//! let store = groundwork_storage::open("memory://")?;
//! let key = groundwork_storage::new_key();
//! let chunks = vec![Ok(bytes::Bytes::from("hello ")), Ok(bytes::Bytes::from("world"))];
//! let body = futures_util::stream::iter(chunks).boxed();
//!
//! let stored = store
//!     .put(&key, body, StorageOptions::default().max_upload_bytes)
//!     .await?;
//! assert_eq!(stored.size, 11);
//! assert_eq!(
//!     stored.sha256,
//!     "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
//! );
//!
//! let range = groundwork_storage::parse_range("bytes=-5")?;
//! assert_eq!(range, Some(ByteRange::Last(5)));
//! let download = store.get(&key, range).await?;
//! assert_eq!((download.size, download.start, download.end), (11, 6, 10));
//! let bytes: Vec<bytes::Bytes> = download.body.try_collect().await?;
//! assert_eq!(bytes.concat(), b"world");
//!
//! store.delete(&key).await?;
//! assert!(matches!(
//!     store.get(&key, None).await,
//!     Err(StorageError::NotFound { .. })
//! ));
//! # Ok(())
//! # }
//! ```

mod config;
mod disposition;
mod error;
mod http;
mod local;
mod name;
mod store;
mod tracked;

use futures_util::future::BoxFuture;

pub use config::{DEFAULT_STORAGE_URL, S3Settings, STORAGE_URL_ENV, open};
pub use disposition::{content_disposition, decode_ext_value, disposition_file_name};
pub use error::StorageError;
pub use http::{ByteRange, etag, if_none_match, if_range, parse_range};
pub use name::{MAX_NAME_BYTES, new_key, sanitize_name};
pub use store::ObjectFileStore;

/// A body being uploaded or downloaded: chunks of bytes, or the error that ended it.
pub type ByteStream = futures_util::stream::BoxStream<'static, Result<bytes::Bytes, StorageError>>;

/// The default upload limit: 100 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 100 * 1024 * 1024;

/// Storage settings that are not part of the storage URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageOptions {
    /// The largest accepted upload, in bytes; larger ones fail with
    /// [`StorageError::TooLarge`] as soon as the limit is passed.
    /// Default: [`DEFAULT_MAX_UPLOAD_BYTES`] (100 MiB).
    pub max_upload_bytes: u64,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
        }
    }
}

/// The outcome of a completed upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The key the object is stored under.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its content, lowercase hex (64 characters).
    pub sha256: String,
}

/// An object being downloaded: the whole object or one range of it.
pub struct Download {
    /// The size of the whole object, in bytes (for `Content-Range: bytes start-end/size`).
    pub size: u64,
    /// The first byte served.
    pub start: u64,
    /// The last byte served, inclusive. For an empty object, `start` and `end` are both 0
    /// and the body is empty: use [`Download::content_length`].
    pub end: u64,
    /// The served bytes, streamed from the store.
    pub body: ByteStream,
}

impl Download {
    /// The number of bytes in `body` (for `Content-Length`).
    #[must_use]
    pub fn content_length(&self) -> u64 {
        if self.size == 0 {
            0
        } else {
            self.end - self.start + 1
        }
    }

    /// Whether only part of the object is served (answer 206 with `Content-Range`).
    #[must_use]
    pub fn is_partial(&self) -> bool {
        self.content_length() < self.size
    }
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("size", &self.size)
            .field("start", &self.start)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// Where uploaded files live. Implemented by [`ObjectFileStore`] for every backend; tests
/// of other crates can implement it with a fake.
///
/// Every method must be called inside a Tokio runtime.
pub trait FileStore: Send + Sync + std::fmt::Debug {
    /// Streams `body` to `key`, computing its size and SHA-256 on the way.
    ///
    /// The object becomes visible only once complete. If more than `limit` bytes arrive,
    /// or the body fails, or the store fails, the upload is aborted and the partial object
    /// removed (on the local disk nothing is left, on S3 the multipart upload is aborted).
    /// Dropping the future mid-upload aborts it as well, in the background.
    ///
    /// # Errors
    ///
    /// [`StorageError::TooLarge`] past `limit`; [`StorageError::Body`] when the body stream
    /// fails; [`StorageError::InvalidKey`] for a key not made by [`new_key`];
    /// [`StorageError::Unavailable`] when the store fails.
    fn put(
        &self,
        key: &str,
        body: ByteStream,
        limit: u64,
    ) -> BoxFuture<'_, Result<StoredObject, StorageError>>;

    /// Streams the object at `key`, or the part `range` selects, resolved against the
    /// object's size.
    ///
    /// # Errors
    ///
    /// [`StorageError::NotFound`] when there is no such object; [`StorageError::InvalidRange`]
    /// when `range` selects no byte of it (answer 416); [`StorageError::Unavailable`] when
    /// the store fails. Failures after the first byte come through the body stream.
    fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> BoxFuture<'_, Result<Download, StorageError>>;

    /// Deletes the object at `key`; deleting a missing object succeeds.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] when the store fails.
    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), StorageError>>;

    /// Removes what uploads cut short by a crash left behind, if the store can have such
    /// leftovers: on the local disk, staging files not written for `older_than`; on S3, the
    /// unfinished multipart uploads (and their parts) started more than `older_than` ago,
    /// found through the markers each upload keeps while it runs. Keep `older_than` well
    /// above the longest upload. The default does nothing. Returns how many were removed.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] when the store cannot be read.
    fn remove_partial_uploads(
        &self,
        older_than: std::time::Duration,
    ) -> BoxFuture<'_, Result<u64, StorageError>> {
        let _ = older_than;
        Box::pin(std::future::ready(Ok(0)))
    }

    /// Checks that the store answers, for readiness reports: the local directory exists and
    /// is writable, an object store answers a metadata request. Call it under a timeout (an
    /// object store's client retries). The default (fakes) says yes.
    ///
    /// # Errors
    /// [`StorageError::Unavailable`] saying what is wrong.
    fn check(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Where the files are, for logs and health reports, without secrets: `file:///abs/dir`,
    /// `memory://`, `s3://bucket (endpoint …)`.
    fn describe(&self) -> String;
}
