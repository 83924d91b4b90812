//! Durable uploads to the local disk that reach the disk while they arrive.
//!
//! Written by hand because object_store's `LocalFileSystem` makes an upload durable only in
//! `complete` (with `with_fsync(true)`; without it, never): one fsync then flushes the whole
//! file, and as the kernel starts writing dirty pages back only past 10 % of memory, that
//! fsync came after the last byte of a 1 GiB upload and took about 0.4 s on the benchmark
//! machine (as `sync` after `cp` of 1 GiB does). [`LocalUpload`] starts a flush in the
//! background every [`WRITEBACK_BYTES`] while the upload runs (the portable stand-in for
//! Linux's `sync_file_range`, which std does not offer), so the disk works while the body is
//! still being received and hashed, and the final fsync has little left. Everything else
//! (reads, ranges, deletes) stays with object_store, on the same directory layout: an object
//! `files/K` is the file `ROOT/files/K`.

use std::fs::File;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt as _;
use object_store::{MultipartUpload, PutPayload, PutResult, UploadPart};

/// Written bytes after which a flush of the file to the disk (`fdatasync`) starts in the
/// background: large enough that the flushes cost little, small enough that the final one
/// is short.
const WRITEBACK_BYTES: u64 = 32 * 1024 * 1024;

/// An upload being written to a staging file next to its final name (`NAME#<uuid>`, which
/// object_store's listing ignores), renamed into place by `complete` once the file is on
/// disk, then the directory entry made durable too. `abort` removes the staging file.
#[derive(Debug)]
pub(crate) struct LocalUpload {
    shared: Arc<Shared>,
    /// Where the next part starts.
    offset: u64,
}

#[derive(Debug)]
struct Shared {
    /// The open staging file; `None` once completed or aborted.
    writing: Mutex<Option<Writing>>,
    /// Whether a background flush is running.
    flushing: AtomicBool,
    /// Why a background flush failed, if one did.
    flush_failed: Mutex<Option<String>>,
    staging: PathBuf,
    dest: PathBuf,
}

#[derive(Debug)]
struct Writing {
    file: File,
    /// Bytes written since the last flush started.
    unsynced: u64,
}

impl LocalUpload {
    /// Starts an upload of `key` (a key already checked by `is_valid_key`: plain segments
    /// separated by `/`) under `root`.
    pub(crate) async fn create(root: &Path, key: &str) -> object_store::Result<Self> {
        let dest = key
            .split('/')
            .fold(root.to_path_buf(), |path, segment| path.join(segment));
        let mut staging_name = dest.file_name().unwrap_or_default().to_os_string();
        staging_name.push(format!("#{}", uuid::Uuid::now_v7().simple()));
        let staging = dest.with_file_name(staging_name);
        let file = blocking({
            let staging = staging.clone();
            move || {
                if let Some(dir) = staging.parent() {
                    std::fs::create_dir_all(dir).map_err(|err| io_error("create", dir, &err))?;
                }
                File::options()
                    .write(true)
                    .create_new(true)
                    .open(&staging)
                    .map_err(|err| io_error("create", &staging, &err))
            }
        })
        .await?;
        Ok(Self {
            shared: Arc::new(Shared {
                writing: Mutex::new(Some(Writing { file, unsynced: 0 })),
                flushing: AtomicBool::new(false),
                flush_failed: Mutex::new(None),
                staging,
                dest,
            }),
            offset: 0,
        })
    }
}

impl Shared {
    fn lock(&self) -> object_store::Result<std::sync::MutexGuard<'_, Option<Writing>>> {
        self.writing
            .lock()
            .map_err(|_| generic(format!("`{}`: a writer panicked", self.staging.display())))
    }

    /// Writes `data` at `offset`; every [`WRITEBACK_BYTES`] starts a flush of what is written
    /// so far, in the background (see [`Shared::start_flush`]).
    fn write_at(self: &Arc<Self>, offset: u64, data: &PutPayload) -> object_store::Result<()> {
        self.check_flush()?;
        let mut guard = self.lock()?;
        let writing = guard.as_mut().ok_or_else(|| self.ended())?;
        let fail = |err: std::io::Error| io_error("write", &self.staging, &err);
        writing.file.seek(SeekFrom::Start(offset)).map_err(fail)?;
        for chunk in data {
            writing.file.write_all(chunk).map_err(fail)?;
        }
        writing.unsynced += data.content_length() as u64;
        if writing.unsynced >= WRITEBACK_BYTES && !self.flushing.swap(true, Ordering::AcqRel) {
            writing.unsynced = 0;
            let file = writing.file.try_clone().map_err(fail)?;
            drop(guard);
            self.start_flush(file);
        }
        Ok(())
    }

    /// Flushes `file` (a second handle on the staging file) to the disk without holding up
    /// the writes: `fdatasync` on its own blocking task, the next flush starting only once
    /// this one is done. A failure is kept and fails the upload at its next write or at
    /// `complete` (whose own fsync would report it as well).
    fn start_flush(self: &Arc<Self>, file: File) {
        let shared = Arc::clone(self);
        let flush = move || {
            if let Err(err) = file.sync_data()
                && let Ok(mut failed) = shared.flush_failed.lock()
            {
                failed.get_or_insert_with(|| io_error("flush", &shared.staging, &err).to_string());
            }
            shared.flushing.store(false, Ordering::Release);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(flush)),
            Err(_) => flush(),
        }
    }

    /// Fails once a background flush failed.
    fn check_flush(&self) -> object_store::Result<()> {
        match self.flush_failed.lock() {
            Ok(failed) => failed
                .as_ref()
                .map_or(Ok(()), |message| Err(generic(message.clone()))),
            Err(_) => Err(generic(format!(
                "`{}`: a flush panicked",
                self.staging.display()
            ))),
        }
    }

    /// Flushes the file, renames it into place and makes the new name durable.
    fn complete(&self) -> object_store::Result<()> {
        let writing = self.lock()?.take().ok_or_else(|| self.ended())?;
        self.check_flush()?;
        writing
            .file
            .sync_all()
            .map_err(|err| io_error("flush", &self.staging, &err))?;
        drop(writing);
        std::fs::rename(&self.staging, &self.dest)
            .map_err(|err| io_error("rename", &self.staging, &err))?;
        sync_dir(&self.dest)
    }

    /// Closes and removes the staging file (already gone is fine).
    fn abort(&self) -> object_store::Result<()> {
        drop(self.lock()?.take());
        match std::fs::remove_file(&self.staging) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_error("remove", &self.staging, &err)),
        }
    }

    fn ended(&self) -> object_store::Error {
        generic(format!(
            "the upload to `{}` has already ended",
            self.dest.display()
        ))
    }
}

impl MultipartUpload for LocalUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let offset = self.offset;
        self.offset += data.content_length() as u64;
        let shared = Arc::clone(&self.shared);
        blocking(move || shared.write_at(offset, &data)).boxed()
    }

    // Spelled out as `async_trait` expands it (the trait is declared with that macro).
    fn complete<'life0, 'async_trait>(
        &'life0 mut self,
    ) -> futures_util::future::BoxFuture<'async_trait, object_store::Result<PutResult>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let shared = Arc::clone(&self.shared);
        async move {
            blocking(move || shared.complete()).await?;
            Ok(PutResult {
                e_tag: None,
                version: None,
                extensions: Default::default(),
            })
        }
        .boxed()
    }

    fn abort<'life0, 'async_trait>(
        &'life0 mut self,
    ) -> futures_util::future::BoxFuture<'async_trait, object_store::Result<()>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let shared = Arc::clone(&self.shared);
        blocking(move || shared.abort()).boxed()
    }
}

/// Removes the staging files under `root` (names with a `#`: ours, `NAME#<uuid>`, and
/// object_store's, `NAME#<n>`) last written more than `older_than` ago: what uploads cut
/// short by a crash or a kill left behind. A running upload writes its staging file at
/// least every few seconds, so an old one belongs to no upload. Returns how many were
/// removed; entries that vanish or cannot be read meanwhile are skipped.
///
/// # Errors
///
/// When `root` itself cannot be read.
pub(crate) fn remove_stale_staging(root: &Path, older_than: Duration) -> std::io::Result<u64> {
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    let now = SystemTime::now();
    let mut first = true;
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if first => return Err(err),
            Err(_) => continue,
        };
        first = false;
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            let staging = kind.is_file() && entry.file_name().to_string_lossy().contains('#');
            let stale = || {
                entry
                    .metadata()
                    .and_then(|meta| meta.modified())
                    .is_ok_and(|at| now.duration_since(at).is_ok_and(|age| age > older_than))
            };
            if staging && stale() && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Runs `f` on Tokio's blocking pool (file I/O blocks).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> object_store::Result<T> + Send + 'static,
) -> object_store::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|join| generic(format!("a file write task failed: {join}")))?
}

/// Makes the entry of `path` in its directory durable (Unix: fsync the directory).
fn sync_dir(path: &Path) -> object_store::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| io_error("flush directory", dir, &err))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn io_error(what: &str, path: &Path, err: &std::io::Error) -> object_store::Error {
    generic(format!("cannot {what} `{}`: {err}", path.display()))
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalDisk",
        source: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(bytes: &'static [u8]) -> PutPayload {
        PutPayload::from_static(bytes)
    }

    #[tokio::test]
    async fn parts_land_at_their_offsets_and_appear_only_on_complete() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let mut upload = LocalUpload::create(root.path(), "files/a").await?;
        let first = upload.put_part(payload(b"hello "));
        let second = upload.put_part(payload(b"world"));
        // Out of order on purpose: each part is written at its own offset.
        second.await?;
        first.await?;
        let dest = root.path().join("files").join("a");
        assert!(!dest.exists(), "visible before complete");
        upload.complete().await?;
        assert_eq!(std::fs::read(&dest)?, b"hello world");
        assert_eq!(std::fs::read_dir(root.path().join("files"))?.count(), 1);
        assert!(upload.complete().await.is_err(), "completed twice");
        Ok(())
    }

    #[tokio::test]
    async fn abort_removes_the_staging_file() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let mut upload = LocalUpload::create(root.path(), "files/b").await?;
        upload.put_part(payload(b"partial")).await?;
        upload.abort().await?;
        assert_eq!(std::fs::read_dir(root.path().join("files"))?.count(), 0);
        assert!(upload.put_part(payload(b"late")).await.is_err());
        upload.abort().await?;
        Ok(())
    }

    #[test]
    fn stale_staging_files_are_removed_and_the_rest_kept() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let files = root.path().join("files");
        std::fs::create_dir_all(files.join("nested"))?;
        let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
        for name in [
            "old#0192",
            "nested/old#7",
            "fresh#0193",
            "object",
            "nested/object",
        ] {
            std::fs::write(files.join(name), b"x")?;
        }
        for name in ["old#0192", "nested/old#7", "object", "nested/object"] {
            File::options()
                .write(true)
                .open(files.join(name))?
                .set_modified(two_hours_ago)?;
        }
        let removed = remove_stale_staging(root.path(), Duration::from_secs(3600))?;
        assert_eq!(removed, 2);
        assert!(!files.join("old#0192").exists());
        assert!(!files.join("nested/old#7").exists());
        for kept in ["fresh#0193", "object", "nested/object"] {
            assert!(files.join(kept).exists(), "{kept} removed");
        }
        assert!(remove_stale_staging(&root.path().join("missing"), Duration::ZERO).is_err());
        Ok(())
    }

    #[tokio::test]
    async fn writes_past_the_writeback_size_start_a_flush() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let mut upload = LocalUpload::create(root.path(), "files/c").await?;
        let part = vec![7_u8; usize::try_from(WRITEBACK_BYTES)? + 1];
        upload.put_part(PutPayload::from(part)).await?;
        let unsynced = upload
            .shared
            .lock()?
            .as_ref()
            .map(|writing| writing.unsynced);
        assert_eq!(unsynced, Some(0));
        upload.complete().await?;
        let written = std::fs::metadata(root.path().join("files/c"))?.len();
        assert_eq!(written, WRITEBACK_BYTES + 1);
        Ok(())
    }
}
