//! `loadgen`: an open-loop HTTP/1.1 POST load generator whose every request is distinct, for
//! measuring what a cache adds to a real miss (`bench/llm_proxy.sh`).
//!
//! ```text
//! loadgen --url http://127.0.0.1:8080/v1/chat/completions --template body.json --tag run1 \
//!         --rate 1000 --seconds 20 --connections 64 --out load.json
//! ```
//!
//! Request `n` is sent at `start + n / rate` whatever the answers do (open loop), with the
//! template's `@N@` replaced by `<tag>-<n>`, so no body repeats; its latency counts from that
//! scheduled start, as `oha --latency-correction` does, so a request queued behind a slow one
//! is charged for the wait. The answers are read by `--connections` keep-alive connections;
//! the JSON written to `--out` has the fields of `oha --output-format json` that the bench
//! reads, plus the tally of `x-groundwork-cache` headers.
//!
//! Why not oha: it sends one body (or random lines of a file, with repeats), so through a
//! cache most of its requests would be hits. This tool runs on one thread so that it takes as
//! little as possible of the cores the measured servers share with it.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

const USAGE: &str = "\
Usage: loadgen --url <URL> --template <FILE> --tag <TAG> --rate <PER_S> --seconds <S> --out <FILE> [OPTIONS]

Open-loop POST load at a fixed rate, every body distinct (the template's @N@ becomes
<TAG>-<n>); latency from each request's scheduled start; writes oha-like JSON figures.

Options:
  --url <URL>            http:// URL to POST to
  --template <FILE>      The body, containing @N@
  --tag <TAG>            What makes this run's bodies its own
  --rate <PER_S>         Requests per second
  --seconds <S>          How long to send
  --connections <N>      Keep-alive connections [default: 64]
  --timeout <S>          Per request (connecting included) [default: 10]
  --header <NAME: VALUE> An extra request header (repeatable)
  --out <FILE>           Where to write the JSON figures
  -h, --help             Print this help
";

/// The parsed command line.
#[derive(Clone)]
struct Args {
    uri: Uri,
    authority: String,
    template: Vec<u8>,
    tag: String,
    rate: f64,
    seconds: f64,
    connections: usize,
    timeout: Duration,
    headers: Vec<(String, String)>,
    out: String,
}

/// What the workers saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    bytes: u64,
    status: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    cache: BTreeMap<String, u64>,
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("loadgen: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("loadgen: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let (sent, tally, elapsed) = runtime.block_on(run(&args));
    let document = figures(sent, tally, elapsed);
    let text = match serde_json::to_vec_pretty(&document) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("loadgen: cannot encode the figures: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = std::fs::write(&args.out, text) {
        eprintln!("loadgen: cannot write {}: {err}", args.out);
        return ExitCode::FAILURE;
    }
    if sent == 0 {
        eprintln!("loadgen: no request was sent");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Sends the load; returns how many requests were scheduled, what was seen and how long it
/// took (the requests in flight at the deadline included, as `oha -w`).
async fn run(args: &Args) -> (u64, Tally, Duration) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (jobs, queue) = mpsc::unbounded_channel::<(u64, Instant)>();
    let queue = Arc::new(Mutex::new(queue));
    let args = Arc::new(args.clone());
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            tokio::spawn(worker(
                Arc::clone(&args),
                Arc::clone(&queue),
                Arc::clone(&tally),
            ))
        })
        .collect();
    // The schedule runs on a thread of its own, sleeping to each due time with a
    // high-resolution timer: Tokio's timer rounds up to whole milliseconds, which would send
    // the requests late, in bursts, on the runtime's ticks.
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.seconds);
    let rate = args.rate;
    let scheduler = std::thread::spawn(move || {
        let mut sent = 0_u64;
        loop {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            if due >= end {
                break;
            }
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            if jobs.send((sent, due)).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    // As `oha -w`: the requests in flight at the end are waited for, up to their timeout.
    let deadline = end + args.timeout + Duration::from_secs(5);
    for worker in workers {
        if tokio::time::timeout_at(deadline, worker).await.is_err() {
            break;
        }
    }
    let elapsed = started.elapsed();
    // The thread ends at `end` at the latest, before the deadline.
    let sent = scheduler.join().unwrap_or(0);
    let tally = std::mem::take(&mut *tally.lock().await);
    (sent, tally, elapsed)
}

/// One keep-alive connection: takes the next due request, sends it, reads the answer.
async fn worker(
    args: Arc<Args>,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<(u64, Instant)>>>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
    loop {
        let next = queue.lock().await.recv().await;
        let Some((n, due)) = next else { break };
        let body = distinct_body(&args.template, &format!("{}-{n}", args.tag));
        let outcome = tokio::time::timeout(args.timeout, send(&args, &mut sender, body)).await;
        let mut tally = tally.lock().await;
        match outcome {
            Ok(Ok((status, cache, bytes, keep))) => {
                tally.latencies.push(due.elapsed());
                tally.bytes += bytes;
                *tally.status.entry(status.to_string()).or_default() += 1;
                *tally.cache.entry(cache).or_default() += 1;
                if !keep {
                    sender = None;
                }
            }
            Ok(Err(error)) => {
                *tally.errors.entry(error).or_default() += 1;
                sender = None;
            }
            Err(_) => {
                *tally
                    .errors
                    .entry("timeout: no answer within --timeout".to_owned())
                    .or_default() += 1;
                sender = None;
            }
        }
    }
}

/// Sends one request on the worker's connection (opened first if needed); the status, the
/// `x-groundwork-cache` header, the body's size, and whether the connection stays open.
async fn send(
    args: &Args,
    sender: &mut Option<http1::SendRequest<Full<Bytes>>>,
    body: Vec<u8>,
) -> Result<(u16, String, u64, bool), String> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = TcpStream::connect(&args.authority)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        let (new, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        *sender = Some(new);
    }
    let Some(sender) = sender.as_mut() else {
        return Err("no connection".to_owned());
    };
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let mut request = Request::post(args.uri.clone())
        .header("host", &args.authority)
        .header("content-type", "application/json");
    for (name, value) in &args.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-groundwork-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let keep = !response
        .headers()
        .get("connection")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes()
        .len() as u64;
    Ok((status, cache, bytes, keep))
}

/// The template with every `@N@` replaced by `unique`.
fn distinct_body(template: &[u8], unique: &str) -> Vec<u8> {
    const MARK: &[u8] = b"@N@";
    let mut out = Vec::with_capacity(template.len() + unique.len());
    let mut rest = template;
    while let Some(at) = rest.windows(MARK.len()).position(|w| w == MARK) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(unique.as_bytes());
        rest = &rest[at + MARK.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// The fields of `oha --output-format json` that `bench/llm_proxy.py report` reads (seconds),
/// plus `cacheHeaderDistribution` and `sent`.
fn figures(sent: u64, mut tally: Tally, elapsed: Duration) -> serde_json::Value {
    tally.latencies.sort_unstable();
    let lat = &tally.latencies;
    let q = |p: f64| -> Option<f64> {
        let last = lat.len().checked_sub(1)?;
        let at = ((p / 100.0) * last as f64).round() as usize;
        lat.get(at.min(last)).map(Duration::as_secs_f64)
    };
    let answered = lat.len() as u64;
    let failed: u64 = tally.errors.values().sum();
    let unanswered = sent.saturating_sub(answered + failed);
    if unanswered > 0 {
        tally.errors.insert(
            "no answer within the timeout after the deadline".to_owned(),
            unanswered,
        );
    }
    let secs = elapsed.as_secs_f64();
    json!({
        "summary": {
            "requestsPerSec": if secs > 0.0 { answered as f64 / secs } else { 0.0 },
            "slowest": lat.last().map(Duration::as_secs_f64),
            "average": (answered > 0).then(|| {
                lat.iter().map(Duration::as_secs_f64).sum::<f64>() / answered as f64
            }),
            "sizePerRequest": tally.bytes.checked_div(answered),
            "total": secs,
        },
        "latencyPercentiles": {
            "p50": q(50.0), "p90": q(90.0), "p99": q(99.0), "p99.9": q(99.9),
        },
        "statusCodeDistribution": tally.status,
        "errorDistribution": tally.errors,
        "cacheHeaderDistribution": tally.cache,
        "sent": sent,
    })
}

/// Parses the command line; `None` for `--help`.
fn parse(mut argv: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let (mut url, mut template, mut tag, mut rate, mut seconds, mut out) =
        (None, None, None, None, None, None);
    let mut connections = 64_usize;
    let mut timeout = Duration::from_secs(10);
    let mut headers = Vec::new();
    while let Some(flag) = argv.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| -> Result<f64, String> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("{what} must be a positive number, got '{value}'"))
        };
        match flag.as_str() {
            "--url" => url = Some(value.clone()),
            "--template" => template = Some(value.clone()),
            "--tag" => tag = Some(value.clone()),
            "--rate" => rate = Some(number("--rate")?),
            "--seconds" => seconds = Some(number("--seconds")?),
            "--connections" => {
                connections = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!("--connections must be a positive integer, got '{value}'")
                })?;
            }
            "--timeout" => timeout = Duration::from_secs_f64(number("--timeout")?),
            "--header" => {
                let (name, v) = value
                    .split_once(':')
                    .ok_or_else(|| format!("--header must be 'name: value', got '{value}'"))?;
                headers.push((name.trim().to_owned(), v.trim().to_owned()));
            }
            "--out" => out = Some(value.clone()),
            other => return Err(format!("unexpected argument '{other}'")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("--url '{url}' is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--url must be http://, got '{url}'"));
    }
    let authority = uri
        .authority()
        .map(|a| {
            if a.port().is_some() {
                a.to_string()
            } else {
                format!("{a}:80")
            }
        })
        .ok_or_else(|| format!("--url '{url}' has no host"))?;
    let template_path = template.ok_or("--template is required")?;
    let template = std::fs::read(&template_path)
        .map_err(|e| format!("cannot read --template {template_path}: {e}"))?;
    if !template.windows(3).any(|w| w == b"@N@") {
        return Err(format!(
            "{template_path} has no @N@ to make each body distinct"
        ));
    }
    Ok(Some(Args {
        uri,
        authority,
        template,
        tag: tag.ok_or("--tag is required")?,
        rate: rate.ok_or("--rate is required")?,
        seconds: seconds.ok_or("--seconds is required")?,
        connections,
        timeout,
        headers,
        out: out.ok_or("--out is required")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mark_is_replaced() {
        assert_eq!(
            distinct_body(b"{\"a\":\"@N@\",\"b\":\"x@N@y\"}", "t-7"),
            b"{\"a\":\"t-7\",\"b\":\"xt-7y\"}"
        );
        assert_eq!(distinct_body(b"none", "t-1"), b"none");
    }

    #[test]
    fn bad_flags_are_refused() {
        let args = |list: &[&str]| parse(list.iter().map(|s| (*s).to_owned()));
        assert!(args(&["--rate", "0"]).is_err());
        assert!(args(&["--rate", "abc"]).is_err());
        assert!(args(&["--bogus", "1"]).is_err());
        assert!(args(&["--url"]).is_err());
        assert!(matches!(args(&["--help"]), Ok(None)));
        assert!(args(&["--url", "https://x/", "--template", "/nonexistent"]).is_err());
    }

    #[test]
    fn percentiles_and_unanswered_requests() {
        let tally = Tally {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            bytes: 1000,
            ..Tally::default()
        };
        let doc = figures(103, tally, Duration::from_secs(1));
        assert_eq!(doc["latencyPercentiles"]["p50"], json!(0.051));
        assert_eq!(doc["latencyPercentiles"]["p99"], json!(0.099));
        assert_eq!(
            doc["errorDistribution"]["no answer within the timeout after the deadline"],
            json!(3)
        );
        assert_eq!(doc["summary"]["sizePerRequest"], json!(10));
    }
}
