//! Dropping the mock closes its port and every connection, streams included.

mod raw_http;

use std::io;
use std::time::Duration;

use groundwork_testkit::openai::MockOpenAi;
use raw_http::{Connection, chat};
use tokio::net::TcpStream;

#[tokio::test]
async fn drop_closes_the_port_and_the_connections() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    let addr = mock.addr();
    mock.set_chunk_delay(Duration::from_secs(60));

    let mut idle = Connection::open(addr).await?;
    assert_eq!(idle.post(&chat("hi", false)).await?.head.status, 200);
    let mut streaming = Connection::open(addr).await?;
    streaming.send(&chat("long story", true), &[]).await?;
    assert_eq!(streaming.head().await?.status, 200);
    assert!(streaming.chunk().await?.is_some(), "the role chunk");

    drop(mock);
    assert!(idle.closed().await);
    assert!(streaming.closed().await);
    let refused = TcpStream::connect(addr).await;
    assert_eq!(
        refused.err().map(|err| err.kind()),
        Some(io::ErrorKind::ConnectionRefused)
    );
    Ok(())
}
