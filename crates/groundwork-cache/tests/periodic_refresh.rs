//! The background refresh on the cache's clock: driven by a `ManualTimer`, it refreshes every
//! `refresh_interval` and not before; after source failures it retries after an exponential
//! backoff with bounded jitter, and after a success it returns to the interval. No real waits:
//! the timer wakes the task when the test advances it.

mod common;

use std::time::Duration;

use common::{FakeSource, Method, build, rows, run_pending, sleeping, text, timed_builder};
use groundwork_core::clock::Clock;

const INTERVAL: Duration = Duration::from_secs(60);
const JUST_BEFORE: Duration = Duration::from_millis(1);

#[tokio::test]
async fn the_periodic_refresh_fires_at_the_interval_and_not_before() -> anyhow::Result<()> {
    let timer = common::timer();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = build(
        timed_builder("periodic", &timer).refresh_interval(Some(INTERVAL)),
        &source,
    );
    cache.start().await?;
    assert_eq!(cache.stats().refreshes, 1, "the fill");

    for round in 1..=3_usize {
        let now = timer.now();
        assert_eq!(
            sleeping(&timer).await?,
            now + INTERVAL,
            "round {round}: the task waits one interval on the cache's clock"
        );
        source.set(1, &format!("round{round}"));

        timer.advance(INTERVAL - JUST_BEFORE);
        run_pending().await;
        assert_eq!(
            source.calls(Method::ChangesSince),
            round - 1,
            "round {round}: refreshed before the interval"
        );
        assert_eq!(cache.stats().refreshes, round as u64);

        timer.advance(JUST_BEFORE);
        source.wait_calls(Method::ChangesSince, round).await?;
        common::eventually("the refresh to complete", || {
            cache.stats().refreshes == round as u64 + 1
        })
        .await?;
        assert_eq!(source.calls(Method::ChangesSince), round, "one refresh");
        assert_eq!(
            text(&cache.peek(&1)),
            Some(format!("round{round}").as_str()),
            "round {round}: the change was applied"
        );
    }
    assert_eq!(source.calls(Method::LoadAll), 1);
    cache.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn after_failures_the_refresh_backs_off_exponentially_then_returns_to_the_interval()
-> anyhow::Result<()> {
    let base = Duration::from_secs(8);
    let max = Duration::from_secs(64);
    let interval = Duration::from_secs(1000);
    let timer = common::timer();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = build(
        timed_builder("periodic-backoff", &timer)
            .refresh_interval(Some(interval))
            .ttl(Duration::from_secs(100_000))
            .backoff(base, max),
        &source,
    );
    cache.start().await?;
    assert_eq!(sleeping(&timer).await?, timer.now() + interval);

    source.fail_all(true);
    timer.advance(interval);
    source.wait_calls(Method::ChangesSince, 1).await?;
    common::eventually("the first failure", || cache.stats().refresh_failures == 1).await?;

    // Failure n waits between half of and all of min(base · 2^(n-1), max).
    for failures in 1..=5_u32 {
        let ceiling = base.saturating_mul(1 << (failures - 1)).min(max);
        let now = timer.now();
        let wait = sleeping(&timer).await? - now;
        assert!(
            wait >= ceiling / 2 && wait <= ceiling,
            "after {failures} failures the retry waits {wait:?}, outside [{:?}, {ceiling:?}]",
            ceiling / 2
        );

        timer.advance(wait - JUST_BEFORE);
        run_pending().await;
        let attempts = failures as usize;
        assert_eq!(
            source.calls(Method::ChangesSince),
            attempts,
            "retried within the backoff after {failures} failures"
        );

        timer.advance(JUST_BEFORE);
        source
            .wait_calls(Method::ChangesSince, attempts + 1)
            .await?;
        common::eventually("the retry to fail", || {
            cache.stats().refresh_failures == u64::from(failures) + 1
        })
        .await?;
        assert_eq!(source.calls(Method::ChangesSince), attempts + 1);
    }
    assert_eq!(cache.stats().consecutive_failures, 6);

    // The source recovers: the next retry succeeds, and the refresh returns to the interval.
    source.fail_all(false);
    source.set(2, "back");
    let now = timer.now();
    let wait = sleeping(&timer).await? - now;
    assert!(wait >= max / 2 && wait <= max, "{wait:?}");
    timer.advance(wait);
    common::eventually("the retry to succeed", || cache.stats().refreshes == 2).await?;
    let stats = cache.stats();
    assert_eq!(stats.consecutive_failures, 0);
    assert_eq!(stats.refresh_failures, 6);
    assert_eq!(text(&cache.peek(&2)), Some("back"));
    assert_eq!(
        sleeping(&timer).await?,
        timer.now() + interval,
        "back to the normal interval after a success"
    );

    let calls = source.calls(Method::ChangesSince);
    timer.advance(interval - JUST_BEFORE);
    run_pending().await;
    assert_eq!(
        source.calls(Method::ChangesSince),
        calls,
        "before the interval"
    );
    timer.advance(JUST_BEFORE);
    common::eventually("the next periodic refresh", || cache.stats().refreshes == 3).await?;
    assert_eq!(source.calls(Method::LoadAll), 1, "never a full reload");
    cache.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_wake_up_within_a_new_backoff_does_not_refresh() -> anyhow::Result<()> {
    // The task sleeps until the end of the backoff it knew of; a failure meanwhile (here a
    // failed refresh run by hand) starts a new one, which the task then waits out.
    let timer = common::timer();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = build(
        timed_builder("periodic-new-backoff", &timer)
            .refresh_interval(Some(INTERVAL))
            .backoff(Duration::from_secs(8), Duration::from_secs(8)),
        &source,
    );
    source.fail_all(true);
    assert!(cache.start().await.is_err());
    let first = sleeping(&timer).await?;
    assert!(first <= Duration::from_secs(8), "{first:?}");

    timer.advance(first - JUST_BEFORE);
    assert!(cache.refresh_now().await.is_err()); // a new backoff of 4 s to 8 s from now
    let calls = source.calls(Method::LoadAll);
    assert_eq!(calls, 2);
    timer.advance(JUST_BEFORE); // the task's first deadline
    run_pending().await;
    assert_eq!(
        source.calls(Method::LoadAll),
        calls,
        "the task retried within the new backoff"
    );
    let second = sleeping(&timer).await?;
    assert!(second > timer.now(), "the task waits for the new backoff");

    source.fail_all(false);
    timer.advance(second - timer.now());
    common::eventually("the fill", || cache.is_filled()).await?;
    assert_eq!(source.calls(Method::LoadAll), 3);
    cache.shutdown().await;
    Ok(())
}
