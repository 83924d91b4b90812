//! Helpers of the gateway tests: a gateway over the testkit's mock upstream, and readers of
//! its answers.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use futures_util::StreamExt as _;
use groundwork_clients::http::{HttpClient, HttpClientOptions};
use groundwork_clients::redis::RedisClient;
use groundwork_llm::cache::{ResponseCache, ResponseCacheOptions};
use groundwork_llm::client::{ClientOptions, LlmClient, Upstream};
use groundwork_llm::gateway::{ChatReply, ChatRequest, Gateway, GatewayError, GatewayOptions};
use groundwork_llm::policy::{CachePolicy, CacheStatus};
use groundwork_testkit::openai::MockOpenAi;
use serde_json::{Value, json};

pub(crate) fn gateway(mock: &MockOpenAi, redis: Option<RedisClient>) -> Gateway {
    let http = HttpClient::new(HttpClientOptions::new()).expect("HTTP client");
    Gateway::new(
        LlmClient::new(http, ClientOptions::new()),
        Upstream::new(mock.base_url()),
        ResponseCache::new(ResponseCacheOptions::new(), redis),
        GatewayOptions::new(),
    )
}

pub(crate) fn request(content: &str, stream: bool) -> Value {
    json!({
        "model": "mock-1",
        "temperature": 0,
        "stream": stream,
        "messages": [{"role": "user", "content": content}]
    })
}

pub(crate) fn ask(body: Value) -> ChatRequest {
    ChatRequest {
        tenant: "tester".to_owned(),
        body,
        policy: CachePolicy::normal(),
    }
}

/// What an answer amounted to.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) cache: CacheStatus,
    /// The JSON body (non-streaming), or the assembled `data:` payloads (streaming).
    pub(crate) json: Option<Value>,
    pub(crate) events: Vec<Value>,
    pub(crate) done: bool,
    /// A stream that ended with an error item.
    pub(crate) cut: bool,
}

impl Answer {
    /// The assistant's text: the message content, or the concatenated deltas.
    pub(crate) fn text(&self) -> String {
        if let Some(json) = &self.json {
            return json["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
        self.events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect()
    }
}

pub(crate) async fn read(reply: Result<ChatReply, GatewayError>) -> Answer {
    match reply.expect("an answer") {
        ChatReply::Json {
            status,
            body,
            cache,
            ..
        } => {
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            Answer {
                cache,
                json: Some(serde_json::from_slice(&body).expect("JSON body")),
                events: Vec::new(),
                done: false,
                cut: false,
            }
        }
        ChatReply::Stream { mut frames, cache } => {
            let mut raw = Vec::new();
            let mut cut = false;
            while let Some(frame) = frames.next().await {
                match frame {
                    Ok(bytes) => raw.extend_from_slice(&bytes),
                    Err(_) => {
                        cut = true;
                        break;
                    }
                }
            }
            let text = String::from_utf8(raw).expect("UTF-8 stream");
            let mut events = Vec::new();
            let mut done = false;
            for block in text.split("\n\n").filter(|b| !b.is_empty()) {
                let data = block.strip_prefix("data: ").expect("a data frame");
                if data == "[DONE]" {
                    done = true;
                } else {
                    events.push(serde_json::from_str(data).expect("a JSON chunk"));
                }
            }
            Answer {
                cache,
                json: None,
                events,
                done,
                cut,
            }
        }
    }
}

pub(crate) fn bytes(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}
