//! Pooled clients for the services Groundwork calls: an HTTP client and a Redis client.
//!
//! [`http::HttpClient`] is built once in `main` and cloned wherever it is needed (the LLM
//! layer, webhooks). It wraps reqwest over rustls with ring, keeps idle connections per host,
//! caches DNS answers for a fixed TTL ([`http::CachingResolver`]), applies connect and total
//! timeouts, and counts requests, errors by class, requests in flight and latency
//! ([`http::HttpClientStats`], exported through the `metrics` crate).
//!
//! [`redis::RedisClient`] is built the same way, for features that must degrade rather than
//! fail when Redis is slow or down: it connects in the background, runs every operation
//! under a short timeout and a circuit breaker, replaces a connection that stops answering,
//! and keeps pub/sub subscriptions alive across outages ([`redis::RedisStats`]).
//!
//! ```
//! use std::time::Duration;
//! use groundwork_clients::http::{HttpClient, HttpClientOptions};
//!
//! // 30 idle connections per host kept 60 s, connect timeout 10 s, total timeout 30 s,
//! // DNS answers kept 300 s, `User-Agent: groundwork/<version>`.
//! let client = HttpClient::new(HttpClientOptions::default())?;
//!
//! // Another component wanting a longer total timeout builds its own requests:
//! let request = client.post("https://api.example.com/v1/chat").timeout(Duration::from_secs(120));
//! # drop(request);
//! // ... and sends them with `client.send(request).await?`, which counts them.
//!
//! let stats = client.stats();
//! assert_eq!((stats.requests, stats.errors(), stats.dns_misses), (0, 0, 0));
//! assert_eq!(stats.timeout, Duration::from_secs(30));
//! stats.publish("default"); // `groundwork_http_client_*{client="default"}`
//! # Ok::<(), groundwork_clients::http::HttpClientError>(())
//! ```

pub mod http;
pub mod redis;
