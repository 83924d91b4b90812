//! The S3 backend against a real S3-compatible server (moto, which `.ci/run` starts on
//! loopback; `GROUNDWORK_TEST_S3_ENDPOINT`): a multipart upload of 20 MiB round trips with its
//! SHA-256, ranges, an upload over the limit is aborted mid-stream and leaves no object,
//! delete.

mod common;

use common::{assert_missing, body, data, read_all, sha256_hex};
use groundwork_storage::{ByteRange, StorageError};

/// A store on a bucket of its own (created here, through the server's REST API).
async fn store(
    test: &str,
) -> anyhow::Result<
    Option<(
        std::sync::Arc<dyn groundwork_storage::FileStore>,
        String,
        String,
    )>,
> {
    let Some(endpoint) = groundwork_testkit::services::s3_endpoint(test) else {
        return Ok(None);
    };
    let bucket = format!(
        "gw-{}-{}",
        test.replace('_', "-").chars().take(30).collect::<String>(),
        std::process::id()
    );
    let url = format!(
        "s3://{bucket}?endpoint={endpoint}&region=us-east-1&access_key_id=test&secret_access_key=test"
    );
    // Opening the store installs the TLS crypto provider the HTTP client below needs.
    let store = groundwork_storage::open(&url)?;
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "cannot create bucket {bucket}: {}",
        created.status()
    );
    Ok(Some((store, endpoint, bucket)))
}

/// The keys in `bucket` (a ListObjectsV2, read crudely from its XML).
async fn keys(endpoint: &str, bucket: &str) -> anyhow::Result<Vec<String>> {
    let xml = reqwest::Client::new()
        .get(format!("{endpoint}/{bucket}?list-type=2"))
        .send()
        .await?
        .text()
        .await?;
    Ok(xml
        .split("<Key>")
        .skip(1)
        .filter_map(|part| part.split("</Key>").next().map(str::to_owned))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_round_trip_ranges_limit_and_delete() -> anyhow::Result<()> {
    let Some((store, endpoint, bucket)) = store("s3_round_trip").await? else {
        return Ok(());
    };
    // 20 MiB in 64 KiB chunks: several multipart parts.
    let content = data(20 * 1024 * 1024, 7);
    let key = groundwork_storage::new_key();
    let stored = store
        .put(&key, body(&content, 64 * 1024), 100 * 1024 * 1024)
        .await?;
    assert_eq!(stored.size, content.len() as u64);
    assert_eq!(stored.sha256, sha256_hex(&content));
    assert_eq!(read_all(store.get(&key, None).await?).await?, content);

    let part = store.get(&key, Some(ByteRange::Between(100, 199))).await?;
    assert_eq!(
        (part.start, part.end, part.size),
        (100, 199, content.len() as u64)
    );
    assert_eq!(read_all(part).await?, &content[100..200]);
    let tail = store.get(&key, Some(ByteRange::Last(10))).await?;
    assert_eq!(read_all(tail).await?, &content[content.len() - 10..]);
    match store
        .get(&key, Some(ByteRange::From(content.len() as u64 + 1)))
        .await
    {
        Err(StorageError::InvalidRange(_)) => {}
        other => anyhow::bail!("expected InvalidRange, got {other:?}"),
    }

    // Over the limit: cut mid-stream, nothing visible.
    let big = groundwork_storage::new_key();
    match store
        .put(&big, body(&content, 64 * 1024), 10 * 1024 * 1024)
        .await
    {
        Err(StorageError::TooLarge { limit }) => assert_eq!(limit, 10 * 1024 * 1024),
        other => anyhow::bail!("expected TooLarge, got {other:?}"),
    }
    assert_missing(store.as_ref(), &big).await;
    assert_eq!(keys(&endpoint, &bucket).await?, vec![key.clone()]);

    store.delete(&key).await?;
    assert_missing(store.as_ref(), &key).await;
    assert!(keys(&endpoint, &bucket).await?.is_empty());
    Ok(())
}
