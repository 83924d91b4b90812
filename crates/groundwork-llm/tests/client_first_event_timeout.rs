//! A stream whose first event does not come in time is retried, then fails with a timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::time::{Duration, Instant};

use client_common::{chat, client, collect, fast, upstream};
use groundwork_llm::client::{LlmError, SseEvent, TimeoutStage};
use groundwork_testkit::openai::MockOpenAi;

#[tokio::test]
async fn a_silent_stream_is_retried_then_times_out() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_first_byte_delay(Duration::from_secs(30));
    let client = client(fast().first_event_timeout(Duration::from_millis(200)));

    let started = Instant::now();
    let err = client
        .stream(&upstream(&mock), &chat("hi"))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();

    assert!(
        matches!(
            err,
            LlmError::Timeout {
                stage: TimeoutStage::FirstEvent,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(mock.calls(), 3, "3 attempts");
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(client.stats().errors_timeout, 3);
    Ok(())
}

#[tokio::test]
async fn the_timeout_also_covers_the_wait_for_headers() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_latency(Duration::from_secs(30));
    let client = client(fast().first_event_timeout(Duration::from_millis(100)));

    let err = client
        .stream(&upstream(&mock), &chat("hi"))
        .await
        .unwrap_err();

    assert!(matches!(err, LlmError::Timeout { .. }), "{err:?}");
    assert_eq!(mock.calls(), 3);
    Ok(())
}

#[tokio::test]
async fn a_slow_first_event_within_the_limit_is_fine() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_first_byte_delay(Duration::from_millis(100));
    let client = client(fast().first_event_timeout(Duration::from_secs(5)));

    let items = collect(client.stream(&upstream(&mock), &chat("hi")).await?).await;

    assert!(matches!(items.last(), Some(Ok(SseEvent::Done))));
    assert_eq!(mock.calls(), 1);
    Ok(())
}
