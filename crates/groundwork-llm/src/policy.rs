//! What a request asks of the cache: `x-groundwork-cache: bypass|refresh`,
//! `x-groundwork-cache-ttl: <seconds>`, `Cache-Control: no-store|no-cache`.

use std::time::Duration;

use groundwork_core::{Classify, ErrorKind};

/// Whether the answer came from the cache (the `x-groundwork-cache` response header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheStatus {
    /// Answered from the cache; no upstream call.
    Hit,
    /// Not in the cache (or a refresh was asked for): answered by the upstream.
    Miss,
    /// The cache was not used (asked for, or a non-deterministic request).
    Bypass,
}

impl CacheStatus {
    /// `HIT`, `MISS` or `BYPASS`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Bypass => "BYPASS",
        }
    }
}

/// A request's cache directives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CachePolicy {
    /// Look the answer up in the cache.
    pub lookup: bool,
    /// Store the upstream's answer.
    pub store: bool,
    /// The TTL asked for (capped by the cache's maximum).
    pub ttl: Option<Duration>,
}

/// A cache directive that cannot be understood: the request is refused (400) rather than
/// run with a policy the caller did not mean.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

impl Classify for PolicyError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::BadRequest
    }
}

impl CachePolicy {
    /// Look up and store, default TTL.
    #[must_use]
    pub fn normal() -> Self {
        Self {
            lookup: true,
            store: true,
            ttl: None,
        }
    }

    /// The policy the headers ask for. `x-groundwork-cache: bypass` neither reads nor
    /// stores; `refresh` (or `Cache-Control: no-cache`) skips the lookup and stores the new
    /// answer; `Cache-Control: no-store` (or a TTL of 0) reads but stores nothing.
    ///
    /// # Errors
    /// [`PolicyError`] for an unknown `x-groundwork-cache` value or a TTL that is not a
    /// whole number of seconds.
    ///
    /// ```
    /// use groundwork_llm::policy::CachePolicy;
    ///
    /// let policy = CachePolicy::from_headers(Some("refresh"), Some("60"), None)?;
    /// assert!(!policy.lookup && policy.store);
    /// assert_eq!(policy.ttl, Some(std::time::Duration::from_secs(60)));
    /// assert!(CachePolicy::from_headers(Some("sometimes"), None, None).is_err());
    /// # Ok::<(), groundwork_llm::policy::PolicyError>(())
    /// ```
    pub fn from_headers(
        groundwork_cache: Option<&str>,
        ttl: Option<&str>,
        cache_control: Option<&str>,
    ) -> Result<Self, PolicyError> {
        let mut policy = Self::normal();
        match groundwork_cache
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("" | "default") => {}
            Some("bypass") => {
                policy.lookup = false;
                policy.store = false;
            }
            Some("refresh") => policy.lookup = false,
            Some(other) => {
                return Err(PolicyError(format!(
                    "x-groundwork-cache must be bypass or refresh, not {other:?}"
                )));
            }
        }
        for directive in cache_control
            .unwrap_or_default()
            .split(',')
            .map(|d| d.trim().to_ascii_lowercase())
        {
            match directive.as_str() {
                "no-store" => policy.store = false,
                "no-cache" => policy.lookup = false,
                // Other directives (max-age, ...) are for HTTP caches in between.
                _ => {}
            }
        }
        if let Some(ttl) = ttl.map(str::trim).filter(|t| !t.is_empty()) {
            let seconds: u64 = ttl.parse().map_err(|_| {
                PolicyError(format!(
                    "x-groundwork-cache-ttl must be a whole number of seconds, not {ttl:?}"
                ))
            })?;
            if seconds == 0 {
                policy.store = false;
            } else {
                policy.ttl = Some(Duration::from_secs(seconds));
            }
        }
        Ok(policy)
    }

    /// Whether the cache is used at all.
    #[must_use]
    pub fn uses_cache(&self) -> bool {
        self.lookup || self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_map_to_policies() -> Result<(), PolicyError> {
        assert_eq!(
            CachePolicy::from_headers(None, None, None)?,
            CachePolicy::normal()
        );
        let bypass = CachePolicy::from_headers(Some("BYPASS"), None, None)?;
        assert!(!bypass.uses_cache());
        let no_store = CachePolicy::from_headers(None, None, Some("max-age=0, no-store"))?;
        assert!(no_store.lookup && !no_store.store);
        let no_cache = CachePolicy::from_headers(None, None, Some("no-cache"))?;
        assert!(!no_cache.lookup && no_cache.store);
        let both = CachePolicy::from_headers(None, None, Some("no-cache, no-store"))?;
        assert!(!both.uses_cache());
        let zero = CachePolicy::from_headers(None, Some("0"), None)?;
        assert!(zero.lookup && !zero.store);
        assert!(CachePolicy::from_headers(None, Some("1.5"), None).is_err());
        assert!(CachePolicy::from_headers(None, Some("-3"), None).is_err());
        Ok(())
    }
}
