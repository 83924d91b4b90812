//! An upstream that cannot be reached is retried, then reported as a transport error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use client_common::{chat, client, fast};
use groundwork_core::{Classify as _, ErrorKind};
use groundwork_llm::client::{LlmError, Upstream};

/// A base URL on a local port nothing listens on.
async fn refused() -> anyhow::Result<Upstream> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(Upstream::new(format!("http://{addr}/v1")))
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported() -> anyhow::Result<()> {
    let client = client(fast());
    let upstream = refused().await?;

    let err = client.complete(&upstream, &chat("hi")).await.unwrap_err();

    assert!(matches!(err, LlmError::Transport { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let stats = client.stats();
    assert_eq!(
        (stats.attempts, stats.retries, stats.errors_transport),
        (3, 2, 3)
    );

    let err = client.stream(&upstream, &chat("hi")).await.unwrap_err();
    assert!(matches!(err, LlmError::Transport { .. }), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn an_unusable_upstream_is_refused_before_any_attempt() -> anyhow::Result<()> {
    let client = client(fast());

    let err = client
        .complete(&Upstream::new("localhost:8080/v1"), &chat("hi"))
        .await
        .unwrap_err();

    assert!(matches!(err, LlmError::InvalidUpstream { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert_eq!(client.stats().attempts, 0);
    Ok(())
}
