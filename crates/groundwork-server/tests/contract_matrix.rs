//! The HTTP contract of DESIGN.md §3, checked for every route the application describes in
//! its own OpenAPI document (`GET /openapi.json`), so that a new route is held to the
//! contract without anyone writing a test for it:
//!
//! - with API keys configured, no `Authorization` header and a wrong key are both 401
//!   `unauthorized` everywhere but `/health`;
//! - every operation with a JSON request body answers malformed JSON with 400
//!   `bad_request`, a JSON array with 422 `unprocessable` and a body over the configured
//!   limit with 413 `payload_too_large`;
//! - every integer path parameter answers `abc` with 400 `bad_request` and an id that does
//!   not exist with 404 `not_found` (the other parameters filled with real rows);
//! - a method a path does not document is 405 `method_not_allowed`;
//! - every error body is exactly `{"error": {"code", "message"}}` with the code the
//!   contract gives its status (405 and 416 are the two documented extras).
//!
//! Every failure is collected and reported together, one line per case. A case that fails
//! because of a known bug outside this suite is listed, with its reason, in
//! [`KNOWN_VIOLATIONS`]; a listed case that passes fails the suite too, so the list cannot
//! go stale.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Method, Request, StatusCode};
use common::{Resp, TestApp, id_of, key, test_app_with};
use serde_json::{Value, json};

/// The one API key of the application under test.
const SECRET: &str = "matrix-secret";

/// The JSON body limit the application is built with: small, so the oversize bodies are.
const BODY_LIMIT: usize = 4 * 1024;

/// An integer id no fixture row has.
const UNKNOWN_ID: &str = "999999";

/// Cases that fail today because of a bug outside the files this suite's author owns, each
/// with the bug and where it is fixed. Remove an entry once the fix lands: a listed case
/// that passes fails the suite.
const KNOWN_VIOLATIONS: &[(&str, &str)] = &[];

/// Operations whose request body is not parsed as JSON by the server, and why; they get the
/// checks that do not depend on parsing (401, and 413 where the JSON body limit applies).
const RAW_BODIES: &[(&str, &str, &str)] = &[(
    "POST",
    "/v1/chat/completions",
    "forwarded to the LLM upstream; parsed only once an upstream is configured (503 before)",
)];

/// Operations whose bodies are streamed under the file store's own size limit rather than
/// the JSON body limit (their 413 is tested in `files.rs`).
const OWN_BODY_LIMIT: &[(&str, &str)] = &[("POST", "/api/v1/files")];

/// Routes of the contract table (DESIGN.md §3), which the OpenAPI document must describe.
const CONTRACT_ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/api/v1/agents"),
    ("GET", "/api/v1/agents"),
    ("GET", "/api/v1/agents/{}"),
    ("PATCH", "/api/v1/agents/{}"),
    ("DELETE", "/api/v1/agents/{}"),
    ("POST", "/api/v1/tools"),
    ("GET", "/api/v1/tools"),
    ("GET", "/api/v1/tools/{}"),
    ("PATCH", "/api/v1/tools/{}"),
    ("DELETE", "/api/v1/tools/{}"),
    ("PUT", "/api/v1/agents/{}/tools/{}"),
    ("DELETE", "/api/v1/agents/{}/tools/{}"),
    ("GET", "/api/v1/agents/{}/tools"),
    ("GET", "/api/v1/agents/{}/runtime"),
    ("POST", "/api/v1/prompts"),
    ("GET", "/api/v1/prompts"),
    ("GET", "/api/v1/prompts/{}"),
    ("PATCH", "/api/v1/prompts/{}"),
    ("POST", "/api/v1/users"),
    ("GET", "/api/v1/users"),
    ("GET", "/api/v1/users/{}"),
    ("POST", "/api/v1/users/{}/digests"),
    ("GET", "/api/v1/users/{}/digests"),
    ("POST", "/api/v1/workflows"),
    ("GET", "/api/v1/workflows"),
    ("POST", "/api/v1/workflows/{}/executions"),
    ("GET", "/api/v1/executions/{}"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/cache"),
    ("POST", "/api/v1/cache/{}/invalidate"),
    ("POST", "/api/v1/cache/{}/warm"),
    ("GET", "/api/v1/infra"),
    ("POST", "/api/v1/files"),
    ("GET", "/api/v1/files/{}"),
    ("GET", "/api/v1/files/{}/meta"),
    ("DELETE", "/api/v1/files/{}"),
    ("POST", "/v1/chat/completions"),
];

/// The methods an OpenAPI path item may hold.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// The methods probed for 405 on every path.
const PROBED_METHODS: &[Method] = &[
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// One operation of the OpenAPI document.
#[derive(Debug)]
struct Operation {
    method: Method,
    /// The path template, `{name}` for parameters.
    path: String,
    /// Whether a request body with `application/json` content is described.
    json_body: bool,
    /// Path parameters: name and whether the schema is an integer.
    params: Vec<(String, bool)>,
}

impl Operation {
    fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn is(&self, method: &str, path: &str) -> bool {
        self.method.as_str() == method && self.path == path
    }
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy)]
enum Auth {
    None,
    Wrong,
    Good,
}

/// The collected outcome of every case.
#[derive(Default)]
struct Report {
    passed: BTreeSet<String>,
    failed: BTreeMap<String, String>,
}

impl Report {
    fn record(&mut self, case: String, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.passed.insert(case);
            }
            Err(why) => {
                self.failed.insert(case, why);
            }
        }
    }
}

/// The contract's code for an error status (the list of DESIGN.md §3 and the two
/// documented extras).
fn contract_code(status: StatusCode) -> Option<&'static str> {
    Some(match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "payload_too_large",
        416 => "range_not_satisfiable",
        422 => "unprocessable",
        500 => "internal",
        503 => "unavailable",
        _ => return None,
    })
}

/// Whether `resp` is an error whose body has exactly the contract's shape and the code its
/// status calls for.
fn error_shape(resp: &Resp) -> Result<(), String> {
    let (status, headers, body) = resp;
    let Some(code) = contract_code(*status) else {
        return Err(format!(
            "status {status} is not in the contract; body {body}"
        ));
    };
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return Err(format!(
            "{status} with content type {content_type:?}, body {body}"
        ));
    }
    let shaped = body.as_object().is_some_and(|o| o.len() == 1)
        && body["error"]
            .as_object()
            .is_some_and(|e| e.len() == 2 && e.contains_key("code") && e.contains_key("message"));
    if !shaped {
        return Err(format!(
            "{status}: body is not exactly {{\"error\": {{\"code\", \"message\"}}}}: {body}"
        ));
    }
    if body["error"]["code"] != code {
        return Err(format!(
            "{status}: code {} where the contract says {code:?}",
            body["error"]["code"]
        ));
    }
    if body["error"]["message"]
        .as_str()
        .is_none_or(|m| m.trim().is_empty())
    {
        return Err(format!("{status}: empty or non-string message: {body}"));
    }
    Ok(())
}

/// Whether `resp` is the error `status` with the contract's shape.
fn expect_error(resp: &Resp, status: StatusCode) -> Result<(), String> {
    if resp.0 != status {
        return Err(format!("expected {status}, got {}: {}", resp.0, resp.2));
    }
    error_shape(resp)
}

/// A request with `body`, JSON content type when `json`, authenticated as `auth`.
fn request(
    method: &Method,
    uri: &str,
    body: Option<(Vec<u8>, &str)>,
    auth: Auth,
) -> anyhow::Result<Request<Body>> {
    let mut builder = Request::builder().method(method.clone()).uri(uri);
    match auth {
        Auth::None => {}
        Auth::Wrong => builder = builder.header(AUTHORIZATION, "Bearer not-the-secret"),
        Auth::Good => builder = builder.header(AUTHORIZATION, format!("Bearer {SECRET}")),
    }
    Ok(match body {
        Some((bytes, content_type)) => builder
            .header(CONTENT_TYPE, content_type)
            .body(Body::from(bytes))?,
        None => builder.body(Body::empty())?,
    })
}

async fn send(
    app: &TestApp,
    method: &Method,
    uri: &str,
    body: Option<(Vec<u8>, &str)>,
    auth: Auth,
) -> anyhow::Result<Resp> {
    app.send(request(method, uri, body, auth)?).await
}

/// `POST uri` with a JSON body and the key; the created resource.
async fn create(app: &TestApp, uri: &str, value: Value) -> anyhow::Result<Value> {
    let body = Some((serde_json::to_vec(&value)?, "application/json"));
    let (status, _, body) = send(app, &Method::POST, uri, body, Auth::Good).await?;
    anyhow::ensure!(
        status.is_success(),
        "fixture POST {uri} {value}: {status} {body}"
    );
    Ok(body)
}

/// Real rows for every kind of path parameter, by the path segment before the parameter
/// (`agents` in `/api/v1/agents/{id}`, `tools` in `/agents/{id}/tools/{tool_id}`).
async fn fixtures(app: &TestApp) -> anyhow::Result<BTreeMap<&'static str, String>> {
    let agent = id_of(
        &create(
            app,
            "/api/v1/agents",
            json!({ "name": "matrix-agent", "type": "worker" }),
        )
        .await?,
    )?;
    let tool = id_of(
        &create(
            app,
            "/api/v1/tools",
            json!({ "name": "matrix-tool", "type": "http" }),
        )
        .await?,
    )?;
    let (status, _, body) = send(
        app,
        &Method::PUT,
        &format!("/api/v1/agents/{agent}/tools/{tool}"),
        None,
        Auth::Good,
    )
    .await?;
    anyhow::ensure!(status == StatusCode::CREATED, "attach: {status} {body}");
    let prompt = id_of(
        &create(
            app,
            "/api/v1/prompts",
            json!({ "name": "matrix-prompt", "content": "Be brief.", "agent_type": "worker" }),
        )
        .await?,
    )?;
    let user = id_of(
        &create(
            app,
            "/api/v1/users",
            json!({ "email": "matrix@example.com", "name": "Matrix" }),
        )
        .await?,
    )?;
    create(
        app,
        &format!("/api/v1/users/{user}/digests"),
        json!({ "subject": "s", "body": "b", "period": "daily" }),
    )
    .await?;
    let workflow = id_of(
        &create(
            app,
            "/api/v1/workflows",
            json!({ "name": "matrix-flow", "steps": [] }),
        )
        .await?,
    )?;
    let execution = id_of(
        &create(
            app,
            &format!("/api/v1/workflows/{workflow}/executions"),
            json!({}),
        )
        .await?,
    )?;
    let (status, _, file) = send(
        app,
        &Method::POST,
        "/api/v1/files?name=matrix.txt",
        Some((b"matrix".to_vec(), "text/plain")),
        Auth::Good,
    )
    .await?;
    anyhow::ensure!(status == StatusCode::CREATED, "upload: {status} {file}");
    let file = id_of(&file)?;
    Ok(BTreeMap::from([
        ("agents", agent.to_string()),
        ("tools", tool.to_string()),
        ("prompts", prompt.to_string()),
        ("users", user.to_string()),
        ("workflows", workflow.to_string()),
        ("executions", execution.to_string()),
        ("files", file.to_string()),
        ("cache", "agent_tools".to_owned()),
    ]))
}

/// The operations of the OpenAPI document.
fn operations(doc: &Value) -> anyhow::Result<Vec<Operation>> {
    let paths = doc["paths"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("no paths in the OpenAPI document"))?;
    let mut out = Vec::new();
    for (path, item) in paths {
        for &method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let declared = item["parameters"]
                .as_array()
                .into_iter()
                .chain(operation["parameters"].as_array())
                .flatten();
            let params = declared
                .filter(|p| p["in"] == "path")
                .filter_map(|p| {
                    let name = p["name"].as_str()?.to_owned();
                    let kind = &p["schema"]["type"];
                    let integer = kind == "integer"
                        || kind
                            .as_array()
                            .is_some_and(|kinds| kinds.iter().any(|k| k == "integer"));
                    Some((name, integer))
                })
                .collect();
            let json_body = operation["requestBody"]["content"]
                .as_object()
                .is_some_and(|content| content.contains_key("application/json"));
            out.push(Operation {
                method: Method::from_bytes(method.to_ascii_uppercase().as_bytes())?,
                path: path.clone(),
                json_body,
                params,
            });
        }
    }
    Ok(out)
}

/// The names of the parameters in a path template, in order.
fn template_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// The path with every parameter replaced by `{}`, to compare templates whatever the
/// parameter names.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// `path` with each parameter filled from `fixtures` by the segment before it, except
/// `(name, value)` in `over`.
fn fill(
    path: &str,
    fixtures: &BTreeMap<&'static str, String>,
    over: Option<(&str, &str)>,
) -> anyhow::Result<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut out = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
            out.push((*segment).to_owned());
            continue;
        };
        if let Some((over_name, value)) = over
            && over_name == name
        {
            out.push(value.to_owned());
            continue;
        }
        let resource = i
            .checked_sub(1)
            .and_then(|before| segments.get(before))
            .copied()
            .unwrap_or_default();
        let value = fixtures.get(resource).ok_or_else(|| {
            anyhow::anyhow!(
                "no fixture for parameter `{name}` of {path} (after `{resource}`): add one to \
                 `fixtures`"
            )
        })?;
        out.push(value.clone());
    }
    Ok(out.join("/"))
}

/// A body the operation accepts, so that only the path decides the answer.
fn valid_body(op: &Operation) -> Option<(Vec<u8>, &'static str)> {
    if !op.json_body {
        return None;
    }
    let value = match (op.method.as_str(), op.path.as_str()) {
        ("POST", "/api/v1/users/{id}/digests") => {
            json!({ "subject": "s", "body": "b", "period": "daily" })
        }
        ("POST", "/api/v1/cache/{name}/invalidate") => json!({ "all": true }),
        ("POST", "/api/v1/cache/{name}/warm") => json!({ "keys": [] }),
        // Every PATCH takes an empty object; PUT and POST on an existing resource take an
        // optional body.
        _ => json!({}),
    };
    serde_json::to_vec(&value)
        .ok()
        .map(|bytes| (bytes, "application/json"))
}

/// The body limit of the operation at `path`: the chat proxy has its own, larger one
/// (requests carry images); every other JSON route has the application's.
fn body_limit_of(path: &str) -> usize {
    if path == "/v1/chat/completions" {
        groundwork_server::routes::llm::CHAT_BODY_LIMIT_BYTES
    } else {
        BODY_LIMIT
    }
}

/// A JSON object just over `limit` bytes.
fn oversize_body(limit: usize) -> Vec<u8> {
    let mut body = br#"{"pad": ""#.to_vec();
    body.resize(limit + 64, b'x');
    body.extend_from_slice(br#""}"#);
    body
}

#[tokio::test]
async fn every_documented_route_keeps_the_error_contract() -> anyhow::Result<()> {
    let app = test_app_with(vec![key("matrix", SECRET)], BODY_LIMIT).await?;
    let (status, _, doc) = send(&app, &Method::GET, "/openapi.json", None, Auth::Good).await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "GET /openapi.json: {status} {doc}"
    );
    let ops = operations(&doc)?;
    let fixtures = fixtures(&app).await?;
    let mut report = Report::default();

    report.record(
        "the document is OpenAPI 3.1".to_owned(),
        match doc["openapi"].as_str() {
            Some(v) if v.starts_with("3.1") => Ok(()),
            other => Err(format!("openapi version {other:?}")),
        },
    );
    let documented: BTreeSet<(String, String)> = ops
        .iter()
        .map(|op| (op.method.to_string(), shape(&op.path)))
        .collect();
    for (method, path) in CONTRACT_ROUTES {
        report.record(
            format!("{method} {path}: documented"),
            if documented.contains(&((*method).to_owned(), (*path).to_owned())) {
                Ok(())
            } else {
                Err("a route of the contract table is missing from /openapi.json".to_owned())
            },
        );
    }

    // `/health` is public; everything else needs the key.
    let resp = send(&app, &Method::GET, "/health", None, Auth::None).await?;
    report.record(
        "GET /health: public".to_owned(),
        if resp.0 == StatusCode::OK && resp.2 == json!({ "status": "ok" }) {
            Ok(())
        } else {
            Err(format!(
                "expected 200 {{\"status\":\"ok\"}}, got {} {}",
                resp.0, resp.2
            ))
        },
    );

    for op in &ops {
        let label = op.label();
        let declared: Vec<&str> = op.params.iter().map(|(n, _)| n.as_str()).collect();
        report.record(
            format!("{label}: path parameters documented"),
            if declared.iter().copied().collect::<BTreeSet<_>>()
                == template_params(&op.path).into_iter().collect()
            {
                Ok(())
            } else {
                Err(format!("documented {declared:?}"))
            },
        );
        let uri = fill(&op.path, &fixtures, None)?;
        let raw = RAW_BODIES
            .iter()
            .any(|(method, path, _)| op.is(method, path));
        let own_limit = OWN_BODY_LIMIT
            .iter()
            .any(|(method, path)| op.is(method, path));

        // (a) Keys.
        if op.path != "/health" {
            for (auth, what) in [(Auth::None, "no key"), (Auth::Wrong, "wrong key")] {
                let resp = send(&app, &op.method, &uri, valid_body(op), auth).await?;
                report.record(
                    format!("{label}: {what} -> 401"),
                    expect_error(&resp, StatusCode::UNAUTHORIZED),
                );
            }
        }

        // (b) Bodies.
        if op.json_body && !raw {
            for (what, body, status) in [
                (
                    "malformed JSON -> 400",
                    b"{bad".to_vec(),
                    StatusCode::BAD_REQUEST,
                ),
                (
                    "JSON array -> 422",
                    b"[1, 2]".to_vec(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                ),
            ] {
                let resp = send(
                    &app,
                    &op.method,
                    &uri,
                    Some((body, "application/json")),
                    Auth::Good,
                )
                .await?;
                report.record(format!("{label}: {what}"), expect_error(&resp, status));
            }
        }
        if (op.json_body || raw) && !own_limit {
            let resp = send(
                &app,
                &op.method,
                &uri,
                Some((oversize_body(body_limit_of(&op.path)), "application/json")),
                Auth::Good,
            )
            .await?;
            report.record(
                format!("{label}: body over the limit -> 413"),
                expect_error(&resp, StatusCode::PAYLOAD_TOO_LARGE),
            );
        }

        // (c) Path parameters.
        for (name, integer) in &op.params {
            let cases: &[(&str, StatusCode, &str)] = if *integer {
                &[
                    ("abc", StatusCode::BAD_REQUEST, "non-numeric"),
                    (UNKNOWN_ID, StatusCode::NOT_FOUND, "unknown"),
                ]
            } else {
                &[("no-such-thing", StatusCode::NOT_FOUND, "unknown")]
            };
            for (value, status, what) in cases {
                let uri = fill(&op.path, &fixtures, Some((name, value)))?;
                let resp = send(&app, &op.method, &uri, valid_body(op), Auth::Good).await?;
                report.record(
                    format!("{label}: {what} `{name}` -> {}", status.as_u16()),
                    expect_error(&resp, *status),
                );
            }
        }
    }

    // (d) Methods a path does not document.
    let by_path: BTreeMap<&str, BTreeSet<&str>> =
        ops.iter().fold(BTreeMap::new(), |mut map, op| {
            map.entry(op.path.as_str())
                .or_insert_with(BTreeSet::new)
                .insert(op.method.as_str());
            map
        });
    for (path, methods) in &by_path {
        let uri = fill(path, &fixtures, None)?;
        for method in PROBED_METHODS {
            if methods.contains(method.as_str()) {
                continue;
            }
            let resp = send(&app, method, &uri, None, Auth::Good).await?;
            report.record(
                format!("{method} {path}: undocumented method -> 405"),
                expect_error(&resp, StatusCode::METHOD_NOT_ALLOWED),
            );
        }
    }

    // The matrix must have run: every fixture used, a floor on the cases.
    let used: BTreeSet<&str> = ops
        .iter()
        .flat_map(|op| {
            let segments: Vec<&str> = op.path.split('/').collect();
            segments
                .windows(2)
                .filter(|w| w[1].starts_with('{'))
                .map(|w| w[0])
                .collect::<Vec<_>>()
        })
        .collect();
    for resource in fixtures.keys() {
        anyhow::ensure!(
            used.contains(resource),
            "fixture `{resource}` is used by no documented path: the document lost routes?"
        );
    }
    anyhow::ensure!(
        ops.len() >= CONTRACT_ROUTES.len(),
        "only {} operations documented",
        ops.len()
    );

    let mut problems = Vec::new();
    for (case, why) in &report.failed {
        if !KNOWN_VIOLATIONS.iter().any(|(known, _)| known == case) {
            problems.push(format!("VIOLATION  {case}: {why}"));
        }
    }
    for (case, reason) in KNOWN_VIOLATIONS {
        if report.passed.contains(*case) {
            problems.push(format!(
                "FIXED      {case}: passes now; remove it from KNOWN_VIOLATIONS ({reason})"
            ));
        } else if !report.failed.contains_key(*case) {
            problems.push(format!(
                "STALE      {case}: no such case ran; remove it from KNOWN_VIOLATIONS"
            ));
        }
    }
    eprintln!(
        "contract matrix: {} operations, {} cases, {} passed, {} failed ({} known)",
        ops.len(),
        report.passed.len() + report.failed.len(),
        report.passed.len(),
        report.failed.len(),
        KNOWN_VIOLATIONS.len()
    );
    assert!(
        problems.is_empty(),
        "{} contract problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    Ok(())
}
