//! Shared helpers of the `openai_*` tests: a minimal HTTP/1.1 client over one TCP connection
//! (so that tests see exactly what goes over the wire: keep-alive, chunked bodies, cuts),
//! chat requests and a server-sent events parser.

#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// How long an answer that must come is waited for (generous: it normally takes
/// milliseconds; only a failing test waits this long).
pub(crate) const PROMPT: Duration = Duration::from_secs(5);

/// The status line and headers of a response.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: u16,
    /// Names in lower case.
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    /// The first header named `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A whole response.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) head: Head,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One keep-alive HTTP/1.1 connection.
pub(crate) struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    /// Connects to `addr`.
    pub(crate) async fn open(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// Sends `POST /v1/chat/completions` with `body` and the extra `headers`.
    pub(crate) async fn send(&mut self, body: &str, headers: &[(&str, &str)]) -> io::Result<()> {
        let mut request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        self.stream.get_mut().write_all(request.as_bytes()).await
    }

    /// Reads the status line and headers of the next response.
    pub(crate) async fn head(&mut self) -> io::Result<Head> {
        let status_line = self.line().await?;
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Ok(Head { status, headers });
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header {line:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }

    /// Reads the next chunk of a chunked body: `None` after the last one; an
    /// [`io::ErrorKind::UnexpectedEof`] error when the connection ends before.
    pub(crate) async fn chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let size = self.line().await?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|err| invalid(format!("bad chunk size {size:?}: {err}")))?;
        if size == 0 {
            // No trailers are expected: the blank line ending the body.
            let end = self.line().await?;
            return if end.is_empty() {
                Ok(None)
            } else {
                Err(invalid(format!("unexpected trailer {end:?}")))
            };
        }
        let mut chunk = vec![0; size + 2];
        within(self.stream.read_exact(&mut chunk)).await?;
        if !chunk.ends_with(b"\r\n") {
            return Err(invalid("a chunk does not end with CRLF".to_owned()));
        }
        chunk.truncate(size);
        Ok(Some(chunk))
    }

    /// Reads a body framed as `head` says (`content-length` or chunked).
    pub(crate) async fn body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        if head.header("transfer-encoding") == Some("chunked") {
            let mut body = Vec::new();
            while let Some(chunk) = self.chunk().await? {
                body.extend_from_slice(&chunk);
            }
            return Ok(body);
        }
        let length = head
            .header("content-length")
            .and_then(|length| length.parse().ok())
            .ok_or_else(|| invalid("no content-length".to_owned()))?;
        let mut body = vec![0; length];
        within(self.stream.read_exact(&mut body)).await?;
        Ok(body)
    }

    /// Sends a chat request and reads the whole response.
    pub(crate) async fn post(&mut self, body: &str) -> io::Result<Response> {
        self.post_with(body, &[]).await
    }

    /// Sends a chat request with extra headers and reads the whole response.
    pub(crate) async fn post_with(
        &mut self,
        body: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<Response> {
        self.send(body, headers).await?;
        let head = self.head().await?;
        let body = self.body(&head).await?;
        Ok(Response { head, body })
    }

    /// Whether the server closed the connection: a read returns the end of the stream or an
    /// error within [`PROMPT`], with no data before.
    pub(crate) async fn closed(&mut self) -> bool {
        let mut buf = [0; 64];
        matches!(
            tokio::time::timeout(PROMPT, self.stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// Whether nothing at all arrives for `silence` (nothing buffered either).
    pub(crate) async fn silent_for(&mut self, silence: Duration) -> bool {
        let mut buf = [0; 64];
        tokio::time::timeout(silence, self.stream.read(&mut buf))
            .await
            .is_err()
    }

    /// Reads one CRLF-terminated line, without the CRLF.
    async fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        let read = within(self.stream.read_line(&mut line)).await?;
        if read == 0 || !line.ends_with("\r\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection ended",
            ));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }
}

/// Awaits an I/O operation, failing if it takes longer than [`PROMPT`].
async fn within<T>(io: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(PROMPT, io)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))?
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A chat request whose last user message is `content`.
pub(crate) fn chat(content: &str, stream: bool) -> String {
    json!({
        "model": "gpt-mock",
        "messages": [
            {"role": "system", "content": "You are a test."},
            {"role": "user", "content": content},
        ],
        "stream": stream,
    })
    .to_string()
}

/// The `data` of each server-sent event in `body`, checking that every event is one
/// `data: ` line followed by a blank line.
pub(crate) fn sse_data(body: &[u8]) -> io::Result<Vec<String>> {
    let body = std::str::from_utf8(body).map_err(|err| invalid(err.to_string()))?;
    let Some(events) = body.strip_suffix("\n\n") else {
        return Err(invalid(format!(
            "the stream does not end with a blank line: {body:?}"
        )));
    };
    events
        .split("\n\n")
        .map(|event| {
            event
                .strip_prefix("data: ")
                .filter(|data| !data.contains('\n'))
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("bad event {event:?}")))
        })
        .collect()
}

/// The `data` of each server-sent event in `body`, as JSON; `[DONE]` is `Value::Null`.
pub(crate) fn sse_json(body: &[u8]) -> io::Result<Vec<Value>> {
    sse_data(body)?
        .iter()
        .map(|data| {
            if data == "[DONE]" {
                Ok(Value::Null)
            } else {
                serde_json::from_str(data).map_err(|err| invalid(format!("{data:?}: {err}")))
            }
        })
        .collect()
}
