//! Where a cache's values come from: the [`Source`] trait and what it returns.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Everything a source holds, read at one point in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot<K, V> {
    /// Every key and its value.
    pub entries: Vec<(K, V)>,
    /// The change cursor at (or before) the read, if the source has a change feed: the next
    /// incremental refresh asks for the changes after it. Reading the cursor *before* the
    /// entries is safe (a change may be applied twice); reading it after is not.
    pub cursor: Option<u64>,
}

impl<K, V> Snapshot<K, V> {
    /// A snapshot of `entries` with no change cursor.
    #[must_use]
    pub fn new(entries: Vec<(K, V)>) -> Self {
        Self {
            entries,
            cursor: None,
        }
    }
}

/// What changed in a source after a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet<K, V> {
    /// Keys whose value was created or changed, with the value now.
    pub upserts: Vec<(K, V)>,
    /// Keys that no longer exist.
    pub deletions: Vec<K>,
    /// The cursor after these changes.
    pub cursor: u64,
    /// `true` when the source stopped early (a batch limit): ask again from `cursor`.
    pub more: bool,
}

/// The system of record a cache is kept in sync with (usually a database).
///
/// Only [`Source::load`] and [`Source::load_all`] are required. A source that can say what
/// changed since a cursor implements [`Source::changes_since`], and the cache then refreshes
/// in proportion to what changed instead of reloading everything; one that can read many keys
/// in one round trip implements [`Source::load_many`].
///
/// ```
/// use std::collections::HashMap;
/// use groundwork_cache::{Snapshot, Source};
///
/// struct Table(HashMap<u64, String>);
///
/// impl Source<u64, String> for Table {
///     type Error = std::io::Error;
///
///     async fn load(&self, key: &u64) -> Result<Option<String>, Self::Error> {
///         Ok(self.0.get(key).cloned())
///     }
///
///     async fn load_all(&self) -> Result<Snapshot<u64, String>, Self::Error> {
///         Ok(Snapshot::new(self.0.iter().map(|(k, v)| (*k, v.clone())).collect()))
///     }
/// }
/// ```
pub trait Source<K, V>: Send + Sync + 'static
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Why a read failed.
    type Error: Error + Send + Sync + 'static;

    /// The value of `key`, or `None` if the source has no such key.
    fn load(&self, key: &K) -> impl Future<Output = Result<Option<V>, Self::Error>> + Send;

    /// Every key and value, and the change cursor if there is a change feed.
    fn load_all(&self) -> impl Future<Output = Result<Snapshot<K, V>, Self::Error>> + Send;

    /// The values of `keys` (`None` for missing ones), in one round trip if the source can.
    /// The default calls [`Source::load`] for each key in turn.
    fn load_many(
        &self,
        keys: &[K],
    ) -> impl Future<Output = Result<Vec<(K, Option<V>)>, Self::Error>> + Send
    where
        K: Clone,
    {
        async move {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push((key.clone(), self.load(key).await?));
            }
            Ok(out)
        }
    }

    /// What changed after `cursor`, or `None` when the source has no change feed or cannot
    /// answer from that cursor (the cache then reloads everything). The default is `None`.
    fn changes_since(
        &self,
        cursor: u64,
    ) -> impl Future<Output = Result<Option<ChangeSet<K, V>>, Self::Error>> + Send {
        let _ = cursor;
        async { Ok(None) }
    }
}

/// A source error shared by every caller waiting on the same load.
pub type SourceError = Arc<dyn Error + Send + Sync>;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What [`Source::load_many`] returns, errors erased.
type ManyResult<K, V> = Result<Vec<(K, Option<V>)>, SourceError>;

/// [`Source`] behind a vtable, so that the cache's type does not name its source.
pub(crate) trait DynSource<K, V>: Send + Sync {
    fn load<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Option<V>, SourceError>>;
    fn load_all(&self) -> BoxFuture<'_, Result<Snapshot<K, V>, SourceError>>;
    fn load_many<'a>(&'a self, keys: &'a [K]) -> BoxFuture<'a, ManyResult<K, V>>;
    fn changes_since(
        &self,
        cursor: u64,
    ) -> BoxFuture<'_, Result<Option<ChangeSet<K, V>>, SourceError>>;
}

impl<K, V, S> DynSource<K, V> for S
where
    K: Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: Source<K, V>,
{
    fn load<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<Option<V>, SourceError>> {
        Box::pin(async move { Source::load(self, key).await.map_err(erase) })
    }

    fn load_all(&self) -> BoxFuture<'_, Result<Snapshot<K, V>, SourceError>> {
        Box::pin(async move { Source::load_all(self).await.map_err(erase) })
    }

    fn load_many<'a>(&'a self, keys: &'a [K]) -> BoxFuture<'a, ManyResult<K, V>> {
        Box::pin(async move { Source::load_many(self, keys).await.map_err(erase) })
    }

    fn changes_since(
        &self,
        cursor: u64,
    ) -> BoxFuture<'_, Result<Option<ChangeSet<K, V>>, SourceError>> {
        Box::pin(async move { Source::changes_since(self, cursor).await.map_err(erase) })
    }
}

fn erase<E: Error + Send + Sync + 'static>(err: E) -> SourceError {
    Arc::new(err)
}
