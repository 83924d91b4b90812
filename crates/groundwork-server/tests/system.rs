//! System routes: liveness, readiness (and its failure once the database is gone), the
//! OpenAPI description of every route, and Prometheus metrics.

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use common::test_app;
use serde_json::{Value, json};

#[tokio::test]
async fn health_is_ok() -> anyhow::Result<()> {
    let app = test_app().await?;
    for path in ["/health", "/api/v1/health"] {
        let (status, headers, body) = app.get(path).await?;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body, json!({ "status": "ok" }), "{path}");
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
    }
    Ok(())
}

fn check_ready_body(body: &Value, status: &str) {
    assert_eq!(body["status"], status, "{body}");
    let database = &body["checks"]["database"];
    assert_eq!(database["status"], status, "{body}");
    assert_eq!(database["backend"], "sqlite", "{body}");
    assert!(
        database["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "latency_ms must be a non-negative number: {body}"
    );
}

#[tokio::test]
async fn ready_checks_the_database() -> anyhow::Result<()> {
    let app = test_app().await?;
    for path in ["/ready", "/api/v1/ready"] {
        let (status, _, body) = app.get(path).await?;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        check_ready_body(&body, "ok");
        assert!(
            body["checks"]["database"].get("error").is_none(),
            "no error when healthy: {body}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn ready_reports_the_file_store_without_failing_readiness() -> anyhow::Result<()> {
    let app = test_app().await?;
    let (_, _, body) = app.get("/ready").await?;
    let storage = &body["checks"]["storage"];
    assert_eq!(storage["status"], "ok", "{body}");
    assert_eq!(storage["backend"], "memory", "{body}");
    assert!(
        storage["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{body}"
    );

    // A local directory that disappears: the files API fails, the rest does not.
    let root = app.dir.path().join("files");
    let store = groundwork_storage::open(&format!("file://{}", root.display()))?;
    let state =
        groundwork_server::app::AppState::new(app.db.clone(), &[], common::metrics_handle())
            .with_files(groundwork_server::app::FileStorage {
                store,
                max_upload_bytes: 1024,
            });
    let router =
        groundwork_server::app::app(state, groundwork_server::app::HttpSettings::default());
    let local = common::TestApp {
        router,
        db: app.db.clone(),
        dir: tempfile::tempdir()?,
    };
    let (status, _, body) = local.get("/ready").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["storage"]["status"], "ok", "{body}");
    assert_eq!(body["checks"]["storage"]["backend"], "file", "{body}");
    std::fs::remove_dir(&root)?;
    let (status, _, body) = local.get("/ready").await?;
    assert_eq!(status, StatusCode::OK, "still ready: {body}");
    assert_eq!(body["status"], "ok", "{body}");
    let storage = &body["checks"]["storage"];
    assert_eq!(storage["status"], "degraded", "{body}");
    assert!(
        storage["error"]
            .as_str()
            .is_some_and(|e| e.contains("file uploads")),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn ready_is_503_once_the_database_is_closed() -> anyhow::Result<()> {
    let app = test_app().await?;
    app.db.close().await;
    let (status, _, body) = app.get("/ready").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    check_ready_body(&body, "unavailable");
    // Liveness does not depend on the database.
    let (status, _, _) = app.get("/health").await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn data_routes_are_503_once_the_database_is_closed() -> anyhow::Result<()> {
    let app = test_app().await?;
    app.db.close().await;
    let resp = app.get("/api/v1/agents").await?;
    common::assert_error(&resp, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let resp = app
        .post_json("/api/v1/agents", &json!({ "name": "a", "type": "x" }))
        .await?;
    common::assert_error(&resp, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    Ok(())
}

#[tokio::test]
async fn openapi_describes_every_route() -> anyhow::Result<()> {
    let app = test_app().await?;
    for path in ["/openapi.json", "/api/v1/openapi.json"] {
        let (status, headers, doc) = app.get(path).await?;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3.1"), "openapi version {version:?}");
        let paths = doc["paths"]
            .as_object()
            .ok_or_else(|| anyhow::anyhow!("no paths object in {path}"))?;
        let expected = [
            ("/api/v1/agents", &["get", "post"][..]),
            ("/api/v1/agents/{id}", &["get", "patch", "delete"]),
            ("/api/v1/agents/{id}/tools", &["get"]),
            ("/api/v1/agents/{id}/tools/{tool_id}", &["put", "delete"]),
            ("/api/v1/tools", &["get", "post"]),
            ("/api/v1/tools/{id}", &["get", "patch", "delete"]),
            ("/api/v1/prompts", &["get", "post"]),
            ("/api/v1/prompts/{id}", &["get", "patch"]),
            ("/api/v1/users", &["get", "post"]),
            ("/api/v1/users/{id}", &["get"]),
            ("/api/v1/users/{id}/digests", &["get", "post"]),
            ("/api/v1/workflows", &["get", "post"]),
            ("/api/v1/workflows/{id}", &["get", "patch", "delete"]),
            ("/api/v1/audit", &["get"]),
            ("/health", &["get"]),
            ("/ready", &["get"]),
            ("/metrics", &["get"]),
            ("/openapi.json", &["get"]),
        ];
        for (route, methods) in expected {
            let item = paths
                .get(route)
                .ok_or_else(|| anyhow::anyhow!("{route} missing from {:?}", paths.keys()))?;
            for method in methods {
                assert!(
                    item.get(*method).is_some(),
                    "{method} {route} is not described"
                );
            }
        }
        assert_eq!(
            path_parameter_mismatches(&doc),
            Vec::<String>::new(),
            "{path}: path parameters and route templates disagree"
        );
        // The flush's namespace is an optional query parameter.
        let flush = &paths["/api/v1/llm-cache"]["delete"]["parameters"];
        assert!(
            flush.as_array().is_some_and(|params| params
                .iter()
                .any(|p| p["name"] == "namespace" && p["in"] == "query" && p["required"] != true)),
            "DELETE /api/v1/llm-cache parameters: {flush}"
        );
        assert!(
            doc["components"]["securitySchemes"]["bearer"].is_object(),
            "the bearer scheme is described"
        );
        // Every operation but /health documents the 401 API keys make possible.
        for (route, item) in paths {
            for (method, operation) in item.as_object().into_iter().flatten() {
                let documented = operation["responses"].get("401").is_some();
                assert_eq!(
                    documented,
                    route != "/health",
                    "{method} {route}: 401 documented = {documented}"
                );
            }
        }
        // /health needs no credentials: its operation overrides the global requirement
        // with one that asks for nothing.
        let health = &paths["/health"]["get"]["security"];
        assert!(
            health.as_array().is_some_and(|reqs| reqs
                .iter()
                .any(|r| r.as_object().is_some_and(|o| o.is_empty()))),
            "/health security: {health}"
        );
    }
    Ok(())
}

/// Where the `"in": "path"` parameters of an OpenAPI document and the `{placeholders}` of
/// its route templates disagree: a path parameter that names no placeholder of its route
/// (an optional query parameter declared in the path, say), or a placeholder that no path
/// parameter describes. Path-item parameters count for every operation of the item; a
/// `$ref` parameter is looked up in `components/parameters`.
fn path_parameter_mismatches(doc: &Value) -> Vec<String> {
    let resolve = |param: &Value| -> Value {
        param["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/parameters/"))
            .map_or_else(
                || param.clone(),
                |name| doc["components"]["parameters"][name].clone(),
            )
    };
    let mut found = Vec::new();
    for (route, item) in doc["paths"].as_object().into_iter().flatten() {
        let placeholders: BTreeSet<&str> = route
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
            .collect();
        let shared: Vec<Value> = item["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(resolve)
            .collect();
        for (method, operation) in item.as_object().into_iter().flatten() {
            if !operation.is_object() || method == "parameters" {
                continue;
            }
            let params: Vec<Value> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(resolve)
                .chain(shared.iter().cloned())
                .collect();
            let mut declared = BTreeSet::new();
            for param in &params {
                if param["in"] != "path" {
                    continue;
                }
                let name = param["name"].as_str().unwrap_or_default();
                declared.insert(name.to_owned());
                if !placeholders.contains(name) {
                    found.push(format!(
                        "{method} {route}: path parameter `{name}` is not in the route"
                    ));
                }
                if param["required"] != true {
                    found.push(format!(
                        "{method} {route}: path parameter `{name}` is not required"
                    ));
                }
            }
            for placeholder in &placeholders {
                if !declared.contains(*placeholder) {
                    found.push(format!(
                        "{method} {route}: `{{{placeholder}}}` has no path parameter"
                    ));
                }
            }
        }
    }
    found
}

/// The sample lines of metric `name` in Prometheus text.
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|line| line.starts_with(&prefix))
        .collect()
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() -> anyhow::Result<()> {
    let app = test_app().await?;
    let (status, _, created) = app
        .post_json("/api/v1/agents", &json!({ "name": "metered", "type": "x" }))
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let id = common::id_of(&created)?;
    let (status, _, _) = app.get(&format!("/api/v1/agents/{id}")).await?;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = app.get("/no/such/route/4711").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, headers, body) = app.get("/metrics").await?;
    assert_eq!(status, StatusCode::OK);
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = body
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("/metrics is not text: {body}"))?;

    let counters = samples(text, "http_requests_total");
    assert!(
        counters
            .iter()
            .any(|line| line.contains(r#"route="/api/v1/agents""#)
                && line.contains(r#"status="201""#)
                && line.contains(r#"method="POST""#)),
        "no POST /api/v1/agents 201 counter in:\n{text}"
    );
    assert!(
        counters
            .iter()
            .any(|line| line.contains(r#"route="/api/v1/agents/{id}""#)
                && line.contains(r#"status="200""#)
                && line.contains(r#"method="GET""#)),
        "no GET /api/v1/agents/{{id}} 200 counter in:\n{text}"
    );
    assert!(
        !text.contains(&format!(r#"route="/api/v1/agents/{id}""#)),
        "raw ids must not become labels:\n{text}"
    );
    assert!(
        counters.iter().any(|line| line.contains(r#"status="404""#)),
        "the 404 is counted:\n{text}"
    );
    assert!(
        !text.contains("/no/such/route/4711"),
        "unmatched paths must not become labels:\n{text}"
    );
    let buckets = samples(text, "http_request_duration_seconds_bucket");
    assert!(
        buckets.iter().any(|line| line.contains(r#"route="/api/v1/agents""#)
            && line.contains(r#"le="+Inf""#)),
        "no latency histogram for /api/v1/agents in:\n{text}"
    );
    Ok(())
}

#[tokio::test]
async fn metrics_are_served_under_the_api_prefix_too() -> anyhow::Result<()> {
    let app = test_app().await?;
    app.get("/health").await?;
    let (status, _, body) = app.raw(Method::GET, "/api/v1/metrics", &[], "").await?;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap_or_default();
    assert!(text.contains("http_requests_total"), "{body}");
    Ok(())
}
