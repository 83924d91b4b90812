//! Effective configuration: defaults, then a TOML file, then `GROUNDWORK_*` environment
//! variables, then command-line flags.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What replaces a secret in printed configuration.
const REDACTED: &str = "<redacted>";

/// A problem with the configuration, reported at start with what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file cannot be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for these settings.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's explanation (line, column, field).
        message: String,
    },
    /// An environment variable has a value that cannot be used.
    #[error("invalid value for {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Why.
        message: String,
    },
    /// A setting is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// An API key: a name (recorded as the actor in the audit log) and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Who uses the key; shown in the audit log.
    pub name: String,
    /// The bearer token. Never printed.
    pub secret: String,
}

impl ApiKey {
    /// Parses `name:secret`.
    ///
    /// # Errors
    /// When the colon, the name or the secret is missing.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (name, secret) = spec
            .split_once(':')
            .ok_or_else(|| "an API key must be written name:secret".to_owned())?;
        let (name, secret) = (name.trim(), secret.trim());
        if name.is_empty() || secret.is_empty() {
            return Err("an API key needs both a name and a secret (name:secret)".to_owned());
        }
        if name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "API key name {name:?} must be 1 to 64 characters of letters, digits, '-', '_' or '.'"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}:{REDACTED})", self.name)
    }
}

impl Serialize for ApiKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{}:{}", self.name, self.secret))
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spec = String::deserialize(deserializer)?;
        Self::parse(&spec).map_err(serde::de::Error::custom)
    }
}

/// Every setting of the server, with its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Env `GROUNDWORK_BIND`. Default `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// `sqlite://PATH` or `postgres://…`. Env `GROUNDWORK_DATABASE_URL`.
    /// Default `sqlite://./groundwork-data/groundwork.db`.
    pub database_url: String,
    /// Most pooled database connections. Env `GROUNDWORK_DATABASE_MAX_CONNECTIONS`. Default 10.
    pub database_max_connections: u32,
    /// Idle database connections kept open. Env `GROUNDWORK_DATABASE_MIN_CONNECTIONS`.
    /// Default 2.
    pub database_min_connections: u32,
    /// Seconds a request waits for a pooled connection. Env
    /// `GROUNDWORK_DATABASE_ACQUIRE_TIMEOUT_SECS`. Default 5.
    pub database_acquire_timeout_secs: u64,
    /// Deadline of every database operation, in milliseconds (nothing hangs on a black-holed
    /// connection). Env `GROUNDWORK_DATABASE_QUERY_TIMEOUT_MS`. Default 30000.
    pub database_query_timeout_ms: u64,
    /// Milliseconds between database health checks while it answers. Env
    /// `GROUNDWORK_DATABASE_HEALTH_INTERVAL_MS`. Default 30000.
    pub database_health_interval_ms: u64,
    /// Milliseconds between database health checks while it does not answer. Env
    /// `GROUNDWORK_DATABASE_UNHEALTHY_INTERVAL_MS`. Default 1000.
    pub database_unhealthy_interval_ms: u64,
    /// Milliseconds a health check (`SELECT 1`) may take. Env
    /// `GROUNDWORK_DATABASE_HEALTH_TIMEOUT_MS`. Default 1000.
    pub database_health_timeout_ms: u64,
    /// Failed database operations in a row that open the pool's circuit breaker (requests then
    /// fail fast with 503). Env `GROUNDWORK_DATABASE_BREAKER_FAILURES`. Default 3.
    pub database_breaker_failures: u32,
    /// Milliseconds the breaker stays open before letting a probe through. Env
    /// `GROUNDWORK_DATABASE_BREAKER_OPEN_MS`. Default 500.
    pub database_breaker_open_ms: u64,
    /// Redis (none by default): instances announce their changes on it, so the others
    /// refresh at once; later the LLM response cache. Redis trouble never fails a request.
    /// Env `GROUNDWORK_REDIS_URL`.
    pub redis_url: Option<String>,
    /// Milliseconds a Redis operation may take before it is given up (and counted against
    /// Redis's breaker). Env `GROUNDWORK_REDIS_OP_TIMEOUT_MS`. Default 50.
    pub redis_op_timeout_ms: u64,
    /// RabbitMQ; without it the database-backed queue is used. Env `GROUNDWORK_AMQP_URL`.
    pub amqp_url: Option<String>,
    /// Whether `serve` also runs the queue workers (executions, notifications, audit) and the
    /// outbox relay; `groundwork worker` runs them without the API. Env `GROUNDWORK_WORKERS`.
    /// Default true.
    pub workers: bool,
    /// Messages each worker handles at once. Env `GROUNDWORK_WORKER_CONCURRENCY`. Default 8.
    pub worker_concurrency: usize,
    /// Deliveries of a message before it goes to the dead-letter queue (an execution that
    /// fails that many times is failed). Env `GROUNDWORK_QUEUE_MAX_ATTEMPTS`. Default 5.
    pub queue_max_attempts: u32,
    /// Milliseconds before each retry of a failed message, the last one repeating. Env
    /// `GROUNDWORK_QUEUE_RETRY_DELAYS_MS` (comma-separated). Default 1000, 5000, 30000,
    /// 120000.
    pub queue_retry_delays_ms: Vec<u64>,
    /// Prepended to the server's queue names (`workflow.execute`, `notification.send`,
    /// `audit.log`), so that several deployments can share one broker. Env
    /// `GROUNDWORK_QUEUE_PREFIX`. Default none.
    pub queue_prefix: String,
    /// Where `notification.send` messages are POSTed as JSON (none: they are logged). Env
    /// `GROUNDWORK_NOTIFY_WEBHOOK_URL`.
    pub notify_webhook_url: Option<String>,
    /// `file://PATH` or `s3://bucket?endpoint=…`. Env `GROUNDWORK_STORAGE_URL`.
    /// Default `file://./groundwork-data/files`.
    pub storage_url: String,
    /// Largest accepted upload, in bytes (cut mid-stream with 413 past it). Env
    /// `GROUNDWORK_STORAGE_MAX_UPLOAD_BYTES`. Default 104857600 (100 MiB).
    pub storage_max_upload_bytes: u64,
    /// OpenAI-compatible upstream. Env `GROUNDWORK_LLM_BASE_URL`.
    pub llm_base_url: Option<String>,
    /// Key for the upstream (never printed). Env `GROUNDWORK_LLM_API_KEY`.
    pub llm_api_key: Option<String>,
    /// Seconds an LLM answer is cached unless the request asks otherwise. Env
    /// `GROUNDWORK_LLM_CACHE_TTL_SECS`. Default 86400 (24 h).
    pub llm_cache_ttl_secs: u64,
    /// MiB of LLM answers kept in memory. Env `GROUNDWORK_LLM_CACHE_MEMORY_MB`. Default 256.
    pub llm_cache_memory_mb: u64,
    /// Also cache non-deterministic requests (temperature above 0 without a seed). Env
    /// `GROUNDWORK_LLM_CACHE_NONDETERMINISTIC`. Default false.
    pub llm_cache_nondeterministic: bool,
    /// `name:secret` pairs; when set, every route but `/health` needs
    /// `Authorization: Bearer <secret>`. Env `GROUNDWORK_API_KEYS` (comma-separated).
    pub api_keys: Vec<ApiKey>,
    /// Largest accepted request body, in bytes. Env `GROUNDWORK_BODY_LIMIT_BYTES`.
    /// Default 1 MiB.
    pub body_limit_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM. Env
    /// `GROUNDWORK_SHUTDOWN_TIMEOUT_SECS`. Default 10.
    pub shutdown_timeout_secs: u64,
    /// `text` or `json`. Env `GROUNDWORK_LOG_FORMAT`. Default `text`.
    pub log_format: LogFormat,
    /// Seconds a cached value is served without word from the database (every successful
    /// refresh vouches for all entries). Env `GROUNDWORK_CACHE_TTL_SECS`. Default 300.
    pub cache_ttl_secs: u64,
    /// Seconds between background refreshes (incremental, from the change log). Env
    /// `GROUNDWORK_CACHE_REFRESH_INTERVAL_SECS`. Default 60.
    pub cache_refresh_interval_secs: u64,
    /// Seconds past the TTL a cached value is still served while the database fails. Env
    /// `GROUNDWORK_CACHE_MAX_STALENESS_SECS`. Default 3600.
    pub cache_max_staleness_secs: u64,
    /// Entries per cache. Env `GROUNDWORK_CACHE_CAPACITY`. Default 100000.
    pub cache_capacity: u64,
    /// Seconds readiness waits for the first cache fill. Env
    /// `GROUNDWORK_CACHE_START_TIMEOUT_SECS`. Default 10.
    pub cache_start_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://./groundwork-data/groundwork.db".to_owned(),
            database_max_connections: 10,
            database_min_connections: 2,
            database_acquire_timeout_secs: 5,
            database_query_timeout_ms: 30000,
            database_health_interval_ms: 30000,
            database_unhealthy_interval_ms: 1000,
            database_health_timeout_ms: 1000,
            database_breaker_failures: 3,
            database_breaker_open_ms: 500,
            redis_url: None,
            redis_op_timeout_ms: 50,
            amqp_url: None,
            workers: true,
            worker_concurrency: 8,
            queue_max_attempts: 5,
            queue_retry_delays_ms: vec![1000, 5000, 30_000, 120_000],
            queue_prefix: String::new(),
            notify_webhook_url: None,
            storage_url: "file://./groundwork-data/files".to_owned(),
            storage_max_upload_bytes: 100 * 1024 * 1024,
            llm_base_url: None,
            llm_api_key: None,
            llm_cache_ttl_secs: 86_400,
            llm_cache_memory_mb: 256,
            llm_cache_nondeterministic: false,
            api_keys: Vec::new(),
            body_limit_bytes: 1024 * 1024,
            shutdown_timeout_secs: 10,
            log_format: LogFormat::Text,
            cache_ttl_secs: 300,
            cache_refresh_interval_secs: 60,
            cache_max_staleness_secs: 3600,
            cache_capacity: 100_000,
            cache_start_timeout_secs: 10,
        }
    }
}

impl Config {
    /// Defaults, overridden by `file` (if given), overridden by the variables `env` returns.
    ///
    /// `env` is the environment lookup (`|name| std::env::var(name).ok()` in `main`); an
    /// empty value counts as unset.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, line or variable at fault.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?
            }
            None => Self::default(),
        };
        config.apply_env(|name| env(name).filter(|v| !v.trim().is_empty()))?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parsed<T: std::str::FromStr>(var: &'static str, value: String) -> Result<T, ConfigError>
        where
            T::Err: fmt::Display,
        {
            value.trim().parse().map_err(|e: T::Err| ConfigError::Env {
                var,
                message: format!("{value:?}: {e}"),
            })
        }
        if let Some(v) = env("GROUNDWORK_BIND") {
            self.bind = parsed("GROUNDWORK_BIND", v)?;
        }
        if let Some(v) = env("GROUNDWORK_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = env("GROUNDWORK_DATABASE_MAX_CONNECTIONS") {
            self.database_max_connections = parsed("GROUNDWORK_DATABASE_MAX_CONNECTIONS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_DATABASE_MIN_CONNECTIONS") {
            self.database_min_connections = parsed("GROUNDWORK_DATABASE_MIN_CONNECTIONS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_DATABASE_ACQUIRE_TIMEOUT_SECS") {
            self.database_acquire_timeout_secs =
                parsed("GROUNDWORK_DATABASE_ACQUIRE_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_DATABASE_QUERY_TIMEOUT_MS") {
            self.database_query_timeout_ms = parsed("GROUNDWORK_DATABASE_QUERY_TIMEOUT_MS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_DATABASE_HEALTH_INTERVAL_MS") {
            self.database_health_interval_ms = parsed("GROUNDWORK_DATABASE_HEALTH_INTERVAL_MS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_DATABASE_UNHEALTHY_INTERVAL_MS") {
            self.database_unhealthy_interval_ms =
                parsed("GROUNDWORK_DATABASE_UNHEALTHY_INTERVAL_MS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_DATABASE_HEALTH_TIMEOUT_MS") {
            self.database_health_timeout_ms = parsed("GROUNDWORK_DATABASE_HEALTH_TIMEOUT_MS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_DATABASE_BREAKER_FAILURES") {
            self.database_breaker_failures = parsed("GROUNDWORK_DATABASE_BREAKER_FAILURES", v)?;
        }
        if let Some(v) = env("GROUNDWORK_DATABASE_BREAKER_OPEN_MS") {
            self.database_breaker_open_ms = parsed("GROUNDWORK_DATABASE_BREAKER_OPEN_MS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_REDIS_URL") {
            self.redis_url = Some(v);
        }
        if let Some(v) = env("GROUNDWORK_REDIS_OP_TIMEOUT_MS") {
            self.redis_op_timeout_ms = parsed("GROUNDWORK_REDIS_OP_TIMEOUT_MS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_AMQP_URL") {
            self.amqp_url = Some(v);
        }
        if let Some(v) = env("GROUNDWORK_WORKERS") {
            self.workers = parsed("GROUNDWORK_WORKERS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_WORKER_CONCURRENCY") {
            self.worker_concurrency = parsed("GROUNDWORK_WORKER_CONCURRENCY", v)?;
        }
        if let Some(v) = env("GROUNDWORK_QUEUE_MAX_ATTEMPTS") {
            self.queue_max_attempts = parsed("GROUNDWORK_QUEUE_MAX_ATTEMPTS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_QUEUE_RETRY_DELAYS_MS") {
            self.queue_retry_delays_ms = v
                .split(',')
                .map(|ms| parsed("GROUNDWORK_QUEUE_RETRY_DELAYS_MS", ms.to_owned()))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = env("GROUNDWORK_QUEUE_PREFIX") {
            self.queue_prefix = v.trim().to_owned();
        }
        if let Some(v) = env("GROUNDWORK_NOTIFY_WEBHOOK_URL") {
            self.notify_webhook_url = Some(v);
        }
        if let Some(v) = env("GROUNDWORK_STORAGE_URL") {
            self.storage_url = v;
        }
        if let Some(v) = env("GROUNDWORK_STORAGE_MAX_UPLOAD_BYTES") {
            self.storage_max_upload_bytes = parsed("GROUNDWORK_STORAGE_MAX_UPLOAD_BYTES", v)?;
        }
        if let Some(v) = env("GROUNDWORK_LLM_BASE_URL") {
            self.llm_base_url = Some(v);
        }
        if let Some(v) = env("GROUNDWORK_LLM_API_KEY") {
            self.llm_api_key = Some(v);
        }
        if let Some(v) = env("GROUNDWORK_LLM_CACHE_TTL_SECS") {
            self.llm_cache_ttl_secs = parsed("GROUNDWORK_LLM_CACHE_TTL_SECS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_LLM_CACHE_MEMORY_MB") {
            self.llm_cache_memory_mb = parsed("GROUNDWORK_LLM_CACHE_MEMORY_MB", v)?;
        }
        if let Some(v) = env("GROUNDWORK_LLM_CACHE_NONDETERMINISTIC") {
            self.llm_cache_nondeterministic = parsed("GROUNDWORK_LLM_CACHE_NONDETERMINISTIC", v)?;
        }
        if let Some(v) = env("GROUNDWORK_API_KEYS") {
            self.api_keys = v
                .split(',')
                .filter(|spec| !spec.trim().is_empty())
                .map(|spec| {
                    ApiKey::parse(spec).map_err(|message| ConfigError::Env {
                        var: "GROUNDWORK_API_KEYS",
                        message,
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = env("GROUNDWORK_BODY_LIMIT_BYTES") {
            self.body_limit_bytes = parsed("GROUNDWORK_BODY_LIMIT_BYTES", v)?;
        }
        if let Some(v) = env("GROUNDWORK_SHUTDOWN_TIMEOUT_SECS") {
            self.shutdown_timeout_secs = parsed("GROUNDWORK_SHUTDOWN_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_CACHE_TTL_SECS") {
            self.cache_ttl_secs = parsed("GROUNDWORK_CACHE_TTL_SECS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_CACHE_REFRESH_INTERVAL_SECS") {
            self.cache_refresh_interval_secs = parsed("GROUNDWORK_CACHE_REFRESH_INTERVAL_SECS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_CACHE_MAX_STALENESS_SECS") {
            self.cache_max_staleness_secs = parsed("GROUNDWORK_CACHE_MAX_STALENESS_SECS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_CACHE_CAPACITY") {
            self.cache_capacity = parsed("GROUNDWORK_CACHE_CAPACITY", v)?;
        }
        if let Some(v) = env("GROUNDWORK_CACHE_START_TIMEOUT_SECS") {
            self.cache_start_timeout_secs = parsed("GROUNDWORK_CACHE_START_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = env("GROUNDWORK_LOG_FORMAT") {
            self.log_format = match v.trim() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(ConfigError::Env {
                        var: "GROUNDWORK_LOG_FORMAT",
                        message: format!("{other:?}: expected text or json"),
                    });
                }
            };
        }
        Ok(())
    }

    /// Checks ranges and consistency (not the bind address: see [`Config::check_exposure`]).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] saying which setting is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.body_limit_bytes == 0 {
            return Err(ConfigError::Invalid(
                "body_limit_bytes must be greater than 0".to_owned(),
            ));
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError::Invalid(
                "database_max_connections must be at least 1".to_owned(),
            ));
        }
        if self.database_min_connections > self.database_max_connections {
            return Err(ConfigError::Invalid(format!(
                "database_min_connections ({}) must not exceed database_max_connections ({})",
                self.database_min_connections, self.database_max_connections
            )));
        }
        if self.cache_refresh_interval_secs == 0 || self.cache_ttl_secs == 0 {
            return Err(ConfigError::Invalid(
                "cache_ttl_secs and cache_refresh_interval_secs must be at least 1".to_owned(),
            ));
        }
        for (name, value) in [
            ("database_query_timeout_ms", self.database_query_timeout_ms),
            (
                "database_health_interval_ms",
                self.database_health_interval_ms,
            ),
            (
                "database_unhealthy_interval_ms",
                self.database_unhealthy_interval_ms,
            ),
            (
                "database_health_timeout_ms",
                self.database_health_timeout_ms,
            ),
            (
                "database_breaker_failures",
                u64::from(self.database_breaker_failures),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        if self.worker_concurrency == 0 || self.queue_max_attempts == 0 {
            return Err(ConfigError::Invalid(
                "worker_concurrency and queue_max_attempts must be at least 1".to_owned(),
            ));
        }
        if !self
            .queue_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            || self.queue_prefix.len() > 100
        {
            return Err(ConfigError::Invalid(format!(
                "queue_prefix {:?}: use at most 100 ASCII letters, digits, '.', '-' or '_'",
                self.queue_prefix
            )));
        }
        if self.queue_retry_delays_ms.is_empty() {
            return Err(ConfigError::Invalid(
                "queue_retry_delays_ms needs at least one delay".to_owned(),
            ));
        }
        if self.cache_capacity == 0 {
            return Err(ConfigError::Invalid(
                "cache_capacity must be at least 1".to_owned(),
            ));
        }
        let mut names: Vec<&str> = self.api_keys.iter().map(|k| k.name.as_str()).collect();
        names.sort_unstable();
        if let Some(dup) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Invalid(format!(
                "API key name {:?} is used twice",
                dup[0]
            )));
        }
        Ok(())
    }

    /// Refuses to expose an unauthenticated API: binding anything but a loopback address
    /// needs at least one API key.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with the fix.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if !self.bind.ip().is_loopback() && self.api_keys.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {} without API keys: anyone who can reach this address \
                 could change your data. Set GROUNDWORK_API_KEYS=name:secret (comma-separated \
                 for several) or api_keys = [\"name:secret\"] in the config file, or bind a \
                 loopback address such as 127.0.0.1:{}",
                self.bind,
                self.bind.port()
            )));
        }
        Ok(())
    }

    /// How long a request waits for a pooled database connection.
    #[must_use]
    pub fn database_acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.database_acquire_timeout_secs)
    }

    /// The database pool's options: connection bounds, timeouts, health checks, breaker;
    /// migrations applied as soon as the database answers.
    pub fn database_options(&self) -> groundwork_db::DatabaseOptions {
        let ms = Duration::from_millis;
        groundwork_db::DatabaseOptions::new(&self.database_url)
            .max_connections(self.database_max_connections)
            .min_connections(self.database_min_connections)
            .acquire_timeout(self.database_acquire_timeout())
            .query_timeout(ms(self.database_query_timeout_ms))
            .health_intervals(
                ms(self.database_health_interval_ms),
                ms(self.database_unhealthy_interval_ms),
            )
            .health_timeout(ms(self.database_health_timeout_ms))
            .breaker(
                self.database_breaker_failures,
                ms(self.database_breaker_open_ms),
            )
            .migrate_on_connect(true)
    }

    /// How long in-flight requests get at shutdown.
    #[must_use]
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// A copy safe to print: API key secrets, the LLM key and URL passwords replaced.
    #[must_use]
    pub fn redacted(&self) -> Self {
        let redact_url = |url: &String| groundwork_core::redact_url(url);
        Self {
            database_url: redact_url(&self.database_url),
            redis_url: self.redis_url.as_ref().map(redact_url),
            amqp_url: self.amqp_url.as_ref().map(redact_url),
            notify_webhook_url: self.notify_webhook_url.as_ref().map(redact_url),
            storage_url: redact_url(&self.storage_url),
            llm_base_url: self.llm_base_url.as_ref().map(redact_url),
            llm_api_key: self.llm_api_key.as_ref().map(|_| REDACTED.to_owned()),
            api_keys: self
                .api_keys
                .iter()
                .map(|k| ApiKey {
                    name: k.name.clone(),
                    secret: REDACTED.to_owned(),
                })
                .collect(),
            ..self.clone()
        }
    }

    /// The redacted configuration as TOML, as `groundwork config` prints it.
    ///
    /// # Errors
    /// If serialization fails (it does not for these types).
    pub fn to_redacted_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_are_embedded() -> anyhow::Result<()> {
        let config = Config::load(None, env(&[]))?;
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert!(config.database_url.starts_with("sqlite://"));
        assert_eq!(config.body_limit_bytes, 1 << 20);
        assert!(config.api_keys.is_empty());
        config.check_exposure()?;
        Ok(())
    }

    #[test]
    fn env_overrides_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("g.toml");
        std::fs::write(
            &path,
            "bind = \"127.0.0.1:9000\"\ndatabase_url = \"sqlite://from-file.db\"\napi_keys = [\"ops:file-secret\"]\n",
        )?;
        let config = Config::load(
            Some(&path),
            env(&[
                ("GROUNDWORK_DATABASE_URL", "postgres://u:pw@h/db"),
                ("GROUNDWORK_API_KEYS", "ci:one, admin:two"),
                ("GROUNDWORK_REDIS_URL", ""),
            ]),
        )?;
        assert_eq!(config.bind.port(), 9000);
        assert_eq!(config.database_url, "postgres://u:pw@h/db");
        let names: Vec<_> = config.api_keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["ci", "admin"]);
        assert_eq!(config.redis_url, None, "empty variables count as unset");
        Ok(())
    }

    #[test]
    fn bad_values_name_their_source() -> anyhow::Result<()> {
        let err = Config::load(None, env(&[("GROUNDWORK_BIND", "nowhere")])).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.to_string().contains("GROUNDWORK_BIND")),
            "{err:?}"
        );
        let err = Config::load(None, env(&[("GROUNDWORK_API_KEYS", "nocolon")])).err();
        assert!(err.is_some_and(|e| e.to_string().contains("name:secret")));

        let dir = tempfile::tempdir()?;
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "bnid = \"127.0.0.1:1\"\n")?;
        let err = Config::load(Some(&path), env(&[])).err();
        assert!(err.is_some_and(|e| e.to_string().contains("bnid")));
        let err = Config::load(Some(&dir.path().join("missing.toml")), env(&[])).err();
        assert!(matches!(err, Some(ConfigError::Read { .. })));
        let err = Config::load(None, env(&[("GROUNDWORK_API_KEYS", "a:1,a:2")])).err();
        assert!(err.is_some_and(|e| e.to_string().contains("used twice")));
        Ok(())
    }

    #[test]
    fn public_bind_needs_keys() -> anyhow::Result<()> {
        let open = Config::load(None, env(&[("GROUNDWORK_BIND", "0.0.0.0:8080")]))?;
        let err = open
            .check_exposure()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("GROUNDWORK_API_KEYS"), "{err}");
        let keyed = Config::load(
            None,
            env(&[
                ("GROUNDWORK_BIND", "0.0.0.0:8080"),
                ("GROUNDWORK_API_KEYS", "a:b"),
            ]),
        )?;
        keyed.check_exposure()?;
        let v6 = Config::load(None, env(&[("GROUNDWORK_BIND", "[::1]:8080")]))?;
        v6.check_exposure()?;
        Ok(())
    }

    #[test]
    fn printed_config_has_no_secrets() -> anyhow::Result<()> {
        let config = Config::load(
            None,
            env(&[
                ("GROUNDWORK_DATABASE_URL", "postgres://app:db-pass@h/db"),
                ("GROUNDWORK_LLM_API_KEY", "sk-very-secret"),
                ("GROUNDWORK_API_KEYS", "ci:key-secret"),
                ("GROUNDWORK_REDIS_URL", "redis://:redis-pass@h:6379"),
                ("GROUNDWORK_AMQP_URL", "amqp://guest:amqp-pass@h:5672/%2f"),
                (
                    "GROUNDWORK_STORAGE_URL",
                    "s3://b?endpoint=http://h:9000&access_key_id=AK-ID\
                     &secret_access_key=S3-SECRET&session_token=S3-TOKEN",
                ),
                (
                    "GROUNDWORK_LLM_BASE_URL",
                    "http://llm:8000/v1?api-key=LLM-QUERY-KEY",
                ),
            ]),
        )?;
        let mut config = config;
        config.database_url = "postgres://h/db?user=app&password=QUERY-PASS".into();
        config.notify_webhook_url = Some("https://hooks.example/x?token=HOOK-TOKEN".into());
        let printed = config.to_redacted_toml()?;
        for secret in [
            "db-pass",
            "sk-very-secret",
            "key-secret",
            "redis-pass",
            "amqp-pass",
            "AK-ID",
            "S3-SECRET",
            "S3-TOKEN",
            "LLM-QUERY-KEY",
            "QUERY-PASS",
            "HOOK-TOKEN",
        ] {
            assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
        }
        assert!(printed.contains("ci:<redacted>"));
        let back: Config = toml::from_str(&printed)?;
        assert_eq!(back.bind, config.bind, "printed config is loadable TOML");
        Ok(())
    }
}
