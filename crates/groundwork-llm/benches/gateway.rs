//! In-process costs of the gateway, against the testkit's mock upstream on loopback,
//! interleaved with the same calls made straight through the client (the peer):
//! - time to first byte of a streaming miss: gateway (recording, fan-out) vs client alone —
//!   the goal is at most 1 ms added;
//! - a non-streaming miss end to end: gateway vs client alone;
//! - a hit from memory, streaming and not;
//! - with Redis (`GROUNDWORK_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`; skipped with a
//!   notice when it does not answer): the same misses through a gateway whose cache has a
//!   Redis level, so the miss path includes the Redis lookup, and a bare `GET` for reference.
//!
//! `cargo bench -p groundwork-llm --bench gateway` (under `cargo test --benches`, a few rounds).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use groundwork_clients::http::{HttpClient, HttpClientOptions};
use groundwork_clients::redis::{RedisClient, RedisOptions};
use groundwork_llm::cache::{ResponseCache, ResponseCacheOptions};
use groundwork_llm::client::{ClientOptions, LlmClient, SseEvent, Upstream};
use groundwork_llm::gateway::{ChatReply, ChatRequest, Gateway, GatewayOptions};
use groundwork_llm::policy::CachePolicy;
use groundwork_testkit::openai::MockOpenAi;
use groundwork_testkit::services::redis_url;
use serde_json::{Value, json};

fn body(n: usize, stream: bool) -> Value {
    json!({
        "model": "mock-1",
        "temperature": 0,
        "stream": stream,
        "messages": [{"role": "user", "content": format!("question number {n}")}]
    })
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len().saturating_sub(1)) * p / 100)
        .copied()
        .unwrap_or_default()
}

fn line(label: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 50), percentile(&samples, 99));
    println!(
        "  {label:<44} p50 {:>8.1} µs  p99 {:>8.1} µs  ({} samples)",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        samples.len()
    );
    (p50, p99)
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let rounds = if bench_mode { 2_000 } else { 20 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let mock = MockOpenAi::start().expect("mock upstream");
        let http = HttpClient::new(HttpClientOptions::new()).expect("HTTP client");
        let client = LlmClient::new(http, ClientOptions::new());
        let upstream = Upstream::new(mock.base_url());
        let gateway = Gateway::new(
            client.clone(),
            upstream.clone(),
            ResponseCache::new(ResponseCacheOptions::new(), None),
            GatewayOptions::new(),
        );
        // The same gateway with a Redis level, when Redis answers.
        let redis = match redis_url("llm_gateway_bench") {
            Some(url) => {
                let redis = RedisClient::new(RedisOptions::new(url)).expect("Redis client");
                let started = Instant::now();
                while redis.ping().await.is_err() && started.elapsed() < Duration::from_secs(5) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                redis.ping().await.ok().map(|_| redis)
            }
            None => None,
        };
        let prefix = format!(
            "gwbench:{}:{}:",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let redis_gateway = redis.clone().map(|redis| {
            Gateway::new(
                client.clone(),
                upstream.clone(),
                ResponseCache::new(
                    ResponseCacheOptions::new().redis_prefix(prefix.clone()),
                    Some(redis),
                ),
                GatewayOptions::new(),
            )
        });
        let ask = |body: Value| ChatRequest {
            tenant: "bench".to_owned(),
            body,
            policy: CachePolicy::normal(),
        };

        let mut direct_ttfb = Vec::new();
        let mut gateway_ttfb = Vec::new();
        let mut direct_complete = Vec::new();
        let mut gateway_complete = Vec::new();
        let mut redis_ttfb = Vec::new();
        let mut redis_complete = Vec::new();
        let mut redis_get = Vec::new();
        for n in 0..rounds {
            // Streams: time to the first event, every request a miss (a new question).
            let started = Instant::now();
            let mut events = client.stream(&upstream, &body(n, true)).await.unwrap();
            let first = events.next().await;
            direct_ttfb.push(started.elapsed());
            assert!(matches!(first, Some(Ok(SseEvent::Data(_)))));
            while events.next().await.is_some() {}

            let started = Instant::now();
            let ChatReply::Stream { mut frames, .. } =
                gateway.chat(ask(body(rounds + n, true))).await.unwrap()
            else {
                panic!("a stream")
            };
            let first = frames.next().await;
            gateway_ttfb.push(started.elapsed());
            assert!(matches!(first, Some(Ok(_))));
            while frames.next().await.is_some() {}

            // Non-streaming misses, end to end.
            let started = Instant::now();
            client
                .complete(&upstream, &body(2 * rounds + n, false))
                .await
                .unwrap();
            direct_complete.push(started.elapsed());
            let started = Instant::now();
            gateway
                .chat(ask(body(3 * rounds + n, false)))
                .await
                .unwrap();
            gateway_complete.push(started.elapsed());

            // The same misses through the gateway with a Redis level.
            if let (Some(gateway), Some(redis)) = (&redis_gateway, &redis) {
                let started = Instant::now();
                let ChatReply::Stream { mut frames, .. } =
                    gateway.chat(ask(body(4 * rounds + n, true))).await.unwrap()
                else {
                    panic!("a stream")
                };
                let first = frames.next().await;
                redis_ttfb.push(started.elapsed());
                assert!(matches!(first, Some(Ok(_))));
                while frames.next().await.is_some() {}
                let started = Instant::now();
                gateway
                    .chat(ask(body(5 * rounds + n, false)))
                    .await
                    .unwrap();
                redis_complete.push(started.elapsed());
                let started = Instant::now();
                redis.get(&format!("{prefix}absent:{n}")).await.unwrap();
                redis_get.push(started.elapsed());
            }
        }

        // Hits from memory: every question above is cached now.
        let mut hit_json = Vec::new();
        let mut hit_stream = Vec::new();
        for n in 0..rounds {
            let started = Instant::now();
            gateway
                .chat(ask(body(3 * rounds + n, false)))
                .await
                .unwrap();
            hit_json.push(started.elapsed());
            let started = Instant::now();
            let ChatReply::Stream { mut frames, .. } =
                gateway.chat(ask(body(rounds + n, true))).await.unwrap()
            else {
                panic!("a stream")
            };
            while frames.next().await.is_some() {}
            hit_stream.push(started.elapsed());
        }

        println!("\n==================== groundwork-llm gateway benchmark ====================");
        println!("mock upstream on loopback, no added latency; {rounds} rounds, interleaved");
        println!("streaming miss, time to first event:");
        let (d50, d99) = line("client alone (peer)", direct_ttfb);
        let (g50, g99) = line("through the gateway (record + fan-out)", gateway_ttfb);
        println!(
            "  added: p50 {:.1} µs, p99 {:.1} µs (goal: at most 1 ms)",
            (g50.as_secs_f64() - d50.as_secs_f64()) * 1e6,
            (g99.as_secs_f64() - d99.as_secs_f64()) * 1e6
        );
        println!("non-streaming miss, whole answer:");
        let (d50, d99) = line("client alone (peer)", direct_complete);
        let (g50, g99) = line(
            "through the gateway (key, single-flight, store)",
            gateway_complete,
        );
        println!(
            "  added: p50 {:.1} µs, p99 {:.1} µs",
            (g50.as_secs_f64() - d50.as_secs_f64()) * 1e6,
            (g99.as_secs_f64() - d99.as_secs_f64()) * 1e6
        );
        if redis_gateway.is_some() {
            println!("misses through a gateway with a Redis level (the lookup asks Redis):");
            line("streaming, time to first event", redis_ttfb);
            line("non-streaming, whole answer", redis_complete);
            line("a bare Redis GET (reference)", redis_get);
        } else {
            println!("no Redis: the misses with a Redis level were not measured");
        }
        println!("hits from memory (no upstream call):");
        line("non-streaming", hit_json);
        line("streaming, whole replay", hit_stream);
        let expected = if redis_gateway.is_some() { 6 } else { 4 } * rounds;
        println!("upstream calls: {} (expected {expected})", mock.calls());
        println!("(command: cargo bench -p groundwork-llm --bench gateway)");
    });
}
