//! `POST /v1/chat/completions` answers an OpenAI-shaped, deterministic completion, and a
//! malformed request an OpenAI-style `400`.

mod raw_http;

use std::io;

use groundwork_testkit::openai::MockOpenAi;
use raw_http::{Connection, chat};
use serde_json::{Value, json};

#[tokio::test]
async fn completion_has_the_openai_shape() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    let mut connection = Connection::open(mock.addr()).await?;
    let response = connection.post(&chat("hello there", false)).await?;

    assert_eq!(response.head.status, 200);
    assert_eq!(
        response.head.header("content-type"),
        Some("application/json")
    );
    assert_eq!(
        response.json(),
        json!({
            "id": "chatcmpl-mock-1",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-mock",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "echo: hello there"},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            // Word counts: "You are a test." and "hello there"; "echo: hello there".
            "usage": {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9},
        })
    );
    Ok(())
}

#[tokio::test]
async fn the_same_request_gets_the_same_answer_but_the_id() -> io::Result<()> {
    let request = chat("what is 2 + 2?", false);
    let mock = MockOpenAi::start()?;
    let mut connection = Connection::open(mock.addr()).await?;
    let mut first = connection.post(&request).await?.json();
    let mut second = connection.post(&request).await?.json();
    assert_eq!(first["id"], "chatcmpl-mock-1");
    assert_eq!(second["id"], "chatcmpl-mock-2");
    first["id"] = Value::Null;
    second["id"] = Value::Null;
    assert_eq!(first, second);
    assert_eq!(
        first["choices"][0]["message"]["content"],
        "echo: what is 2 + 2?"
    );

    // Another mock answers the very same bytes to its first call.
    let other = MockOpenAi::start()?;
    let mut connection = Connection::open(other.addr()).await?;
    let again = connection.post(&request).await?;
    let mut again_json = again.json();
    assert_eq!(again_json["id"], "chatcmpl-mock-1");
    again_json["id"] = Value::Null;
    assert_eq!(again_json, first);
    Ok(())
}

#[tokio::test]
async fn the_model_is_echoed_and_the_last_user_message_answered() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    let mut connection = Connection::open(mock.addr()).await?;
    let request = json!({
        "model": "other-model",
        "temperature": 0,
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "echo: first question"},
            {"role": "user", "content": [
                {"type": "text", "text": "second"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "text", "text": "question"},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
    });
    let answer = connection.post(&request.to_string()).await?.json();
    assert_eq!(answer["model"], "other-model");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: second question"
    );
    Ok(())
}

#[tokio::test]
async fn malformed_requests_get_an_openai_error() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    let mut connection = Connection::open(mock.addr()).await?;
    for body in [
        "not json",
        "[]",
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"m","messages":"hi"}"#,
    ] {
        let response = connection.post(body).await?;
        assert_eq!(response.head.status, 400, "{body}");
        let error = &response.json()["error"];
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert!(error["message"].is_string(), "{body}");
    }
    // Counted, and the connection is still usable.
    assert_eq!(mock.calls(), 4);
    let response = connection.post(&chat("fine", false)).await?;
    assert_eq!(response.head.status, 200);
    Ok(())
}
