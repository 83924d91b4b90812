//! Shared vocabulary of the Groundwork crates: the kinds of failure every layer reports
//! ([`ErrorKind`], [`Classify`]), an injectable monotonic [`clock`], and the serde helper for
//! partial updates ([`patch`]).
//!
//! This crate stays small on purpose: anything that belongs to one concern lives in that
//! concern's crate.
//!
//! ```
//! use groundwork_core::{Classify, ErrorKind};
//!
//! #[derive(Debug)]
//! struct Missing;
//! impl Classify for Missing {
//!     fn kind(&self) -> ErrorKind {
//!         ErrorKind::NotFound
//!     }
//! }
//!
//! assert_eq!(Missing.kind(), ErrorKind::NotFound);
//! assert!(!Missing.kind().is_retryable());
//! assert!(ErrorKind::Unavailable.is_retryable());
//! ```

pub mod clock;
pub mod patch;
mod redact;

pub use redact::redact_url;

use std::fmt;

/// What went wrong, independent of the layer that noticed it.
///
/// Each library error enum maps its variants to one of these kinds, so that the server can
/// choose an HTTP status and resilience policies can decide whether a retry may help, without
/// knowing every error type in the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input cannot be understood (malformed syntax, bad parameters).
    BadRequest,
    /// The thing asked for does not exist.
    NotFound,
    /// The request conflicts with the current state (a unique value already taken).
    Conflict,
    /// The input is well-formed but breaks a rule (length, referenced row missing, check).
    Invalid,
    /// A dependency cannot be reached or is overloaded; trying again later may succeed.
    Unavailable,
    /// A bug or an unexpected state; details belong in the logs, not in the response.
    Internal,
}

impl ErrorKind {
    /// Whether trying the same operation again can succeed without changing the input.
    #[must_use]
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Unavailable)
    }

    /// A stable, lowercase name for the kind (used in logs and metrics).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Invalid => "invalid",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by error types that can say which [`ErrorKind`] they are.
pub trait Classify {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;
}

/// `err` and its sources, joined with `: ` (for logs and health reports, where the cause
/// matters as much as the summary).
///
/// ```
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot load tools")]
/// struct Load(#[source] std::io::Error);
///
/// let err = Load(std::io::Error::other("connection refused"));
/// assert_eq!(groundwork_core::error_chain(&err), "cannot load tools: connection refused");
/// ```
#[must_use]
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The JSON type of `value` as an error message names it: `null`, `a boolean`, `a number`,
/// `a string`, `an array`, `an object`.
///
/// ```
/// assert_eq!(groundwork_core::json_type(&serde_json::json!([1])), "an array");
/// ```
#[must_use]
pub fn json_type(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
