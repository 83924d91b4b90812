//! `Mode::Refuse` closes the port and the live connections; leaving it listens on the same
//! port again.

mod common;

use std::io;

use common::{closed, echo_server, echoing};
use groundwork_testkit::{Mode, TcpProxy};
use tokio::net::TcpStream;

#[tokio::test]
async fn refuse_then_pass_on_the_same_port() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    let addr = proxy.addr();
    let mut live = echoing(addr).await?;

    proxy.set_mode(Mode::Refuse).await?;
    assert_eq!(proxy.mode(), Mode::Refuse);
    assert_eq!(proxy.live_connections(), 0);
    assert!(closed(&mut live).await, "the live connection was not cut");
    for _ in 0..3 {
        let refused = TcpStream::connect(addr).await.err().map(|err| err.kind());
        assert_eq!(refused, Some(io::ErrorKind::ConnectionRefused));
    }

    proxy.set_mode(Mode::Pass).await?;
    assert_eq!(proxy.addr(), addr);
    echoing(addr).await?;
    assert_eq!(proxy.accepted(), 2);
    Ok(())
}

#[tokio::test]
async fn refuse_can_be_left_for_any_mode_and_entered_again() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    let addr = proxy.addr();
    proxy.set_mode(Mode::Refuse).await?;
    proxy.set_mode(Mode::Refuse).await?; // twice is fine
    proxy.set_mode(Mode::Close).await?;
    let mut stream = TcpStream::connect(addr).await?; // listening again
    assert!(closed(&mut stream).await);
    proxy.set_mode(Mode::Refuse).await?;
    let refused = TcpStream::connect(addr).await.err().map(|err| err.kind());
    assert_eq!(refused, Some(io::ErrorKind::ConnectionRefused));
    proxy.set_mode(Mode::Pass).await?;
    echoing(addr).await?;
    Ok(())
}
