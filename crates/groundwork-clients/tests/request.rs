//! A request through the client works and is counted.

use std::time::Duration;

use groundwork_clients::http::HttpClientError;
use groundwork_core::{Classify, ErrorKind};

mod common;

#[tokio::test]
async fn a_request_works_and_is_counted() -> anyhow::Result<()> {
    let server = common::TestServer::start().await?;
    let client = common::client(common::options())?;

    let response = client.send(client.get(server.url("/"))).await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "ok");

    // `execute` with a prebuilt request, on a clone: same counters.
    let clone = client.clone();
    let request = clone.reqwest().get(server.url("/")).build()?;
    let response = clone.execute(request).await?;
    assert_eq!(response.status(), 200);

    let stats = client.stats();
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.responses, 2);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.errors(), 0);
    assert!(stats.latency_total > Duration::ZERO);
    assert!(stats.latency_total < Duration::from_secs(5));
    Ok(())
}

#[tokio::test]
async fn the_user_agent_is_sent() -> anyhow::Result<()> {
    use axum::Router;
    use axum::http::HeaderMap;
    use axum::routing::get;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route(
        "/",
        get(|headers: HeaderMap| async move {
            headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = common::client(common::options())?;
    let agent = client
        .send(client.get(format!("http://{addr}/")))
        .await?
        .text()
        .await?;
    assert_eq!(agent, format!("groundwork/{}", env!("CARGO_PKG_VERSION")));
    Ok(())
}

#[tokio::test]
async fn a_request_in_flight_is_counted_until_it_ends() -> anyhow::Result<()> {
    let server = common::TestServer::start().await?;
    let client = common::client(common::options())?;

    let pending = tokio::spawn({
        let client = client.clone();
        let url = server.url("/hang");
        async move { client.send(client.get(url)).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while client.stats().in_flight == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never in flight");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pending.abort();
    assert!(pending.await.is_err(), "the request was cancelled");

    let stats = client.stats();
    assert_eq!(
        (stats.requests, stats.in_flight, stats.responses),
        (1, 0, 0)
    );
    assert_eq!(stats.errors(), 0, "a cancelled request is not an error");
    Ok(())
}

#[tokio::test]
async fn an_invalid_url_is_an_internal_error() -> anyhow::Result<()> {
    let client = common::client(common::options())?;
    let err = client.send(client.get("not a url")).await.err();
    let Some(err) = err else {
        anyhow::bail!("an invalid URL was sent");
    };
    assert!(
        matches!(err, HttpClientError::InvalidRequest { .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Internal);
    let stats = client.stats();
    assert_eq!((stats.requests, stats.errors_other), (1, 1));
    Ok(())
}
