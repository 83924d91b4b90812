//! Failures to connect (refused, connect timeout, TLS handshake) are connect errors.

use std::time::{Duration, Instant};

use groundwork_clients::http::HttpClientError;
use groundwork_core::{Classify, ErrorKind};

mod common;

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener); // nothing listens there now
    let client = common::client(common::options())?;

    let result = client.send(client.get(format!("http://{addr}/"))).await;
    let Err(err) = result else {
        anyhow::bail!("a closed port answered");
    };
    assert!(matches!(err, HttpClientError::Connect { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.kind().is_retryable());
    let stats = client.stats();
    assert_eq!(
        (stats.requests, stats.errors_connect, stats.in_flight),
        (1, 1, 0)
    );
    assert_eq!(stats.errors_timeout + stats.errors_other, 0);
    Ok(())
}

/// Accepts TCP connections and never says anything, so a TLS handshake never completes.
async fn silent_tcp_server() -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn the_connect_timeout_is_a_connect_error() -> anyhow::Result<()> {
    // The connect timeout covers DNS, TCP and the TLS handshake; a server that accepts
    // and stays silent makes the handshake hang.
    let addr = silent_tcp_server().await?;
    let connect_timeout = Duration::from_millis(200);
    let client = common::client(common::options().connect_timeout(connect_timeout))?;

    let started = Instant::now();
    let result = client.send(client.get(format!("https://{addr}/"))).await;
    let elapsed = started.elapsed();

    let Err(err) = result else {
        anyhow::bail!("the silent server answered");
    };
    assert!(matches!(err, HttpClientError::Connect { .. }), "{err:?}");
    assert!(err.reqwest().is_timeout(), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(elapsed >= connect_timeout, "fired early: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "fired late: {elapsed:?}");
    let stats = client.stats();
    assert_eq!((stats.errors_connect, stats.errors_timeout), (1, 0));
    Ok(())
}

#[tokio::test]
async fn a_failed_tls_handshake_is_a_connect_error() -> anyhow::Result<()> {
    // HTTPS to a plain-HTTP server: rustls (with the ring provider installed by the
    // client) sends a ClientHello and gets an HTTP error page back.
    let server = common::TestServer::start().await?;
    let client = common::client(common::options())?;

    let result = client
        .send(client.get(format!("https://{}/", server.addr)))
        .await;
    let Err(err) = result else {
        anyhow::bail!("a plain-HTTP server completed a TLS handshake");
    };
    assert!(matches!(err, HttpClientError::Connect { .. }), "{err:?}");
    assert_eq!(client.stats().errors_connect, 1);
    Ok(())
}
