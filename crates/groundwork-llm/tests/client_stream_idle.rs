//! A stream that goes silent for longer than the idle timeout ends with a timeout error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::time::{Duration, Instant};

use client_common::{chat, client, collect, fast, upstream};
use groundwork_llm::client::{LlmError, SseEvent, TimeoutStage};
use groundwork_testkit::openai::MockOpenAi;

#[tokio::test]
async fn a_silence_after_the_first_event_ends_the_stream() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_chunk_delay(Duration::from_secs(30));
    let client = client(fast().idle_timeout(Duration::from_millis(200)));

    let started = Instant::now();
    let items = collect(client.stream(&upstream(&mock), &chat("hi")).await?).await;

    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(matches!(items[0], Ok(SseEvent::Data(_))));
    assert!(matches!(
        items[1],
        Err(LlmError::Timeout {
            stage: TimeoutStage::Idle,
            ..
        })
    ));
    assert_eq!(mock.calls(), 1);
    assert_eq!(client.stats().errors_timeout, 1);
    Ok(())
}

#[tokio::test]
async fn gaps_shorter_than_the_idle_timeout_are_fine() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_chunk_delay(Duration::from_millis(30));
    let client = client(fast().idle_timeout(Duration::from_secs(5)));

    let items = collect(client.stream(&upstream(&mock), &chat("hi")).await?).await;

    assert!(
        matches!(items.last(), Some(Ok(SseEvent::Done))),
        "{items:?}"
    );
    Ok(())
}
