//! The server's refreshing caches over the database — an agent's tools and an agent's
//! runtime (agent, active prompt, tools) — their sources, their invalidation on writes, and
//! push refresh from PostgreSQL notifications.
//!
//! Values are stored with their JSON response already rendered, so a cache hit costs no
//! serialization.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use groundwork_cache::{CacheError, CacheStats, ChangeSet, RefreshingCache, Snapshot, Source};
use groundwork_db::{AgentRuntime, AttachedTool, ChangeEvent, Database, DbError, Listing, Prompt};
use serde::Serialize;

use crate::config::Config;

/// Changes read per incremental refresh step.
const CHANGE_BATCH: i64 = 10_000;

/// A value and its JSON rendering, made once when the value is loaded.
#[derive(Debug)]
pub struct Rendered<T> {
    /// The value.
    pub value: T,
    /// `value` as the JSON body the API returns.
    pub json: Bytes,
}

impl<T> PartialEq for Rendered<T> {
    /// Two renderings are the same value when their JSON is (cheaper than comparing fields,
    /// and exactly what a client would see).
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl<T: Serialize> Rendered<T> {
    fn new(value: T) -> Result<Self, LoadError> {
        let json = Bytes::from(serde_json::to_vec(&value)?);
        Ok(Self { value, json })
    }
}

/// The `GET /agents/{id}/tools` document.
pub type ToolsDoc = Rendered<Listing<AttachedTool>>;
/// The `GET /agents/{id}/runtime` document.
pub type RuntimeDoc = Rendered<AgentRuntime>;

/// Why a cache source could not produce a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A value could not be rendered to JSON.
    #[error("cannot render a cached value: {0}")]
    Render(#[from] serde_json::Error),
}

/// Cache settings (from [`Config`]).
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Serve without word from the database for this long.
    pub ttl: Duration,
    /// Background refresh period.
    pub refresh_interval: Duration,
    /// Serve stale values this long past the TTL while the database fails.
    pub max_staleness: Duration,
    /// Entries per cache.
    pub capacity: u64,
    /// Readiness waits this long for the first fill.
    pub start_timeout: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self::from(&Config::default())
    }
}

impl From<&Config> for CacheSettings {
    fn from(config: &Config) -> Self {
        Self {
            ttl: Duration::from_secs(config.cache_ttl_secs),
            refresh_interval: Duration::from_secs(config.cache_refresh_interval_secs),
            max_staleness: Duration::from_secs(config.cache_max_staleness_secs),
            capacity: config.cache_capacity,
            start_timeout: Duration::from_secs(config.cache_start_timeout_secs),
        }
    }
}

/// The server's caches. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Caches {
    /// Agent id → its active tools.
    pub agent_tools: RefreshingCache<i64, ToolsDoc>,
    /// Agent id → agent, active prompt and tools.
    pub agent_runtime: RefreshingCache<i64, RuntimeDoc>,
    /// When [`Caches::start`] was first called, if it was.
    started: Arc<std::sync::OnceLock<Instant>>,
    start_timeout: Duration,
    /// Where local changes are announced to other instances, when Redis is configured.
    bus: Arc<std::sync::OnceLock<crate::bus::ChangeBus>>,
}

impl Caches {
    /// Caches over `db` (not filled yet: call [`Caches::start`], or let the first miss fill
    /// them).
    #[must_use]
    pub fn new(db: &Database, settings: CacheSettings) -> Self {
        Self {
            agent_tools: RefreshingCache::builder("agent_tools")
                .ttl(settings.ttl)
                .refresh_interval(Some(settings.refresh_interval))
                .max_staleness(settings.max_staleness)
                .capacity(settings.capacity)
                .build(AgentToolsSource { db: db.clone() }),
            agent_runtime: RefreshingCache::builder("agent_runtime")
                .ttl(settings.ttl)
                .refresh_interval(Some(settings.refresh_interval))
                .max_staleness(settings.max_staleness)
                .capacity(settings.capacity)
                .build(AgentRuntimeSource { db: db.clone() }),
            started: Arc::new(std::sync::OnceLock::new()),
            start_timeout: settings.start_timeout,
            bus: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Announces local changes on `bus` from now on (set once; later calls are ignored).
    pub fn set_bus(&self, bus: crate::bus::ChangeBus) {
        let _ = self.bus.set(bus);
    }

    fn announce(&self) {
        if let Some(bus) = self.bus.get() {
            bus.announce();
        }
    }

    /// Fills both caches and starts their background refresh.
    ///
    /// # Errors
    /// The first cache error; the caches keep retrying in the background.
    pub async fn start(&self) -> Result<(), CacheError> {
        self.started.get_or_init(Instant::now);
        let (tools, runtime) = tokio::join!(self.agent_tools.start(), self.agent_runtime.start());
        tools.and(runtime)
    }

    /// Stops the background refresh of both caches.
    pub async fn shutdown(&self) {
        tokio::join!(self.agent_tools.shutdown(), self.agent_runtime.shutdown());
    }

    /// Whether readiness must still wait for the first fill: [`Caches::start`] was called,
    /// the caches are not filled, and the start timeout has not passed. (Unstarted caches
    /// fill on their first miss; past the timeout, lookups load keys one by one while the
    /// background keeps retrying.)
    #[must_use]
    pub fn filling(&self) -> bool {
        self.started
            .get()
            .is_some_and(|at| !self.all_filled() && at.elapsed() < self.start_timeout)
    }

    /// Whether [`Caches::start`] has been called.
    #[must_use]
    pub fn started(&self) -> bool {
        self.started.get().is_some()
    }

    /// Whether both caches are filled.
    #[must_use]
    pub fn all_filled(&self) -> bool {
        self.agent_tools.is_filled() && self.agent_runtime.is_filled()
    }

    /// Every cache, for the control routes.
    #[must_use]
    pub fn all(&self) -> Vec<Arc<dyn CacheControl>> {
        vec![
            Arc::new(self.agent_tools.clone()),
            Arc::new(self.agent_runtime.clone()),
        ]
    }

    /// Exports the statistics of every cache to the metrics recorder.
    pub fn publish_metrics(&self) {
        self.agent_tools.publish_metrics();
        self.agent_runtime.publish_metrics();
    }

    /// Wakes both refresh tasks (a change was committed elsewhere).
    pub fn notify_changed(&self) {
        self.agent_tools.notify_changed();
        self.agent_runtime.notify_changed();
    }

    /// After a write to agent `id` (created, changed, deleted, tool attached or detached).
    pub fn agent_changed(&self, id: i64) {
        self.agent_tools.invalidate(&id);
        self.agent_runtime.invalidate(&id);
        self.announce();
    }

    /// After a write to a tool used by `agents`.
    pub fn tool_changed(&self, agents: &[i64]) {
        for id in agents {
            self.agent_tools.invalidate(id);
            self.agent_runtime.invalidate(id);
        }
        self.announce();
    }

    /// After a write to `prompt`: agents using it, and agents of its (new) type, may now run
    /// with another prompt.
    pub fn prompt_changed(&self, prompt: &Prompt) {
        self.agent_runtime.invalidate_if(|_, runtime| {
            runtime.value.agent.kind == prompt.agent_type
                || runtime
                    .value
                    .prompt
                    .as_ref()
                    .is_some_and(|p| p.id == prompt.id)
        });
        self.announce();
    }

    /// Follows committed changes on PostgreSQL (`LISTEN`) and wakes the refresh tasks, so
    /// that writes made through another instance are served here within milliseconds. Runs
    /// until the process ends; on SQLite there is nothing to follow and it returns at once.
    pub async fn follow_changes(self, db: Database) {
        let mut failures: u32 = 0;
        loop {
            match db.listen_changes().await {
                Ok(None) => return,
                Ok(Some(mut listener)) => {
                    tracing::info!("listening for database change notifications");
                    failures = 0;
                    // Whatever was committed while not listening.
                    self.notify_changed();
                    loop {
                        match listener.next().await {
                            Ok(ChangeEvent::Changed) => self.notify_changed(),
                            Ok(ChangeEvent::Reconnected) => {
                                tracing::warn!("change notifications interrupted; catching up");
                                self.notify_changed();
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "change notifications lost");
                                break;
                            }
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for change notifications");
                }
            }
            failures = failures.saturating_add(1);
            let delay = groundwork_cache::backoff_delay(
                failures,
                Duration::from_millis(200),
                Duration::from_secs(10),
                fastrand::f64(),
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// Loads agent tools from the database, incrementally through the change log.
struct AgentToolsSource {
    db: Database,
}

fn tools_doc(tools: Vec<AttachedTool>) -> Result<ToolsDoc, LoadError> {
    let total = i64::try_from(tools.len()).unwrap_or(i64::MAX);
    Rendered::new(Listing {
        items: tools,
        total,
    })
}

impl Source<i64, ToolsDoc> for AgentToolsSource {
    type Error = LoadError;

    async fn load(&self, id: &i64) -> Result<Option<ToolsDoc>, LoadError> {
        let mut tools = self.db.views().tools_of(&[*id]).await?;
        tools.remove(id).map(tools_doc).transpose()
    }

    async fn load_many(&self, ids: &[i64]) -> Result<Vec<(i64, Option<ToolsDoc>)>, LoadError> {
        let mut tools = self.db.views().tools_of(ids).await?;
        ids.iter()
            .map(|id| Ok((*id, tools.remove(id).map(tools_doc).transpose()?)))
            .collect()
    }

    async fn load_all(&self) -> Result<Snapshot<i64, ToolsDoc>, LoadError> {
        // The cursor first: a change committed during the read is applied again later.
        let cursor = self.db.changes().current_cursor().await?;
        let entries = self
            .db
            .views()
            .tools_of_all()
            .await?
            .into_iter()
            .map(|(id, tools)| Ok((id, tools_doc(tools)?)))
            .collect::<Result<_, LoadError>>()?;
        Ok(Snapshot {
            entries,
            cursor: u64::try_from(cursor).ok(),
        })
    }

    async fn changes_since(
        &self,
        cursor: u64,
    ) -> Result<Option<ChangeSet<i64, ToolsDoc>>, LoadError> {
        let Some((ids, cursor, more)) = changed_agents(&self.db, cursor, false).await? else {
            return Ok(None);
        };
        let loaded = self.load_many(&ids).await?;
        Ok(Some(change_set(loaded, cursor, more)))
    }
}

/// Loads agent runtimes from the database, incrementally through the change log.
struct AgentRuntimeSource {
    db: Database,
}

impl Source<i64, RuntimeDoc> for AgentRuntimeSource {
    type Error = LoadError;

    async fn load(&self, id: &i64) -> Result<Option<RuntimeDoc>, LoadError> {
        let mut runtimes = self.db.views().runtimes_of(&[*id]).await?;
        runtimes.remove(id).map(Rendered::new).transpose()
    }

    async fn load_many(&self, ids: &[i64]) -> Result<Vec<(i64, Option<RuntimeDoc>)>, LoadError> {
        let mut runtimes = self.db.views().runtimes_of(ids).await?;
        ids.iter()
            .map(|id| Ok((*id, runtimes.remove(id).map(Rendered::new).transpose()?)))
            .collect()
    }

    async fn load_all(&self) -> Result<Snapshot<i64, RuntimeDoc>, LoadError> {
        let cursor = self.db.changes().current_cursor().await?;
        let entries = self
            .db
            .views()
            .runtimes_of_all()
            .await?
            .into_iter()
            .map(|(id, runtime)| Ok((id, Rendered::new(runtime)?)))
            .collect::<Result<_, LoadError>>()?;
        Ok(Snapshot {
            entries,
            cursor: u64::try_from(cursor).ok(),
        })
    }

    async fn changes_since(
        &self,
        cursor: u64,
    ) -> Result<Option<ChangeSet<i64, RuntimeDoc>>, LoadError> {
        let Some((ids, cursor, more)) = changed_agents(&self.db, cursor, true).await? else {
            return Ok(None);
        };
        let loaded = self.load_many(&ids).await?;
        Ok(Some(change_set(loaded, cursor, more)))
    }
}

/// How long the change log keeps a change: far longer than any live instance lags behind
/// (one that does, reloads its caches in full).
pub const CHANGE_LOG_KEEP: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// How often the change log is pruned.
const CHANGE_LOG_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Prunes the change log of changes older than [`CHANGE_LOG_KEEP`], now and every hour,
/// until `stop`: without it the log grows with every write for ever.
pub fn spawn_change_log_pruning(
    db: Database,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    crate::pruning::spawn_pruning(
        "change log",
        CHANGE_LOG_KEEP,
        CHANGE_LOG_PRUNE_EVERY,
        stop,
        move |before| {
            let db = db.clone();
            async move { db.changes().prune(before).await }
        },
    )
}

/// The agents affected by the changes after `cursor`, the cursor after them and whether
/// more changes wait; `None` if the cursor cannot be read or the changes after it were
/// pruned (the cache then reloads all).
async fn changed_agents(
    db: &Database,
    cursor: u64,
    with_prompts: bool,
) -> Result<Option<(Vec<i64>, u64, bool)>, LoadError> {
    let Ok(cursor) = i64::try_from(cursor) else {
        return Ok(None);
    };
    let batch = db.changes().since(cursor, CHANGE_BATCH).await?;
    if batch.truncated {
        // Changes after the cursor were pruned: only a full reload is correct.
        return Ok(None);
    }
    let affected = db
        .views()
        .affected_agents(&batch.changes, with_prompts)
        .await?;
    let next = u64::try_from(batch.next_cursor).unwrap_or(0);
    Ok(Some((affected, next, batch.has_more)))
}

/// Splits loaded values into upserts (present) and deletions (absent).
fn change_set<V>(loaded: Vec<(i64, Option<V>)>, cursor: u64, more: bool) -> ChangeSet<i64, V> {
    let mut upserts = Vec::new();
    let mut deletions = Vec::new();
    for (id, value) in loaded {
        match value {
            Some(value) => upserts.push((id, value)),
            None => deletions.push(id),
        }
    }
    ChangeSet {
        upserts,
        deletions,
        cursor,
        more,
    }
}

/// What the cache control routes need from a cache, whatever its value type.
pub trait CacheControl: Send + Sync {
    /// The cache's name.
    fn name(&self) -> &str;
    /// Its statistics.
    fn stats(&self) -> CacheStats;
    /// Whether it has been filled.
    fn filled(&self) -> bool;
    /// Drops one key (given as text).
    ///
    /// # Errors
    /// When `key` is not a valid key for this cache.
    fn invalidate_key(&self, key: &str) -> Result<(), String>;
    /// Drops the keys whose text starts with `prefix`; returns how many.
    fn invalidate_prefix(&self, prefix: &str) -> usize;
    /// Drops everything (the next miss reloads through one full read).
    fn invalidate_all(&self);
    /// Loads `keys` (given as text) into the cache; returns how many exist.
    fn warm<'a>(
        &'a self,
        keys: &'a [String],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<usize, WarmError>> + Send + 'a>>;
}

/// Why warming failed.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// A key is not valid for the cache.
    #[error("{0}")]
    BadKey(String),
    /// The source failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

fn parse_agent_id(key: &str) -> Result<i64, String> {
    key.trim()
        .parse()
        .map_err(|_| format!("key {key:?} is not an agent id (an integer)"))
}

impl<V> CacheControl for RefreshingCache<i64, V>
where
    V: PartialEq + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        RefreshingCache::name(self)
    }

    fn stats(&self) -> CacheStats {
        RefreshingCache::stats(self)
    }

    fn filled(&self) -> bool {
        self.is_filled()
    }

    fn invalidate_key(&self, key: &str) -> Result<(), String> {
        self.invalidate(&parse_agent_id(key)?);
        Ok(())
    }

    fn invalidate_prefix(&self, prefix: &str) -> usize {
        self.invalidate_if(|key, _| key.to_string().starts_with(prefix))
    }

    fn invalidate_all(&self) {
        RefreshingCache::invalidate_all(self);
    }

    fn warm<'a>(
        &'a self,
        keys: &'a [String],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<usize, WarmError>> + Send + 'a>> {
        Box::pin(async move {
            let ids = keys
                .iter()
                .map(|k| parse_agent_id(k))
                .collect::<Result<Vec<_>, _>>()
                .map_err(WarmError::BadKey)?;
            Ok(RefreshingCache::warm(self, &ids).await?)
        })
    }
}

/// The prompt agent's runtime configurations, read from the agent runtime cache (so a
/// changed prompt or tool applies to the next run, and runs keep working from the cache
/// while the database is down).
#[derive(Debug, Clone)]
pub struct CachedRuntimes {
    runtimes: RefreshingCache<i64, RuntimeDoc>,
}

impl CachedRuntimes {
    /// Runtime configurations from `caches`' agent runtime cache.
    #[must_use]
    pub fn new(caches: &Caches) -> Self {
        Self {
            runtimes: caches.agent_runtime.clone(),
        }
    }
}

impl groundwork_llm::agent::RuntimeConfigs for CachedRuntimes {
    type Error = CacheError;

    async fn runtime(
        &self,
        agent_id: i64,
    ) -> Result<Option<groundwork_llm::agent::AgentRuntimeConfig>, CacheError> {
        use groundwork_llm::agent::{AgentRuntimeConfig, DEFAULT_MODEL, ToolSpec};
        let Some(doc) = self.runtimes.get(&agent_id).await? else {
            return Ok(None);
        };
        let runtime = &doc.value;
        let mut config = AgentRuntimeConfig::from_agent_config(
            runtime.agent.name.clone(),
            runtime.agent.kind.clone(),
            &runtime.agent.config,
            DEFAULT_MODEL,
        );
        if let Some(prompt) = &runtime.prompt {
            config = config.with_system_prompt(prompt.content.clone());
        }
        config.tools = runtime
            .tools
            .iter()
            .map(|tool| {
                ToolSpec::from_config(
                    &tool.name,
                    tool.description.as_deref(),
                    &tool.effective_config,
                )
            })
            .collect();
        Ok(Some(config))
    }
}
