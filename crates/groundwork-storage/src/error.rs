//! [`StorageError`], the one error type of the crate.

use groundwork_core::{Classify, ErrorKind};

/// What went wrong while storing, reading or deleting a file.
///
/// Messages carry the cause as text (the store's own error chain) and never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// More than `limit` bytes arrived; the partial object was removed (HTTP 413).
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The configured limit, in bytes.
        limit: u64,
    },
    /// No object is stored under `key`.
    #[error("no stored object under `{key}`")]
    NotFound {
        /// The key that was asked for.
        key: String,
    },
    /// The requested byte range cannot be satisfied for this object (HTTP 416).
    #[error("range not satisfiable: {0}")]
    InvalidRange(String),
    /// The storage URL or a setting is wrong; the message says which part.
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// The upload body stream failed (the client went away, a read error); nothing was kept.
    #[error("the upload body failed: {0}")]
    Body(String),
    /// The store cannot be reached or an IO operation failed; trying again later may succeed.
    #[error("file storage unavailable: {0}")]
    Unavailable(String),
    /// The key is not a storage key (empty, `..`, unexpected characters). Keys come from
    /// [`new_key`](crate::new_key), so this is a caller bug or a tampered database row.
    #[error("invalid storage key `{0}`")]
    InvalidKey(String),
}

impl Classify for StorageError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::TooLarge { .. } | Self::InvalidRange(_) => ErrorKind::Invalid,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Body(_) | Self::InvalidKey(_) => ErrorKind::BadRequest,
            Self::Config(_) => ErrorKind::Internal,
            Self::Unavailable(_) => ErrorKind::Unavailable,
        }
    }
}

impl StorageError {
    /// Maps an object_store error for the object at `key`.
    pub(crate) fn from_store(err: object_store::Error, key: &str) -> Self {
        match err {
            object_store::Error::NotFound { .. } => Self::NotFound {
                key: key.to_owned(),
            },
            object_store::Error::InvalidPath { .. } => Self::InvalidKey(key.to_owned()),
            other => Self::Unavailable(groundwork_core::error_chain(&other)),
        }
    }

    /// An error of the store while writing `key`: there, "not found" means the bucket (or
    /// the directory) is missing, so the store is unusable, not the object absent.
    pub(crate) fn from_store_write(err: object_store::Error, key: &str) -> Self {
        match err {
            object_store::Error::NotFound { source, .. } => Self::Unavailable(format!(
                "the store has no place to write {key} (a missing bucket or directory?): {}",
                groundwork_core::error_chain(source.as_ref())
            )),
            other => Self::from_store(other, key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            StorageError::TooLarge { limit: 1 }.kind(),
            ErrorKind::Invalid
        );
        assert_eq!(
            StorageError::NotFound { key: "k".into() }.kind(),
            ErrorKind::NotFound
        );
        assert_eq!(StorageError::Body("x".into()).kind(), ErrorKind::BadRequest);
        assert_eq!(
            StorageError::Unavailable("x".into()).kind(),
            ErrorKind::Unavailable
        );
        assert!(StorageError::Unavailable("x".into()).kind().is_retryable());
        assert_eq!(StorageError::Config("x".into()).kind(), ErrorKind::Internal);
    }

    #[test]
    fn not_found_from_store() {
        let err = object_store::Error::NotFound {
            path: "files/a".into(),
            source: "gone".into(),
        };
        assert_eq!(
            StorageError::from_store(err, "files/a"),
            StorageError::NotFound {
                key: "files/a".into()
            }
        );
    }
}
