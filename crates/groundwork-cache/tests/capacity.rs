//! Bounded memory: the capacity bounds the number of entries (or, with a weigher, their total
//! weight); what does not fit is evicted and counted, and stays readable through the source.

mod common;

use common::{FakeSource, Method, builder, rows, text};

#[tokio::test]
async fn the_entry_count_stays_within_the_capacity() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(0..1000));
    let cache = common::build(
        builder("capacity", &clock)
            .capacity(100)
            .fill_on_miss(false),
        &source,
    );

    for key in 0..1000 {
        let value = cache.get(&key).await?;
        assert_eq!(text(&value), Some(format!("v{key}").as_str()));
    }
    let stats = cache.stats();
    assert_eq!(stats.capacity, 100);
    assert!(stats.entries <= 100, "{} entries", stats.entries);
    assert!(stats.entries > 0);
    assert!(stats.weight <= 100, "weight {}", stats.weight);
    assert!(stats.evictions >= 900, "{} evictions", stats.evictions);
    assert_eq!(source.calls(Method::Load), 1000);

    // An evicted key is read from the source again.
    let evicted = (0..1000u64)
        .find(|key| cache.peek(key).is_none())
        .ok_or_else(|| anyhow::anyhow!("nothing was evicted"))?;
    assert_eq!(
        text(&cache.get(&evicted).await?),
        Some(format!("v{evicted}").as_str())
    );
    assert_eq!(source.calls(Method::Load), 1001);
    Ok(())
}

/// The bound is the configured capacity whatever its value, not rounded up to a multiple of
/// the map's internal shard count.
#[tokio::test]
async fn the_capacity_is_a_bound_whatever_its_value() -> anyhow::Result<()> {
    let mut over = Vec::new();
    for capacity in [37, 100, 101, 250, 1001] {
        let clock = common::clock();
        let source = FakeSource::with_feed(rows(0..3000));
        let cache = common::build(
            builder("capacity-any", &clock)
                .capacity(capacity)
                .fill_on_miss(false),
            &source,
        );
        for key in 0..3000 {
            cache.get(&key).await?;
        }
        let stats = cache.stats();
        assert_eq!(stats.capacity, capacity);
        if stats.entries > capacity || stats.weight > capacity {
            over.push(format!(
                "capacity {capacity}: {} entries, weight {}",
                stats.entries, stats.weight
            ));
        }
    }
    assert!(over.is_empty(), "over the bound: {over:?}");
    Ok(())
}

#[tokio::test]
async fn a_fill_stops_at_the_capacity() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(0..1000));
    let cache = common::build(builder("capacity-fill", &clock).capacity(100), &source);
    cache.start().await?;

    let stats = cache.stats();
    assert!(stats.entries <= 100, "{} entries", stats.entries);
    assert!(
        stats.entries >= 50,
        "the fill should use the room it has: {}",
        stats.entries
    );
    let missing = (0..1000u64)
        .find(|key| cache.peek(key).is_none())
        .ok_or_else(|| anyhow::anyhow!("1000 rows in 100 entries"))?;
    assert_eq!(
        text(&cache.get(&missing).await?),
        Some(format!("v{missing}").as_str())
    );
    assert_eq!(source.calls(Method::Load), 1);
    assert_eq!(source.calls(Method::LoadAll), 1);
    Ok(())
}

#[tokio::test]
async fn a_weigher_bounds_the_total_weight() -> anyhow::Result<()> {
    let clock = common::clock();
    // Values of 10 to 39 bytes. The capacity is a power of two so that this test does not
    // depend on how the map rounds it across its shards (see the test above).
    let rows: Vec<(u64, String)> = (0..500u64)
        .map(|k| (k, "x".repeat(10 + usize::try_from(k % 30).unwrap_or(0))))
        .collect();
    let source = FakeSource::with_feed(rows.clone());
    let cache = common::build(
        builder("weigher", &clock)
            .capacity(1024)
            .weigher(|_, value: &String| u64::try_from(value.len()).unwrap_or(u64::MAX))
            .fill_on_miss(false),
        &source,
    );

    for (key, value) in &rows {
        assert_eq!(text(&cache.get(key).await?), Some(value.as_str()));
    }
    let stats = cache.stats();
    assert_eq!(stats.capacity, 1024);
    assert!(stats.weight <= 1024, "weight {}", stats.weight);
    assert!(
        stats.entries < 100,
        "{} entries of 10+ bytes",
        stats.entries
    );
    assert!(stats.entries > 0);
    assert!(stats.evictions >= 400, "{} evictions", stats.evictions);
    // The weight is the weigher's, not the entry count.
    let held: u64 = rows
        .iter()
        .filter(|(key, _)| cache.peek(key).is_some())
        .map(|(_, value)| u64::try_from(value.len()).unwrap_or(u64::MAX))
        .sum();
    assert_eq!(stats.weight, held);
    Ok(())
}
