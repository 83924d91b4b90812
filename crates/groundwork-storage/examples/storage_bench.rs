//! Throughput and memory tool for groundwork-storage, driven by `bench/storage.sh`.
//! Each run does one operation in a fresh process (so that its peak memory is its own) and
//! prints one JSON line: bytes, seconds, MB/s, SHA-256 when computed, peak RSS.
//!
//! ```text
//! storage_bench put     --file SRC --dir STORE_DIR [--chunk BYTES]   # groundwork-storage
//! storage_bench raw-put --file SRC --dir STORE_DIR [--chunk BYTES]   # object_store alone
//! storage_bench get     --dir STORE_DIR --key KEY --out DEST         # groundwork-storage
//! storage_bench sha256  --bytes N                                    # SHA-256 alone
//! ```
//!
//! `put` streams SRC through [`FileStore::put`] (2 MiB parts on the local disk, SHA-256,
//! size limit) into a local store; `raw-put` streams the same chunks through object_store's own
//! `WriteMultipart` (8 MiB parts, two in flight) into the same kind of `LocalFileSystem`
//! (fsync on, as ours), without hashing: the peer that shows what our layer costs. The source
//! is read in `--chunk` pieces (default 64 KiB, like an HTTP body) by a blocking thread.
//! `get` streams KEY to DEST (a file, written and fsynced, or `/dev/null`). `sha256` hashes
//! N bytes already in memory with the same `sha2` crate on one thread: the floor of any upload
//! that hashes its body on the way.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::time::Instant;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::StreamExt as _;
use groundwork_storage::{ByteStream, FileStore as _, ObjectFileStore, StorageError};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, WriteMultipart};

fn args() -> (String, HashMap<String, String>) {
    let mut it = std::env::args().skip(1);
    let command = it.next().unwrap_or_default();
    let mut flags = HashMap::new();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        flags.insert(flag.trim_start_matches("--").to_owned(), value);
    }
    (command, flags)
}

fn required<'a>(flags: &'a HashMap<String, String>, name: &str) -> anyhow::Result<&'a str> {
    flags
        .get(name)
        .map(String::as_str)
        .with_context(|| format!("--{name} is required"))
}

/// Peak resident memory of this process (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The file as a stream of `chunk`-byte pieces, read by a blocking thread two pieces ahead.
fn file_body(path: &str, chunk: usize) -> anyhow::Result<ByteStream> {
    let mut file = std::fs::File::open(path).with_context(|| format!("open {path}"))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, StorageError>>(2);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buffer = vec![0_u8; chunk];
            let read = match file.read(&mut buffer) {
                Ok(0) => return,
                Ok(read) => read,
                Err(err) => {
                    let _ = tx.blocking_send(Err(StorageError::Body(err.to_string())));
                    return;
                }
            };
            buffer.truncate(read);
            if tx.blocking_send(Ok(Bytes::from(buffer))).is_err() {
                return;
            }
        }
    });
    Ok(receiver_stream(rx))
}

fn receiver_stream(rx: tokio::sync::mpsc::Receiver<Result<Bytes, StorageError>>) -> ByteStream {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

fn report(op: &str, bytes: u64, started: Instant, extra: &str) {
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"op\":\"{op}\",\"bytes\":{bytes},\"seconds\":{seconds:.4},\"mb_per_s\":{:.1},\"peak_rss_kib\":{}{extra}}}",
        bytes as f64 / seconds / 1e6,
        peak_rss_kib()
    );
}

async fn put(flags: &HashMap<String, String>, chunk: usize) -> anyhow::Result<()> {
    let store = ObjectFileStore::local(required(flags, "dir")?)?;
    let key = groundwork_storage::new_key();
    let started = Instant::now();
    let body = file_body(required(flags, "file")?, chunk)?;
    let stored = store.put(&key, body, u64::MAX).await?;
    report(
        "put",
        stored.size,
        started,
        &format!(",\"key\":\"{key}\",\"sha256\":\"{}\"", stored.sha256),
    );
    Ok(())
}

async fn raw_put(flags: &HashMap<String, String>, chunk: usize) -> anyhow::Result<()> {
    let dir = required(flags, "dir")?;
    std::fs::create_dir_all(dir)?;
    let store = LocalFileSystem::new_with_prefix(std::fs::canonicalize(dir)?)?.with_fsync(true);
    let key = groundwork_storage::new_key();
    let started = Instant::now();
    let mut body = file_body(required(flags, "file")?, chunk)?;
    let upload = store.put_multipart(&Path::parse(&key)?).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 * 1024 * 1024);
    let mut size = 0_u64;
    while let Some(piece) = body.next().await {
        let piece = piece?;
        size += piece.len() as u64;
        writer.wait_for_capacity(2).await?;
        writer.put(piece);
    }
    writer.finish().await?;
    report("raw-put", size, started, &format!(",\"key\":\"{key}\""));
    Ok(())
}

async fn get(flags: &HashMap<String, String>) -> anyhow::Result<()> {
    let store = ObjectFileStore::local(required(flags, "dir")?)?;
    let out = required(flags, "out")?;
    let started = Instant::now();
    let download = store.get(required(flags, "key")?, None).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let out_path = out.to_owned();
    // The destination is written by a blocking thread, as a client writing to disk would.
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&out_path)?;
        while let Some(chunk) = rx.blocking_recv() {
            file.write_all(&chunk)?;
        }
        if out_path != "/dev/null" {
            file.sync_all()?;
        }
        Ok(())
    });
    let mut body = download.body;
    let mut size = 0_u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if tx.send(chunk).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer.await??;
    if size != download.size {
        bail!("read {size} bytes of {}", download.size);
    }
    report("get", size, started, "");
    Ok(())
}

fn sha256(flags: &HashMap<String, String>) -> anyhow::Result<()> {
    use sha2::Digest as _;
    let bytes: u64 = required(flags, "bytes")?.parse()?;
    let block = vec![0x5a_u8; 8 * 1024 * 1024];
    let started = Instant::now();
    let mut hasher = sha2::Sha256::new();
    let mut left = bytes;
    while left > 0 {
        let take = usize::try_from(left.min(block.len() as u64))?;
        hasher.update(&block[..take]);
        left -= take as u64;
    }
    let digest = hasher.finalize();
    report(
        "sha256",
        bytes,
        started,
        &format!(",\"first_byte\":{}", digest[0]),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (command, flags) = args();
    let chunk = flags
        .get("chunk")
        .map(|text| text.parse::<usize>())
        .transpose()?
        .unwrap_or(64 * 1024);
    match command.as_str() {
        "put" => put(&flags, chunk).await,
        "raw-put" => raw_put(&flags, chunk).await,
        "get" => get(&flags).await,
        "sha256" => sha256(&flags),
        other => bail!("unknown command `{other}`: put, raw-put, get or sha256"),
    }
}
