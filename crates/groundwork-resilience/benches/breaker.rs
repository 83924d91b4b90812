//! Circuit breaker costs, measured with criterion:
//! - `breaker/open_reject`: a call rejected by an open breaker (goal: 100 µs, at most 1 ms —
//!   against the seconds a caller waits on a pool's acquire timeout without one);
//! - `breaker/closed_call` beside `breaker/no_breaker`: what a closed breaker adds to a call
//!   that succeeds at once.
//!
//! `cargo bench -p groundwork-resilience --bench breaker`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use groundwork_core::{Classify, ErrorKind};
use groundwork_resilience::{BreakerConfig, BreakerState};

#[derive(Debug)]
struct Down;

impl Classify for Down {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Unavailable
    }
}

async fn answer() -> Result<u64, Down> {
    Ok(black_box(42))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker");
    let open = BreakerConfig::new("bench-open")
        .open_for(Duration::from_secs(3600))
        .build();
    open.record_failure();
    assert_eq!(open.state(), BreakerState::Open);
    group.bench_function("open_reject", |b| {
        b.iter(|| {
            let rejected = open
                .call(answer())
                .now_or_never()
                .expect("resolves at once");
            black_box(rejected.is_err())
        });
    });
    let closed = BreakerConfig::new("bench-closed").build();
    group.bench_function("closed_call", |b| {
        b.iter(|| {
            black_box(
                closed
                    .call(answer())
                    .now_or_never()
                    .expect("resolves at once")
                    .is_ok(),
            )
        });
    });
    group.bench_function("no_breaker", |b| {
        b.iter(|| black_box(answer().now_or_never().expect("resolves at once").is_ok()));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
