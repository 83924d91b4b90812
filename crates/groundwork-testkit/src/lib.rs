//! Test helpers for Groundwork's outage tests: a TCP fault-injection proxy ([`TcpProxy`])
//! to put between Groundwork and PostgreSQL, Redis or RabbitMQ, and the URL helpers
//! ([`upstream_of`], [`with_port`]) to point a client at it.
//!
//! The proxy listens on `127.0.0.1` on an ephemeral port and forwards to one upstream
//! address. Its [`Mode`] decides what happens to connections: forwarded ([`Mode::Pass`]),
//! refused ([`Mode::Refuse`]), swallowed ([`Mode::BlackHole`]), slowed down
//! ([`Mode::Delay`]) or closed at once ([`Mode::Close`]). [`TcpProxy::set_mode`] returns
//! once the new mode is in effect, so a test can act on it right away without sleeping.
//!
//! The [`openai`] module has a fake OpenAI-compatible upstream ([`openai::MockOpenAi`]) for
//! the LLM layer's tests: deterministic chat completions, plain or streamed, with latency,
//! failures (`429`/`5xx` with `Retry-After`) and cut streams on demand. The `mock-openai`
//! binary serves it for load tests (`mock-openai --help`), and the `loadgen` binary sends
//! them an open-loop load whose every request is distinct (`loadgen --help`).
//!
//! This crate is meant for `[dev-dependencies]` only.
//!
//! ```
//! use std::time::Duration;
//!
//! use groundwork_testkit::{Mode, TcpProxy};
//! use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
//! use tokio::net::{TcpListener, TcpStream};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! // A tiny echo server standing in for a database.
//! let echo = TcpListener::bind("127.0.0.1:0").await?;
//! let upstream = echo.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((mut socket, _)) = echo.accept().await {
//!         tokio::spawn(async move {
//!             let (mut reader, mut writer) = socket.split();
//!             let _ = tokio::io::copy(&mut reader, &mut writer).await;
//!         });
//!     }
//! });
//!
//! let proxy = TcpProxy::start(upstream).await?;
//!
//! // Pass: bytes go through both ways.
//! let mut client = TcpStream::connect(proxy.addr()).await?;
//! client.write_all(b"ping").await?;
//! let mut answer = [0; 4];
//! client.read_exact(&mut answer).await?;
//! assert_eq!(&answer, b"ping");
//!
//! // Refuse: the port is closed, and the live connection is cut.
//! proxy.set_mode(Mode::Refuse).await?;
//! let refused = TcpStream::connect(proxy.addr()).await;
//! assert_eq!(
//!     refused.err().map(|err| err.kind()),
//!     Some(std::io::ErrorKind::ConnectionRefused)
//! );
//! assert_eq!(client.read(&mut answer).await?, 0);
//!
//! // Back to Pass, on the same port.
//! proxy.set_mode(Mode::Pass).await?;
//! let mut client = TcpStream::connect(proxy.addr()).await?;
//! client.write_all(b"pong").await?;
//! client.read_exact(&mut answer).await?;
//! assert_eq!(&answer, b"pong");
//! assert_eq!(proxy.accepted(), 2);
//!
//! // Black hole: the bytes never come back.
//! proxy.set_mode(Mode::BlackHole).await?;
//! client.write_all(b"lost").await?;
//! let read = tokio::time::timeout(Duration::from_millis(50), client.read(&mut answer)).await;
//! assert!(read.is_err(), "timed out");
//! # Ok(())
//! # }
//! ```

pub mod openai;
mod proxy;
pub mod services;
mod url;

pub use proxy::{Mode, TcpProxy};
pub use url::{upstream_of, with_port};
