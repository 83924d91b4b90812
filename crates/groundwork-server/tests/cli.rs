//! The `groundwork` binary: refusing an unauthenticated public bind, printing redacted
//! configuration, migrating, reporting a missing config file, and shutting down gracefully on
//! SIGTERM.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use groundwork_db::{AgentFilter, Database, DatabaseOptions, Page};

/// The binary with a clean environment: no inherited `GROUNDWORK_*` variable, run from `dir`.
fn groundwork(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_groundwork"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GROUNDWORK_") {
            command.env_remove(name);
        }
    }
    command
        .env_remove("GROUNDWORK_API_KEYS")
        .env("RUST_LOG", "info")
        .current_dir(dir)
        .stdin(Stdio::null());
    command
}

/// Kills the child when dropped, so that no failure path leaves a server running.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    /// Waits up to `timeout` for the process to exit.
    fn wait_for_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs `command` to completion, killing it if it takes longer than `timeout`.
fn run(mut command: Command, timeout: Duration) -> anyhow::Result<Output> {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut guard = ChildGuard(child);
    let status = guard
        .wait_for_exit(timeout)?
        .ok_or_else(|| anyhow::anyhow!("the process did not exit within {timeout:?}"))?;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut out) = guard.0.stdout.take() {
        out.read_to_end(&mut stdout)?;
    }
    if let Some(mut err) = guard.0.stderr.take() {
        err.read_to_end(&mut stderr)?;
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn sqlite_url(dir: &Path, file: &str) -> String {
    format!("sqlite://{}", dir.join(file).display())
}

#[test]
fn serve_refuses_a_public_bind_without_keys() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db_file = dir.path().join("data").join("g.db");
    let mut command = groundwork(dir.path());
    command.args(["serve", "--bind", "0.0.0.0:8080"]).env(
        "GROUNDWORK_DATABASE_URL",
        format!("sqlite://{}", db_file.display()),
    );
    let output = run(command, Duration::from_secs(10))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "must refuse; stderr: {stderr}");
    assert!(stderr.contains("GROUNDWORK_API_KEYS"), "stderr: {stderr}");
    assert!(
        !db_file.exists(),
        "the refusal comes before the database is touched"
    );
    Ok(())
}

#[test]
fn config_prints_redacted_toml() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut command = groundwork(dir.path());
    command
        .arg("config")
        .env("GROUNDWORK_API_KEYS", "ci:topsecret")
        .env("GROUNDWORK_DATABASE_URL", "postgres://u:dbpass@h/db")
        .env(
            "GROUNDWORK_STORAGE_URL",
            "s3://b?endpoint=http://h:9000&access_key_id=AKID&secret_access_key=s3secret",
        );
    let output = run(command, Duration::from_secs(10))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    assert!(stdout.contains("ci:<redacted>"), "stdout: {stdout}");
    for secret in ["topsecret", "dbpass", "AKID", "s3secret"] {
        assert!(
            !stdout.contains(secret),
            "{secret} leaked to stdout: {stdout}"
        );
        assert!(
            !stderr.contains(secret),
            "{secret} leaked to stderr: {stderr}"
        );
    }
    assert!(
        stdout.contains("postgres://u:"),
        "the URL is shown, redacted: {stdout}"
    );

    // What is printed is loadable configuration.
    let printed: groundwork_server::config::Config = toml::from_str(&stdout)?;
    assert_eq!(printed.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(printed.api_keys.len(), 1);
    assert_eq!(
        printed.api_keys.first().map(|k| k.name.as_str()),
        Some("ci")
    );
    Ok(())
}

#[tokio::test]
async fn migrate_creates_the_database() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path(), "m.db");
    let mut command = groundwork(dir.path());
    command.arg("migrate").env("GROUNDWORK_DATABASE_URL", &url);
    let output = run(command, Duration::from_secs(30))?;
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("m.db").is_file(), "m.db was not created");

    // The schema is there.
    let db = Database::connect(DatabaseOptions::new(url)).await?;
    let agents = db
        .agents()
        .list(&AgentFilter::default(), Page::default())
        .await?;
    assert_eq!(agents.total, 0);
    db.close().await;
    Ok(())
}

#[test]
fn missing_config_file_is_reported() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("no-such-groundwork.toml");
    let mut command = groundwork(dir.path());
    command.arg("--config").arg(&missing).arg("config");
    let output = run(command, Duration::from_secs(10))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "stderr: {stderr}");
    assert!(
        stderr.contains(&missing.display().to_string()),
        "the message names the file; stderr: {stderr}"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "the cause once, not repeated; stderr: {stderr}"
    );
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `GET /health` over a raw HTTP/1.1 connection; the whole response as text.
fn get_health(port: u16) -> anyhow::Result<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let _ = stream.shutdown(Shutdown::Both);
    Ok(response)
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A server started on a free loopback port over a temporary SQLite file, with its logs
/// written to files in `dir`.
struct Server {
    guard: ChildGuard,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(extra_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut command = groundwork(dir.path());
        command
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .env("GROUNDWORK_DATABASE_URL", sqlite_url(dir.path(), "s.db"))
            .stdout(Stdio::from(std::fs::File::create(
                dir.path().join("server.out"),
            )?))
            .stderr(Stdio::from(std::fs::File::create(
                dir.path().join("server.err"),
            )?));
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut server = Self {
            guard: ChildGuard(command.spawn()?),
            port,
            dir,
        };
        server.wait_until_healthy()?;
        Ok(server)
    }

    fn logs(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            log_of(&self.dir.path().join("server.out")),
            log_of(&self.dir.path().join("server.err"))
        )
    }

    /// Polls `GET /health` until it answers 200 (20 s at most).
    fn wait_until_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let response = loop {
            if let Some(status) = self.guard.0.try_wait()? {
                anyhow::bail!("the server exited early with {status}; {}", self.logs());
            }
            match get_health(self.port) {
                Ok(response) if !response.is_empty() => break response,
                _ if Instant::now() >= deadline => {
                    anyhow::bail!("/health did not answer within 20 s; {}", self.logs())
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        anyhow::ensure!(response.starts_with("HTTP/1.1 200"), "{response}");
        anyhow::ensure!(response.contains(r#"{"status":"ok"}"#), "{response}");
        Ok(())
    }

    /// Sends SIGTERM and waits up to `timeout` for a successful exit.
    fn terminate(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let pid = self.guard.0.id();
        let kill = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(kill.success(), "kill -TERM {pid} failed");
        let status = self.guard.wait_for_exit(timeout)?.ok_or_else(|| {
            anyhow::anyhow!("no exit within {timeout:?} of SIGTERM; {}", self.logs())
        })?;
        anyhow::ensure!(status.success(), "exit status {status}; {}", self.logs());
        Ok(())
    }
}

#[test]
fn serve_shuts_down_gracefully_on_sigterm() -> anyhow::Result<()> {
    let mut server = Server::start(&[])?;
    server.terminate(Duration::from_secs(15))?;
    assert!(
        get_health(server.port).is_err(),
        "nothing listens on the port after shutdown"
    );
    Ok(())
}

#[test]
fn idle_keep_alive_connection_does_not_delay_shutdown() -> anyhow::Result<()> {
    let mut server = Server::start(&[])?;
    // One complete request on a connection that is then kept open.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buffer = [0_u8; 512];
    let read = stream.read(&mut buffer)?;
    let head = String::from_utf8_lossy(&buffer[..read]);
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");

    // The default shutdown deadline is 10 s: an idle connection must not use it up.
    let started = Instant::now();
    server.terminate(Duration::from_secs(15))?;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?}; {}",
        server.logs()
    );
    drop(stream);
    Ok(())
}

#[test]
fn stuck_client_cannot_hold_shutdown_past_the_deadline() -> anyhow::Result<()> {
    let mut server = Server::start(&[("GROUNDWORK_SHUTDOWN_TIMEOUT_SECS", "1")])?;
    // Half a request: the server waits for the rest that never comes.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.write_all(
        b"POST /api/v1/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\"",
    )?;
    std::thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    server.terminate(Duration::from_secs(15))?;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "shutdown took {took:?}; {}",
        server.logs()
    );
    drop(stream);
    Ok(())
}
