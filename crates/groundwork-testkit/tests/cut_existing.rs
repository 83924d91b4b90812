//! `cut_existing` closes every live connection and leaves the mode as it was.

mod common;

use std::io;
use std::time::Duration;

use common::{closed, echo, echo_server, echoing, eventually};
use groundwork_testkit::{Mode, TcpProxy};
use tokio::net::TcpStream;

#[tokio::test]
async fn cut_existing_closes_live_connections_only() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    let mut first = echoing(proxy.addr()).await?;
    let mut second = echoing(proxy.addr()).await?;
    assert_eq!(proxy.live_connections(), 2);

    proxy.cut_existing().await;
    assert_eq!(proxy.live_connections(), 0);
    assert!(closed(&mut first).await);
    assert!(closed(&mut second).await);
    assert_eq!(proxy.mode(), Mode::Pass);
    let mut third = echoing(proxy.addr()).await?;
    echo(&mut third, b"still passing").await?;
    assert_eq!(proxy.accepted(), 3);
    Ok(())
}

#[tokio::test]
async fn cut_existing_keeps_the_mode() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    let delay = Mode::Delay(Duration::from_millis(1));
    proxy.set_mode(delay).await?;
    let mut held = echoing(proxy.addr()).await?;
    proxy.set_mode(Mode::BlackHole).await?;
    let mut black_holed = TcpStream::connect(proxy.addr()).await?;
    // Live once the proxy accepted it, not when the kernel did.
    assert!(eventually(|| proxy.live_connections() == 2).await);
    proxy.cut_existing().await;
    assert!(closed(&mut held).await);
    assert!(closed(&mut black_holed).await);
    assert_eq!(proxy.mode(), Mode::BlackHole);
    proxy.cut_existing().await; // nothing to cut: returns at once
    Ok(())
}
