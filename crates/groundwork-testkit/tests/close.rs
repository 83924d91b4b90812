//! `Mode::Close` accepts connections and closes them at once, and closes live ones.

mod common;

use std::io;

use common::{closed, echo_server, echoing, eventually};
use groundwork_testkit::{Mode, TcpProxy};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

#[tokio::test]
async fn close_closes_new_and_live_connections() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    let mut live = echoing(proxy.addr()).await?;

    proxy.set_mode(Mode::Close).await?;
    assert_eq!(proxy.live_connections(), 0);
    assert!(
        closed(&mut live).await,
        "the live connection was not closed"
    );

    let mut new = TcpStream::connect(proxy.addr()).await?;
    assert!(closed(&mut new).await, "a new connection was not closed");
    let mut talking = TcpStream::connect(proxy.addr()).await?;
    let _ = talking.write_all(b"hello?").await; // may already fail with a reset
    assert!(
        closed(&mut talking).await,
        "a new connection was not closed"
    );
    assert_eq!(proxy.accepted(), 3);
    assert!(eventually(|| proxy.live_connections() == 0).await);

    proxy.set_mode(Mode::Pass).await?;
    echoing(proxy.addr()).await?;
    Ok(())
}
