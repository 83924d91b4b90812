//! `Mode::Delay` adds latency to every chunk, in each direction, without closing anything.

mod common;

use std::io;
use std::time::{Duration, Instant};

use common::{echo, echo_server, echoing};
use groundwork_testkit::{Mode, TcpProxy};

const DELAY: Duration = Duration::from_millis(60);

#[tokio::test]
async fn delay_slows_each_direction() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    let mut before = echoing(proxy.addr()).await?;

    proxy.set_mode(Mode::Delay(DELAY)).await?;
    assert_eq!(proxy.mode(), Mode::Delay(DELAY));
    // Live connections stay open and are slowed down too.
    let started = Instant::now();
    echo(&mut before, b"slow").await?;
    let took = started.elapsed();
    assert!(took >= 2 * DELAY, "the round trip took {took:?}");

    let started = Instant::now();
    let mut after = echoing(proxy.addr()).await?;
    let took = started.elapsed();
    assert!(took >= 2 * DELAY, "the round trip took {took:?}");

    // Back to Pass: the connection goes on.
    proxy.set_mode(Mode::Pass).await?;
    echo(&mut after, b"fast again").await?;
    echo(&mut before, b"fast again").await?;
    assert_eq!(proxy.live_connections(), 2);
    Ok(())
}

#[tokio::test]
async fn delay_applies_to_every_round_trip() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    proxy.set_mode(Mode::Delay(DELAY)).await?;
    let mut stream = echoing(proxy.addr()).await?;
    let started = Instant::now();
    for _ in 0..5 {
        echo(&mut stream, b"x").await?;
    }
    let took = started.elapsed();
    assert!(took >= 10 * DELAY, "five round trips took {took:?}");
    Ok(())
}
