//! Repeated outages open the upstream's breaker; calls then fail at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::time::{Duration, Instant};

use client_common::{chat, client, fast, upstream};
use groundwork_core::{Classify as _, ErrorKind};
use groundwork_llm::client::LlmError;
use groundwork_resilience::{BreakerConfig, BreakerState, RetryPolicy};
use groundwork_testkit::openai::MockOpenAi;

#[tokio::test]
async fn repeated_5xx_open_the_breaker_which_then_fails_fast() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.fail_next(100, 500, None);
    let client = client(
        fast()
            .retry(RetryPolicy::new().max_attempts(1))
            .breaker(|name| {
                BreakerConfig::new(name)
                    .consecutive_failures(3)
                    .open_for(Duration::from_secs(60))
            }),
    );

    for _ in 0..3 {
        let err = client
            .complete(&upstream(&mock), &chat("hi"))
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Upstream { .. }), "{err:?}");
    }
    let started = Instant::now();
    let err = client
        .complete(&upstream(&mock), &chat("hi"))
        .await
        .unwrap_err();
    let stream_err = client
        .stream(&upstream(&mock), &chat("hi"))
        .await
        .unwrap_err();

    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, LlmError::CircuitOpen { .. }), "{err:?}");
    assert!(
        matches!(stream_err, LlmError::CircuitOpen { .. }),
        "{stream_err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(mock.calls(), 3, "nothing sent while open");
    let stats = client.stats();
    assert_eq!(stats.rejected, 2);
    assert_eq!(stats.breakers.len(), 1);
    let breaker = &stats.breakers[0];
    assert_eq!(breaker.name, format!("llm:{}", mock.addr()));
    assert_eq!(breaker.state, BreakerState::Open);
    Ok(())
}

#[tokio::test]
async fn retries_stop_when_the_breaker_opens() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.fail_next(100, 503, None);
    let client = client(
        fast()
            .retry(
                RetryPolicy::new()
                    .max_attempts(10)
                    .base_delay(Duration::from_millis(1)),
            )
            .breaker(|name| BreakerConfig::new(name).consecutive_failures(2)),
    );

    let err = client
        .complete(&upstream(&mock), &chat("hi"))
        .await
        .unwrap_err();

    assert_eq!(mock.calls(), 2);
    assert_eq!(
        err.status().map(|status| status.as_u16()),
        Some(503),
        "the answer that opened the breaker is returned, not CircuitOpen"
    );
    Ok(())
}

#[tokio::test]
async fn the_breaker_closes_again_once_the_upstream_recovers() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.fail_next(2, 502, None);
    let client = client(
        fast()
            .retry(RetryPolicy::new().max_attempts(1))
            .breaker(|name| {
                BreakerConfig::new(name)
                    .consecutive_failures(2)
                    .open_for(Duration::from_millis(200))
                    .close_after(1)
            }),
    );
    for _ in 0..2 {
        client
            .complete(&upstream(&mock), &chat("hi"))
            .await
            .unwrap_err();
    }
    assert_eq!(client.stats().breakers[0].state, BreakerState::Open);

    tokio::time::sleep(Duration::from_millis(250)).await;
    client.complete(&upstream(&mock), &chat("hi")).await?;

    assert_eq!(client.stats().breakers[0].state, BreakerState::Closed);
    Ok(())
}

#[tokio::test]
async fn each_upstream_host_has_its_own_breaker() -> anyhow::Result<()> {
    let down = MockOpenAi::start()?;
    down.fail_next(100, 500, None);
    let up = MockOpenAi::start()?;
    let client = client(
        fast()
            .retry(RetryPolicy::new().max_attempts(1))
            .breaker(|name| BreakerConfig::new(name).consecutive_failures(1)),
    );

    client
        .complete(&upstream(&down), &chat("hi"))
        .await
        .unwrap_err();
    client.complete(&upstream(&up), &chat("hi")).await?;

    let states: Vec<_> = client
        .stats()
        .breakers
        .iter()
        .map(|breaker| (breaker.name.clone(), breaker.state))
        .collect();
    assert_eq!(states.len(), 2);
    assert!(states.contains(&(format!("llm:{}", down.addr()), BreakerState::Open)));
    assert!(states.contains(&(format!("llm:{}", up.addr()), BreakerState::Closed)));
    Ok(())
}
