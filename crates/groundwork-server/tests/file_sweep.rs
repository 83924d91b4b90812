//! Nothing a crash leaves in the file store stays there: the file sweep removes the object of
//! an upload that died between storing its object and recording its row, and the object of
//! a deleted file whose removal failed; it never touches a running upload's object or a
//! recorded file's. An upload that outlives its reservation is answered 409 and leaves
//! nothing. Uploads and deletes that go well leave no key behind for the sweep. On SQLite,
//! and on PostgreSQL when `GROUNDWORK_TEST_POSTGRES_URL` is set; local disk store.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use common::{PgSchema, files_under, postgres_url};
use futures_util::future::BoxFuture;
use groundwork_db::{Database, DatabaseOptions, FileFilter, Page};
use groundwork_server::app::{AppState, FileStorage, HttpSettings, app};
use groundwork_server::file_sweep::{SweepReport, sweep};
use groundwork_storage::{ByteRange, ByteStream, Download, FileStore, StorageError, StoredObject};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt as _;

const LIMIT: u64 = 1024 * 1024;
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// The sweep's ages in these tests: reservations count as abandoned once they exist (`ZERO`)
/// or never (`DAY`). (The store here sweeps no partial uploads: the storage crate tests
/// those.)
const ZERO: Duration = Duration::ZERO;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A local-disk store whose deletes can be made to fail.
#[derive(Debug)]
struct FlakyStore {
    inner: Arc<dyn FileStore>,
    fail_deletes: AtomicBool,
}

impl FileStore for FlakyStore {
    fn put(
        &self,
        key: &str,
        body: ByteStream,
        limit: u64,
    ) -> BoxFuture<'_, Result<StoredObject, StorageError>> {
        self.inner.put(key, body, limit)
    }

    fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> BoxFuture<'_, Result<Download, StorageError>> {
        self.inner.get(key, range)
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), StorageError>> {
        if self.fail_deletes.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(StorageError::Unavailable(
                "disk on fire".into(),
            ))));
        }
        self.inner.delete(key)
    }

    fn describe(&self) -> String {
        "flaky".into()
    }
}

struct Harness {
    router: Router,
    db: Database,
    store: Arc<FlakyStore>,
    store_dir: PathBuf,
    _dir: TempDir,
    // Declared last: dropped after the pool that uses it.
    _schema: Option<PgSchema>,
}

impl Harness {
    async fn sqlite() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = Database::connect(DatabaseOptions::new(url)).await?;
        Self::over(db, dir, None).await
    }

    async fn postgres(test: &str) -> anyhow::Result<Option<Self>> {
        let Some(url) = postgres_url(test)? else {
            return Ok(None);
        };
        let schema = PgSchema::create(&url, "gw_file_sweep").await?;
        let db = Database::connect(DatabaseOptions::new(url).search_path(schema.name())).await?;
        Ok(Some(
            Self::over(db, tempfile::tempdir()?, Some(schema)).await?,
        ))
    }

    async fn over(db: Database, dir: TempDir, schema: Option<PgSchema>) -> anyhow::Result<Self> {
        db.migrate().await?;
        let store_dir = dir.path().join("files");
        let store = Arc::new(FlakyStore {
            inner: groundwork_storage::open(&format!("file://{}", store_dir.display()))?,
            fail_deletes: AtomicBool::new(false),
        });
        let state =
            AppState::new(db.clone(), &[], common::metrics_handle()).with_files(FileStorage {
                store: store.clone(),
                max_upload_bytes: LIMIT,
            });
        Ok(Self {
            router: app(state, HttpSettings::default()),
            db,
            store,
            store_dir,
            _dir: dir,
            _schema: schema,
        })
    }

    async fn send(&self, req: Request<Body>) -> anyhow::Result<(StatusCode, Value)> {
        let response = tokio::time::timeout(ANSWER_WITHIN, self.router.clone().oneshot(req))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {ANSWER_WITHIN:?}"))??;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn upload(&self, data: &'static [u8]) -> anyhow::Result<(StatusCode, Value)> {
        self.send(Request::post("/api/v1/files?name=a.bin").body(Body::from(data))?)
            .await
    }

    async fn sweep(&self, abandoned_after: Duration) -> anyhow::Result<SweepReport> {
        Ok(sweep(&self.db, self.store.as_ref(), abandoned_after).await?)
    }

    fn objects(&self) -> usize {
        files_under(&self.store_dir)
    }

    async fn rows(&self) -> anyhow::Result<i64> {
        Ok(self
            .db
            .files()
            .list(&FileFilter::default(), Page::default())
            .await?
            .total)
    }

    /// Stores an object the way an upload does and stops before recording it (a crash).
    async fn crashed_upload(&self, data: &'static [u8]) -> anyhow::Result<String> {
        let key = groundwork_storage::new_key();
        self.db.files().reserve_key(&key).await?;
        let body: ByteStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(data))]));
        self.store.put(&key, body, LIMIT).await?;
        Ok(key)
    }
}

fn report(abandoned_uploads: u64, deleted_files: u64, failures: u64) -> SweepReport {
    SweepReport {
        partial_uploads: 0,
        abandoned_uploads,
        deleted_files,
        failures,
    }
}

async fn crashed_uploads_are_swept_once_abandoned(h: Harness) -> anyhow::Result<()> {
    let (status, _) = h.upload(b"recorded").await?;
    assert_eq!(status, StatusCode::CREATED);
    let key = h.crashed_upload(b"never recorded").await?;
    assert_eq!(h.objects(), 2);

    // Younger than the abandon age: it may still be running, so it stays.
    assert_eq!(h.sweep(DAY).await?, SweepReport::default());
    assert_eq!(h.objects(), 2);

    // Abandoned: its object goes, the recorded file's stays, and the key is forgotten.
    assert_eq!(h.sweep(ZERO).await?, report(1, 0, 0));
    assert_eq!(h.objects(), 1);
    assert_eq!(h.rows().await?, 1);
    assert!(matches!(
        h.store.get(&key, None).await,
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(h.sweep(ZERO).await?, SweepReport::default());
    Ok(())
}

async fn a_delete_whose_object_removal_failed_is_finished_by_the_sweep(
    h: Harness,
) -> anyhow::Result<()> {
    let (status, body) = h.upload(b"to be deleted").await?;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no id"))?;

    h.store.fail_deletes.store(true, Ordering::SeqCst);
    let (status, _) = h
        .send(Request::delete(format!("/api/v1/files/{id}")).body(Body::empty())?)
        .await?;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "the file is gone for the API"
    );
    let (status, _) = h
        .send(Request::get(format!("/api/v1/files/{id}")).body(Body::empty())?)
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h.objects(), 1, "its bytes are still on disk");

    // The store still fails: counted, kept for the next sweep.
    assert_eq!(h.sweep(DAY).await?, report(0, 0, 1));
    assert_eq!(h.objects(), 1);

    h.store.fail_deletes.store(false, Ordering::SeqCst);
    // No abandon age applies to a deleted file's object.
    assert_eq!(h.sweep(DAY).await?, report(0, 1, 0));
    assert_eq!(h.objects(), 0);
    assert_eq!(h.sweep(ZERO).await?, SweepReport::default());
    Ok(())
}

async fn uploads_and_deletes_that_go_well_leave_nothing_to_sweep(h: Harness) -> anyhow::Result<()> {
    let (status, body) = h.upload(b"kept").await?;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no id"))?;
    // Over the limit: aborted, and its reservation released at once.
    let big: &'static [u8] = Box::leak(vec![0u8; LIMIT as usize + 1].into_boxed_slice());
    let (status, _) = h
        .send(Request::post("/api/v1/files").body(Body::from_stream(
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(big))]),
        ))?)
        .await?;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = h
        .send(Request::delete(format!("/api/v1/files/{id}")).body(Body::empty())?)
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = h.upload(b"kept too").await?;
    assert_eq!(status, StatusCode::CREATED);

    assert!(
        h.db.files()
            .claim_unrecorded(groundwork_db::now(), None, 10)
            .await?
            .is_empty(),
        "no key left recorded"
    );
    assert_eq!(h.sweep(ZERO).await?, SweepReport::default());
    assert_eq!((h.objects(), h.rows().await?), (1, 1));
    Ok(())
}

async fn an_upload_that_outlives_its_reservation_is_refused_and_leaves_nothing(
    h: Harness,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let request = Request::post("/api/v1/files?name=slow.bin").body(Body::from_stream(body))?;
    let router = h.router.clone();
    let upload = tokio::spawn(async move { router.oneshot(request).await });
    tx.send(Ok(Bytes::from_static(b"first half, "))).await?;

    // The sweep takes the reservation once the upload has made it.
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    loop {
        let swept = h.sweep(ZERO).await?;
        if swept.abandoned_uploads == 1 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the upload never reserved its key"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(Ok(Bytes::from_static(b"second half"))).await?;
    drop(tx);

    let response = tokio::time::timeout(ANSWER_WITHIN, upload).await???;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let body: Value = serde_json::from_slice(&bytes)?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!((h.objects(), h.rows().await?), (0, 0), "no object, no row");
    assert_eq!(h.sweep(ZERO).await?, SweepReport::default());
    Ok(())
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::Harness::sqlite().await?).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    match super::Harness::postgres(stringify!($name)).await? {
                        Some(h) => super::$name(h).await,
                        None => Ok(()),
                    }
                }
            )*
        }
    };
}

on_both!(
    crashed_uploads_are_swept_once_abandoned,
    a_delete_whose_object_removal_failed_is_finished_by_the_sweep,
    uploads_and_deletes_that_go_well_leave_nothing_to_sweep,
    an_upload_that_outlives_its_reservation_is_refused_and_leaves_nothing,
);
