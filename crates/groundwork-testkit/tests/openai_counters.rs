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

/// `GET path` (or `POST`) on a connection of its own, closed after the answer; the JSON body.
async fn counts_over_http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> io::Result<Value> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(PROMPT, stream.read_to_end(&mut answer)).await??;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no HTTP answer: {text}")))?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).map_err(io::Error::other)
}

#[tokio::test]
async fn open_connections_their_peak_and_closes() -> io::Result<()> {
    use groundwork_testkit::openai::ConnectionCounts;
    let mock = MockOpenAi::start()?;
    let counts = |accepted, open, peak_open, closed| ConnectionCounts {
        accepted,
        open,
        peak_open,
        closed,
    };
    // Counted once a request on it was answered, so the accept is surely done.
    let mut connections = Vec::new();
    for _ in 0..3 {
        let mut connection = Connection::open(mock.addr()).await?;
        assert_eq!(connection.post(&chat("hi", false)).await?.head.status, 200);
        connections.push(connection);
    }
    assert_eq!(mock.connection_counts(), counts(3, 3, 3, 0));

    connections.truncate(1);
    let deadline = tokio::time::Instant::now() + PROMPT;
    while mock.connection_counts().closed < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(mock.connection_counts(), counts(3, 1, 3, 2));
    mock.reset_peak_open();
    assert_eq!(mock.connection_counts(), counts(3, 1, 1, 2));

    // Over HTTP, for a benchmark in another process: its own connection is accepted, but
    // carries no chat call, so it is not open in the counts.
    let seen = counts_over_http(mock.addr(), "GET", "/mock/connections").await?;
    assert_eq!(
        seen,
        serde_json::json!({"accepted": 4, "open": 1, "peak_open": 1, "closed": 2})
    );
    let mut another = Connection::open(mock.addr()).await?;
    assert_eq!(another.post(&chat("hi", false)).await?.head.status, 200);
    assert_eq!(mock.connection_counts(), counts(5, 2, 2, 2));
    drop(another);
    let deadline = tokio::time::Instant::now() + PROMPT;
    while mock.connection_counts().closed < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let seen = counts_over_http(mock.addr(), "POST", "/mock/connections/reset-peak").await?;
    assert_eq!(
        seen,
        serde_json::json!({"accepted": 6, "open": 1, "peak_open": 1, "closed": 3})
    );
    assert_eq!(mock.calls(), 4, "counter reads are not calls");
    Ok(())
}
