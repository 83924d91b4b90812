//! An upload comes back byte for byte, with its size and SHA-256.

use groundwork_storage::{DEFAULT_MAX_UPLOAD_BYTES, new_key};

mod common;

#[tokio::test]
async fn upload_then_download_returns_the_same_bytes() -> anyhow::Result<()> {
    for test in common::stores()? {
        for (len, chunk) in [(0, 1), (1, 1), (1000, 7), (300_000, 65_536)] {
            let data = common::data(len, len as u64);
            let key = new_key();
            let stored = test
                .store
                .put(&key, common::body(&data, chunk), DEFAULT_MAX_UPLOAD_BYTES)
                .await?;
            assert_eq!(stored.key, key);
            assert_eq!(stored.size, len as u64, "{}", test.name());
            assert_eq!(stored.sha256, common::sha256_hex(&data), "{}", test.name());

            let download = test.store.get(&key, None).await?;
            assert_eq!(download.size, len as u64);
            assert_eq!(download.start, 0);
            assert_eq!(download.content_length(), len as u64);
            assert!(!download.is_partial());
            assert_eq!(common::read_all(download).await?, data, "{}", test.name());
        }
    }
    Ok(())
}

#[tokio::test]
async fn an_upload_of_exactly_the_limit_is_accepted() -> anyhow::Result<()> {
    for test in common::stores()? {
        let data = common::data(4096, 1);
        let stored = test
            .store
            .put(&new_key(), common::body(&data, 1000), 4096)
            .await?;
        assert_eq!(stored.size, 4096);
    }
    Ok(())
}

#[tokio::test]
async fn a_second_upload_to_the_same_key_replaces_the_first() -> anyhow::Result<()> {
    for test in common::stores()? {
        let key = new_key();
        let limit = DEFAULT_MAX_UPLOAD_BYTES;
        test.store
            .put(&key, common::body(b"first version", 4), limit)
            .await?;
        test.store
            .put(&key, common::body(b"second", 4), limit)
            .await?;
        let download = test.store.get(&key, None).await?;
        assert_eq!(common::read_all(download).await?, b"second");
    }
    Ok(())
}

#[tokio::test]
async fn keys_not_made_by_new_key_are_rejected() -> anyhow::Result<()> {
    for test in common::stores()? {
        for key in ["", "../x", "files/../../etc/passwd", "a b", "/abs"] {
            let result = test
                .store
                .put(key, common::body(b"x", 1), DEFAULT_MAX_UPLOAD_BYTES)
                .await;
            assert!(
                matches!(result, Err(groundwork_storage::StorageError::InvalidKey(_))),
                "{key:?}: {result:?}"
            );
            assert!(test.store.get(key, None).await.is_err());
        }
        assert!(test.files()?.is_empty(), "{:?}", test.files()?);
    }
    Ok(())
}

#[tokio::test]
async fn local_files_are_stored_under_their_key() -> anyhow::Result<()> {
    let test = common::stores()?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no local store"))?;
    let key = new_key();
    test.store
        .put(&key, common::body(b"on disk", 3), DEFAULT_MAX_UPLOAD_BYTES)
        .await?;
    let files = test.files()?;
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(&key), "{files:?}");
    assert_eq!(std::fs::read(&files[0])?, b"on disk");
    assert!(test.name().starts_with("file:///"), "{}", test.name());
    Ok(())
}
