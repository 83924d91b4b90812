//! Event streams are parsed from the bytes as they come off the wire: events split across
//! TCP segments, `\r\n` line ends, comments, multi-line data; a body that ends without
//! `[DONE]` is reported as truncated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::time::Duration;

use client_common::{chat, client, collect, fast};
use groundwork_llm::client::{LlmError, SseEvent, StreamCut, Upstream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// A one-connection HTTP/1.1 server that answers the first request with `head`, then writes
/// each of `chunks` as one chunk of a chunked body, in its own TCP segment, then ends the
/// body. Returns the base URL.
async fn serve(head: &'static str, chunks: Vec<&'static [u8]>) -> anyhow::Result<Upstream> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.set_nodelay(true).unwrap();
        // Read the request: headers, then `content-length` bytes of body.
        let mut request = Vec::new();
        let mut buf = [0; 4096];
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|value| value.trim().parse().ok())
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
        }
        socket.write_all(head.as_bytes()).await.unwrap();
        for chunk in chunks {
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(chunk);
            framed.extend_from_slice(b"\r\n");
            socket.write_all(&framed).await.unwrap();
            socket.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        socket.write_all(b"0\r\n\r\n").await.unwrap();
        // Keep the connection open until the client is done with it.
        let _ = socket.read(&mut buf).await;
    });
    Ok(Upstream::new(format!("http://{addr}/v1")))
}

const STREAM_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

fn data(text: &str) -> SseEvent {
    SseEvent::Data(bytes::Bytes::copy_from_slice(text.as_bytes()))
}

#[tokio::test]
async fn events_split_across_segments_are_put_back_together() -> anyhow::Result<()> {
    let upstream = serve(
        STREAM_HEAD,
        vec![
            b": OPENROUTER PROCESSING\r\n\r\n",
            b"data: {\"choices\":[{\"delta\":",
            b"{\"content\":\"Hel\"}}]}\r",
            b"\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\ndata: first line\nda",
            b"ta: second line\n\nevent: ping\ndata: [DONE]\n\n",
        ],
    )
    .await?;
    let client = client(fast());

    let items = collect(client.stream(&upstream, &chat("hi")).await?).await;
    let items: Vec<SseEvent> = items.into_iter().collect::<Result<_, _>>()?;

    assert_eq!(
        items,
        [
            data("{\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}"),
            data("{\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}"),
            data("first line\nsecond line"),
            SseEvent::Done,
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_body_that_ends_without_done_is_truncated() -> anyhow::Result<()> {
    let upstream = serve(
        STREAM_HEAD,
        vec![b"data: {\"a\":1}\n\ndata: {\"b\":", b"2}\n"],
    )
    .await?;
    let client = client(fast());

    let items = collect(client.stream(&upstream, &chat("hi")).await?).await;

    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().ok(), Some(&data("{\"a\":1}")));
    assert!(
        matches!(
            items[1],
            Err(LlmError::StreamAborted {
                events: 1,
                cause: StreamCut::EndedEarly
            })
        ),
        "{:?}",
        items[1]
    );
    Ok(())
}

#[tokio::test]
async fn a_json_answer_to_a_stream_is_reported_with_its_body() -> anyhow::Result<()> {
    let upstream = serve(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        vec![b"{\"choices\":[]}"],
    )
    .await?;
    let client = client(fast());

    let err = client.stream(&upstream, &chat("hi")).await.unwrap_err();

    let LlmError::NotAStream { body, status, .. } = err else {
        panic!("{err:?}");
    };
    assert_eq!(status.as_u16(), 200);
    assert_eq!(body.as_ref(), b"{\"choices\":[]}");
    Ok(())
}
