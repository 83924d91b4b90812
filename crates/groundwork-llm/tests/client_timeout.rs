//! A non-streaming attempt that takes longer than the timeout is retried, then fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::time::{Duration, Instant};

use client_common::{chat, client, fast, upstream};
use groundwork_llm::client::{LlmError, TimeoutStage};
use groundwork_testkit::openai::MockOpenAi;

#[tokio::test]
async fn a_slow_answer_times_out_after_each_attempt() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_latency(Duration::from_secs(30));
    let client = client(fast().timeout(Duration::from_millis(200)));

    let started = Instant::now();
    let err = client
        .complete(&upstream(&mock), &chat("hi"))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();

    assert!(
        matches!(
            err,
            LlmError::Timeout {
                stage: TimeoutStage::Request,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(mock.calls(), 3);
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    Ok(())
}

#[tokio::test]
async fn the_http_clients_own_timeout_does_not_apply() -> anyhow::Result<()> {
    // The shared pool's total timeout is shorter than the answer takes; the LLM client's
    // own, longer one applies instead.
    let mock = MockOpenAi::start()?;
    mock.set_latency(Duration::from_millis(300));
    let http = groundwork_clients::http::HttpClient::new(
        groundwork_clients::http::HttpClientOptions::new()
            .proxy_from_env(false)
            .timeout(Duration::from_millis(100)),
    )?;
    let client = groundwork_llm::client::LlmClient::new(http, fast());

    client.complete(&upstream(&mock), &chat("hi")).await?;
    let items = client_common::collect(client.stream(&upstream(&mock), &chat("hi")).await?).await;

    assert!(items.iter().all(Result::is_ok));
    assert_eq!(mock.calls(), 2);
    Ok(())
}
