//! 4xx answers other than 429 are not retried and are passed on as they came.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use client_common::{client, fast, upstream};
use groundwork_core::{Classify as _, ErrorKind};
use groundwork_llm::client::LlmError;
use groundwork_resilience::BreakerState;
use groundwork_testkit::openai::MockOpenAi;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_400_is_passed_on_with_its_status_and_body() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let client = client(fast());
    let bad = json!({"model": "gpt-4o-mini", "messages": "not a list"});

    let err = client.complete(&upstream(&mock), &bad).await.unwrap_err();

    assert_eq!(mock.calls(), 1, "not retried");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    let LlmError::Upstream {
        status,
        body,
        content_type,
        retry_after,
    } = err
    else {
        panic!("expected the upstream's answer");
    };
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(retry_after, None);
    let body: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(body["error"]["message"], "'messages' must be an array.");
    let stats = client.stats();
    assert_eq!((stats.errors_4xx, stats.retries), (1, 0));
    Ok(())
}

#[tokio::test]
async fn client_errors_are_not_retried_nor_held_against_the_upstream() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let client = client(fast());
    let body = client_common::chat("hi");

    for status in [400, 401, 403, 404, 409, 413, 422] {
        mock.fail_next(1, status, None);
        let err = client.complete(&upstream(&mock), &body).await.unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(status));
        let err = {
            mock.fail_next(1, status, None);
            client.stream(&upstream(&mock), &body).await.unwrap_err()
        };
        assert_eq!(err.status().map(|s| s.as_u16()), Some(status));
    }

    assert_eq!(mock.calls(), 14, "one call each");
    let breaker = &client.stats().breakers[0];
    assert_eq!(breaker.state, BreakerState::Closed);
    assert_eq!(breaker.failures, 0);
    Ok(())
}
