//! Canonical cache keys for OpenAI-compatible requests.
//!
//! Two requests that ask a model for the same thing must get the same key, whatever JSON
//! spelling their clients chose; two requests that can get different answers must get
//! different keys. The scheme:
//!
//! 1. The request body must be a JSON object. Its top-level [`TRANSPORT_FIELDS`] (`stream`,
//!    `user`, `metadata`, …) are left out: they change how the answer is delivered or
//!    accounted, never what it says. **Every other field is kept**, including fields this
//!    module has never heard of (provider parameters such as `top_k`, `repetition_penalty` or
//!    `reasoning_effort`): a cache that drops unknown fields serves one configuration's
//!    answer to another. Fields are removed at the top level only; a `stream` key inside a
//!    tool's JSON schema is content.
//! 2. What remains is written as [RFC 8785] (JCS) canonical JSON by [`canonical_json`]:
//!    members sorted by the UTF-16 code units of their names at every depth, no whitespace,
//!    strings with only the escapes JCS requires, and every number as an IEEE 754 double in
//!    ECMAScript's `Number.prototype.toString` form. Key order, whitespace, escape spellings
//!    (`\u00e9` or `é`, `\/` or `/`) and number spellings (`1`, `1.0`, `10e-1`) therefore do
//!    not matter.
//! 3. The key is SHA-256 over a length-prefixed encoding of a domain tag, [`KEY_VERSION`],
//!    the tenant (the API key's name: one tenant never reads another's answers) and the
//!    canonical JSON, so no choice of tenant and body can imitate another pair. It is shown
//!    as `v1:` and 64 lowercase hex digits.
//!
//! Any change to this scheme, or a dependency update that changes a canonical form, must
//! bump [`KEY_VERSION`]; the golden vectors in `tests/key_golden.rs` fail if keys change
//! silently.
//!
//! ```
//! use groundwork_llm::key::{cache_key, canonical_json};
//! use serde_json::json;
//!
//! let a: serde_json::Value = serde_json::from_str(
//!     r#"{"model": "gpt-4o", "temperature": 0.0, "stream": true,
//!         "messages": [{"role": "user", "content": "caf\u00e9"}]}"#,
//! )?;
//! let b = json!({
//!     "messages": [{"content": "café", "role": "user"}],
//!     "temperature": 0,
//!     "model": "gpt-4o",
//! });
//! // Key order, escapes, number spelling and the transport field `stream` do not matter…
//! assert_eq!(cache_key("team-a", &a)?, cache_key("team-a", &b)?);
//! assert!(cache_key("team-a", &a)?.as_str().starts_with("v1:"));
//! // …but the tenant and every other field do.
//! assert_ne!(cache_key("team-a", &a)?, cache_key("team-b", &a)?);
//! let mut c = b.clone();
//! c["top_k"] = json!(40);
//! assert_ne!(cache_key("team-a", &b)?, cache_key("team-a", &c)?);
//!
//! assert_eq!(canonical_json(&json!({"b": 1e21, "a": [1.0, -0.0]}))?, r#"{"a":[1,0],"b":1e+21}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [RFC 8785]: https://www.rfc-editor.org/rfc/rfc8785

use std::collections::BTreeMap;
use std::fmt;

use groundwork_core::{Classify, ErrorKind};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The version of the key scheme, written into every key (`v1:…`) and hashed with it.
///
/// Bump it whenever the same request could get a different key: a change to
/// [`TRANSPORT_FIELDS`], to the hashed encoding, or to a canonical form. Old entries then stop
/// matching instead of being served for requests they do not answer.
pub const KEY_VERSION: u32 = 1;

/// Top-level request fields that do not affect the model's output and are left out of the key.
///
/// Each is there for a reason:
///
/// - `stream`: the same completion, delivered as server-sent events instead of one body. The
///   cache stores the complete answer and can replay it either way.
/// - `stream_options`: only `include_usage`, an extra usage chunk at the end of a stream.
/// - `user` and `safety_identifier`: identify the end user for the provider's abuse
///   monitoring; they do not steer generation.
/// - `metadata`: tags for the provider's stored-completions dashboard.
/// - `store`: whether the provider keeps the completion for distillation or evals.
/// - `service_tier`: the provider's latency and price tier (`auto`, `default`, `flex`,
///   `priority`), not the model or its sampling; a cache hit uses no tier at all.
/// - `prompt_cache_key` and `prompt_cache_retention`: routing hints and retention for the
///   provider's own prompt-prefix cache, which changes cost and latency, not output.
/// - `request_id`: a client's correlation id.
///
/// Fields that look administrative but do change the answer are kept on purpose:
/// `parallel_tool_calls` (whether several tool calls may come in one turn), `logprobs`,
/// `top_logprobs`, `n`, `modalities`, `audio`, `prediction`, `reasoning_effort`,
/// `verbosity`, `web_search_options`, and every field not listed here.
pub const TRANSPORT_FIELDS: &[&str] = &[
    "metadata",
    "prompt_cache_key",
    "prompt_cache_retention",
    "request_id",
    "safety_identifier",
    "service_tier",
    "store",
    "stream",
    "stream_options",
    "user",
];

/// Prefix of every hashed key input, so that these digests cannot be confused with SHA-256
/// digests computed elsewhere over similar bytes.
const DOMAIN: &[u8] = b"groundwork-llm/response-cache-key";

/// Why a request could not be given a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The request body is not a JSON object.
    #[error("the request body must be a JSON object, not {found}")]
    NotAnObject {
        /// The JSON type that was found instead (`array`, `string`, …).
        found: &'static str,
    },
    /// The value cannot be written as RFC 8785 canonical JSON: a number lies outside the
    /// range of an IEEE 754 double. Only reachable when serde_json's `arbitrary_precision`
    /// feature lets such a number into a [`Value`]; without it the parser rejects it first.
    #[error("the request cannot be written as canonical JSON")]
    Canonicalize {
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
}

impl Classify for KeyError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotAnObject { .. } => ErrorKind::BadRequest,
            Self::Canonicalize { .. } => ErrorKind::Invalid,
        }
    }
}

/// Writes `value` as [RFC 8785] (JCS) canonical JSON.
///
/// Object members are sorted by the UTF-16 code units of their names at every depth; there
/// is no whitespace; strings escape only `"`, `\` and the control characters (`\b`, `\t`,
/// `\n`, `\f`, `\r`, and `\u00xx` with lowercase hex for the others), so `/` and non-ASCII
/// text are written as they are; numbers are written as ECMAScript's
/// `Number.prototype.toString` writes them (`1.0` → `1`, `1e21` → `1e+21`, `-0` → `0`).
///
/// JCS treats every number as an IEEE 754 double. serde_json keeps integers up to 64 bits
/// exactly, so an integer beyond 2<sup>53</sup> is rounded to the nearest double here:
/// `9007199254740993` is written `9007199254740992`, the same as JavaScript would write it.
/// Two such neighbours therefore share a canonical form (and a cache key); a client that
/// needs them apart must send them as strings, as RFC 8785 §6 advises.
///
/// The work is done by the `serde_json_canonicalizer` crate, which the RFC's reference
/// repository lists as its Rust implementation and which formats numbers with `ryu-js`. It
/// also turns on serde_json's `float_roundtrip` feature, so every spelling of a decimal
/// number parses to the same, correctly rounded double.
///
/// ```
/// use groundwork_llm::key::canonical_json;
/// use serde_json::json;
///
/// let value = json!({"b": [1.0, 1e-7, 0.000001], "a": "x/y\n"});
/// assert_eq!(canonical_json(&value)?, r#"{"a":"x/y\n","b":[1,1e-7,0.000001]}"#);
/// # Ok::<(), groundwork_llm::key::KeyError>(())
/// ```
///
/// # Errors
///
/// [`KeyError::Canonicalize`] if a number does not fit an IEEE 754 double (possible only
/// with serde_json's `arbitrary_precision` feature).
///
/// [RFC 8785]: https://www.rfc-editor.org/rfc/rfc8785
pub fn canonical_json(value: &Value) -> Result<String, KeyError> {
    serde_json_canonicalizer::to_string(value).map_err(|source| KeyError::Canonicalize { source })
}

/// The canonical JSON that [`cache_key`] hashes for `request`: the request without its
/// top-level [`TRANSPORT_FIELDS`], written by [`canonical_json`].
///
/// Useful to store next to a cached answer, to see exactly what a key stands for.
///
/// ```
/// use groundwork_llm::key::canonical_request;
/// use serde_json::json;
///
/// let request = json!({"stream": true, "model": "m", "top_k": 40.0, "user": "u-1"});
/// assert_eq!(canonical_request(&request)?, r#"{"model":"m","top_k":40}"#);
/// # Ok::<(), groundwork_llm::key::KeyError>(())
/// ```
///
/// # Errors
///
/// [`KeyError::NotAnObject`] if `request` is not a JSON object, and
/// [`KeyError::Canonicalize`] as for [`canonical_json`].
pub fn canonical_request(request: &Value) -> Result<String, KeyError> {
    let Value::Object(fields) = request else {
        return Err(KeyError::NotAnObject {
            found: groundwork_core::json_type(request),
        });
    };
    // Borrow instead of cloning: request bodies can carry large base64 images. The
    // canonicalizer sorts members itself; the map only filters.
    let kept: BTreeMap<&str, &Value> = fields
        .iter()
        .filter(|(name, _)| !TRANSPORT_FIELDS.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str(), value))
        .collect();
    serde_json_canonicalizer::to_string(&kept).map_err(|source| KeyError::Canonicalize { source })
}

/// The cache key of `request` for `tenant` (the name of the API key that sent it).
///
/// See the [module documentation](self) for the scheme.
///
/// ```
/// use groundwork_llm::key::cache_key;
/// use serde_json::json;
///
/// let key = cache_key("team-a", &json!({"model": "m", "messages": []}))?;
/// assert!(key.as_str().starts_with("v1:"));
/// assert_eq!(key.as_str().len(), 3 + 64);
/// assert_eq!(key.to_string(), key.as_str());
/// # Ok::<(), groundwork_llm::key::KeyError>(())
/// ```
///
/// # Errors
///
/// [`KeyError::NotAnObject`] if `request` is not a JSON object, and
/// [`KeyError::Canonicalize`] as for [`canonical_json`].
pub fn cache_key(tenant: &str, request: &Value) -> Result<CacheKey, KeyError> {
    let canonical = canonical_request(request)?;
    let mut hasher = Sha256::new();
    hash_part(&mut hasher, DOMAIN);
    hasher.update(KEY_VERSION.to_be_bytes());
    hash_part(&mut hasher, tenant.as_bytes());
    hash_part(&mut hasher, canonical.as_bytes());
    let digest = hasher.finalize();

    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = format!("v{KEY_VERSION}:");
    text.reserve(2 * digest.len());
    for byte in digest.iter() {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    Ok(CacheKey(text))
}

/// Feeds `part` to `hasher` after its length as 8 big-endian bytes, so that the boundary
/// between parts is part of the hashed input.
fn hash_part(hasher: &mut Sha256, part: &[u8]) {
    // `usize` is at most 64 bits on every target Rust supports, so the cast is lossless.
    hasher.update((part.len() as u64).to_be_bytes());
    hasher.update(part);
}

/// Whether `request` asks for a reproducible answer: it gives a non-null `seed`, or an
/// explicit `temperature` of zero (in any spelling: `0`, `0.0`, `-0`, `0e3`).
///
/// The proxy caches other requests only when its "cache non-deterministic requests" setting
/// is on (it is off by default). A request that leaves `temperature` out, or sends `null`,
/// gets the provider's default, which is 1 for OpenAI: it samples, so it is **not**
/// deterministic. `n` does not change the verdict: at temperature 0 the `n` choices are all
/// the greedy answer, and with a seed the provider reproduces all of them; without either,
/// `n > 1` asks for several different samples and is not deterministic anyway. A body that
/// is not a JSON object is not deterministic (it cannot be keyed anyway).
///
/// ```
/// use groundwork_llm::key::is_deterministic;
/// use serde_json::json;
///
/// assert!(is_deterministic(&json!({"model": "m", "temperature": 0.0})));
/// assert!(is_deterministic(&json!({"model": "m", "temperature": 0.7, "seed": 7})));
/// assert!(is_deterministic(&json!({"model": "m", "seed": 7})));
/// assert!(is_deterministic(&json!({"model": "m", "temperature": 0, "n": 3})));
/// assert!(!is_deterministic(&json!({"model": "m"})), "the provider's default is 1");
/// assert!(!is_deterministic(&json!({"model": "m", "temperature": 0.7})));
/// ```
#[must_use]
pub fn is_deterministic(request: &Value) -> bool {
    let Value::Object(fields) = request else {
        return false;
    };
    if fields.get("seed").is_some_and(|seed| !seed.is_null()) {
        return true;
    }
    match fields.get("temperature") {
        Some(Value::Number(temperature)) => temperature.as_f64().is_some_and(|t| t == 0.0),
        _ => false,
    }
}

/// A response-cache key: `v<version>:` and the SHA-256 digest in 64 lowercase hex digits.
///
/// Built by [`cache_key`]. Safe to use as a Redis key or a log field: it reveals neither the
/// tenant nor the request.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key as text, e.g. `v1:3f0c…` (3 + 64 characters for version 1).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an owned string.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for CacheKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn key(tenant: &str, request: &Value) -> String {
        cache_key(tenant, request).unwrap().into_string()
    }

    #[test]
    fn non_objects_are_bad_requests() {
        for body in [
            json!(null),
            json!(true),
            json!(1),
            json!("x"),
            json!([{"model": "m"}]),
        ] {
            let err = cache_key("t", &body).unwrap_err();
            assert!(matches!(err, KeyError::NotAnObject { .. }), "{err}");
            assert_eq!(err.kind(), ErrorKind::BadRequest);
        }
        let err = cache_key("t", &json!([1])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the request body must be a JSON object, not an array"
        );
    }

    #[test]
    fn key_text_is_version_and_lowercase_hex() {
        let key = cache_key("t", &json!({})).unwrap();
        let (version, hex) = key.as_str().split_once(':').unwrap();
        assert_eq!(version, "v1");
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(key.to_string(), key.as_str());
        assert_eq!(key.as_ref(), key.as_str());
    }

    #[test]
    fn key_is_sha256_of_the_length_prefixed_parts() {
        let request = json!({"model": "m", "stream": true});
        let canonical = br#"{"model":"m"}"#;
        let mut input = Vec::new();
        input.extend_from_slice(&(DOMAIN.len() as u64).to_be_bytes());
        input.extend_from_slice(DOMAIN);
        input.extend_from_slice(&1u32.to_be_bytes());
        input.extend_from_slice(&4u64.to_be_bytes());
        input.extend_from_slice(b"team");
        input.extend_from_slice(&(canonical.len() as u64).to_be_bytes());
        input.extend_from_slice(canonical);
        let digest = Sha256::digest(&input);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(key("team", &request), format!("v1:{hex}"));
    }

    #[test]
    fn tenant_and_body_boundary_is_unambiguous() {
        // With plain concatenation "a" + "b…" and "ab" + "…" could hash the same bytes.
        let request = json!({"model": "m"});
        assert_ne!(key("a", &request), key("ab", &request));
        assert_ne!(key("", &request), key("{", &request));
        assert_ne!(key("tenant", &request), key("tenant\0", &request));
    }

    #[test]
    fn transport_fields_are_dropped_at_the_top_level_only() {
        let bare = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let mut noisy = bare.clone();
        for (i, field) in TRANSPORT_FIELDS.iter().enumerate() {
            noisy[*field] = json!({"anything": i});
        }
        assert_eq!(key("t", &bare), key("t", &noisy));

        // The same names inside the body are content.
        let nested =
            json!({"model": "m", "messages": [{"role": "user", "content": "hi", "user": "x"}]});
        assert_ne!(key("t", &bare), key("t", &nested));
        let in_tool = json!({"model": "m", "tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {"stream": {"type": "boolean"}}}}}]});
        assert!(canonical_request(&in_tool).unwrap().contains("\"stream\""));
    }

    #[test]
    fn output_fields_and_unknown_fields_are_kept() {
        let request = json!({
            "model": "m", "parallel_tool_calls": false, "logprobs": true, "top_logprobs": 2,
            "reasoning_effort": "low", "top_k": 40, "repetition_penalty": 1.1, "stream": false,
        });
        assert_eq!(
            canonical_request(&request).unwrap(),
            r#"{"logprobs":true,"model":"m","parallel_tool_calls":false,"reasoning_effort":"low","repetition_penalty":1.1,"top_k":40,"top_logprobs":2}"#
        );
    }

    #[test]
    fn null_and_absent_fields_differ() {
        // A provider may treat `"stop": null` and no `stop` alike, but the key does not guess.
        assert_ne!(
            key("t", &json!({"model": "m"})),
            key("t", &json!({"model": "m", "stop": null}))
        );
    }

    #[test]
    fn integers_are_doubles() {
        assert_eq!(
            canonical_json(&json!(9_007_199_254_740_993u64)).unwrap(),
            "9007199254740992"
        );
        assert_eq!(
            canonical_json(&json!(u64::MAX)).unwrap(),
            "18446744073709552000"
        );
        assert_eq!(
            canonical_json(&json!(i64::MIN)).unwrap(),
            "-9223372036854776000"
        );
        let parsed: Value = serde_json::from_str("[1, 1.0, 1e0, 10E-1, 0.10e1, -0, 100]").unwrap();
        assert_eq!(canonical_json(&parsed).unwrap(), "[1,1,1,1,1,0,100]");
    }

    #[test]
    fn determinism() {
        for temperature in ["0", "0.0", "-0", "0e3", "-0.0E-5"] {
            let body: Value =
                serde_json::from_str(&format!(r#"{{"model":"m","temperature":{temperature}}}"#))
                    .unwrap();
            assert!(is_deterministic(&body), "{temperature}");
        }
        // Absent or null: the provider's default temperature (1 for OpenAI) applies.
        assert!(!is_deterministic(&json!({"model": "m"})));
        assert!(!is_deterministic(
            &json!({"model": "m", "temperature": null})
        ));
        assert!(!is_deterministic(&json!({"model": "m", "n": 2})));
        assert!(is_deterministic(&json!({"model": "m", "seed": 3})));
        assert!(is_deterministic(
            &json!({"model": "m", "temperature": 0, "n": 2})
        ));
        assert!(is_deterministic(&json!({"temperature": 1.2, "seed": 0})));
        assert!(is_deterministic(
            &json!({"temperature": 1.2, "seed": "abc"})
        ));
        assert!(!is_deterministic(&json!({"temperature": 1e-9})));
        assert!(!is_deterministic(&json!({"temperature": 1, "seed": null})));
        assert!(!is_deterministic(&json!({"temperature": "0"})));
        assert!(!is_deterministic(&json!([])));
    }

    #[test]
    fn errors_classify() {
        let err = KeyError::NotAnObject { found: "null" };
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        let source = serde_json::from_str::<Value>("{").unwrap_err();
        let err = KeyError::Canonicalize { source };
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert!(std::error::Error::source(&err).is_some());
    }
}
