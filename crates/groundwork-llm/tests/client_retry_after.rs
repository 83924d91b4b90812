//! 429 answers are retried after their `Retry-After`, unless it asks for too long a wait.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::time::{Duration, Instant};

use client_common::{chat, client, fast, upstream};
use groundwork_llm::client::LlmError;
use groundwork_testkit::openai::MockOpenAi;
use reqwest::StatusCode;

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.fail_next(1, 429, Some(Duration::from_secs(1)));
    let client = client(fast());

    let started = Instant::now();
    let reply = client.complete(&upstream(&mock), &chat("hi")).await?;

    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}, less than Retry-After",
        started.elapsed()
    );
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(mock.calls(), 2);
    let stats = client.stats();
    assert_eq!((stats.retries, stats.errors_429), (1, 1));
    Ok(())
}

#[tokio::test]
async fn a_retry_after_over_the_cap_is_returned_at_once() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.fail_next(1, 429, Some(Duration::from_secs(2)));
    let client = client(fast().max_retry_after(Duration::from_secs(1)));

    let started = Instant::now();
    let err = client
        .complete(&upstream(&mock), &chat("hi"))
        .await
        .unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let LlmError::Upstream {
        status,
        retry_after,
        body,
        ..
    } = &err
    else {
        panic!("expected the upstream's answer, got {err:?}");
    };
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        *retry_after,
        Some(Duration::from_secs(2)),
        "passed on to the caller"
    );
    assert!(String::from_utf8_lossy(body).contains("rate_limit_exceeded"));
    assert_eq!(mock.calls(), 1);
    assert_eq!(client.stats().retries, 0);
    Ok(())
}

#[tokio::test]
async fn a_stream_waits_for_retry_after_too() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.fail_next(1, 503, Some(Duration::from_secs(1)));
    let client = client(fast());

    let started = Instant::now();
    let stream = client.stream(&upstream(&mock), &chat("hi")).await?;

    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(client_common::collect(stream).await.len(), 4 + 3);
    assert_eq!(mock.calls(), 2);
    Ok(())
}
