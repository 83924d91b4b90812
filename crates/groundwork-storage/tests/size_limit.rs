//! Passing the size limit mid-stream fails with TooLarge and leaves nothing behind.

use groundwork_storage::{StorageError, new_key};

mod common;

#[tokio::test]
async fn too_large_uploads_leave_nothing() -> anyhow::Result<()> {
    // Small limits, and one past full parts (8 MiB on object stores, 2 MiB on the local
    // disk) so that parts were already written.
    for (len, limit) in [(1001, 1000), (10 * 1024 * 1024, 9 * 1024 * 1024), (1, 0)] {
        let data = common::data(len, 3);
        for test in common::stores()? {
            let key = new_key();
            let result = test
                .store
                .put(&key, common::body(&data, 64 * 1024), limit as u64)
                .await;
            assert_eq!(
                result,
                Err(StorageError::TooLarge {
                    limit: limit as u64
                }),
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
async fn a_failed_upload_keeps_the_previous_object() -> anyhow::Result<()> {
    for test in common::stores()? {
        let key = new_key();
        test.store.put(&key, common::body(b"kept", 2), 100).await?;
        let result = test
            .store
            .put(&key, common::body(&common::data(500, 1), 50), 100)
            .await;
        assert!(matches!(result, Err(StorageError::TooLarge { limit: 100 })));
        let download = test.store.get(&key, None).await?;
        assert_eq!(common::read_all(download).await?, b"kept");
        assert_eq!(test.files()?.len(), usize::from(test.dir.is_some()));
    }
    Ok(())
}
