//! Deleting removes the object; deleting a missing key succeeds.

use groundwork_storage::{DEFAULT_MAX_UPLOAD_BYTES, new_key};

mod common;

#[tokio::test]
async fn delete_then_get_is_not_found() -> anyhow::Result<()> {
    for test in common::stores()? {
        let key = new_key();
        test.store
            .put(
                &key,
                common::body(b"short-lived", 4),
                DEFAULT_MAX_UPLOAD_BYTES,
            )
            .await?;
        test.store.delete(&key).await?;
        common::assert_missing(test.store.as_ref(), &key).await;
        assert!(test.files()?.is_empty(), "{:?}", test.files()?);

        // Again, and a key that never existed.
        test.store.delete(&key).await?;
        test.store.delete(&new_key()).await?;
    }
    Ok(())
}
