//! `cut_stream_after` closes the connection after the first events of a stream, before the
//! end of the chunked body and without `[DONE]`.

mod raw_http;

use std::io;

use groundwork_testkit::openai::{MockOpenAi, MockOptions};
use raw_http::{Connection, chat, sse_data, sse_json};

/// Sends a stream request and reads the chunks until the body ends or the connection does.
/// Returns the body so far and whether it ended properly.
async fn stream(connection: &mut Connection) -> io::Result<(Vec<u8>, bool)> {
    connection.send(&chat("hello world", true), &[]).await?;
    let head = connection.head().await?;
    assert_eq!(head.status, 200);
    let mut body = Vec::new();
    loop {
        match connection.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok((body, true)),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                return Ok((body, false));
            }
            Err(err) => return Err(err),
        }
    }
}

#[tokio::test]
async fn cut_stream_ends_the_connection_without_done() -> io::Result<()> {
    // Role, 4 content chunks, finish, [DONE]: 7 events.
    let mock = MockOpenAi::start_with(MockOptions::new().chunks(4))?;
    mock.cut_stream_after(Some(2));
    let mut connection = Connection::open(mock.addr()).await?;
    let (body, ended) = stream(&mut connection).await?;
    assert!(!ended, "the chunked body must not end");
    let events = sse_json(&body)?;
    assert_eq!(events.len(), 2, "{}", String::from_utf8_lossy(&body));
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(events[1]["choices"][0]["delta"]["content"].is_string());
    assert!(connection.closed().await);

    // Just before [DONE]: everything else arrived.
    mock.cut_stream_after(Some(6));
    let mut connection = Connection::open(mock.addr()).await?;
    let (body, ended) = stream(&mut connection).await?;
    assert!(!ended);
    let events = sse_data(&body)?;
    assert_eq!(events.len(), 6);
    assert!(!events.iter().any(|data| data == "[DONE]"));
    assert!(events[5].contains(r#""finish_reason":"stop""#));

    // Right after the headers.
    mock.cut_stream_after(Some(0));
    let mut connection = Connection::open(mock.addr()).await?;
    let (body, ended) = stream(&mut connection).await?;
    assert!(!ended && body.is_empty());
    assert_eq!(mock.connections(), 3);
    Ok(())
}

#[tokio::test]
async fn streams_end_normally_when_not_cut() -> io::Result<()> {
    let mock = MockOpenAi::start_with(MockOptions::new().chunks(4))?;
    let mut connection = Connection::open(mock.addr()).await?;

    // A cut longer than the stream cuts nothing.
    mock.cut_stream_after(Some(7));
    let (body, ended) = stream(&mut connection).await?;
    assert!(ended);
    assert_eq!(sse_data(&body)?.last().map(String::as_str), Some("[DONE]"));

    // Plain completions are not cut.
    mock.cut_stream_after(Some(0));
    let plain = connection.post(&chat("hello world", false)).await?;
    assert_eq!(plain.head.status, 200);

    mock.cut_stream_after(None);
    let (body, ended) = stream(&mut connection).await?;
    assert!(ended);
    assert_eq!(sse_data(&body)?.len(), 7);
    // All over one connection.
    assert_eq!((mock.calls(), mock.connections()), (3, 1));
    Ok(())
}
