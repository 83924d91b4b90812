//! Helpers shared by the `client_*` tests: a client on a fresh HTTP pool, fast retries, and
//! request bodies for the fake upstream (`groundwork_testkit::openai::MockOpenAi`).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt as _;
use groundwork_clients::http::{HttpClient, HttpClientOptions};
use groundwork_llm::client::{ClientOptions, EventStream, LlmClient, LlmError, SseEvent, Upstream};
use groundwork_resilience::RetryPolicy;
use groundwork_testkit::openai::MockOpenAi;
use serde_json::{Value, json};

/// A client on its own HTTP pool (no proxies from the environment).
pub fn client(options: ClientOptions) -> LlmClient {
    let http = HttpClient::new(HttpClientOptions::new().proxy_from_env(false))
        .expect("the HTTP client builds");
    LlmClient::new(http, options)
}

/// The defaults with 3 attempts and backoff delays under a few milliseconds.
pub fn fast() -> ClientOptions {
    ClientOptions::new().retry(
        RetryPolicy::new()
            .max_attempts(3)
            .base_delay(Duration::from_millis(2)),
    )
}

/// The mock, with an API key.
pub fn upstream(mock: &MockOpenAi) -> Upstream {
    Upstream::new(mock.base_url()).with_api_key("sk-test")
}

/// A chat request asking the mock to echo `text`.
pub fn chat(text: &str) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
    })
}

/// Every item of `stream`, to its end.
pub async fn collect(stream: EventStream) -> Vec<Result<SseEvent, LlmError>> {
    stream.collect().await
}

/// The JSON of a data event.
pub fn json_of(event: &SseEvent) -> Value {
    match event {
        SseEvent::Data(bytes) => serde_json::from_slice(bytes).expect("a JSON event"),
        SseEvent::Done => panic!("expected data, got [DONE]"),
    }
}

/// The content of a streamed chunk (`choices[0].delta.content`), or "" if it has none.
pub fn delta(event: &SseEvent) -> String {
    json_of(event)["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
