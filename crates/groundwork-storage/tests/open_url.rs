//! Storage URLs: the supported schemes and clear errors for everything else.

use groundwork_storage::{DEFAULT_MAX_UPLOAD_BYTES, StorageError, new_key, open};

mod common;

#[test]
fn unsupported_and_malformed_urls_are_config_errors() {
    for url in [
        "",
        "groundwork-data/files",
        "ftp://example.com/files",
        "http://127.0.0.1:9000/bucket",
        "memory://something",
        "memory://?x=1",
        "file://",
        "file:///tmp/x?mode=fast",
        "s3://",
        "s3://bucket/prefix",
        "s3://bucket?colour=blue",
        "s3://bucket?path_style=perhaps",
        "s3://bucket?endpoint=ftp://host",
        "s3://bucket?region=%zz",
    ] {
        match open(url) {
            Err(StorageError::Config(message)) => assert!(!message.is_empty()),
            other => panic!("{url:?}: expected a Config error, got {other:?}"),
        }
    }
}

#[test]
fn memory_urls_open() -> anyhow::Result<()> {
    assert_eq!(open("memory://")?.describe(), "memory://");
    assert_eq!(open("MEMORY://")?.describe(), "memory://");
    Ok(())
}

#[tokio::test]
async fn file_urls_create_the_directory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("nested/files");
    let store = open(&format!("file://{}", target.display()))?;
    assert!(target.is_dir());
    let canonical = std::fs::canonicalize(&target)?;
    assert_eq!(store.describe(), format!("file://{}", canonical.display()));
    store
        .put(&new_key(), common::body(b"x", 1), DEFAULT_MAX_UPLOAD_BYTES)
        .await?;
    Ok(())
}

#[test]
fn relative_file_urls_resolve_against_the_working_directory() -> anyhow::Result<()> {
    // The only test of this binary that depends on the working directory.
    let dir = tempfile::tempdir()?;
    std::env::set_current_dir(dir.path())?;
    let store = open(groundwork_storage::DEFAULT_STORAGE_URL)?;
    let canonical = std::fs::canonicalize(dir.path().join("groundwork-data/files"))?;
    assert_eq!(store.describe(), format!("file://{}", canonical.display()));
    Ok(())
}

#[test]
fn s3_urls_build_without_connecting_and_hide_secrets() -> anyhow::Result<()> {
    let store = open(
        "s3://media?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true\
         &access_key_id=AKIA&secret_access_key=TOPSECRET",
    )?;
    let description = store.describe();
    assert_eq!(
        description,
        "s3://media (endpoint http://127.0.0.1:9000, region us-east-1, path-style)"
    );
    assert!(!format!("{store:?}").contains("TOPSECRET"));
    let https =
        open("s3://media?endpoint=https://s3.example.com&access_key_id=a&secret_access_key=b")?;
    assert!(
        https
            .describe()
            .starts_with("s3://media (endpoint https://s3.example.com")
    );
    Ok(())
}
