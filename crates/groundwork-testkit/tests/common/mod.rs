//! Shared helpers of the proxy tests: an echo server standing in for a database, and
//! short-timeout reads.

#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// How long a read that must time out is given.
pub(crate) const SILENCE: Duration = Duration::from_millis(200);
/// How long an answer that must come is waited for (generous: it normally takes
/// microseconds; only a failing test waits this long).
pub(crate) const PROMPT: Duration = Duration::from_secs(5);

/// Starts an echo server on `127.0.0.1` and returns its address. It runs until the test's
/// runtime ends.
pub(crate) async fn echo_server() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = socket.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    Ok(addr)
}

/// Sends `message` and reads it back, failing if the answer does not come within
/// [`PROMPT`].
pub(crate) async fn echo(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    stream.write_all(message).await?;
    let mut answer = vec![0; message.len()];
    tokio::time::timeout(PROMPT, stream.read_exact(&mut answer))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no echo"))??;
    assert_eq!(answer, message);
    Ok(())
}

/// Connects to `addr` and checks that the connection echoes.
pub(crate) async fn echoing(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    echo(&mut stream, b"hello").await?;
    Ok(stream)
}

/// Whether `stream` gets nothing at all for [`SILENCE`].
pub(crate) async fn silent(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 64];
    tokio::time::timeout(SILENCE, stream.read(&mut buf))
        .await
        .is_err()
}

/// Whether `stream` is closed: a read returns the end of the stream or an error (a reset)
/// within [`PROMPT`], with no data before.
pub(crate) async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 64];
    matches!(
        tokio::time::timeout(PROMPT, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Waits until `condition` holds, up to [`PROMPT`]; returns whether it did.
pub(crate) async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + PROMPT;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}
