//! `insert`: a value produced by the caller is served at once, without a source read, and a
//! load in flight for the same key does not overwrite it.

mod common;

use common::{FakeSource, Method, builder, rows, text};

#[tokio::test]
async fn an_inserted_value_is_served_without_reading_the_source() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("insert", &clock), &source);
    cache.start().await?;

    cache.insert(9, "made here".to_owned());
    assert_eq!(text(&cache.get(&9).await?), Some("made here"));
    cache.insert(1, "replaced".to_owned());
    assert_eq!(text(&cache.get(&1).await?), Some("replaced"));
    assert_eq!(source.calls(Method::Load), 0);
    Ok(())
}

#[tokio::test]
async fn a_load_in_flight_does_not_overwrite_an_insert() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("insert-inflight", &clock), &source);
    cache.start().await?;
    source.set(7, "old");

    source.hold(Method::Load);
    let lookup = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(&7).await })
    };
    source.wait_calls(Method::Load, 1).await?; // has read "old"
    cache.insert(7, "new".to_owned());
    source.release(Method::Load);
    // Its own waiter gets what it read; the cache keeps the inserted value.
    assert_eq!(text(&lookup.await??), Some("old"));
    assert_eq!(text(&cache.get(&7).await?), Some("new"));
    assert_eq!(source.calls(Method::Load), 1);
    Ok(())
}
