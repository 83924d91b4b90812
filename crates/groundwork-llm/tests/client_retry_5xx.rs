//! 5xx answers are retried per the retry policy; the last one is passed on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use client_common::{chat, client, collect, fast, upstream};
use groundwork_core::{Classify as _, ErrorKind};
use groundwork_llm::client::{LlmError, SseEvent};
use groundwork_testkit::openai::MockOpenAi;
use reqwest::StatusCode;

#[tokio::test]
async fn two_500s_then_success_take_three_calls() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.fail_next(2, 500, None);
    let client = client(fast());

    let reply = client.complete(&upstream(&mock), &chat("hi")).await?;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(mock.calls(), 3);
    let stats = client.stats();
    assert_eq!((stats.attempts, stats.retries, stats.errors_5xx), (3, 2, 2));
    Ok(())
}

#[tokio::test]
async fn the_last_failure_is_passed_on_with_its_status_and_body() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.fail_next(5, 503, None);
    let client = client(fast());

    let err = client
        .complete(&upstream(&mock), &chat("hi"))
        .await
        .unwrap_err();

    assert_eq!(mock.calls(), 3, "3 attempts");
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let LlmError::Upstream {
        body, content_type, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(body)?;
    assert_eq!(body["error"]["code"], "server_error");
    Ok(())
}

#[tokio::test]
async fn a_stream_is_retried_before_its_first_event() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.fail_next(2, 502, None);
    let client = client(fast());

    let items = collect(client.stream(&upstream(&mock), &chat("hi")).await?).await;

    assert_eq!(mock.calls(), 3);
    assert!(matches!(items.last(), Some(Ok(SseEvent::Done))));
    Ok(())
}

#[tokio::test]
async fn a_501_is_not_retried() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.fail_next(5, 501, None);
    let client = client(fast());

    let err = client
        .complete(&upstream(&mock), &chat("hi"))
        .await
        .unwrap_err();

    assert_eq!(err.status(), Some(StatusCode::NOT_IMPLEMENTED));
    assert_eq!(mock.calls(), 1);
    Ok(())
}
