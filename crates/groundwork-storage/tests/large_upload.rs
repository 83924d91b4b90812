//! A 20 MiB body streamed in 64 KiB chunks spans several upload parts and comes back intact.

use groundwork_storage::{DEFAULT_MAX_UPLOAD_BYTES, new_key};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_mib_in_64_kib_chunks() -> anyhow::Result<()> {
    let data = common::data(20 * 1024 * 1024 + 123, 20);
    let sha256 = common::sha256_hex(&data);
    for test in common::stores()? {
        let key = new_key();
        let stored = test
            .store
            .put(
                &key,
                common::body(&data, 64 * 1024),
                DEFAULT_MAX_UPLOAD_BYTES,
            )
            .await?;
        assert_eq!(stored.size, data.len() as u64);
        assert_eq!(stored.sha256, sha256);

        let download = test.store.get(&key, None).await?;
        assert_eq!(download.content_length(), data.len() as u64);
        let back = common::read_all(download).await?;
        assert_eq!(back.len(), data.len());
        assert!(back == data, "{}: content differs", test.name());
        assert_eq!(test.files()?.len(), usize::from(test.dir.is_some()));
    }
    Ok(())
}
