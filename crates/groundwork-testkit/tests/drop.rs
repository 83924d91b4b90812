//! Dropping the proxy closes its port and every connection it proxied.

mod common;

use std::io;

use common::{closed, echo_server, echoing, eventually};
use groundwork_testkit::{Mode, TcpProxy};
use tokio::net::TcpStream;

#[tokio::test]
async fn drop_stops_everything() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    let addr = proxy.addr();
    let mut passing = echoing(addr).await?;
    proxy.set_mode(Mode::BlackHole).await?;
    let mut held = TcpStream::connect(addr).await?;
    assert!(eventually(|| proxy.live_connections() == 2).await);

    drop(proxy);
    assert!(
        closed(&mut passing).await,
        "a proxied connection outlived the proxy"
    );
    assert!(
        closed(&mut held).await,
        "a held connection outlived the proxy"
    );
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "the port still accepts after the drop");
    Ok(())
}
