//! `accepted` counts every accepted connection, `live_connections` the open ones.

mod common;

use std::io;

use common::{echo_server, echoing, eventually};
use groundwork_testkit::{Mode, TcpProxy};
use tokio::net::TcpStream;

#[tokio::test]
async fn counters_follow_connections() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    assert_eq!((proxy.accepted(), proxy.live_connections()), (0, 0));

    let first = echoing(proxy.addr()).await?;
    let second = echoing(proxy.addr()).await?;
    assert_eq!((proxy.accepted(), proxy.live_connections()), (2, 2));

    drop(first);
    assert!(eventually(|| proxy.live_connections() == 1).await);
    drop(second);
    assert!(eventually(|| proxy.live_connections() == 0).await);
    assert_eq!(proxy.accepted(), 2);

    // Connections closed at once and held by a black hole count as accepted too.
    proxy.set_mode(Mode::Close).await?;
    let _closed = TcpStream::connect(proxy.addr()).await?;
    assert!(eventually(|| proxy.accepted() == 3).await);
    proxy.set_mode(Mode::BlackHole).await?;
    let _held = TcpStream::connect(proxy.addr()).await?;
    assert!(eventually(|| proxy.accepted() == 4).await);
    assert!(eventually(|| proxy.live_connections() == 1).await);
    let debug = format!("{proxy:?}");
    assert!(
        debug.contains("BlackHole") && debug.contains("accepted: 4"),
        "{debug}"
    );
    Ok(())
}
