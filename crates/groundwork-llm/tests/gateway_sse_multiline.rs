//! An upstream event whose data spans several `data:` lines (here a JSON chunk cut in two
//! lines) reaches the client as valid SSE — one `data:` line per line — both when it is
//! passed through on a miss and when the recorded stream is replayed on a hit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt as _;
use groundwork_clients::http::{HttpClient, HttpClientOptions};
use groundwork_llm::cache::{ResponseCache, ResponseCacheOptions};
use groundwork_llm::client::{ClientOptions, LlmClient, Upstream};
use groundwork_llm::gateway::{ChatReply, ChatRequest, Gateway, GatewayOptions};
use groundwork_llm::policy::{CachePolicy, CacheStatus};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// The upstream's stream: the first chunk's JSON is written over two `data:` lines.
const STREAM: &str = concat!(
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\n",
    "data: \"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"finish_reason\":null}]}\n",
    "\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n",
    "\n",
    "data: [DONE]\n",
    "\n",
);

/// An HTTP/1.1 upstream answering every request with [`STREAM`] (one connection per
/// request); counts the requests.
async fn upstream() -> anyhow::Result<(Upstream, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let calls = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&calls);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0; 4096];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
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
                counter.fetch_add(1, Ordering::SeqCst);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{STREAM}",
                    STREAM.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok((Upstream::new(format!("http://{addr}/v1")), calls))
}

/// The raw bytes of a streamed answer, and where it came from.
async fn raw(gateway: &Gateway) -> (String, CacheStatus) {
    let request = ChatRequest {
        tenant: "t".to_owned(),
        body: json!({"model": "m", "temperature": 0, "stream": true, "messages": []}),
        policy: CachePolicy::normal(),
    };
    match gateway.chat(request).await.expect("an answer") {
        ChatReply::Stream { mut frames, cache } => {
            let mut bytes = Vec::new();
            while let Some(frame) = frames.next().await {
                bytes.extend_from_slice(&frame.expect("a whole stream"));
            }
            (String::from_utf8(bytes).expect("UTF-8"), cache)
        }
        other => panic!("expected a stream, got {other:?}"),
    }
}

/// The events of `text` read by the SSE rules (`data:` lines joined by `\n`), after checking
/// that every line is a `data:` field or an event's closing blank line.
fn events(text: &str) -> Vec<String> {
    assert!(text.ends_with("\n\n"), "{text:?}");
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|block| !block.is_empty()) {
        let lines: Vec<&str> = block
            .split('\n')
            .map(|line| {
                line.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data line: {line:?} in {text:?}"))
            })
            .collect();
        out.push(lines.join("\n"));
    }
    out
}

#[tokio::test]
async fn multi_line_events_stay_valid_sse_through_and_on_replay() -> anyhow::Result<()> {
    let (upstream, calls) = upstream().await?;
    let http = HttpClient::new(HttpClientOptions::new().proxy_from_env(false))?;
    let gateway = Gateway::new(
        LlmClient::new(http, ClientOptions::new()),
        upstream,
        ResponseCache::new(ResponseCacheOptions::new(), None),
        GatewayOptions::new(),
    );

    let (live, cache) = raw(&gateway).await;
    assert_eq!(cache, CacheStatus::Miss);
    let live_events = events(&live);
    assert_eq!(live_events.len(), 3, "{live:?}");
    assert!(
        live_events[0].contains('\n'),
        "the first event keeps its two lines"
    );
    let first: Value = serde_json::from_str(&live_events[0])?;
    assert_eq!(first["choices"][0]["delta"]["content"], "Hel");
    assert_eq!(live_events[2], "[DONE]");

    let (replay, cache) = raw(&gateway).await;
    assert_eq!(cache, CacheStatus::Hit, "the recorded stream was stored");
    assert_eq!(replay, live, "replayed byte for byte as passed through");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    Ok(())
}
