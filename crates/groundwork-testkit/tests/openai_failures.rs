//! `fail_next` makes the next calls answer an error status with an OpenAI-style body and a
//! `Retry-After` header; then calls succeed again.

mod raw_http;

use std::io;
use std::time::Duration;

use groundwork_testkit::openai::MockOpenAi;
use raw_http::{Connection, chat};

#[tokio::test]
async fn rate_limited_with_retry_after_then_success() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.fail_next(2, 429, Some(Duration::from_secs(2)));
    let mut connection = Connection::open(mock.addr()).await?;
    for _ in 0..2 {
        let response = connection.post(&chat("hi", false)).await?;
        assert_eq!(response.head.status, 429);
        assert_eq!(response.head.header("retry-after"), Some("2"));
        assert_eq!(
            response.head.header("content-type"),
            Some("application/json")
        );
        let error = &response.json()["error"];
        assert_eq!(error["type"], "requests");
        assert_eq!(error["code"], "rate_limit_exceeded");
        assert!(error["message"].is_string());
    }
    let response = connection.post(&chat("hi", false)).await?;
    assert_eq!(response.head.status, 200);
    assert_eq!(response.head.header("retry-after"), None);
    assert_eq!(
        response.json()["choices"][0]["message"]["content"],
        "echo: hi"
    );
    // Every call counted; the errors kept the connection alive.
    assert_eq!((mock.calls(), mock.connections()), (3, 1));
    assert_eq!(response.json()["id"], "chatcmpl-mock-3");
    Ok(())
}

#[tokio::test]
async fn server_errors_with_and_without_retry_after() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    let mut connection = Connection::open(mock.addr()).await?;

    mock.fail_next(1, 500, None);
    let response = connection.post(&chat("hi", false)).await?;
    assert_eq!(response.head.status, 500);
    assert_eq!(response.head.header("retry-after"), None);
    assert_eq!(response.json()["error"]["type"], "server_error");

    // Rounded up to whole seconds.
    mock.fail_next(1, 503, Some(Duration::from_millis(1500)));
    let response = connection.post(&chat("hi", false)).await?;
    assert_eq!(response.head.status, 503);
    assert_eq!(response.head.header("retry-after"), Some("2"));

    // Streams fail the same way, with a JSON body.
    mock.fail_next(1, 429, Some(Duration::ZERO));
    let response = connection.post(&chat("hi", true)).await?;
    assert_eq!(response.head.status, 429);
    assert_eq!(response.head.header("retry-after"), Some("0"));
    assert_eq!(response.json()["error"]["code"], "rate_limit_exceeded");

    assert_eq!(connection.post(&chat("hi", true)).await?.head.status, 200);
    Ok(())
}

#[tokio::test]
async fn failures_can_be_replaced_and_cancelled() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    let mut connection = Connection::open(mock.addr()).await?;
    mock.fail_next(5, 500, None);
    mock.fail_next(1, 429, None);
    assert_eq!(connection.post(&chat("hi", false)).await?.head.status, 429);
    assert_eq!(connection.post(&chat("hi", false)).await?.head.status, 200);

    mock.fail_next(3, 500, None);
    mock.fail_next(0, 500, None);
    assert_eq!(connection.post(&chat("hi", false)).await?.head.status, 200);
    Ok(())
}

#[tokio::test]
#[should_panic(expected = "not an HTTP status code")]
async fn invalid_status_panics() {
    if let Ok(mock) = MockOpenAi::start() {
        mock.fail_next(1, 42, None);
    }
}
