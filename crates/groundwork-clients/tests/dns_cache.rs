//! Host names are resolved once per DNS TTL; failed lookups are not cached.

use std::sync::Arc;
use std::time::Duration;

use groundwork_clients::http::HttpClientError;
use groundwork_core::clock::ManualClock;

mod common;

#[tokio::test]
async fn localhost_is_resolved_once_per_ttl() -> anyhow::Result<()> {
    let server = common::TestServer::start().await?;
    let clock = Arc::new(ManualClock::new());
    // No idle connections: every request opens a connection, so every request resolves.
    let client = common::client(
        common::options()
            .pool_max_idle_per_host(0)
            .dns_ttl(Duration::from_secs(300))
            .clock(clock.clone()),
    )?;
    let url = format!("http://localhost:{}/", server.addr.port());

    for _ in 0..3 {
        assert_eq!(client.send(client.get(&url)).await?.text().await?, "ok");
    }
    let stats = client.stats();
    assert_eq!(stats.dns_misses, 1);
    assert!(stats.dns_hits >= 2, "{stats:?}");
    assert_eq!(stats.dns_entries, 1);
    assert_eq!(server.accepted(), 3, "the pool was off");

    clock.advance(Duration::from_secs(299));
    client.send(client.get(&url)).await?.text().await?;
    assert_eq!(client.stats().dns_misses, 1, "still within the TTL");

    clock.advance(Duration::from_secs(2)); // past the TTL
    assert_eq!(client.stats().dns_entries, 0);
    client.send(client.get(&url)).await?.text().await?;
    let stats = client.stats();
    assert_eq!(stats.dns_misses, 2, "looked up again after the TTL");
    assert_eq!(stats.dns_entries, 1);
    assert_eq!(stats.dns_failures, 0);
    Ok(())
}

#[tokio::test]
async fn a_failed_lookup_is_not_cached() -> anyhow::Result<()> {
    let client = common::client(common::options())?;

    for attempt in 1..=2 {
        let result = client.send(client.get("http://nonexistent.invalid/")).await;
        let Err(err) = result else {
            anyhow::bail!("nonexistent.invalid resolved");
        };
        assert!(matches!(err, HttpClientError::Connect { .. }), "{err:?}");
        let stats = client.stats();
        assert_eq!(stats.dns_misses, attempt, "asked the system again");
        assert_eq!(stats.dns_failures, attempt);
        assert_eq!(stats.dns_hits, 0);
        assert_eq!(stats.dns_entries, 0);
        assert_eq!(stats.errors_connect, attempt);
    }
    Ok(())
}
