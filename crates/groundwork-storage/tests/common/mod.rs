//! Stores, bodies and checks shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use groundwork_storage::{ByteStream, Download, FileStore, ObjectFileStore, StorageError};
use sha2::{Digest, Sha256};

/// A store under test; `dir` is the local directory (kept alive while the store is used).
pub struct TestStore {
    pub store: Arc<dyn FileStore>,
    pub dir: Option<tempfile::TempDir>,
}

impl TestStore {
    pub fn name(&self) -> String {
        self.store.describe()
    }

    /// Every regular file below the local directory (none for memory).
    pub fn files(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        if let Some(dir) = &self.dir {
            walk(dir.path(), &mut files)?;
        }
        files.sort();
        Ok(files)
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), files)?;
        } else {
            files.push(entry.path());
        }
    }
    Ok(())
}

/// A memory store and a local store in a fresh temporary directory.
pub fn stores() -> anyhow::Result<Vec<TestStore>> {
    let dir = tempfile::tempdir()?;
    let url = format!("file://{}", dir.path().join("files").display());
    Ok(vec![
        TestStore {
            store: groundwork_storage::open("memory://")?,
            dir: None,
        },
        TestStore {
            store: groundwork_storage::open(&url)?,
            dir: Some(dir),
        },
    ])
}

/// A local store as its concrete type, with its directory.
pub fn local_store() -> anyhow::Result<(ObjectFileStore, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    Ok((ObjectFileStore::local(dir.path())?, dir))
}

/// `len` deterministic pseudo-random bytes (xorshift), different for each `seed`.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `data` as a body of `chunk`-byte chunks.
pub fn body(data: &[u8], chunk: usize) -> ByteStream {
    let chunks: Vec<Result<Bytes, StorageError>> = data
        .chunks(chunk.max(1))
        .map(|part| Ok(Bytes::copy_from_slice(part)))
        .collect();
    futures_util::stream::iter(chunks).boxed()
}

/// `data` in `chunk`-byte chunks, then `error`.
pub fn failing_body(data: &[u8], chunk: usize, error: StorageError) -> ByteStream {
    let chunks: Vec<Result<Bytes, StorageError>> = data
        .chunks(chunk.max(1))
        .map(|part| Ok(Bytes::copy_from_slice(part)))
        .chain([Err(error)])
        .collect();
    futures_util::stream::iter(chunks).boxed()
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The whole body of a download.
pub async fn read_all(download: Download) -> anyhow::Result<Vec<u8>> {
    let chunks: Vec<Bytes> = download.body.try_collect().await?;
    Ok(chunks.concat())
}

/// Asserts that `key` does not exist in `store`.
pub async fn assert_missing(store: &dyn FileStore, key: &str) {
    match store.get(key, None).await {
        Err(StorageError::NotFound { key: missing }) => assert_eq!(missing, key),
        Err(other) => panic!("{}: expected NotFound, got {other:?}", store.describe()),
        Ok(download) => panic!("{}: {key} exists: {download:?}", store.describe()),
    }
}
