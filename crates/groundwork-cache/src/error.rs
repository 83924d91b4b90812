//! The cache's error type.

use std::sync::Arc;
use std::time::Duration;

use groundwork_core::{Classify, ErrorKind};

use crate::source::SourceError;

/// A value could not be produced: the source failed and no servable value was cached.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The source returned an error.
    #[error("cache {cache}: the source failed: {source}")]
    Source {
        /// The cache's name.
        cache: Arc<str>,
        /// The source's error, shared by every caller that waited on the load.
        #[source]
        source: SourceError,
    },
    /// The source did not answer within the load timeout.
    #[error("cache {cache}: the source did not answer within {timeout:?}")]
    Timeout {
        /// The cache's name.
        cache: Arc<str>,
        /// The load timeout.
        timeout: Duration,
    },
    /// The task loading the value ended without a result (it panicked or the runtime is
    /// shutting down).
    #[error("cache {cache}: the load was aborted")]
    Aborted {
        /// The cache's name.
        cache: Arc<str>,
    },
}

impl Classify for CacheError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Source { .. } | Self::Timeout { .. } => ErrorKind::Unavailable,
            Self::Aborted { .. } => ErrorKind::Internal,
        }
    }
}
