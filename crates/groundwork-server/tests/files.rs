//! `/api/v1/files`: raw and multipart uploads with SHA-256 and size, downloads with ETag,
//! If-None-Match, Range; listing, metadata, deletion; names sanitised; the size limit cuts an
//! upload mid-stream with 413 and leaves no row; attaching to a missing execution keeps
//! nothing. UTF-8 and RFC 8187 names in and out (`filename*`), `If-Range`, `Content-Range`
//! on every 416, one file per multipart upload, and the OpenAPI description of all that.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use common::{files_under, metrics_handle, test_app};
use groundwork_db::Database;
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
    let db = common::sqlite_db(dir.path()).await?;
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

/// Uploads `data` raw with `headers`, expecting 201; the file's metadata.
async fn upload_raw(router: &axum::Router, headers: &[(&str, &[u8])], data: &[u8]) -> Value {
    let mut request = Request::post("/api/v1/files");
    for (name, value) in headers {
        request = request.header(*name, HeaderValue::from_bytes(value).unwrap());
    }
    let (status, _, body) = send(router, request.body(Body::from(data.to_vec())).unwrap()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    json(&body)
}

const UNICODE_NAME: &str = "évé 文件 🚀.txt";

#[tokio::test]
async fn a_utf8_file_name_header_names_the_file() -> anyhow::Result<()> {
    let app = test_app().await?;
    // The raw UTF-8 bytes, as `curl -H 'X-File-Name: évé 文件 🚀.txt'` sends them.
    let meta = upload_raw(
        &app.router,
        &[("x-file-name", UNICODE_NAME.as_bytes())],
        b"hi",
    )
    .await;
    assert_eq!(meta["name"], UNICODE_NAME);

    // An RFC 8187 extended value, for clients that can only send ASCII headers.
    let meta = upload_raw(
        &app.router,
        &[("x-file-name", b"UTF-8''%C3%A9t%C3%A9%20%F0%9F%9A%80.txt")],
        b"hi",
    )
    .await;
    assert_eq!(meta["name"], "été 🚀.txt");
    // Other percent signs are part of the name.
    let meta = upload_raw(&app.router, &[("x-file-name", b"100%25 done.txt")], b"hi").await;
    assert_eq!(meta["name"], "100%25 done.txt");

    // A raw upload may also be named by Content-Disposition, `filename*` first.
    let meta = upload_raw(
        &app.router,
        &[(
            "content-disposition",
            "attachment; filename=\"a;b.txt\"; filename*=UTF-8''%E6%96%87%E4%BB%B6.txt".as_bytes(),
        )],
        b"hi",
    )
    .await;
    assert_eq!(meta["name"], "文件.txt");
    let meta = upload_raw(
        &app.router,
        &[(
            "content-disposition",
            b"attachment; filename=\"a;b \\\"c\\\".txt\"",
        )],
        b"hi",
    )
    .await;
    assert_eq!(meta["name"], "a;b \"c\".txt");
    let meta = upload_raw(
        &app.router,
        &[("content-disposition", "inline; filename=évé.txt".as_bytes())],
        b"hi",
    )
    .await;
    assert_eq!(meta["name"], "évé.txt");
    Ok(())
}

#[tokio::test]
async fn an_unreadable_file_name_header_is_refused_and_keeps_nothing() -> anyhow::Result<()> {
    let (router, db, dir) = small_limit_app(1024).await?;
    for (header, value) in [
        // "é" in ISO-8859-1: not UTF-8.
        ("x-file-name", &b"caf\xe9.txt"[..]),
        ("x-file-name", b"UTF-8''caf%E9.txt"),
        ("x-file-name", b"UTF-8''caf%C3%A.txt"),
        (
            "content-disposition",
            b"attachment; filename=\"caf\xe9.txt\"",
        ),
    ] {
        let (status, _, body) = send(
            &router,
            Request::post("/api/v1/files")
                .header(header, HeaderValue::from_bytes(value)?)
                .body(Body::from("data"))?,
        )
        .await;
        let shown = String::from_utf8_lossy(value);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{header}: {shown}");
        let body = json(&body);
        assert_eq!(body["error"]["code"], "bad_request", "{shown}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(header), "{message}");
    }
    // `?name=` takes precedence, so the header is not read.
    let (status, _, body) = send(
        &router,
        Request::post("/api/v1/files?name=ok.txt")
            .header("x-file-name", HeaderValue::from_bytes(b"caf\xe9.txt")?)
            .body(Body::from("data"))?,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(json(&body)["name"], "ok.txt");
    assert_eq!(
        db.files()
            .list(&Default::default(), Default::default())
            .await?
            .total,
        1
    );
    assert_eq!(files_under(&dir.path().join("files")), 1);
    Ok(())
}

#[tokio::test]
async fn a_unicode_name_downloads_with_filename_star() -> anyhow::Result<()> {
    let app = test_app().await?;
    // Named through the query, so that this only depends on the download side.
    let (status, _, body) = send(
        &app.router,
        Request::post("/api/v1/files?name=%C3%A9v%C3%A9%20%E6%96%87%E4%BB%B6%20%F0%9F%9A%80.txt")
            .body(Body::from("hi"))?,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let meta = json(&body);
    assert_eq!(meta["name"], UNICODE_NAME);
    let (status, headers, _) = send(
        &app.router,
        get(&format!("/api/v1/files/{}", meta["id"]), &[]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "content-disposition"),
        "attachment; filename=\"_v_ __ _.txt\"; \
         filename*=UTF-8''%C3%A9v%C3%A9%20%E6%96%87%E4%BB%B6%20%F0%9F%9A%80.txt"
    );

    // Quotes and percent signs stay out of the fallback; filename* is exact. (A backslash
    // never reaches a name: it separates path components.)
    let meta = upload_raw(
        &app.router,
        &[("x-file-name", b"a \"b\" 100% c;d.txt")],
        b"hi",
    )
    .await;
    assert_eq!(meta["name"], "a \"b\" 100% c;d.txt");
    let (_, headers, _) = send(
        &app.router,
        get(&format!("/api/v1/files/{}", meta["id"]), &[]),
    )
    .await;
    assert_eq!(
        header(&headers, "content-disposition"),
        "attachment; filename=\"a _b_ 100_ c;d.txt\"; \
         filename*=UTF-8''a%20%22b%22%20100%25%20c%3Bd.txt"
    );
    Ok(())
}

#[tokio::test]
async fn if_range_applies_the_range_only_while_the_etag_matches() -> anyhow::Result<()> {
    let app = test_app().await?;
    let data = b"0123456789".to_vec();
    let meta = upload_raw(&app.router, &[("x-file-name", b"digits.txt")], &data).await;
    let path = format!("/api/v1/files/{}", meta["id"]);
    let etag = format!("\"{}\"", sha256_hex(&data));

    // The file's own ETag: the range applies.
    let (status, headers, body) = send(
        &app.router,
        get(&path, &[("range", "bytes=0-1"), ("if-range", &etag)]),
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, b"01");
    assert_eq!(header(&headers, "content-range"), "bytes 0-1/10");

    // Anything else: the whole file, 200, no Content-Range.
    let weak = format!("W/{etag}");
    for validator in [
        "\"zzz\"",
        weak.as_str(),
        "Wed, 21 Oct 2015 07:28:00 GMT",
        "*",
        "",
    ] {
        for range in ["bytes=0-1", "bytes=-0", "bytes=500-"] {
            let (status, headers, body) = send(
                &app.router,
                get(&path, &[("range", range), ("if-range", validator)]),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "If-Range {validator:?}, {range}");
            assert_eq!(body, data);
            assert_eq!(header(&headers, "content-length"), "10");
            assert!(headers.get("content-range").is_none());
            assert_eq!(header(&headers, "etag"), etag);
        }
    }

    // If-Range without Range changes nothing.
    let (status, _, body) = send(&app.router, get(&path, &[("if-range", "\"zzz\"")])).await;
    assert_eq!((status, body), (StatusCode::OK, data));
    Ok(())
}

#[tokio::test]
async fn every_416_carries_content_range() -> anyhow::Result<()> {
    let app = test_app().await?;
    let data = b"0123456789".to_vec();
    let meta = upload_raw(&app.router, &[("x-file-name", b"digits.txt")], &data).await;
    let path = format!("/api/v1/files/{}", meta["id"]);
    let etag = format!("\"{}\"", sha256_hex(&data));
    for (range, if_range) in [
        ("bytes=-0", None),
        ("bytes=-0", Some(etag.as_str())),
        ("bytes=10-", None),
        ("bytes=100-200", None),
        ("bytes=10-20", Some(etag.as_str())),
    ] {
        let mut headers = vec![("range", range)];
        headers.extend(if_range.map(|tag| ("if-range", tag)));
        let (status, headers, body) = send(&app.router, get(&path, &headers)).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(header(&headers, "content-range"), "bytes */10", "{range}");
        assert_eq!(
            json(&body)["error"]["code"],
            "range_not_satisfiable",
            "{range}"
        );
    }

    // An empty file has no byte to select.
    let meta = upload_raw(&app.router, &[("x-file-name", b"empty")], b"").await;
    let path = format!("/api/v1/files/{}", meta["id"]);
    for range in ["bytes=0-", "bytes=-1", "bytes=-0"] {
        let (status, headers, _) = send(&app.router, get(&path, &[("range", range)])).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(header(&headers, "content-range"), "bytes */0", "{range}");
    }
    Ok(())
}

/// A multipart body of `parts`: (field name, file name, content).
fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file_name, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file_name {
            Some(file_name) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn a_multipart_upload_with_two_files_is_refused_and_keeps_nothing() -> anyhow::Result<()> {
    let (router, db, dir) = small_limit_app(64 * 1024).await?;
    let boundary = "b0undary";
    let post = |body: Vec<u8>| {
        Request::post("/api/v1/files")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body))
            .unwrap()
    };
    for parts in [
        &[
            ("a", Some("one.txt"), &b"first"[..]),
            ("b", Some("two.txt"), b"second"),
        ][..],
        &[
            ("note", None, b"x"),
            ("a", Some("one.txt"), b"first"),
            ("note", None, b"y"),
            ("a", Some("two.txt"), b"second"),
        ],
    ] {
        let (status, _, body) = send(&router, post(multipart(boundary, parts))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let body = json(&body);
        assert_eq!(body["error"]["code"], "bad_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("one file per upload"), "{message}");
    }
    // A file followed by a truncated body: refused as well.
    let mut truncated = multipart(boundary, &[("a", Some("one.txt"), b"first")]);
    truncated.truncate(truncated.len() - format!("--{boundary}--\r\n").len());
    truncated.extend_from_slice(format!("--{boundary}\r\nContent-Disp").as_bytes());
    let (status, _, body) = send(&router, post(truncated)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["error"]["code"], "bad_request");

    // Nothing kept: no row, no object, no reservation left for the sweep.
    let listed = db
        .files()
        .list(&Default::default(), Default::default())
        .await?;
    assert_eq!(listed.total, 0);
    assert_eq!(files_under(&dir.path().join("files")), 0);
    assert!(
        db.files()
            .claim_unrecorded(groundwork_db::now(), None, 10)
            .await?
            .is_empty(),
        "the reservations were released"
    );

    // Plain fields around the one file are fine.
    let parts = [
        ("note", None, &b"x"[..]),
        ("a", Some("one.txt"), b"first"),
        ("note", None, b"y"),
    ];
    let (status, _, body) = send(&router, post(multipart(boundary, &parts))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(json(&body)["name"], "one.txt");
    assert_eq!(files_under(&dir.path().join("files")), 1);
    Ok(())
}

#[tokio::test]
async fn openapi_declares_the_file_headers_and_binary_bodies() -> anyhow::Result<()> {
    let app = test_app().await?;
    let (status, _, body) = send(&app.router, get("/openapi.json", &[])).await;
    assert_eq!(status, StatusCode::OK);
    let doc = json(&body);
    let header_params = |operation: &Value| -> Vec<String> {
        operation["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "header")
            .map(|p| {
                // Optional, and a string when present (a header is never `null`).
                assert_eq!(p["required"], false, "{p}");
                assert_eq!(p["schema"], serde_json::json!({"type": "string"}), "{p}");
                p["name"].as_str().unwrap().to_ascii_lowercase()
            })
            .collect()
    };
    let binary = serde_json::json!({"type": "string", "format": "binary"});

    let upload = &doc["paths"]["/api/v1/files"]["post"];
    assert_eq!(header_params(upload), ["x-file-name"]);
    let content = &upload["requestBody"]["content"];
    assert_eq!(content["application/octet-stream"]["schema"], binary);
    assert_eq!(
        content["multipart/form-data"]["schema"]["properties"]["file"],
        binary
    );
    assert!(upload["responses"]["400"].is_object());

    let download = &doc["paths"]["/api/v1/files/{id}"]["get"];
    let mut headers = header_params(download);
    headers.sort();
    assert_eq!(headers, ["if-none-match", "if-range", "range"]);
    let responses = &download["responses"];
    for status in ["200", "206", "304", "404", "416"] {
        assert!(responses[status].is_object(), "{status}");
    }
    for status in ["200", "206"] {
        assert_eq!(
            responses[status]["content"]["application/octet-stream"]["schema"], binary,
            "{status}"
        );
    }
    assert!(responses["206"]["headers"]["Content-Range"].is_object());
    assert!(responses["416"]["headers"]["Content-Range"].is_object());
    assert_eq!(
        responses["416"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    Ok(())
}
