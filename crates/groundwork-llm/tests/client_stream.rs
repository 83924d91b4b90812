//! A streaming call gives the upstream's events in order, `Done` last, then the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use client_common::{chat, client, collect, delta, fast, json_of, upstream};
use groundwork_llm::client::SseEvent;
use groundwork_testkit::openai::MockOpenAi;
use serde_json::json;

#[tokio::test]
async fn events_arrive_in_order_and_end_with_done() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_chunks(4);
    let client = client(fast());

    let stream = client
        .stream(&upstream(&mock), &chat("stream me please"))
        .await?;
    let items: Vec<SseEvent> = collect(stream)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;

    // Role chunk, 4 content chunks, finish chunk, [DONE].
    assert_eq!(items.len(), 7, "{items:?}");
    assert_eq!(items.last(), Some(&SseEvent::Done));
    let data = &items[..items.len() - 1];
    assert!(data.iter().all(|event| matches!(event, SseEvent::Data(_))));
    assert_eq!(
        json_of(&data[0])["choices"][0]["delta"]["role"],
        "assistant"
    );
    let text: String = data.iter().map(delta).collect();
    assert_eq!(text, "echo: stream me please");
    assert_eq!(json_of(&data[5])["choices"][0]["finish_reason"], "stop");
    assert!(
        data.iter()
            .all(|event| json_of(event)["object"] == "chat.completion.chunk"),
        "each data event is one JSON chunk, as sent"
    );

    let sent = mock.last_request().unwrap();
    assert_eq!(sent["stream"], true, "stream is switched on");
    let stats = client.stats();
    assert_eq!((stats.calls, stats.stream_calls), (1, 1));
    assert_eq!((stats.streams_completed, stats.streams_aborted), (1, 0));
    Ok(())
}

#[tokio::test]
async fn stream_options_are_kept() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let client = client(fast());
    let mut body = chat("count me");
    body["stream_options"] = json!({"include_usage": true});

    let items = collect(client.stream(&upstream(&mock), &body).await?).await;
    let items: Vec<SseEvent> = items.into_iter().collect::<Result<_, _>>()?;

    let usage = json_of(&items[items.len() - 2]);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(items.last(), Some(&SseEvent::Done));
    Ok(())
}
