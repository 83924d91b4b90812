//! The `mock-openai` binary prints its base URL and serves the mock until killed.

mod raw_http;

use std::io::{self, BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use raw_http::{Connection, chat, sse_data};

/// The running binary, killed when dropped (also when the test fails).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `args` and returns it with the address of the URL it printed.
fn start(args: &[&str]) -> io::Result<(Running, SocketAddr)> {
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_mock-openai"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let stdout = child
        .0
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    // The URL is printed as soon as it listens (a blocking read, but a short one).
    let mut url = String::new();
    BufReader::new(stdout).read_line(&mut url)?;
    let addr = url
        .trim()
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/v1"))
        .and_then(|addr| addr.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad URL {url:?}")))?;
    Ok((child, addr))
}

#[tokio::test]
async fn binary_serves_the_mock() -> io::Result<()> {
    let (_running, addr) = start(&["--bind", "127.0.0.1:0", "--chunks=2", "--latency-ms", "1"])?;
    let mut connection = Connection::open(addr).await?;
    let answer = connection.post(&chat("load", true)).await?;
    assert_eq!(answer.head.status, 200);
    // Role, 2 content chunks, finish, [DONE].
    assert_eq!(sse_data(&answer.body)?.len(), 5);
    let answer = connection.post(&chat("load", false)).await?;
    assert_eq!(answer.json()["id"], "chatcmpl-mock-2");
    Ok(())
}

#[test]
fn binary_rejects_unknown_arguments() -> io::Result<()> {
    let output = Command::new(env!("CARGO_BIN_EXE_mock-openai"))
        .arg("--nope")
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown argument --nope"), "{stderr}");
    Ok(())
}
