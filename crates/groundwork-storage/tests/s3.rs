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

/// The multipart uploads in progress in `bucket` (a ListMultipartUploads, read crudely).
async fn unfinished_uploads(endpoint: &str, bucket: &str) -> anyhow::Result<usize> {
    let xml = reqwest::Client::new()
        .get(format!("{endpoint}/{bucket}?uploads"))
        .send()
        .await?
        .text()
        .await?;
    Ok(xml.matches("<UploadId>").count())
}

/// An upload cut short by a crash (its future forgotten mid-stream: nothing aborts it)
/// leaves an unfinished multipart upload and its marker; the sweep leaves it while it is
/// young, then aborts it and removes the marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_crashed_upload_is_aborted_by_the_sweep() -> anyhow::Result<()> {
    let Some((store, endpoint, bucket)) = store("s3_crashed_upload").await? else {
        return Ok(());
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, StorageError>>(4);
    let body: groundwork_storage::ByteStream =
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
    let key = groundwork_storage::new_key();
    let mut put = store.put(&key, body, 1024 * 1024 * 1024);
    let feeder = tokio::spawn({
        let tx = tx.clone();
        async move {
            // Two full 8 MiB parts and the start of a third; the body never ends.
            for chunk in 0..20_u8 {
                if tx
                    .send(Ok(bytes::Bytes::from(vec![chunk; 1024 * 1024])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while unfinished_uploads(&endpoint, &bucket).await? == 0 || !feeder.is_finished() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the upload never started"
        );
        // Drive the upload a little.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(50), &mut put).await;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), &mut put).await;
    // The crash: nothing runs the upload's clean-up.
    std::mem::forget(put);
    assert_eq!(unfinished_uploads(&endpoint, &bucket).await?, 1);
    assert!(
        keys(&endpoint, &bucket)
            .await?
            .iter()
            .any(|k| k.starts_with(".groundwork-uploads/")),
        "a marker names the upload"
    );

    // Young: it may still be running.
    assert_eq!(
        store
            .remove_partial_uploads(std::time::Duration::from_secs(3600))
            .await?,
        0
    );
    assert_eq!(unfinished_uploads(&endpoint, &bucket).await?, 1);
    // S3 times have whole seconds.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        store
            .remove_partial_uploads(std::time::Duration::ZERO)
            .await?,
        1
    );
    assert_eq!(unfinished_uploads(&endpoint, &bucket).await?, 0, "aborted");
    assert!(keys(&endpoint, &bucket).await?.is_empty(), "marker removed");
    assert_missing(store.as_ref(), &key).await;
    drop(tx);
    Ok(())
}
