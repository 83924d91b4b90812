//! `Mode::BlackHole` accepts and never answers, freezes live connections, and closes them
//! all when the mode changes away.

mod common;

use std::io;

use common::{closed, echo_server, echoing, eventually, silent};
use groundwork_testkit::{Mode, TcpProxy};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

#[tokio::test]
async fn black_hole_swallows_then_pass_heals_with_new_connections() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    let mut before = echoing(proxy.addr()).await?;

    proxy.set_mode(Mode::BlackHole).await?;
    // The live connection stays open but nothing comes back.
    before.write_all(b"lost").await?;
    assert!(silent(&mut before).await, "a frozen connection answered");
    // A new connection is accepted, never answered, never closed.
    let mut during = TcpStream::connect(proxy.addr()).await?;
    during.write_all(b"lost too").await?;
    assert!(
        silent(&mut during).await,
        "a black-holed connection answered"
    );
    assert!(eventually(|| proxy.live_connections() == 2).await);
    assert_eq!(proxy.accepted(), 2);

    proxy.set_mode(Mode::Pass).await?;
    // The broken sessions are closed; clients must reconnect.
    assert_eq!(proxy.live_connections(), 0);
    assert!(
        closed(&mut before).await,
        "the frozen connection was not closed"
    );
    assert!(
        closed(&mut during).await,
        "the held connection was not closed"
    );
    echoing(proxy.addr()).await?;
    Ok(())
}

#[tokio::test]
async fn black_hole_holds_bytes_sent_after_the_change() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    let mut stream = echoing(proxy.addr()).await?;
    proxy.set_mode(Mode::BlackHole).await?;
    proxy.set_mode(Mode::BlackHole).await?; // staying in it closes nothing
    for _ in 0..3 {
        stream.write_all(b"anyone?").await?;
        assert!(silent(&mut stream).await);
    }
    assert_eq!(proxy.live_connections(), 1);
    Ok(())
}
