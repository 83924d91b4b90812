//! Sequential calls reuse one pooled connection, streams included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::time::Duration;

use client_common::{chat, client, collect, fast, upstream};
use futures_util::StreamExt as _;
use groundwork_llm::client::SseEvent;
use groundwork_testkit::openai::MockOpenAi;

#[tokio::test]
async fn sequential_completions_share_one_connection() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let client = client(fast());

    for n in 0..10 {
        client
            .complete(&upstream(&mock), &chat(&format!("call {n}")))
            .await?;
    }

    assert_eq!(mock.calls(), 10);
    assert_eq!(mock.connections(), 1);
    Ok(())
}

#[tokio::test]
async fn streams_read_to_their_end_give_their_connection_back() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let client = client(fast());

    for n in 0..5 {
        let items = collect(
            client
                .stream(&upstream(&mock), &chat(&format!("s {n}")))
                .await?,
        )
        .await;
        assert!(matches!(items.last(), Some(Ok(SseEvent::Done))));
        client.complete(&upstream(&mock), &chat("between")).await?;
    }

    assert_eq!(mock.calls(), 10);
    assert_eq!(mock.connections(), 1);
    Ok(())
}

#[tokio::test]
async fn a_stream_dropped_at_done_gives_its_connection_back_too() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let client = client(fast());

    for _ in 0..3 {
        let mut events = client.stream(&upstream(&mock), &chat("hi")).await?;
        while let Some(event) = events.next().await {
            if event? == SseEvent::Done {
                break;
            }
        }
        drop(events); // the rest of the body is read in the background
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(mock.calls(), 3);
    assert_eq!(mock.connections(), 1);
    Ok(())
}

#[tokio::test]
async fn clones_share_the_pool() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let client = client(fast());

    for clone in [client.clone(), client.clone(), client.clone()] {
        clone.complete(&upstream(&mock), &chat("hi")).await?;
    }

    assert_eq!(mock.connections(), 1);
    assert_eq!(client.stats().calls, 3, "clones share the counters");
    Ok(())
}
