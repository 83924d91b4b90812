//! Groundwork's LLM layer: an OpenAI-compatible chat completions client on the shared HTTP
//! pool ([`client`]), canonical cache keys ([`key`]), a two-level response cache in memory and
//! Redis ([`cache`]), the caching proxy's core with single-flight misses and streams recorded
//! as they pass ([`gateway`], [`stream`]), and the cache directives of a request
//! ([`policy`]).
//!
//! ```
//! use groundwork_llm::key::cache_key;
//! use serde_json::json;
//!
//! // Key order, whitespace and number spellings do not change the key; the tenant does.
//! let a = cache_key("team-a", &json!({"model": "m", "temperature": 0, "messages": []}))?;
//! let b = cache_key("team-a", &json!({"messages": [], "temperature": 0.0, "model": "m"}))?;
//! let c = cache_key("team-b", &json!({"model": "m", "temperature": 0, "messages": []}))?;
//! assert_eq!(a, b);
//! assert_ne!(a, c);
//! # Ok::<(), groundwork_llm::key::KeyError>(())
//! ```

pub mod agent;
pub mod cache;
pub mod client;
pub mod gateway;
pub mod key;
pub mod policy;
pub mod stream;
