//! `Mode::Pass` forwards bytes both ways, including the end of the stream.

mod common;

use std::io;

use common::{echo, echo_server, echoing};
use groundwork_testkit::{Mode, TcpProxy};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[tokio::test]
async fn pass_echoes() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    assert_eq!(proxy.mode(), Mode::Pass);
    assert_eq!(proxy.addr().ip().to_string(), "127.0.0.1");
    assert_eq!(proxy.addr().port(), proxy.port());
    let mut stream = echoing(proxy.addr()).await?;
    echo(&mut stream, b"and again").await?;
    Ok(())
}

#[tokio::test]
async fn pass_forwards_large_payloads_and_the_end_of_the_stream() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    let stream = TcpStream::connect(proxy.addr()).await?;
    let (mut reader, mut writer) = stream.into_split();
    let payload: Vec<u8> = (0..1_000_000_u32).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(&sent).await?;
        writer.shutdown().await // the echo server then closes, and so does the proxy
    });
    let mut received = Vec::new();
    tokio::time::timeout(common::PROMPT, reader.read_to_end(&mut received))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no end of stream"))??;
    writing.await.map_err(io::Error::other)??;
    assert!(received == payload, "the payload came back changed");
    Ok(())
}

#[tokio::test]
async fn set_mode_pass_keeps_live_connections() -> io::Result<()> {
    let proxy = TcpProxy::start(echo_server().await?).await?;
    let mut stream = echoing(proxy.addr()).await?;
    proxy.set_mode(Mode::Pass).await?;
    echo(&mut stream, b"still there").await?;
    Ok(())
}
