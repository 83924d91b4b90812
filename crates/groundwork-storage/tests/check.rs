//! `FileStore::check`, behind the server's readiness report: a local directory that exists
//! and is writable passes, one removed or read-only fails; memory passes; an S3 bucket that
//! exists passes, a missing bucket or an endpoint that refuses connections fails (against
//! the S3-compatible server `.ci/run` starts, `GROUNDWORK_TEST_S3_ENDPOINT`).

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use groundwork_storage::StorageError;

#[tokio::test]
async fn a_local_directory_passes_until_it_is_gone_or_read_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("files");
    let store = groundwork_storage::open(&format!("file://{}", root.display()))?;
    store.check().await?;

    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o555))?;
    let read_only = store.check().await;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
    match read_only {
        Err(StorageError::Unavailable(message)) => {
            assert!(message.contains("read-only"), "{message}");
        }
        other => anyhow::bail!("read-only directory: {other:?}"),
    }

    std::fs::remove_dir(&root)?;
    match store.check().await {
        Err(StorageError::Unavailable(message)) => {
            assert!(message.contains(&root.display().to_string()), "{message}");
        }
        other => anyhow::bail!("missing directory: {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn memory_passes() -> anyhow::Result<()> {
    groundwork_storage::open("memory://")?.check().await?;
    Ok(())
}

#[tokio::test]
async fn s3_passes_for_a_bucket_that_exists_only() -> anyhow::Result<()> {
    let Some(endpoint) = groundwork_testkit::services::s3_endpoint("s3_check") else {
        return Ok(());
    };
    let url = |bucket: &str, endpoint: &str| {
        format!(
            "s3://{bucket}?endpoint={endpoint}&region=us-east-1&access_key_id=test&secret_access_key=test"
        )
    };
    let bucket = format!("gw-check-{}", std::process::id());
    // Opening the store installs the TLS crypto provider the HTTP client below needs.
    let store = groundwork_storage::open(&url(&bucket, &endpoint))?;
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await?;
    anyhow::ensure!(created.status().is_success(), "{}", created.status());
    store.check().await?;

    let missing = groundwork_storage::open(&url("gw-no-such-bucket", &endpoint))?;
    assert!(
        matches!(missing.check().await, Err(StorageError::Unavailable(_))),
        "a missing bucket passed"
    );
    // Writing there: the store is unusable (503), not "the file's content is missing".
    let body: groundwork_storage::ByteStream = Box::pin(futures_util::stream::iter([Ok(
        bytes::Bytes::from_static(b"x"),
    )]));
    match missing
        .put(&groundwork_storage::new_key(), body, 1024)
        .await
    {
        Err(StorageError::Unavailable(message)) => {
            assert!(message.contains("missing bucket"), "{message}");
        }
        other => anyhow::bail!("upload to a missing bucket: {other:?}"),
    }

    // Nothing listens on the discard port: refused (object_store retries, hence the bound).
    let refused = groundwork_storage::open(&url(&bucket, "http://127.0.0.1:9"))?;
    let outcome = tokio::time::timeout(Duration::from_secs(30), refused.check()).await?;
    assert!(
        matches!(outcome, Err(StorageError::Unavailable(_))),
        "an unreachable endpoint passed"
    );
    Ok(())
}
