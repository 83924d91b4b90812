//! The total request timeout fires on a server that never answers, and is classified.

use std::time::{Duration, Instant};

use groundwork_clients::http::HttpClientError;
use groundwork_core::{Classify, ErrorKind};

mod common;

#[tokio::test]
async fn the_total_timeout_fires_on_a_silent_server() -> anyhow::Result<()> {
    let server = common::TestServer::start().await?;
    let timeout = Duration::from_millis(200);
    let client = common::client(common::options().timeout(timeout))?;

    let started = Instant::now();
    let result = client.send(client.get(server.url("/hang"))).await;
    let elapsed = started.elapsed();

    let Err(err) = result else {
        anyhow::bail!("the silent server answered");
    };
    assert!(matches!(err, HttpClientError::Timeout { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.reqwest().is_timeout());
    assert!(elapsed >= timeout, "fired early: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "fired late: {elapsed:?}");

    let stats = client.stats();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.errors_timeout, 1);
    assert_eq!(stats.errors_connect + stats.errors_other, 0);
    assert!(stats.latency_total >= timeout);
    Ok(())
}

#[tokio::test]
async fn a_request_can_set_its_own_timeout() -> anyhow::Result<()> {
    let server = common::TestServer::start().await?;
    let client = common::client(common::options())?; // 30 s by default

    let started = Instant::now();
    let request = client
        .get(server.url("/hang"))
        .timeout(Duration::from_millis(100));
    let result = client.send(request).await;
    assert!(matches!(result, Err(HttpClientError::Timeout { .. })));
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}
