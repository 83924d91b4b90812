//! A body that fails mid-stream (the client went away) fails the upload and leaves nothing.

use std::time::Duration;

use futures_util::StreamExt;
use groundwork_storage::{DEFAULT_MAX_UPLOAD_BYTES, FileStore, StorageError, new_key};

mod common;

#[tokio::test]
async fn a_failing_body_leaves_nothing() -> anyhow::Result<()> {
    // Before and after a full part was written (8 MiB on object stores, 2 MiB locally).
    for len in [10_000, 9 * 1024 * 1024] {
        let data = common::data(len, 5);
        for test in common::stores()? {
            let key = new_key();
            let body = common::failing_body(
                &data,
                64 * 1024,
                StorageError::Body("connection reset".into()),
            );
            let result = test.store.put(&key, body, DEFAULT_MAX_UPLOAD_BYTES).await;
            assert_eq!(
                result,
                Err(StorageError::Body("connection reset".into())),
                "{}",
                test.name()
            );
            common::assert_missing(test.store.as_ref(), &key).await;
            assert!(test.files()?.is_empty(), "{:?}", test.files()?);
        }
    }
    Ok(())
}

#[tokio::test]
async fn other_body_errors_become_body_errors() -> anyhow::Result<()> {
    for test in common::stores()? {
        let body = common::failing_body(b"abc", 1, StorageError::Unavailable("eof".into()));
        let result = test.store.put(&new_key(), body, 100).await;
        assert!(matches!(result, Err(StorageError::Body(_))), "{result:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_upload_leaves_nothing() -> anyhow::Result<()> {
    let (store, dir) = common::local_store()?;
    let key = new_key();
    // 9 MiB arrive, then the body never ends; the request future is dropped.
    let data = common::data(9 * 1024 * 1024, 6);
    let body = common::body(&data, 64 * 1024)
        .chain(futures_util::stream::pending())
        .boxed();
    let upload = store.put(&key, body, DEFAULT_MAX_UPLOAD_BYTES);
    let timed_out = tokio::time::timeout(Duration::from_millis(500), upload).await;
    assert!(timed_out.is_err(), "the upload ended: {timed_out:?}");

    // The abort runs in the background.
    let mut left = Vec::new();
    for _ in 0..100 {
        left = files(dir.path())?;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(left.is_empty(), "{left:?}");
    common::assert_missing(&store, &key).await;
    Ok(())
}

fn files(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.extend(files(&entry.path())?);
        } else {
            out.push(entry.path());
        }
    }
    Ok(out)
}
