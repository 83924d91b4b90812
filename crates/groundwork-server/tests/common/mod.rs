//! Shared helpers of the HTTP integration tests: a fresh application over a temporary SQLite
//! file, request shorthands and assertions on the contract's error shape.

#![allow(dead_code)]

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use groundwork_db::{Database, DatabaseOptions};
use groundwork_server::app::{AppState, HttpSettings, app};
use groundwork_server::config::ApiKey;
use http_body_util::BodyExt as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt as _;

/// What a request returned: status, headers and the body (JSON, `Null` when empty, a JSON
/// string holding the text when the body is not JSON).
pub(crate) type Resp = (StatusCode, HeaderMap, Value);

/// The server's default body limit (1 MiB).
pub(crate) const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The metrics handle of this test binary: the global recorder is installed once, every app
/// renders through a clone of its handle.
pub(crate) fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(
            || match groundwork_server::telemetry::install_metrics_recorder() {
                Ok(handle) => handle,
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            },
        )
        .clone()
}

/// An application over its own SQLite file.
pub(crate) struct TestApp {
    /// The router under test.
    pub(crate) router: Router,
    /// The database behind it.
    pub(crate) db: Database,
    /// Keeps the database file alive as long as the app.
    pub(crate) dir: TempDir,
}

/// A migrated SQLite database in the file `t.db` of `dir`.
pub(crate) async fn sqlite_db(dir: &std::path::Path) -> anyhow::Result<Database> {
    let db = Database::connect(DatabaseOptions::new(format!(
        "sqlite://{}/t.db",
        dir.display()
    )))
    .await?;
    db.migrate().await?;
    Ok(db)
}

/// A fresh application: no API keys, the default body limit.
pub(crate) async fn test_app() -> anyhow::Result<TestApp> {
    test_app_with(Vec::new(), DEFAULT_BODY_LIMIT).await
}

/// A fresh application accepting `keys`, refusing bodies over `body_limit` bytes.
pub(crate) async fn test_app_with(keys: Vec<ApiKey>, body_limit: usize) -> anyhow::Result<TestApp> {
    let dir = tempfile::tempdir()?;
    let db = sqlite_db(dir.path()).await?;
    let state = AppState::new(db.clone(), &keys, metrics_handle());
    let router = app(
        state,
        HttpSettings {
            body_limit_bytes: body_limit,
        },
    );
    Ok(TestApp { router, db, dir })
}

/// The API key `name:secret`.
pub(crate) fn key(name: &str, secret: &str) -> ApiKey {
    ApiKey {
        name: name.to_owned(),
        secret: secret.to_owned(),
    }
}

/// A request without a body.
pub(crate) fn bare_request(method: Method, path: &str) -> anyhow::Result<Request<Body>> {
    Ok(Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())?)
}

/// A request with `value` as its JSON body.
pub(crate) fn json_request(
    method: Method,
    path: &str,
    value: &Value,
) -> anyhow::Result<Request<Body>> {
    Ok(Request::builder()
        .method(method)
        .uri(path)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(value)?))?)
}

/// `req` with `Authorization: Bearer <token>`.
pub(crate) fn with_bearer(mut req: Request<Body>, token: &str) -> anyhow::Result<Request<Body>> {
    req.headers_mut()
        .insert(AUTHORIZATION, format!("Bearer {token}").parse()?);
    Ok(req)
}

/// The body as the tests see it: JSON, `Null` when empty, a string when not JSON.
fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

impl TestApp {
    /// Sends `req` through the router.
    pub(crate) async fn send(&self, req: Request<Body>) -> anyhow::Result<Resp> {
        let response = self.router.clone().oneshot(req).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, headers, parse_body(&bytes)))
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Resp> {
        self.send(bare_request(Method::GET, path)?).await
    }

    /// `DELETE path`.
    pub(crate) async fn delete(&self, path: &str) -> anyhow::Result<Resp> {
        self.send(bare_request(Method::DELETE, path)?).await
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post_json(&self, path: &str, value: &Value) -> anyhow::Result<Resp> {
        self.send(json_request(Method::POST, path, value)?).await
    }

    /// `PATCH path` with a JSON body.
    pub(crate) async fn patch_json(&self, path: &str, value: &Value) -> anyhow::Result<Resp> {
        self.send(json_request(Method::PATCH, path, value)?).await
    }

    /// `PUT path` with a JSON body.
    pub(crate) async fn put_json(&self, path: &str, value: &Value) -> anyhow::Result<Resp> {
        self.send(json_request(Method::PUT, path, value)?).await
    }

    /// Any method, path, headers and raw body bytes.
    pub(crate) async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> anyhow::Result<Resp> {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(body.into())?).await
    }

    /// Creates a resource with `POST path`, insisting on 201, and returns its body.
    pub(crate) async fn create(&self, path: &str, value: &Value) -> anyhow::Result<Value> {
        let (status, _, body) = self.post_json(path, value).await?;
        anyhow::ensure!(
            status == StatusCode::CREATED,
            "POST {path} {value}: expected 201, got {status}: {body}"
        );
        Ok(body)
    }

    /// Creates an agent of type `worker` named `name` and returns its id.
    pub(crate) async fn agent(&self, name: &str) -> anyhow::Result<i64> {
        let body = self
            .create(
                "/api/v1/agents",
                &serde_json::json!({ "name": name, "type": "worker" }),
            )
            .await?;
        id_of(&body)
    }

    /// Creates an `http` tool named `name` with `config` and returns its id.
    pub(crate) async fn tool(&self, name: &str, config: Value) -> anyhow::Result<i64> {
        let body = self
            .create(
                "/api/v1/tools",
                &serde_json::json!({ "name": name, "type": "http", "config": config }),
            )
            .await?;
        id_of(&body)
    }
}

/// The `id` of a resource body.
pub(crate) fn id_of(body: &Value) -> anyhow::Result<i64> {
    body["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no numeric id in {body}"))
}

/// The `items` of a listing, checking the listing shape `{"items": [...], "total": N}`.
pub(crate) fn items(body: &Value) -> anyhow::Result<Vec<Value>> {
    let object = body
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("a listing must be an object, got {body}"))?;
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    anyhow::ensure!(
        keys == ["items", "total"],
        "listing keys {keys:?} in {body}"
    );
    anyhow::ensure!(
        body["total"].is_i64(),
        "listing total is not an integer: {body}"
    );
    body["items"]
        .as_array()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("listing items is not an array: {body}"))
}

/// The `total` of a listing.
pub(crate) fn total(body: &Value) -> anyhow::Result<i64> {
    body["total"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no integer total in {body}"))
}

/// The value of field `field` of every item of a listing.
pub(crate) fn field_of_items(body: &Value, field: &str) -> anyhow::Result<Vec<Value>> {
    Ok(items(body)?
        .iter()
        .map(|item| item[field].clone())
        .collect())
}

/// Asserts that `resp` is an error with `status` whose body is exactly
/// `{"error": {"code": code, "message": <non-empty string>}}`.
#[track_caller]
pub(crate) fn assert_error(resp: &Resp, status: StatusCode, code: &str) {
    let (actual, headers, body) = resp;
    assert_eq!(*actual, status, "status; body: {body}");
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "error content type {content_type:?}; body: {body}"
    );
    let object = body.as_object();
    assert!(
        object.is_some_and(|o| o.len() == 1 && o.contains_key("error")),
        "error body must be exactly {{\"error\": ...}}, got {body}"
    );
    let error = &body["error"];
    let detail = error.as_object();
    assert!(
        detail.is_some_and(|d| d.len() == 2 && d.contains_key("code") && d.contains_key("message")),
        "error must have exactly code and message, got {body}"
    );
    assert_eq!(error["code"], Value::from(code), "error code; body: {body}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| !m.trim().is_empty()),
        "error message must be a non-empty string, got {body}"
    );
}

/// The error message of an error body (empty when there is none).
pub(crate) fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

// -------------------------------------------------------------------------------------------
// Real server processes over PostgreSQL (`cache_push`, `cache_outage`): the gate on the
// PostgreSQL URL, a throw-away schema, the `groundwork` binary killed on drop, and raw
// HTTP/1.1 requests to it.
// -------------------------------------------------------------------------------------------

/// Environment variable naming the PostgreSQL server the process tests run against (e.g.
/// `postgres://postgres@127.0.0.1:5432/test`).
pub(crate) const POSTGRES_URL_VAR: &str = "GROUNDWORK_TEST_POSTGRES_URL";
/// When `1`, a missing [`POSTGRES_URL_VAR`] fails the process tests instead of skipping them.
pub(crate) const REQUIRE_POSTGRES_VAR: &str = "GROUNDWORK_REQUIRE_POSTGRES";

/// How long one raw HTTP request to a server process may take in all.
const PROCESS_HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

static SCHEMA_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The PostgreSQL URL of the process tests, or `None` after a notice on stderr when it is
/// unset (the caller then passes without doing anything).
///
/// # Errors
/// When the URL is unset and `GROUNDWORK_REQUIRE_POSTGRES=1`.
pub(crate) fn postgres_url(test: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Ok(Some(url.trim().to_owned())),
        _ if std::env::var(REQUIRE_POSTGRES_VAR).as_deref() == Ok("1") => {
            anyhow::bail!("{test}: {REQUIRE_POSTGRES_VAR}=1 but {POSTGRES_URL_VAR} is not set")
        }
        _ => {
            eprintln!("skipping {test}: {POSTGRES_URL_VAR} is not set");
            Ok(None)
        }
    }
}

/// A fresh, empty PostgreSQL schema, dropped (best effort, reported on stderr) when this
/// value is dropped — also when the test fails. Declare it before the servers using it, so
/// that they are killed first.
pub(crate) struct PgSchema {
    admin_url: String,
    name: String,
}

impl PgSchema {
    /// Creates schema `<prefix>_<pid>_<n>` on the server of `admin_url`. `prefix` must be
    /// lowercase letters, digits and `_` (it is spliced into SQL).
    ///
    /// # Errors
    /// When PostgreSQL cannot be reached or the schema cannot be created.
    pub(crate) async fn create(admin_url: &str, prefix: &str) -> anyhow::Result<Self> {
        use sqlx::Connection as _;
        anyhow::ensure!(
            !prefix.is_empty()
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "schema prefix {prefix:?} must be lowercase letters, digits and '_'"
        );
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            SCHEMA_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(admin_url).await?;
        // A leftover of an earlier process with the same pid is not fresh.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE"
        )))
        .execute(&mut admin)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
        })
    }

    /// The schema's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `url` with `search_path` set to this schema for every connection
    /// (`options=-c search_path=<schema>`, percent-encoded, appended with `?` or `&`).
    pub(crate) fn database_url(&self, url: &str) -> String {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}options=-c%20search_path%3D{}", self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            use sqlx::Connection as _;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let work = async {
                    let mut admin = sqlx::PgConnection::connect(&url).await?;
                    sqlx::query("SET lock_timeout = '10s'")
                        .execute(&mut admin)
                        .await?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {name} CASCADE"
                    )))
                    .execute(&mut admin)
                    .await?;
                    admin.close().await?;
                    anyhow::Ok(())
                };
                tokio::time::timeout(std::time::Duration::from_secs(30), work)
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within 30 s"))?
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("could not drop test schema {}: {err:#}", self.name),
            Err(_) => eprintln!("dropping test schema {} panicked", self.name),
        }
    }
}

/// A free TCP port on 127.0.0.1 (free when this returns; bind it soon).
///
/// # Errors
/// When no port can be bound.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The `groundwork` binary serving on a free loopback port, with its output in files;
/// killed when dropped, so that no failure path leaves a server running.
pub(crate) struct ServerProcess {
    child: std::process::Child,
    /// The port it listens on (127.0.0.1).
    pub(crate) port: u16,
    label: String,
    logs: TempDir,
}

impl ServerProcess {
    /// Starts `groundwork serve` with no inherited `GROUNDWORK_*` variable but `env`, bound
    /// to `127.0.0.1:<free port>` (`GROUNDWORK_BIND`). `label` names it in messages.
    ///
    /// # Errors
    /// When the process cannot be started.
    pub(crate) fn spawn(label: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::spawn_with(label, &["serve"], env)
    }

    /// [`ServerProcess::spawn`] with other arguments than `serve` (`worker`,
    /// `serve --no-workers`). `GROUNDWORK_BIND` is set all the same.
    ///
    /// # Errors
    /// When the process cannot be started.
    pub(crate) fn spawn_with(
        label: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        use std::process::{Command, Stdio};
        let logs = tempfile::tempdir()?;
        let port = free_port()?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_groundwork"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GROUNDWORK_") {
                command.env_remove(name);
            }
        }
        command
            .args(args)
            .env("GROUNDWORK_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .current_dir(logs.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(
                logs.path().join("server.out"),
            )?))
            .stderr(Stdio::from(std::fs::File::create(
                logs.path().join("server.err"),
            )?));
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn()?;
        Ok(Self {
            child,
            port,
            label: label.to_owned(),
            logs,
        })
    }

    /// Sends SIGTERM (through `kill`) and waits up to `within` for the process to exit.
    ///
    /// # Errors
    /// When `kill` fails or the process is still running after `within`.
    pub(crate) async fn terminate(
        &mut self,
        within: std::time::Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{} still running {within:?} after SIGTERM\n{}",
                self.label,
                self.logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server printed so far.
    pub(crate) fn logs(&self) -> String {
        let read =
            |file: &str| std::fs::read_to_string(self.logs.path().join(file)).unwrap_or_default();
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.label,
            read("server.out"),
            self.label,
            read("server.err")
        )
    }

    /// Polls `GET /ready` until it answers 200.
    ///
    /// # Errors
    /// When the process exits, or `/ready` is not 200 within `timeout`.
    pub(crate) async fn wait_ready(&mut self, timeout: std::time::Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("{} exited early with {status}\n{}", self.label, self.logs());
            }
            let last = match self.request(Method::GET, "/ready", None).await {
                Ok((status, _, _)) if status == StatusCode::OK => return Ok(()),
                Ok((status, _, body)) => format!("{status} {body}"),
                Err(err) => format!("{err:#}"),
            };
            if std::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "{} was not ready within {timeout:?} (last: {last})\n{}",
                    self.label,
                    self.logs()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// `method path` (with `body` as JSON) to this server; see [`http_request`].
    ///
    /// # Errors
    /// See [`http_request`].
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Resp> {
        http_request(self.port, method, path, body).await
    }

    /// `method path` (with `body` as JSON), insisting on `expected`; returns the body.
    ///
    /// # Errors
    /// On another status (with the server's logs), or when the request fails.
    pub(crate) async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> anyhow::Result<Value> {
        let (status, _, answer) = self.request(method.clone(), path, body).await?;
        anyhow::ensure!(
            status == expected,
            "{} {method} {path}: expected {expected}, got {status}: {answer}",
            self.label
        );
        Ok(answer)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `method path` to `127.0.0.1:port` over a fresh HTTP/1.1 connection (`Connection: close`),
/// with `body` as JSON if given; status, headers and body as [`TestApp::send`] returns them.
///
/// # Errors
/// When the connection fails, no full answer comes within 30 s, or the answer is not HTTP.
pub(crate) async fn http_request(
    port: u16,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Resp> {
    let exchange = async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let payload = match body {
            Some(value) => serde_json::to_vec(value)?,
            None => Vec::new(),
        };
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
            payload.len()
        );
        if body.is_some() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(&payload);
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&bytes).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        parse_http_response(&response)
    };
    tokio::time::timeout(PROCESS_HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            anyhow::anyhow!("{method} {path}: no answer within {PROCESS_HTTP_TIMEOUT:?}")
        })?
}

/// Splits a raw HTTP/1.1 response into status, headers and body (de-chunked if needed).
fn parse_http_response(raw: &[u8]) -> anyhow::Result<Resp> {
    use axum::http::header::{HeaderName, HeaderValue, TRANSFER_ENCODING};
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            anyhow::anyhow!("no end of headers in {:?}", String::from_utf8_lossy(raw))
        })?;
    let head = std::str::from_utf8(raw.get(..split).unwrap_or_default())?;
    let mut body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code: u16 = status_line
        .split(' ')
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?
        .parse()?;
    let status = StatusCode::from_u16(code)?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("bad header line {line:?}"))?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes())?,
            HeaderValue::from_str(value.trim())?,
        );
    }
    let chunked = headers
        .get(TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok((status, headers, parse_body(&body)))
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow::anyhow!("truncated chunked body"))?;
        let size_line = std::str::from_utf8(data.get(..line_end).unwrap_or_default())?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)?;
        data = data.get(line_end + 2..).unwrap_or_default();
        if size == 0 {
            return Ok(out);
        }
        let chunk = data
            .get(..size)
            .ok_or_else(|| anyhow::anyhow!("truncated chunk"))?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// How many files there are under `dir`, at any depth (0 when it does not exist).
pub(crate) fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        files_under(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
