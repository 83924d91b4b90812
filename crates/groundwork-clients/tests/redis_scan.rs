//! `scan_match` walks every key of a pattern in short steps, and `unlink` deletes batches:
//! what a cache needs to flush everything under a prefix without one long command. A prefix
//! with glob characters, escaped by `glob_escape`, matches only itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_common;

use std::collections::BTreeSet;
use std::time::Duration;

use groundwork_clients::redis::{RedisClient, RedisOptions, glob_escape};
use redis_common::{connected_client, redis_url, unique};

/// Every key `pattern` matches, and how many steps the scan took.
async fn scan_all(
    client: &RedisClient,
    pattern: &str,
    count: u32,
) -> anyhow::Result<(BTreeSet<Vec<u8>>, usize)> {
    let mut keys = BTreeSet::new();
    let mut cursor = 0;
    let mut steps = 0;
    loop {
        let page = client.scan_match(cursor, pattern, count).await?;
        steps += 1;
        keys.extend(page.keys);
        if page.cursor == 0 {
            return Ok((keys, steps));
        }
        cursor = page.cursor;
    }
}

#[tokio::test]
async fn scan_and_unlink_remove_exactly_the_keys_under_an_escaped_prefix() -> anyhow::Result<()> {
    let Some(url) = redis_url("scan_and_unlink_remove_exactly_the_keys_under_an_escaped_prefix")
    else {
        return Ok(());
    };
    let client = connected_client(RedisOptions::new(url)).await?;
    let base = unique("scan");
    // Unescaped, `…[ab]?*:*` would match the decoys' `…ax-y:` too.
    let prefix = format!("{base}[ab]?*:");
    let decoy = format!("{base}ax-y:");
    let ttl = Duration::from_secs(60);
    for n in 0..300 {
        client.set_ex(&format!("{prefix}{n}"), b"v", ttl).await?;
    }
    for n in 0..20 {
        client.set_ex(&format!("{decoy}{n}"), b"v", ttl).await?;
    }

    let pattern = format!("{}*", glob_escape(&prefix));
    let (keys, steps) = scan_all(&client, &pattern, 50).await?;
    let expected: BTreeSet<Vec<u8>> = (0..300)
        .map(|n| format!("{prefix}{n}").into_bytes())
        .collect();
    assert_eq!(keys, expected);
    assert!(steps > 1, "one step for 300 keys with COUNT 50");

    let keys: Vec<Vec<u8>> = keys.into_iter().collect();
    let mut deleted = 0;
    for batch in keys.chunks(128) {
        deleted += client.unlink(batch).await?;
    }
    assert_eq!(deleted, 300);
    // Gone: deleting them again deletes nothing, and the scan finds nothing.
    assert_eq!(client.unlink(&keys).await?, 0);
    assert!(scan_all(&client, &pattern, 50).await?.0.is_empty());
    // The decoys are still there.
    let decoys = format!("{}*", glob_escape(&decoy));
    let (left, _) = scan_all(&client, &decoys, 1000).await?;
    assert_eq!(left.len(), 20);
    let left: Vec<Vec<u8>> = left.into_iter().collect();
    assert_eq!(client.unlink(&left).await?, 20);
    Ok(())
}
