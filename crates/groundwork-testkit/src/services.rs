//! The service URLs of test runs: `GROUNDWORK_TEST_POSTGRES_URL`, `GROUNDWORK_TEST_REDIS_URL`
//! and `GROUNDWORK_TEST_AMQP_URL`. A test calls [`postgres_url`], [`redis_url`] or
//! [`amqp_url`] and passes without doing anything when it gets `None` (after a notice on
//! stderr); with `GROUNDWORK_REQUIRE_POSTGRES=1` / `GROUNDWORK_REQUIRE_REDIS=1` /
//! `GROUNDWORK_REQUIRE_AMQP=1` (CI sets all three) a missing URL panics instead, so a service
//! suite can never skip silently there.
//!
//! ```
//! // Unset in doctests: the test would skip.
//! # if std::env::var("GROUNDWORK_REQUIRE_REDIS").is_err() {
//! if let Some(url) = groundwork_testkit::services::redis_url("my_test") {
//!     assert!(url.starts_with("redis"));
//! }
//! # }
//! ```

/// The PostgreSQL URL of the run, or `None` after a notice.
///
/// # Panics
/// When it is unset and `GROUNDWORK_REQUIRE_POSTGRES=1`.
#[must_use]
pub fn postgres_url(test: &str) -> Option<String> {
    service_url(
        test,
        "GROUNDWORK_TEST_POSTGRES_URL",
        "GROUNDWORK_REQUIRE_POSTGRES",
        "postgres://postgres@127.0.0.1:5432/test",
    )
}

/// The Redis URL of the run, or `None` after a notice.
///
/// # Panics
/// When it is unset and `GROUNDWORK_REQUIRE_REDIS=1`.
#[must_use]
pub fn redis_url(test: &str) -> Option<String> {
    service_url(
        test,
        "GROUNDWORK_TEST_REDIS_URL",
        "GROUNDWORK_REQUIRE_REDIS",
        "redis://127.0.0.1:6379",
    )
}

/// The RabbitMQ URL of the run, or `None` after a notice.
///
/// # Panics
/// When it is unset and `GROUNDWORK_REQUIRE_AMQP=1`.
#[must_use]
pub fn amqp_url(test: &str) -> Option<String> {
    service_url(
        test,
        "GROUNDWORK_TEST_AMQP_URL",
        "GROUNDWORK_REQUIRE_AMQP",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    )
}

/// The endpoint of the run's S3-compatible server (`GROUNDWORK_TEST_S3_ENDPOINT`, e.g.
/// `http://127.0.0.1:9100`, a moto server that `.ci/run` starts), or `None` after a notice.
///
/// # Panics
/// When it is unset and `GROUNDWORK_REQUIRE_S3=1`.
#[must_use]
pub fn s3_endpoint(test: &str) -> Option<String> {
    service_url(
        test,
        "GROUNDWORK_TEST_S3_ENDPOINT",
        "GROUNDWORK_REQUIRE_S3",
        "http://127.0.0.1:9100",
    )
}

fn service_url(test: &str, var: &str, require: &str, example: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            assert!(
                std::env::var(require).as_deref() != Ok("1"),
                "{test}: {require}=1 but {var} is not set"
            );
            // `.ci/run` looks for this line: a skip there is a failure.
            eprintln!("skipping {test}: {var} is not set (e.g. {example})");
            None
        }
    }
}
