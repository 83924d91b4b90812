//! Shared helpers of the behaviour tests: [`FakeSource`], an in-memory table with a change
//! log, per-method call counters, and switches that make calls fail, hold them in flight
//! (a gate the test opens) or delay them; plus builder presets on a `ManualClock` and on a
//! `ManualTimer` (which also drives the background tasks).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use groundwork_cache::{
    CacheBuilder, CacheError, ChangeSet, ManualTimer, RefreshingCache, Snapshot, Source,
    SourceError,
};
use groundwork_core::clock::ManualClock;
use tokio::sync::watch;

/// How long a test waits for something that should happen promptly before it fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(5);

/// The cache every test builds.
pub(crate) type Cache = RefreshingCache<u64, String>;

/// The methods of [`Source`], for counters and switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Load,
    LoadMany,
    LoadAll,
    ChangesSince,
}

impl Method {
    pub(crate) const ALL: [Self; 4] = [
        Self::Load,
        Self::LoadMany,
        Self::LoadAll,
        Self::ChangesSince,
    ];

    fn index(self) -> usize {
        match self {
            Self::Load => 0,
            Self::LoadMany => 1,
            Self::LoadAll => 2,
            Self::ChangesSince => 3,
        }
    }
}

/// What a failing [`FakeSource`] call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FakeError {
    pub(crate) method: Method,
}

impl fmt::Display for FakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fake source: {:?} failed", self.method)
    }
}

impl std::error::Error for FakeError {}

/// The rows and the change log, under one lock so that a snapshot's cursor and entries agree.
#[derive(Default)]
struct Table {
    rows: BTreeMap<u64, String>,
    /// `(seq, key, value after the change)`; `None` is a deletion.
    log: Vec<(u64, u64, Option<String>)>,
    /// The last sequence number handed out (0 = no change yet).
    seq: u64,
}

/// An in-memory source with a change feed (optional), shared through `Arc` between the test
/// and the cache (which gets a [`SourceHandle`]).
///
/// Every call reads the table at once (like a database read) and is then counted as started
/// (so once a test sees the count, the call's read is done and later writes are not in it);
/// then it passes its method's gate (closed by [`FakeSource::hold`]), sleeps the configured
/// delay, and finally fails if its method is switched to failing.
pub(crate) struct FakeSource {
    table: Mutex<Table>,
    feed: bool,
    feed_lost: AtomicBool,
    batch_limit: Mutex<Option<usize>>,
    calls: [watch::Sender<usize>; 4],
    /// Calls that have returned (successfully or not).
    returned: [watch::Sender<usize>; 4],
    failing: [AtomicBool; 4],
    /// `true` = open.
    gates: [watch::Sender<bool>; 4],
    delay: Mutex<Duration>,
}

async fn wait_count(
    counter: &watch::Sender<usize>,
    n: usize,
    method: Method,
    what: &str,
) -> anyhow::Result<()> {
    let mut rx = counter.subscribe();
    let reached = tokio::time::timeout(PATIENCE, async move {
        rx.wait_for(|count| *count >= n).await.is_ok()
    })
    .await;
    anyhow::ensure!(
        matches!(reached, Ok(true)),
        "{method:?}: {} calls {what} after {PATIENCE:?}, waited for {n}",
        *counter.borrow()
    );
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeSource {
    /// A source holding `rows`, with a change feed (snapshots carry a cursor).
    pub(crate) fn with_feed(rows: impl IntoIterator<Item = (u64, String)>) -> Arc<Self> {
        Self::new(rows, true)
    }

    /// A source holding `rows`, without a change feed (`changes_since` answers `None`,
    /// snapshots carry no cursor).
    pub(crate) fn without_feed(rows: impl IntoIterator<Item = (u64, String)>) -> Arc<Self> {
        Self::new(rows, false)
    }

    fn new(rows: impl IntoIterator<Item = (u64, String)>, feed: bool) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(Table {
                rows: rows.into_iter().collect(),
                log: Vec::new(),
                seq: 0,
            }),
            feed,
            feed_lost: AtomicBool::new(false),
            batch_limit: Mutex::new(None),
            calls: std::array::from_fn(|_| watch::Sender::new(0)),
            returned: std::array::from_fn(|_| watch::Sender::new(0)),
            failing: std::array::from_fn(|_| AtomicBool::new(false)),
            gates: std::array::from_fn(|_| watch::Sender::new(true)),
            delay: Mutex::new(Duration::ZERO),
        })
    }

    /// Writes a row (logged as a change).
    pub(crate) fn set(&self, key: u64, value: &str) {
        let mut table = lock(&self.table);
        table.seq += 1;
        let seq = table.seq;
        table.rows.insert(key, value.to_owned());
        table.log.push((seq, key, Some(value.to_owned())));
    }

    /// Deletes a row (logged as a change).
    pub(crate) fn remove(&self, key: u64) {
        let mut table = lock(&self.table);
        table.seq += 1;
        let seq = table.seq;
        table.rows.remove(&key);
        table.log.push((seq, key, None));
    }

    /// The row's value now.
    pub(crate) fn row(&self, key: u64) -> Option<String> {
        lock(&self.table).rows.get(&key).cloned()
    }

    /// How many calls of `method` have started.
    pub(crate) fn calls(&self, method: Method) -> usize {
        *self.calls[method.index()].borrow()
    }

    /// How many calls of any method have started.
    pub(crate) fn total_calls(&self) -> usize {
        Method::ALL.iter().map(|m| self.calls(*m)).sum()
    }

    /// Waits (at most [`PATIENCE`]) until at least `n` calls of `method` have started.
    pub(crate) async fn wait_calls(&self, method: Method, n: usize) -> anyhow::Result<()> {
        wait_count(&self.calls[method.index()], n, method, "started").await
    }

    /// Waits (at most [`PATIENCE`]) until at least `n` calls of `method` have returned. On a
    /// current-thread runtime, the caller of the source has then also finished what it does
    /// with the answer before its next await point.
    pub(crate) async fn wait_returned(&self, method: Method, n: usize) -> anyhow::Result<()> {
        wait_count(&self.returned[method.index()], n, method, "returned").await
    }

    /// Makes calls of `method` fail (checked when a call returns, so a held call fails if
    /// the switch is on at its release).
    pub(crate) fn fail(&self, method: Method, on: bool) {
        self.failing[method.index()].store(on, Ordering::SeqCst);
    }

    /// [`FakeSource::fail`] for every method.
    pub(crate) fn fail_all(&self, on: bool) {
        for method in Method::ALL {
            self.fail(method, on);
        }
    }

    /// Holds calls of `method` (those running and those to come) until [`FakeSource::release`].
    pub(crate) fn hold(&self, method: Method) {
        self.gates[method.index()].send_replace(false);
    }

    /// Lets held calls of `method` finish, and later ones pass.
    pub(crate) fn release(&self, method: Method) {
        self.gates[method.index()].send_replace(true);
    }

    /// Delays every call by `delay` (real time).
    pub(crate) fn set_delay(&self, delay: Duration) {
        *lock(&self.delay) = delay;
    }

    /// At most `limit` log entries per `changes_since` answer (`more` says if there are more).
    pub(crate) fn set_batch_limit(&self, limit: Option<usize>) {
        *lock(&self.batch_limit) = limit;
    }

    /// Makes `changes_since` answer `None` (cannot answer from that cursor) even with a feed.
    pub(crate) fn lose_feed(&self, lost: bool) {
        self.feed_lost.store(lost, Ordering::SeqCst);
    }

    fn count(&self, method: Method) {
        self.calls[method.index()].send_modify(|count| *count += 1);
    }

    /// The gate, the delay and the failure switch of `method`.
    async fn pass(&self, method: Method) -> Result<(), FakeError> {
        let outcome = self.wait_and_decide(method).await;
        self.returned[method.index()].send_modify(|count| *count += 1);
        outcome
    }

    async fn wait_and_decide(&self, method: Method) -> Result<(), FakeError> {
        let mut gate = self.gates[method.index()].subscribe();
        let _open = gate.wait_for(|open| *open).await.is_ok();
        let delay = *lock(&self.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.failing[method.index()].load(Ordering::SeqCst) {
            return Err(FakeError { method });
        }
        Ok(())
    }

    fn snapshot(&self) -> Snapshot<u64, String> {
        let table = lock(&self.table);
        // The cursor is read before (here: with) the entries.
        let cursor = self.feed.then_some(table.seq);
        Snapshot {
            entries: table.rows.iter().map(|(k, v)| (*k, v.clone())).collect(),
            cursor,
        }
    }

    fn changes_after(&self, cursor: u64) -> Option<ChangeSet<u64, String>> {
        if !self.feed || self.feed_lost.load(Ordering::SeqCst) {
            return None;
        }
        let limit = *lock(&self.batch_limit);
        let table = lock(&self.table);
        let pending: Vec<&(u64, u64, Option<String>)> = table
            .log
            .iter()
            .filter(|(seq, _, _)| *seq > cursor)
            .collect();
        let take = limit.map_or(pending.len(), |limit| limit.min(pending.len()));
        let more = take < pending.len();
        let mut last: BTreeMap<u64, Option<String>> = BTreeMap::new();
        let mut end = cursor;
        for (seq, key, value) in pending.into_iter().take(take) {
            last.insert(*key, value.clone());
            end = *seq;
        }
        let mut upserts = Vec::new();
        let mut deletions = Vec::new();
        for (key, value) in last {
            match value {
                Some(value) => upserts.push((key, value)),
                None => deletions.push(key),
            }
        }
        Some(ChangeSet {
            upserts,
            deletions,
            cursor: end,
            more,
        })
    }
}

/// What the cache owns: a handle on the test's [`FakeSource`].
pub(crate) struct SourceHandle(pub(crate) Arc<FakeSource>);

impl Source<u64, String> for SourceHandle {
    type Error = FakeError;

    async fn load(&self, key: &u64) -> Result<Option<String>, FakeError> {
        let source = &*self.0;
        let value = source.row(*key);
        source.count(Method::Load);
        source.pass(Method::Load).await?;
        Ok(value)
    }

    async fn load_all(&self) -> Result<Snapshot<u64, String>, FakeError> {
        let source = &*self.0;
        let snapshot = source.snapshot();
        source.count(Method::LoadAll);
        source.pass(Method::LoadAll).await?;
        Ok(snapshot)
    }

    async fn load_many(&self, keys: &[u64]) -> Result<Vec<(u64, Option<String>)>, FakeError> {
        let source = &*self.0;
        let values: Vec<(u64, Option<String>)> =
            keys.iter().map(|key| (*key, source.row(*key))).collect();
        source.count(Method::LoadMany);
        source.pass(Method::LoadMany).await?;
        Ok(values)
    }

    async fn changes_since(
        &self,
        cursor: u64,
    ) -> Result<Option<ChangeSet<u64, String>>, FakeError> {
        let source = &*self.0;
        let changes = source.changes_after(cursor);
        source.count(Method::ChangesSince);
        source.pass(Method::ChangesSince).await?;
        Ok(changes)
    }
}

/// A clock at zero that only moves when the test says so.
pub(crate) fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new())
}

/// A builder on `clock`, with no periodic refresh (tests drive refreshes).
pub(crate) fn builder(name: &str, clock: &Arc<ManualClock>) -> CacheBuilder<u64, String> {
    let clock: Arc<ManualClock> = Arc::clone(clock);
    RefreshingCache::builder(name)
        .clock(clock)
        .refresh_interval(None)
}

/// A manual clock that also wakes the cache's background tasks when advanced.
pub(crate) fn timer() -> Arc<ManualTimer> {
    Arc::new(ManualTimer::new())
}

/// A builder on `timer` (clock and sleeper), with no periodic refresh and no periodic metrics
/// export: tests turn on what they drive.
pub(crate) fn timed_builder(name: &str, timer: &Arc<ManualTimer>) -> CacheBuilder<u64, String> {
    RefreshingCache::builder(name)
        .timer(Arc::clone(timer))
        .refresh_interval(None)
        .metrics_interval(None)
}

/// Waits (at most [`PATIENCE`]) until exactly one background task sleeps on `timer`, and
/// returns its deadline (clock time).
pub(crate) async fn sleeping(timer: &ManualTimer) -> anyhow::Result<Duration> {
    let mut deadline = None;
    eventually("one task sleeping on the timer", || {
        match timer.deadlines().as_slice() {
            [one] => deadline = Some(*one),
            _ => deadline = None,
        }
        deadline.is_some()
    })
    .await?;
    deadline.ok_or_else(|| anyhow::anyhow!("no sleeper"))
}

/// Lets every runnable task run until it waits again, without real time passing: enough for
/// work that a timer wake-up made due to happen, so that a test can assert it did not.
pub(crate) async fn run_pending() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

/// The cache of `builder` reading from `source`.
pub(crate) fn build(builder: CacheBuilder<u64, String>, source: &Arc<FakeSource>) -> Cache {
    builder.build(SourceHandle(Arc::clone(source)))
}

/// Rows `key → "v{key}"`.
pub(crate) fn rows(keys: impl IntoIterator<Item = u64>) -> Vec<(u64, String)> {
    keys.into_iter().map(|k| (k, format!("v{k}"))).collect()
}

/// The text of a lookup's answer.
pub(crate) fn text(value: &Option<Arc<String>>) -> Option<&str> {
    value.as_deref().map(String::as_str)
}

/// The value of a lookup that must have found one.
pub(crate) fn present(value: Option<Arc<String>>) -> anyhow::Result<Arc<String>> {
    value.ok_or_else(|| anyhow::anyhow!("expected a value, got None"))
}

/// The source error inside a [`CacheError::Source`].
pub(crate) fn source_error(err: &CacheError) -> Option<&SourceError> {
    match err {
        CacheError::Source { source, .. } => Some(source),
        _ => None,
    }
}

/// Waits (at most [`PATIENCE`]) until `condition` holds, letting other tasks run.
pub(crate) async fn eventually(
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if condition() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Lets spawned tasks that are already runnable get to their next await point. Only used
/// after a counter shows they have all started, to cover the few instructions between that
/// counter and the point the test cares about.
pub(crate) async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}
