//! The client never has more requests in flight to one upstream than
//! `max_connections_per_upstream`, so it never opens more connections than that; the others
//! wait for a slot and all succeed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::time::Duration;

use client_common::{chat, client, collect, fast, upstream};
use futures_util::future::join_all;
use groundwork_llm::client::SseEvent;
use groundwork_testkit::openai::MockOpenAi;

#[tokio::test]
async fn concurrent_completions_open_at_most_the_cap_of_connections() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_latency(Duration::from_millis(50));
    let client = client(fast().max_connections_per_upstream(4));
    let target = upstream(&mock);

    let calls = (0..24).map(|n| {
        let client = client.clone();
        let target = target.clone();
        async move { client.complete(&target, &chat(&format!("call {n}"))).await }
    });
    let results = join_all(calls).await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(mock.calls(), 24);
    assert!(
        mock.connections() <= 4,
        "{} connections for a cap of 4",
        mock.connections()
    );
    // Without the cap, 24 concurrent calls open (nearly) one connection each.
    let uncapped = client_common::client(fast());
    let mock2 = MockOpenAi::start()?;
    mock2.set_latency(Duration::from_millis(50));
    let target2 = upstream(&mock2);
    let calls = (0..24).map(|n| {
        let client = uncapped.clone();
        let target = target2.clone();
        async move { client.complete(&target, &chat(&format!("call {n}"))).await }
    });
    join_all(calls).await;
    assert!(
        mock2.connections() > 4,
        "the comparison run should need more connections"
    );
    Ok(())
}

#[tokio::test]
async fn streams_hold_their_slot_until_they_end() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_latency(Duration::from_millis(30));
    let client = client(fast().max_connections_per_upstream(2));
    let target = upstream(&mock);

    let streams = (0..8).map(|n| {
        let client = client.clone();
        let target = target.clone();
        async move {
            let events = client.stream(&target, &chat(&format!("s {n}"))).await?;
            anyhow::Ok(collect(events).await)
        }
    });
    for items in join_all(streams).await {
        let items = items?;
        assert!(matches!(items.last(), Some(Ok(SseEvent::Done))));
    }
    assert_eq!(mock.calls(), 8);
    assert!(
        mock.connections() <= 2,
        "{} connections for a cap of 2",
        mock.connections()
    );
    Ok(())
}
