//! The total timeout bounds a whole call, attempts and waits included: retries stop at it,
//! the attempt in progress is cut by it, a `Retry-After` that would end past it is not
//! waited for (the upstream's answer is returned at once), and a timed-out attempt is
//! retried while time is left.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::time::{Duration, Instant};

use client_common::{chat, client, fast, upstream};
use groundwork_llm::client::{ClientOptions, LlmError, TimeoutStage};
use groundwork_resilience::RetryPolicy;
use groundwork_testkit::openai::MockOpenAi;
use reqwest::StatusCode;

#[tokio::test]
async fn retries_stop_at_the_total_timeout() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_latency(Duration::from_secs(30));
    // 5 attempts of 300 ms would take 1.5 s; the call may take 800 ms.
    let client = client(
        ClientOptions::new()
            .retry(
                RetryPolicy::new()
                    .max_attempts(5)
                    .base_delay(Duration::from_millis(2)),
            )
            .timeout(Duration::from_millis(300))
            .total_timeout(Duration::from_millis(800)),
    );

    let started = Instant::now();
    let err = client
        .complete(&upstream(&mock), &chat("hi"))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();

    assert!(
        matches!(
            err,
            LlmError::Timeout {
                stage: TimeoutStage::Total,
                ..
            }
        ),
        "the third attempt is cut by the total: {err:?}"
    );
    assert_eq!(mock.calls(), 3, "300 ms + 300 ms + the 200 ms left");
    assert!(elapsed >= Duration::from_millis(800), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1400), "{elapsed:?}");
    assert_eq!(client.stats().errors_timeout, 3);
    Ok(())
}

#[tokio::test]
async fn a_retry_after_past_the_deadline_is_not_waited_for() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.fail_next(1, 429, Some(Duration::from_secs(2)));
    // The Retry-After is under `max_retry_after` (30 s), but past the total timeout.
    let client = client(fast().total_timeout(Duration::from_secs(1)));

    let started = Instant::now();
    let err = client
        .complete(&upstream(&mock), &chat("hi"))
        .await
        .unwrap_err();

    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let LlmError::Upstream {
        status,
        retry_after,
        ..
    } = &err
    else {
        panic!("expected the upstream's answer, got {err:?}");
    };
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(*retry_after, Some(Duration::from_secs(2)), "passed on");
    assert_eq!(mock.calls(), 1);
    assert_eq!(client.stats().retries, 0);
    Ok(())
}

#[tokio::test]
async fn a_retry_after_within_the_deadline_is_waited_for() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.fail_next(1, 503, Some(Duration::from_secs(1)));
    let client = client(fast().total_timeout(Duration::from_secs(5)));

    let started = Instant::now();
    let reply = client.complete(&upstream(&mock), &chat("hi")).await?;

    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(mock.calls(), 2);
    Ok(())
}

#[tokio::test]
async fn a_stream_must_start_within_the_total_timeout() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_first_byte_delay(Duration::from_secs(30));
    let client = client(
        fast()
            .first_event_timeout(Duration::from_millis(300))
            .total_timeout(Duration::from_millis(500)),
    );

    let started = Instant::now();
    let err = client
        .stream(&upstream(&mock), &chat("hi"))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();

    assert!(
        matches!(
            err,
            LlmError::Timeout {
                stage: TimeoutStage::Total,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(mock.calls(), 2, "300 ms, then the 200 ms left");
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");
    Ok(())
}

#[tokio::test]
async fn with_the_default_retry_policy_a_timed_out_attempt_is_retried() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_latency(Duration::from_secs(30));
    // The default retry policy (no elapsed-time limit of its own); short attempts.
    let client = client(ClientOptions::new().timeout(Duration::from_millis(300)));

    let call = {
        let client = client.clone();
        let upstream = upstream(&mock);
        tokio::spawn(async move { client.complete(&upstream, &chat("hi")).await })
    };
    // Once the first attempt is in, the upstream answers at once.
    while mock.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    mock.set_latency(Duration::ZERO);
    let reply = call.await??;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(mock.calls(), 2);
    let stats = client.stats();
    assert_eq!((stats.retries, stats.errors_timeout), (1, 1));
    Ok(())
}
