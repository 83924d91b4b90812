//! [`parallel_chat`]: several LLM calls at once, one deadline, one result per call.

use std::time::Duration;

use groundwork_core::{Classify, ErrorKind};
use groundwork_resilience::{Elapsed, parallel};
use serde_json::Value;

use super::AgentError;
use super::prompt::{AssistantMessage, completion_of};
use crate::gateway::{ChatRequest, Gateway, GatewayError};
use crate::policy::CacheStatus;

/// A complete (non-streaming) chat completion, from [`parallel_chat`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChatCompletion {
    /// The `chat.completion` object.
    pub body: Value,
    /// Where it came from.
    pub cache: CacheStatus,
}

impl ChatCompletion {
    /// The assistant's message (of the first choice), if there is one.
    #[must_use]
    pub fn message(&self) -> Option<AssistantMessage> {
        AssistantMessage::from_completion(&self.body)
    }

    /// The assistant's text (of the first choice), if there is one.
    #[must_use]
    pub fn content(&self) -> Option<&str> {
        self.body.pointer("/choices/0/message/content")?.as_str()
    }
}

/// Why one call of [`parallel_chat`] has no completion.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatCallError {
    /// The deadline passed before the call was answered; the call was cancelled
    /// (`Unavailable`).
    #[error("the LLM call did not finish in time")]
    Elapsed(#[source] Elapsed),
    /// The gateway could not answer: a bad request, or the upstream's failure with its
    /// status (the [`GatewayError`]'s kind).
    #[error("the LLM call failed")]
    Gateway(#[source] GatewayError),
    /// The upstream answered, but not with a JSON completion (`Internal`).
    #[error("unusable LLM answer: {reason}")]
    BadAnswer {
        /// What is wrong with it.
        reason: String,
    },
}

impl ChatCallError {
    /// Whether the call ran out of time.
    #[must_use]
    pub fn is_elapsed(&self) -> bool {
        matches!(self, Self::Elapsed(_))
    }
}

impl Classify for ChatCallError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Elapsed(elapsed) => elapsed.kind(),
            Self::Gateway(err) => err.kind(),
            Self::BadAnswer { .. } => ErrorKind::Internal,
        }
    }
}

/// Sends every request through `gateway` at once and waits at most `limit` for all of them
/// (built on [`groundwork_resilience::parallel`]; the seeds' parallel AI calls used
/// [`DEFAULT_PARALLEL_TIMEOUT`](groundwork_resilience::DEFAULT_PARALLEL_TIMEOUT), 30 s).
/// The results come back in the requests' order, one per request: the completion, or why
/// there is none — [`ChatCallError::Elapsed`] for the calls still running at the deadline
/// (they are cancelled; one slow call never hides the others' answers).
///
/// The calls go through the [`Gateway`], not straight to the client, so they share its
/// cache and single flight: a request already answered is a cache hit, and identical
/// requests in the batch make one upstream call. Each request is answered as one complete
/// completion: a `"stream": true` is turned off and `stream_options` dropped (neither is
/// part of the cache key, so a recorded stream still answers it). Each request keeps its
/// own tenant and cache policy.
///
/// ```no_run
/// use std::time::Duration;
/// use groundwork_llm::agent::parallel_chat;
/// use groundwork_llm::gateway::{ChatRequest, Gateway};
/// use groundwork_llm::policy::CachePolicy;
/// use serde_json::json;
///
/// async fn summarise_all(gateway: &Gateway, texts: &[&str]) {
///     let requests = texts
///         .iter()
///         .map(|text| ChatRequest {
///             tenant: "reports".to_owned(),
///             body: json!({"model": "gpt-4o-mini", "temperature": 0,
///                          "messages": [{"role": "user", "content": format!("Summarise: {text}")}]}),
///             policy: CachePolicy::normal(),
///         })
///         .collect();
///     for (text, result) in texts.iter().zip(parallel_chat(gateway, requests, Duration::from_secs(30)).await) {
///         match result {
///             Ok(completion) => println!("{text}: {}", completion.content().unwrap_or_default()),
///             Err(err) => println!("{text}: {}", groundwork_core::error_chain(&err)),
///         }
///     }
/// }
/// ```
pub async fn parallel_chat(
    gateway: &Gateway,
    requests: Vec<ChatRequest>,
    limit: Duration,
) -> Vec<Result<ChatCompletion, ChatCallError>> {
    let calls = requests.into_iter().map(|mut request| {
        if let Some(body) = request.body.as_object_mut()
            && body.contains_key("stream")
        {
            body.insert("stream".to_owned(), Value::Bool(false));
            body.remove("stream_options");
        }
        async move {
            let reply = gateway
                .chat(request)
                .await
                .map_err(ChatCallError::Gateway)?;
            let cache = reply.cache_status();
            let body = completion_of(reply).map_err(|err| ChatCallError::BadAnswer {
                reason: match err {
                    AgentError::BadAnswer { reason } => reason,
                    other => other.to_string(),
                },
            })?;
            Ok(ChatCompletion { body, cache })
        }
    });
    parallel(calls, limit)
        .await
        .into_iter()
        .map(|result| result.unwrap_or_else(|elapsed| Err(ChatCallError::Elapsed(elapsed))))
        .collect()
}
