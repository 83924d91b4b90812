//! Range downloads: first bytes, suffix, open-ended, clamped, unsatisfiable.

use groundwork_storage::{ByteRange, DEFAULT_MAX_UPLOAD_BYTES, StorageError, new_key, parse_range};

mod common;

#[tokio::test]
async fn ranges_serve_the_selected_bytes() -> anyhow::Result<()> {
    // Larger than a download read chunk, so that ranges cross chunk boundaries on disk.
    let data = common::data(1_300_000, 9);
    let size = data.len() as u64;
    for test in common::stores()? {
        let key = new_key();
        test.store
            .put(&key, common::body(&data, 50_000), DEFAULT_MAX_UPLOAD_BYTES)
            .await?;
        let cases = [
            ("bytes=0-99", 0, 99),
            ("bytes=-500", size - 500, size - 1),
            ("bytes=1000000-", 1_000_000, size - 1),
            ("bytes=524000-1100000", 524_000, 1_100_000),
            ("bytes=1299990-9999999", 1_299_990, size - 1),
            ("bytes=-99999999", 0, size - 1),
            ("bytes=5-5", 5, 5),
        ];
        for (header, start, end) in cases {
            let range = parse_range(header)?;
            let download = test.store.get(&key, range).await?;
            assert_eq!(
                (download.size, download.start, download.end),
                (size, start, end),
                "{}: {header}",
                test.name()
            );
            assert_eq!(download.content_length(), end - start + 1);
            let body = common::read_all(download).await?;
            assert!(
                body == data[start as usize..=end as usize],
                "{}: {header}: wrong bytes",
                test.name()
            );
        }
        let first = test
            .store
            .get(&key, Some(ByteRange::Between(0, 99)))
            .await?;
        assert!(first.is_partial());
    }
    Ok(())
}

#[tokio::test]
async fn unsatisfiable_ranges_are_invalid() -> anyhow::Result<()> {
    for test in common::stores()? {
        let key = new_key();
        test.store
            .put(&key, common::body(&[7; 100], 10), DEFAULT_MAX_UPLOAD_BYTES)
            .await?;
        for range in [
            ByteRange::From(100),
            ByteRange::Between(100, 200),
            ByteRange::Between(500, 600),
            ByteRange::Last(0),
        ] {
            let result = test.store.get(&key, Some(range)).await;
            assert!(
                matches!(result, Err(StorageError::InvalidRange(_))),
                "{}: {range}: {result:?}",
                test.name()
            );
        }

        let empty = new_key();
        test.store
            .put(&empty, common::body(&[], 1), DEFAULT_MAX_UPLOAD_BYTES)
            .await?;
        let result = test.store.get(&empty, Some(ByteRange::From(0))).await;
        assert!(matches!(result, Err(StorageError::InvalidRange(_))));
        let whole = test.store.get(&empty, None).await?;
        assert_eq!((whole.size, whole.content_length()), (0, 0));
        assert!(common::read_all(whole).await?.is_empty());

        let missing = test.store.get(&new_key(), Some(ByteRange::From(0))).await;
        assert!(matches!(missing, Err(StorageError::NotFound { .. })));
    }
    Ok(())
}
