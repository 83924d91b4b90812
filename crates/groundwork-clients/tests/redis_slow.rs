//! A slow Redis (the testkit proxy in `Mode::Delay`): operations time out at the operation
//! timeout and the breaker opens, but the connection — slow, not dead — is kept; once
//! Redis is fast again the breaker's probes close it within about a second.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_common;

use std::time::{Duration, Instant};

use groundwork_clients::redis::{RedisError, RedisOptions};
use groundwork_resilience::BreakerState;
use groundwork_testkit::Mode;
use redis_common::{connected_client, eventually, proxy, redis_url, unique};

const OP_TIMEOUT: Duration = Duration::from_millis(50);

#[tokio::test]
async fn a_slow_redis_times_out_without_reconnecting() -> anyhow::Result<()> {
    let Some(url) = redis_url("a_slow_redis_times_out_without_reconnecting") else {
        return Ok(());
    };
    let (proxy, through) = proxy(&url).await?;
    let client = connected_client(RedisOptions::new(through).op_timeout(OP_TIMEOUT)).await?;
    let key = format!("{}value", unique("slow"));
    client.set_ex(&key, b"v", Duration::from_secs(60)).await?;

    // 100 ms each way: a round trip takes 200 ms, four times the operation timeout.
    proxy
        .set_mode(Mode::Delay(Duration::from_millis(100)))
        .await?;
    for attempt in 1..=3 {
        let started = Instant::now();
        let err = client.get(&key).await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(err, RedisError::Timeout { after } if after == OP_TIMEOUT),
            "{err:?}"
        );
        assert!(
            elapsed < OP_TIMEOUT + Duration::from_millis(30),
            "attempt {attempt}: {elapsed:?}"
        );
    }
    assert_eq!(client.breaker().state(), BreakerState::Open);
    let started = Instant::now();
    assert!(matches!(
        client.get(&key).await,
        Err(RedisError::CircuitOpen { .. })
    ));
    // Microseconds in fact (see redis_black_hole.rs); one sample, so a loose bound.
    assert!(started.elapsed() < Duration::from_millis(5));

    // The connection task checks the connection (a PING answered in 200 ms, within the
    // connect timeout) and keeps it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = client.stats();
    assert!(stats.connected, "{stats:?}");
    assert_eq!(stats.reconnects, 0);
    assert_eq!(stats.timeouts, 3);

    let healed = Instant::now();
    proxy.set_mode(Mode::Pass).await?;
    let ((), took) = eventually(Duration::from_secs(3), || async {
        matches!(client.get(&key).await, Ok(Some(_))).then_some(())
    })
    .await?;
    eprintln!(
        "answered again {took:?} after Redis was fast again ({:?} with set_mode)",
        healed.elapsed()
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    // A second successful probe closes the breaker (two, by default).
    assert!(matches!(client.get(&key).await, Ok(Some(_))));
    let stats = client.stats();
    assert_eq!(stats.breaker.state, BreakerState::Closed);
    assert_eq!(stats.reconnects, 0, "the slow connection was kept");
    client.del(&key).await?;
    Ok(())
}
