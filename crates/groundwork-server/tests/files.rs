//! `/api/v1/files`: raw and multipart uploads with SHA-256 and size, downloads with ETag,
//! If-None-Match, Range; listing, metadata, deletion; names sanitised; the size limit cuts an
//! upload mid-stream with 413 and leaves no row; attaching to a missing execution keeps
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use common::{files_under, metrics_handle, test_app};
use groundwork_db::{Database, DatabaseOptions};
use groundwork_server::app::{AppState, FileStorage, HttpSettings, app};
use http_body_util::BodyExt as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tower::ServiceExt as _;

async fn send(router: &axum::Router, req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes.to_vec())
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder().method(Method::GET).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_raw_upload_round_trips_with_etag_and_ranges() -> anyhow::Result<()> {
    let app = test_app().await?;
    let router = &app.router;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();

    let (status, headers, body) = send(
        router,
        Request::post("/api/v1/files")
            .header("x-file-name", "../../etc/report.bin")
            .header("content-type", "application/x-test")
            .body(Body::from(data.clone()))?,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let meta = json(&body);
    let id = meta["id"].as_i64().unwrap();
    assert_eq!(header(&headers, "location"), format!("/api/v1/files/{id}"));
    assert_eq!(meta["name"], "report.bin", "a name never chooses a path");
    assert_eq!(meta["size"], 200_000);
    assert_eq!(meta["sha256"], sha256_hex(&data));
    assert_eq!(meta["content_type"], "application/x-test");
    assert_eq!(meta["owner"], "anonymous");
    assert!(!meta["storage_key"].as_str().unwrap().contains("report"));

    // The whole file.
    let (status, headers, body) = send(router, get(&format!("/api/v1/files/{id}"), &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, data);
    assert_eq!(header(&headers, "content-length"), "200000");
    assert_eq!(header(&headers, "content-type"), "application/x-test");
    let etag = format!("\"{}\"", sha256_hex(&data));
    assert_eq!(header(&headers, "etag"), etag);
    assert_eq!(header(&headers, "accept-ranges"), "bytes");

    // Not modified.
    let (status, headers, body) = send(
        router,
        get(&format!("/api/v1/files/{id}"), &[("if-none-match", &etag)]),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "etag"), etag);

    // Ranges.
    let (status, headers, body) = send(
        router,
        get(&format!("/api/v1/files/{id}"), &[("range", "bytes=10-19")]),
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &data[10..20]);
    assert_eq!(header(&headers, "content-range"), "bytes 10-19/200000");
    assert_eq!(header(&headers, "content-length"), "10");
    let (status, _, body) = send(
        router,
        get(&format!("/api/v1/files/{id}"), &[("range", "bytes=-5")]),
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &data[199_995..]);
    let (status, _, body) = send(
        router,
        get(
            &format!("/api/v1/files/{id}"),
            &[("range", "bytes=199990-")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &data[199_990..]);
    let (status, headers, body) = send(
        router,
        get(
            &format!("/api/v1/files/{id}"),
            &[("range", "bytes=500000-")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&headers, "content-range"), "bytes */200000");
    assert_eq!(json(&body)["error"]["code"], "range_not_satisfiable");

    // Metadata and listing.
    let (status, _, body) = send(router, get(&format!("/api/v1/files/{id}/meta"), &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body), meta);
    let (_, _, body) = send(router, get("/api/v1/files", &[])).await;
    assert_eq!(json(&body)["total"], 1);

    // Deletion.
    let (status, _, _) = send(
        router,
        Request::delete(format!("/api/v1/files/{id}")).body(Body::empty())?,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for path in [
        format!("/api/v1/files/{id}"),
        format!("/api/v1/files/{id}/meta"),
    ] {
        let (status, _, body) = send(router, get(&path, &[])).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(json(&body)["error"]["code"], "not_found");
    }
    Ok(())
}

#[tokio::test]
async fn a_multipart_upload_stores_its_file_field() -> anyhow::Result<()> {
    let app = test_app().await?;
    let data = b"hello, multipart".to_vec();
    let boundary = "XyZzYboundary";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\n\
             Content-Type: text/plain\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (status, _, answer) = send(
        &app.router,
        Request::post("/api/v1/files")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))?,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let meta = json(&answer);
    assert_eq!(meta["name"], "notes.txt");
    assert_eq!(meta["content_type"], "text/plain");
    assert_eq!(meta["size"], data.len());
    assert_eq!(meta["sha256"], sha256_hex(&data));
    let (_, _, content) = send(
        &app.router,
        get(&format!("/api/v1/files/{}", meta["id"]), &[]),
    )
    .await;
    assert_eq!(content, data);

    // A multipart body without a file part is refused.
    let empty = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nx\r\n--{boundary}--\r\n"
    );
    let (status, _, answer) = send(
        &app.router,
        Request::post("/api/v1/files")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(empty))?,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&answer)["error"]["code"], "bad_request");
    Ok(())
}

async fn small_limit_app(
    limit: u64,
) -> anyhow::Result<(axum::Router, Database, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let db = Database::connect(DatabaseOptions::new(format!(
        "sqlite://{}/t.db",
        dir.path().display()
    )))
    .await?;
    db.migrate().await?;
    let store_dir = dir.path().join("files");
    let store = groundwork_storage::open(&format!("file://{}", store_dir.display()))?;
    let state = AppState::new(db.clone(), &[], metrics_handle()).with_files(FileStorage {
        store,
        max_upload_bytes: limit,
    });
    Ok((app(state, HttpSettings::default()), db, dir))
}

#[tokio::test]
async fn an_upload_over_the_limit_is_cut_and_leaves_nothing() -> anyhow::Result<()> {
    let (router, db, dir) = small_limit_app(64 * 1024).await?;
    // Streamed in chunks without a Content-Length: cut mid-stream.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..64)
        .map(|_| Ok(bytes::Bytes::from(vec![7u8; 4096])))
        .collect();
    let (status, _, body) = send(
        &router,
        Request::post("/api/v1/files")
            .header("x-file-name", "big.bin")
            .body(Body::from_stream(futures_util::stream::iter(chunks)))?,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(&body)["error"]["code"], "payload_too_large");
    assert_eq!(
        db.files()
            .list(&Default::default(), Default::default())
            .await?
            .total,
        0
    );
    assert_eq!(
        files_under(&dir.path().join("files")),
        0,
        "no partial object"
    );

    // A declared length over the limit is refused before reading.
    let (status, _, _) = send(
        &router,
        Request::post("/api/v1/files")
            .header("content-length", "10000000")
            .body(Body::from(vec![1u8; 16]))?,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Within the limit it is stored, on disk.
    let (status, _, _) = send(
        &router,
        Request::post("/api/v1/files?name=ok.bin").body(Body::from(vec![1u8; 60 * 1024]))?,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(files_under(&dir.path().join("files")), 1);

    // Attached to an execution that does not exist: refused, and the object removed.
    let (status, _, body) = send(
        &router,
        Request::post("/api/v1/files?execution_id=424242").body(Body::from(vec![1u8; 100]))?,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(files_under(&dir.path().join("files")), 1);
    Ok(())
}
