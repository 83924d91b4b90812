//! A local HTTP server for the integration tests, counting the TCP connections it accepts.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;
use groundwork_clients::http::{HttpClient, HttpClientOptions};

/// A server on 127.0.0.1 with `/` answering `ok` and `/hang` never answering.
pub struct TestServer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl TestServer {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let listener = listener.tap_io(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/hang", get(std::future::pending::<&'static str>));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { addr, accepted })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Options for tests: no proxies from the environment.
pub fn options() -> HttpClientOptions {
    HttpClientOptions::new().proxy_from_env(false)
}

pub fn client(options: HttpClientOptions) -> anyhow::Result<HttpClient> {
    Ok(HttpClient::new(options)?)
}
