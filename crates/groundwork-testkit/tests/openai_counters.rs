//! `calls` counts requests, `connections` TCP connections (keep-alive reuses one);
//! `last_request` and `last_authorization` tell what the last call carried; `reset` starts
//! over.

mod raw_http;

use std::io;
use std::time::Duration;

use groundwork_testkit::openai::MockOpenAi;
use raw_http::{Connection, PROMPT, chat};
use serde_json::Value;

#[tokio::test]
async fn calls_and_connections_with_keep_alive() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    assert_eq!((mock.calls(), mock.connections()), (0, 0));

    let mut first = Connection::open(mock.addr()).await?;
    for _ in 0..3 {
        assert_eq!(first.post(&chat("hi", false)).await?.head.status, 200);
    }
    assert_eq!((mock.calls(), mock.connections()), (3, 1));

    let mut second = Connection::open(mock.addr()).await?;
    let answer = second.post(&chat("hi", true)).await?;
    assert_eq!(answer.head.status, 200);
    assert_eq!((mock.calls(), mock.connections()), (4, 2));
    // The first connection is still open and reused.
    let answer = first.post(&chat("hi", false)).await?.json();
    assert_eq!(answer["id"], "chatcmpl-mock-5");
    assert_eq!((mock.calls(), mock.connections()), (5, 2));
    Ok(())
}

#[tokio::test]
async fn calls_are_counted_when_they_arrive() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_latency(Duration::from_secs(1));
    let mut connection = Connection::open(mock.addr()).await?;
    connection.send(&chat("slow", false), &[]).await?;
    let deadline = tokio::time::Instant::now() + PROMPT;
    while mock.calls() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(mock.calls(), 1);
    assert!(mock.last_request().is_some());
    Ok(())
}

#[tokio::test]
async fn last_request_and_authorization() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    assert_eq!(mock.last_request(), None);
    assert_eq!(mock.last_authorization(), None);

    let mut connection = Connection::open(mock.addr()).await?;
    let body = chat("remember me", false);
    connection
        .post_with(&body, &[("authorization", "Bearer sk-first")])
        .await?;
    let sent: Value = serde_json::from_str(&body)?;
    assert_eq!(mock.last_request(), Some(sent));
    assert_eq!(
        mock.last_authorization().as_deref(),
        Some("Bearer sk-first")
    );

    // Each call replaces them, also with nothing.
    connection.post("not json").await?;
    assert_eq!(mock.last_request(), None);
    assert_eq!(mock.last_authorization(), None);
    Ok(())
}

#[tokio::test]
async fn reset_starts_over() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    let mut connection = Connection::open(mock.addr()).await?;
    connection
        .post_with(&chat("hi", false), &[("authorization", "Bearer sk")])
        .await?;
    mock.fail_next(3, 500, None);
    mock.cut_stream_after(Some(1));
    mock.set_chunks(1);

    mock.reset();
    assert_eq!((mock.calls(), mock.connections()), (0, 0));
    assert_eq!(mock.last_request(), None);
    assert_eq!(mock.last_authorization(), None);
    // No failure, no cut, the default chunk count, and ids from 1 again.
    let answer = connection.post(&chat("hi", true)).await?;
    assert_eq!(answer.head.status, 200);
    let text = answer.text();
    assert!(text.contains(r#""id":"chatcmpl-mock-1""#), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(text.matches(r#""content":"#).count(), 4, "{text}");
    // The open connection stays open, but is not counted again.
    assert_eq!((mock.calls(), mock.connections()), (1, 0));

    let debug = format!("{mock:?}");
    assert!(debug.contains("calls: 1"), "{debug}");
    Ok(())
}
