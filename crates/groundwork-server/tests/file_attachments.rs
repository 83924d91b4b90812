//! Attaching files to executions and e-mail digests (`POST /api/v1/files?execution_id=` /
//! `?digest_id=`): the attachment shows in the upload's answer, in `GET /files/{id}/meta` and
//! in the filtered listing; an execution or digest that does not exist is a 422 answered
//! before a byte of the body is read (nothing stored, no row); one deleted while the upload
//! streams is still refused at insert and its object removed; deleting an execution or a
//! digest detaches its files (`ON DELETE SET NULL`). On SQLite, and on PostgreSQL when
//! `GROUNDWORK_TEST_POSTGRES_URL` is set.

mod common;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use common::{
    PgSchema, Resp, assert_error, error_message, files_under, id_of, items, postgres_url, total,
};
use groundwork_db::{Database, DatabaseOptions};
use groundwork_server::app::{AppState, FileStorage, HttpSettings, app};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tempfile::TempDir;
use tower::ServiceExt as _;

/// The upload limit of every app here: small, so that a body that were read would be cut.
const LIMIT: u64 = 64 * 1024;
/// How long a request may take before the test calls it hung.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// An application over SQLite or a PostgreSQL schema of its own, storing files on local disk.
struct Harness {
    router: Router,
    /// Where the local file store keeps its objects.
    store_dir: PathBuf,
    /// A URL for a second, raw connection to the same database (rows the API cannot
    /// delete).
    raw_url: String,
    postgres: bool,
    _dir: TempDir,
    // Declared last: dropped after the pool that uses it.
    _schema: Option<PgSchema>,
}

impl Harness {
    async fn sqlite() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = Database::connect(DatabaseOptions::new(url.clone())).await?;
        Self::over(db, dir, url, false, None).await
    }

    /// `None` (after a notice) when no PostgreSQL server is configured.
    async fn postgres(test: &str) -> anyhow::Result<Option<Self>> {
        let Some(url) = postgres_url(test)? else {
            return Ok(None);
        };
        let schema = PgSchema::create(&url, "gw_file_attach").await?;
        let db =
            Database::connect(DatabaseOptions::new(url.clone()).search_path(schema.name())).await?;
        let raw_url = schema.database_url(&url);
        Ok(Some(
            Self::over(db, tempfile::tempdir()?, raw_url, true, Some(schema)).await?,
        ))
    }

    async fn over(
        db: Database,
        dir: TempDir,
        raw_url: String,
        postgres: bool,
        schema: Option<PgSchema>,
    ) -> anyhow::Result<Self> {
        db.migrate().await?;
        let store_dir = dir.path().join("files");
        let store = groundwork_storage::open(&format!("file://{}", store_dir.display()))?;
        let state = AppState::new(db, &[], common::metrics_handle()).with_files(FileStorage {
            store,
            max_upload_bytes: LIMIT,
        });
        Ok(Self {
            router: app(state, HttpSettings::default()),
            store_dir,
            raw_url,
            postgres,
            _dir: dir,
            _schema: schema,
        })
    }

    async fn send(&self, req: Request<Body>) -> anyhow::Result<Resp> {
        let response = tokio::time::timeout(ANSWER_WITHIN, self.router.clone().oneshot(req))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {ANSWER_WITHIN:?}"))??;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await?.to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, headers, body))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Resp> {
        self.send(Request::get(path).body(Body::empty())?).await
    }

    async fn create(&self, path: &str, value: &Value, expected: StatusCode) -> anyhow::Result<i64> {
        let (status, _, body) = self
            .send(
                Request::builder()
                    .method(Method::POST)
                    .uri(path)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(value)?))?,
            )
            .await?;
        anyhow::ensure!(
            status == expected,
            "POST {path}: expected {expected}, got {status}: {body}"
        );
        id_of(&body)
    }

    /// A workflow, and `n` queued executions of it.
    async fn executions(&self, n: usize) -> anyhow::Result<Vec<i64>> {
        let workflow = self
            .create(
                "/api/v1/workflows",
                &json!({ "name": "report", "steps": [{ "name": "fetch", "type": "echo" }] }),
                StatusCode::CREATED,
            )
            .await?;
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            ids.push(
                self.create(
                    &format!("/api/v1/workflows/{workflow}/executions"),
                    &json!({ "input": { "run": i } }),
                    StatusCode::ACCEPTED,
                )
                .await?,
            );
        }
        Ok(ids)
    }

    /// A user (e-mail `email`) and one digest of theirs: `(user id, digest id)`.
    async fn digest(&self, email: &str) -> anyhow::Result<(i64, i64)> {
        let user = self
            .create(
                "/api/v1/users",
                &json!({ "email": email, "name": "Reader" }),
                StatusCode::CREATED,
            )
            .await?;
        let digest = self
            .create(
                &format!("/api/v1/users/{user}/digests"),
                &json!({ "subject": "Weekly", "body": "Things happened.", "period": "2026-W47" }),
                StatusCode::CREATED,
            )
            .await?;
        Ok((user, digest))
    }

    /// A raw upload of `data` to `/api/v1/files{query}`.
    async fn upload(&self, query: &str, name: &str, data: &[u8]) -> anyhow::Result<Resp> {
        self.send(
            Request::post(format!("/api/v1/files{query}"))
                .header("x-file-name", name)
                .header("content-type", "text/plain")
                .body(Body::from(data.to_vec()))?,
        )
        .await
    }

    /// The `total` of `GET /api/v1/files{query}`.
    async fn total(&self, query: &str) -> anyhow::Result<i64> {
        let (status, _, body) = self.get(&format!("/api/v1/files{query}")).await?;
        anyhow::ensure!(
            status == StatusCode::OK,
            "GET /files{query}: {status} {body}"
        );
        total(&body)
    }

    /// Runs `sql` with `id` bound to `$1` on a connection of its own (SQLite: foreign keys
    /// on, as the application's pool has them).
    async fn execute(&self, sql: &'static str, id: i64) -> anyhow::Result<u64> {
        let affected = if self.postgres {
            let mut conn = sqlx::PgConnection::connect(&self.raw_url).await?;
            let done = sqlx::query(sql).bind(id).execute(&mut conn).await?;
            conn.close().await?;
            done.rows_affected()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.raw_url).await?;
            sqlx::query("PRAGMA foreign_keys = ON")
                .execute(&mut conn)
                .await?;
            let done = sqlx::query(sql).bind(id).execute(&mut conn).await?;
            conn.close().await?;
            done.rows_affected()
        };
        Ok(affected)
    }

    fn stored_objects(&self) -> usize {
        files_under(&self.store_dir)
    }
}

/// A request body that records whether it was ever polled; if it is, it hands over one
/// chunk larger than [`LIMIT`] and then never ends. A handler that read it would answer 413
/// or hang; one that refuses first never touches it.
struct Untouchable {
    polled: Arc<AtomicBool>,
    sent: bool,
}

impl Untouchable {
    fn body() -> (Body, Arc<AtomicBool>) {
        let polled = Arc::new(AtomicBool::new(false));
        let stream = Self {
            polled: Arc::clone(&polled),
            sent: false,
        };
        (Body::from_stream(stream), polled)
    }
}

impl futures_util::Stream for Untouchable {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.polled.store(true, Ordering::SeqCst);
        if self.sent {
            return Poll::Pending;
        }
        self.sent = true;
        let over = usize::try_from(LIMIT)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        Poll::Ready(Some(Ok(Bytes::from(vec![b'x'; over]))))
    }
}

fn file_ids(body: &Value) -> anyhow::Result<Vec<i64>> {
    items(body)?.iter().map(id_of).collect()
}

// -------------------------------------------------------------------------------------------
// Scenarios, run on each engine.
// -------------------------------------------------------------------------------------------

async fn files_attach_and_list_by_attachment(h: &Harness) -> anyhow::Result<()> {
    let executions = h.executions(2).await?;
    let (run, other_run) = (executions[0], executions[1]);
    let (_, digest) = h.digest("reader@example.com").await?;
    let (_, other_digest) = h.digest("other@example.com").await?;

    // Attached to an execution: the answer and the metadata carry it.
    let (status, headers, log) = h
        .upload(&format!("?execution_id={run}"), "run.log", b"step 1 ok")
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{log}");
    let log_id = id_of(&log)?;
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/api/v1/files/{log_id}").as_str())
    );
    assert_eq!(log["execution_id"], run);
    assert_eq!(log["digest_id"], Value::Null);
    let (status, _, meta) = h.get(&format!("/api/v1/files/{log_id}/meta")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta, log);

    // Attached to a digest, as multipart: the same.
    let boundary = "attachBoundary42";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"digest.pdf\"\r\n\
         Content-Type: application/pdf\r\n\r\n%PDF-1.7\r\n--{boundary}--\r\n"
    );
    let (status, _, pdf) = h
        .send(
            Request::post(format!("/api/v1/files?digest_id={digest}"))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(Body::from(form))?,
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{pdf}");
    let pdf_id = id_of(&pdf)?;
    assert_eq!(pdf["digest_id"], digest);
    assert_eq!(pdf["execution_id"], Value::Null);
    assert_eq!(pdf["name"], "digest.pdf");
    let (_, _, meta) = h.get(&format!("/api/v1/files/{pdf_id}/meta")).await?;
    assert_eq!(meta, pdf);

    // Attached to both at once.
    let (status, _, both) = h
        .upload(
            &format!("?execution_id={run}&digest_id={digest}"),
            "both.txt",
            b"both",
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{both}");
    let both_id = id_of(&both)?;
    assert_eq!(
        (both["execution_id"].clone(), both["digest_id"].clone()),
        (json!(run), json!(digest))
    );

    // Files elsewhere, which the filters must leave out.
    for (query, name) in [
        (String::new(), "loose.txt"),
        (format!("?execution_id={other_run}"), "other-run.txt"),
        (format!("?digest_id={other_digest}"), "other-digest.txt"),
    ] {
        let (status, _, body) = h.upload(&query, name, b"elsewhere").await?;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
    }

    // Newest first, only the attached ones, with their total.
    let (status, _, body) = h.get(&format!("/api/v1/files?execution_id={run}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(file_ids(&body)?, [both_id, log_id]);
    assert_eq!(total(&body)?, 2);
    let (_, _, body) = h.get(&format!("/api/v1/files?digest_id={digest}")).await?;
    assert_eq!(file_ids(&body)?, [both_id, pdf_id]);
    assert_eq!(total(&body)?, 2);
    let (_, _, body) = h
        .get(&format!(
            "/api/v1/files?execution_id={run}&digest_id={digest}"
        ))
        .await?;
    assert_eq!(file_ids(&body)?, [both_id], "filters combine");
    // Paging keeps the total of the whole filter.
    let (_, _, body) = h
        .get(&format!(
            "/api/v1/files?execution_id={run}&limit=1&offset=1"
        ))
        .await?;
    assert_eq!(file_ids(&body)?, [log_id]);
    assert_eq!(total(&body)?, 2);
    assert_eq!(h.total("").await?, 6);
    Ok(())
}

async fn a_missing_attachment_is_refused_before_the_body_is_read(
    h: &Harness,
) -> anyhow::Result<()> {
    let run = h.executions(1).await?[0];
    let (_, digest) = h.digest("reader@example.com").await?;
    let (status, _, body) = h
        .upload(&format!("?execution_id={run}"), "kept.txt", b"kept")
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (rows, objects) = (h.total("").await?, h.stored_objects());
    assert_eq!(objects, 1);

    // Each upload's body is over the limit and never ends: a 422 (not 413, not a hang) with
    // the body untouched proves that nothing was read, let alone stored.
    let missing_execution = run + 1000;
    let missing_digest = digest + 1000;
    let cases = [
        (
            format!("?execution_id={missing_execution}"),
            format!("execution {missing_execution} does not exist"),
        ),
        (
            format!("?digest_id={missing_digest}"),
            format!("digest {missing_digest} does not exist"),
        ),
        (
            format!("?execution_id={run}&digest_id={missing_digest}"),
            format!("digest {missing_digest} does not exist"),
        ),
        (
            format!("?execution_id={missing_execution}&digest_id={missing_digest}"),
            format!("execution {missing_execution} and digest {missing_digest} do not exist"),
        ),
        // Ids are never zero or negative: like any id that names nothing, a 422.
        (
            "?execution_id=0".to_owned(),
            "execution 0 does not exist".to_owned(),
        ),
        (
            "?digest_id=-7".to_owned(),
            "digest -7 does not exist".to_owned(),
        ),
    ];
    for (query, message) in &cases {
        for multipart in [false, true] {
            let (body, polled) = Untouchable::body();
            let content_type = if multipart {
                "multipart/form-data; boundary=neverRead"
            } else {
                "application/octet-stream"
            };
            let resp = h
                .send(
                    Request::post(format!("/api/v1/files{query}"))
                        .header("x-file-name", "big.bin")
                        .header("content-type", content_type)
                        .body(body)?,
                )
                .await?;
            assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
            assert_eq!(error_message(&resp.2), message, "{query}");
            assert!(
                !polled.load(Ordering::SeqCst),
                "{query} (multipart: {multipart}): the body was read"
            );
        }
    }
    // A declared length within the limit whose bytes never come: refused all the same.
    let (body, polled) = Untouchable::body();
    let resp = h
        .send(
            Request::post(format!("/api/v1/files?execution_id={missing_execution}"))
                .header("content-length", "1000")
                .body(body)?,
        )
        .await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    assert!(!polled.load(Ordering::SeqCst));

    // Nothing stored, no row.
    assert_eq!(h.stored_objects(), objects, "no object left behind");
    assert_eq!(h.total("").await?, rows, "no row written");
    assert_eq!(
        h.total(&format!("?execution_id={missing_execution}"))
            .await?,
        0
    );

    // An id that is not a number is a bad query (400), as on every route.
    let resp = h.upload("?execution_id=abc", "x.txt", b"x").await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(h.stored_objects(), objects);
    Ok(())
}

async fn an_execution_deleted_during_the_upload_is_refused_at_insert(
    h: &Harness,
) -> anyhow::Result<()> {
    let run = h.executions(1).await?[0];
    let (rows, objects) = (h.total("").await?, h.stored_objects());

    // The body's first chunk is read (so the existence check has passed), then it waits for
    // `release` before ending.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let first = futures_util::stream::once(async move {
        let _ = started_tx.send(());
        Ok::<_, std::io::Error>(Bytes::from_static(b"first half, "))
    });
    let second = futures_util::stream::once(async move {
        let _ = release_rx.await;
        Ok::<_, std::io::Error>(Bytes::from_static(b"second half"))
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(first, second));
    let request = Request::post(format!("/api/v1/files?execution_id={run}"))
        .header("x-file-name", "race.txt")
        .body(body)?;
    let router = h.router.clone();
    let upload =
        tokio::spawn(
            async move { tokio::time::timeout(ANSWER_WITHIN, router.oneshot(request)).await },
        );

    tokio::time::timeout(ANSWER_WITHIN, started_rx).await??;
    let deleted = h
        .execute("DELETE FROM executions WHERE id = $1", run)
        .await?;
    assert_eq!(deleted, 1);
    let _ = release_tx.send(());

    let response = upload.await???;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let body: Value = serde_json::from_slice(&bytes)?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "unprocessable");
    assert_eq!(
        h.stored_objects(),
        objects,
        "the stored object was removed again"
    );
    assert_eq!(h.total("").await?, rows);
    Ok(())
}

async fn deleting_an_execution_or_digest_detaches_its_files(h: &Harness) -> anyhow::Result<()> {
    let run = h.executions(1).await?[0];
    let (user, digest) = h.digest("reader@example.com").await?;
    let (status, _, file) = h
        .upload(
            &format!("?execution_id={run}&digest_id={digest}"),
            "report.txt",
            b"report",
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    let id = id_of(&file)?;
    let meta_path = format!("/api/v1/files/{id}/meta");

    // No route deletes executions: the database does it (`ON DELETE SET NULL`).
    assert_eq!(
        h.execute("DELETE FROM executions WHERE id = $1", run)
            .await?,
        1
    );
    let (status, _, meta) = h.get(&meta_path).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["execution_id"], Value::Null, "{meta}");
    assert_eq!(meta["digest_id"], digest);

    // A user's digests go with the user (CASCADE), and their files are detached.
    assert_eq!(h.execute("DELETE FROM users WHERE id = $1", user).await?, 1);
    let (_, _, meta) = h.get(&meta_path).await?;
    assert_eq!(meta["digest_id"], Value::Null, "{meta}");

    // The file itself, its bytes and its listing stay.
    assert_eq!(h.total(&format!("?digest_id={digest}")).await?, 0);
    assert_eq!(h.total("").await?, 1);
    let (status, _, content) = h.get(&format!("/api/v1/files/{id}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content, json!("report"));
    Ok(())
}

// -------------------------------------------------------------------------------------------
// SQLite.
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn files_attach_to_executions_and_digests_on_sqlite() -> anyhow::Result<()> {
    files_attach_and_list_by_attachment(&Harness::sqlite().await?).await
}

#[tokio::test]
async fn a_missing_execution_or_digest_is_refused_unread_on_sqlite() -> anyhow::Result<()> {
    a_missing_attachment_is_refused_before_the_body_is_read(&Harness::sqlite().await?).await
}

#[tokio::test]
async fn an_execution_deleted_mid_upload_is_refused_on_sqlite() -> anyhow::Result<()> {
    an_execution_deleted_during_the_upload_is_refused_at_insert(&Harness::sqlite().await?).await
}

#[tokio::test]
async fn deleted_executions_and_digests_detach_files_on_sqlite() -> anyhow::Result<()> {
    deleting_an_execution_or_digest_detaches_its_files(&Harness::sqlite().await?).await
}

// -------------------------------------------------------------------------------------------
// PostgreSQL (skipped with a notice when GROUNDWORK_TEST_POSTGRES_URL is unset).
// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn files_attach_to_executions_and_digests_on_postgres() -> anyhow::Result<()> {
    let Some(h) = Harness::postgres("files_attach_to_executions_and_digests_on_postgres").await?
    else {
        return Ok(());
    };
    files_attach_and_list_by_attachment(&h).await
}

#[tokio::test]
async fn a_missing_execution_or_digest_is_refused_unread_on_postgres() -> anyhow::Result<()> {
    let Some(h) =
        Harness::postgres("a_missing_execution_or_digest_is_refused_unread_on_postgres").await?
    else {
        return Ok(());
    };
    a_missing_attachment_is_refused_before_the_body_is_read(&h).await
}

#[tokio::test]
async fn an_execution_deleted_mid_upload_is_refused_on_postgres() -> anyhow::Result<()> {
    let Some(h) =
        Harness::postgres("an_execution_deleted_mid_upload_is_refused_on_postgres").await?
    else {
        return Ok(());
    };
    an_execution_deleted_during_the_upload_is_refused_at_insert(&h).await
}

#[tokio::test]
async fn deleted_executions_and_digests_detach_files_on_postgres() -> anyhow::Result<()> {
    let Some(h) =
        Harness::postgres("deleted_executions_and_digests_detach_files_on_postgres").await?
    else {
        return Ok(());
    };
    deleting_an_execution_or_digest_detaches_its_files(&h).await
}
