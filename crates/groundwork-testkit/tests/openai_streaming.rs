//! With `"stream": true` the answer is server-sent events in OpenAI's chunk format: the role
//! chunk, the content chunks, the finish chunk (and the usage chunk when asked for), then
//! `[DONE]`; the content chunks joined are the plain answer's content.

mod raw_http;

use std::io;

use groundwork_testkit::openai::{MockOpenAi, MockOptions};
use raw_http::{Connection, chat, sse_json};
use serde_json::{Value, json};

#[tokio::test]
async fn stream_has_the_openai_chunk_format() -> io::Result<()> {
    let mock = MockOpenAi::start_with(MockOptions::new().chunks(3))?;
    let mut connection = Connection::open(mock.addr()).await?;
    let response = connection.post(&chat("tell me a story", true)).await?;

    assert_eq!(response.head.status, 200);
    assert_eq!(
        response.head.header("content-type"),
        Some("text/event-stream")
    );
    assert_eq!(response.head.header("transfer-encoding"), Some("chunked"));
    // Every event is `data: …` and a blank line (checked by the parser).
    let events = sse_json(&response.body)?;
    assert_eq!(events.len(), 1 + 3 + 1 + 1, "{}", response.text());

    for chunk in &events[..5] {
        assert_eq!(chunk["id"], "chatcmpl-mock-1");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["created"], 1_700_000_000);
        assert_eq!(chunk["model"], "gpt-mock");
        assert_eq!(chunk["choices"][0]["index"], 0);
        assert!(chunk.get("usage").is_none(), "{chunk}");
    }
    let role = &events[0]["choices"][0];
    assert_eq!(role["delta"], json!({"role": "assistant"}));
    assert_eq!(role["finish_reason"], Value::Null);

    let mut streamed = String::new();
    for chunk in &events[1..4] {
        let choice = &chunk["choices"][0];
        assert_eq!(choice["finish_reason"], Value::Null);
        assert!(choice["delta"].get("role").is_none(), "{chunk}");
        let piece = choice["delta"]["content"].as_str().unwrap_or_default();
        assert!(!piece.is_empty(), "{chunk}");
        streamed.push_str(piece);
    }

    let finish = &events[4]["choices"][0];
    assert_eq!(finish["delta"], json!({}));
    assert_eq!(finish["finish_reason"], "stop");
    assert_eq!(events[5], Value::Null, "[DONE] last");
    assert!(response.text().ends_with("data: [DONE]\n\n"));

    // The same request without streaming: the same content.
    let plain = connection
        .post(&chat("tell me a story", false))
        .await?
        .json();
    assert_eq!(plain["choices"][0]["message"]["content"], streamed.as_str());
    assert_eq!(streamed, "echo: tell me a story");
    Ok(())
}

#[tokio::test]
async fn usage_chunk_comes_last_when_asked_for() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    let mut connection = Connection::open(mock.addr()).await?;
    let request = json!({
        "model": "gpt-mock",
        "messages": [{"role": "user", "content": "count my words"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let response = connection.post(&request.to_string()).await?;
    let events = sse_json(&response.body)?;
    // Role, 4 content chunks (the default), finish, usage, [DONE].
    assert_eq!(events.len(), 8, "{}", response.text());
    for chunk in &events[..6] {
        assert_eq!(chunk["usage"], Value::Null, "{chunk}");
        assert!(chunk.get("usage").is_some(), "{chunk}");
    }
    let usage = &events[6];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    );
    assert_eq!(events[7], Value::Null);
    Ok(())
}

#[tokio::test]
async fn chunk_count_follows_the_setting() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    let mut connection = Connection::open(mock.addr()).await?;
    for (chunks, expected) in [(1, 1), (5, 5), (100, "echo: abc".len())] {
        mock.set_chunks(chunks);
        let response = connection.post(&chat("abc", true)).await?;
        let events = sse_json(&response.body)?;
        assert_eq!(events.len(), expected + 3, "{chunks}: {}", response.text());
        let content: String = events[1..=expected]
            .iter()
            .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "echo: abc");
    }
    Ok(())
}
