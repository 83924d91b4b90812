//! A non-streaming call sends the body as given and returns the upstream's answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use client_common::{chat, client, fast, upstream};
use groundwork_llm::client::Upstream;
use groundwork_testkit::openai::MockOpenAi;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn the_answer_comes_back_byte_for_byte() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let client = client(fast());

    let reply = client.complete(&upstream(&mock), &chat("hello")).await?;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let answer: Value = serde_json::from_slice(&reply.body)?;
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: hello");
    assert_eq!(answer["id"], "chatcmpl-mock-1");
    assert_eq!(mock.last_authorization().as_deref(), Some("Bearer sk-test"));
    let stats = client.stats();
    assert_eq!((stats.calls, stats.attempts, stats.retries), (1, 1, 0));
    assert_eq!(stats.upstream_errors(), 0);
    Ok(())
}

#[tokio::test]
async fn unknown_and_provider_fields_reach_the_upstream() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let client = client(fast());
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi", "name": "ann"}],
        "temperature": 0.2,
        "top_k": 40,
        "repetition_penalty": 1.1,
        "provider": {"order": ["a", "b"], "allow_fallbacks": false},
        "x_unknown": null,
    });

    client.complete(&upstream(&mock), &body).await?;

    assert_eq!(
        mock.last_request(),
        Some(body),
        "sent as given, nothing added"
    );
    Ok(())
}

#[tokio::test]
async fn a_stream_flag_is_turned_off_with_its_options() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let client = client(fast());
    let mut body = chat("hello");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});

    let reply = client.complete(&upstream(&mock), &body).await?;

    assert_eq!(reply.content_type.as_deref(), Some("application/json"));
    let mut expected = chat("hello");
    expected["stream"] = json!(false);
    assert_eq!(mock.last_request(), Some(expected));
    Ok(())
}

#[tokio::test]
async fn without_a_key_no_authorization_is_sent() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let client = client(fast());

    client
        .complete(&Upstream::new(format!("{}/", mock.base_url())), &chat("x"))
        .await?;

    assert_eq!(mock.last_authorization(), None);
    Ok(())
}
