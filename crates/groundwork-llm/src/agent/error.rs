//! [`AgentError`]: why one attempt of an agent failed.

use groundwork_core::{Classify, ErrorKind};

use crate::gateway::GatewayError;

/// A boxed cause.
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why one attempt of an agent failed. Its [`kind`](Classify::kind) says whether another
/// attempt may succeed: only `Unavailable` errors are retried by the
/// [`AgentRunner`](super::AgentRunner).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The input is not something this agent can process (`Invalid`; not retried).
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong with it.
        reason: String,
    },
    /// The agent has no runtime configuration: no such agent (`NotFound`; not retried).
    #[error("agent {agent_id} has no runtime configuration")]
    NotConfigured {
        /// The agent's id.
        agent_id: i64,
    },
    /// The agent's runtime configuration could not be loaded (retried when `kind` is
    /// `Unavailable`: a database or cache that cannot be reached).
    #[error("cannot load the runtime configuration of agent {agent_id}")]
    Config {
        /// The agent's id.
        agent_id: i64,
        /// The kind of the provider's error.
        kind: ErrorKind,
        /// The provider's error.
        #[source]
        source: Cause,
    },
    /// The LLM call failed: its kind is the [`GatewayError`]'s — 429, the 5xx of an
    /// overloaded or unreachable server, connection failures, timeouts and an open breaker
    /// are `Unavailable` (retried); other 4xx answers are not.
    #[error("the LLM call failed{}", upstream_message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Llm {
        /// The upstream's own error message (`error.message` of an OpenAI-style error
        /// body), when it sent one.
        upstream_message: Option<String>,
        /// What failed.
        #[source]
        source: GatewayError,
    },
    /// The LLM answered, but not with a usable chat completion (`Internal`; not retried).
    #[error("unusable LLM answer: {reason}")]
    BadAnswer {
        /// What is wrong with it.
        reason: String,
    },
    /// Something the agent depends on is unavailable for now (`Unavailable`; retried).
    #[error("{reason}")]
    Unavailable {
        /// What is unavailable.
        reason: String,
        /// The cause, if any.
        #[source]
        source: Option<Cause>,
    },
    /// Any other failure (`Internal`; not retried).
    #[error("{reason}")]
    Failed {
        /// What failed.
        reason: String,
        /// The cause, if any.
        #[source]
        source: Option<Cause>,
    },
}

impl AgentError {
    /// [`AgentError::InvalidInput`].
    #[must_use]
    pub fn invalid_input(reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            reason: reason.into(),
        }
    }

    /// [`AgentError::Unavailable`] without a cause: retried.
    #[must_use]
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    /// [`AgentError::Failed`] without a cause: not retried.
    #[must_use]
    pub fn failed(reason: impl Into<String>) -> Self {
        Self::Failed {
            reason: reason.into(),
            source: None,
        }
    }

    /// `err` as [`AgentError::Unavailable`] when its kind is retryable, else as
    /// [`AgentError::Failed`], with `reason` as the summary and `err` as the cause.
    #[must_use]
    pub fn from_classified<E>(reason: impl Into<String>, err: E) -> Self
    where
        E: std::error::Error + Classify + Send + Sync + 'static,
    {
        let reason = reason.into();
        if err.kind().is_retryable() {
            Self::Unavailable {
                reason,
                source: Some(Box::new(err)),
            }
        } else {
            Self::Failed {
                reason,
                source: Some(Box::new(err)),
            }
        }
    }

    /// Whether another attempt may succeed (the kind is `Unavailable`).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

impl Classify for AgentError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidInput { .. } => ErrorKind::Invalid,
            Self::NotConfigured { .. } => ErrorKind::NotFound,
            Self::Config { kind, .. } => *kind,
            Self::Llm { source, .. } => source.kind(),
            Self::Unavailable { .. } => ErrorKind::Unavailable,
            Self::BadAnswer { .. } | Self::Failed { .. } => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("down")]
    struct Down;

    impl Classify for Down {
        fn kind(&self) -> ErrorKind {
            ErrorKind::Unavailable
        }
    }

    #[test]
    fn only_unavailable_errors_are_retryable() {
        assert!(AgentError::unavailable("busy").is_retryable());
        assert!(AgentError::from_classified("lookup", Down).is_retryable());
        assert!(!AgentError::failed("bug").is_retryable());
        assert!(!AgentError::invalid_input("empty").is_retryable());
        assert!(!AgentError::NotConfigured { agent_id: 1 }.is_retryable());
        assert_eq!(
            groundwork_core::error_chain(&AgentError::from_classified("lookup", Down)),
            "lookup: down"
        );
    }
}
