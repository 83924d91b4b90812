//! Request extractors whose rejections use the contract's error shape: malformed JSON is
//! 400, well-formed JSON of the wrong shape (not an object; types, missing or unknown fields,
//! unknown enum values) is 422, an oversize body is 413, a bad path or query parameter is
//! 400.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON object request body (`Content-Type: application/json` required).
///
/// Every request body of the API is an object: any other JSON value is refused (422) before
/// `T` sees it, since serde's derived struct deserializers would otherwise take an array
/// and fill the fields by position.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Checked before the body is read, as `axum::Json` does.
        if !json_content_type(req.headers()) {
            return Err(missing_json_content_type());
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        object_from_bytes(&bytes).map(Self)
    }
}

/// A JSON object body that may be left out entirely: an empty body means `T::default()`.
/// Like [`ApiJson`], any JSON value but an object is refused (422).
#[derive(Debug, Clone, Copy, Default)]
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(bytes_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        object_from_bytes(&bytes).map(Self)
    }
}

/// Whether `headers` announce a JSON body: `application/json` or `application/<x>+json`,
/// parameters allowed (`; charset=utf-8`): the test `axum::Json` applies, except that the
/// parameters are not checked for syntax.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split_once(';').map_or(value, |(essence, _)| essence);
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.rsplit_once('+').is_some_and(|(name, suffix)| {
                !name.is_empty() && suffix.eq_ignore_ascii_case("json")
            }))
}

fn missing_json_content_type() -> ApiError {
    ApiError::bad_request("expected a JSON body with `Content-Type: application/json`")
}

/// `T` from a body that must hold a JSON object. A body that starts with anything but `{`
/// is parsed as a JSON value only to tell malformed JSON (400) from a value of the wrong
/// type (422), so a valid object pays nothing more than the peek.
fn object_from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    // An empty body goes on to `T`'s parse, which calls it malformed (400).
    if first.is_some_and(|&b| b != b'{') {
        return Err(match axum::Json::<serde_json::Value>::from_bytes(bytes) {
            Ok(axum::Json(value)) => not_an_object(&value),
            Err(rejection) => json_rejection(rejection),
        });
    }
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(value)) => Ok(value),
        Err(rejection) => Err(json_rejection(rejection)),
    }
}

fn not_an_object(value: &serde_json::Value) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "invalid request body: expected a JSON object, got {}",
            groundwork_core::json_type(value)
        ),
    )
}

/// Path parameters.
#[derive(Debug, Clone, Copy)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_rejection(&rejection)),
        }
    }
}

/// Query-string parameters. A NUL character (`%00`) in the query is refused (400) whatever
/// the route: PostgreSQL cannot store or compare one, and SQLite would silently match
/// nothing, so both engines answer alike.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(|query| {
            query
                .as_bytes()
                .windows(3)
                .any(|w| w.eq_ignore_ascii_case(b"%00"))
        }) {
            return Err(ApiError::bad_request(
                "query parameters cannot contain NUL characters (%00)",
            ));
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

/// A path parameter that does not parse: says which value and what was expected, in the
/// API's words rather than Rust's (`` `abc` in the path is not an integer ``).
fn path_rejection(rejection: &PathRejection) -> ApiError {
    use axum::extract::path::ErrorKind;
    if let PathRejection::FailedToDeserializePathParams(err) = rejection {
        match err.kind() {
            ErrorKind::ParseErrorAtKey {
                key,
                value,
                expected_type,
            } => {
                return ApiError::bad_request(format!(
                    "path parameter `{key}`: `{value}` is not {}",
                    describe_type(expected_type)
                ));
            }
            ErrorKind::ParseErrorAtIndex {
                value,
                expected_type,
                ..
            }
            | ErrorKind::ParseError {
                value,
                expected_type,
            } => {
                return ApiError::bad_request(format!(
                    "`{value}` in the path is not {}",
                    describe_type(expected_type)
                ));
            }
            _ => {}
        }
    }
    ApiError::bad_request(rejection.body_text())
}

/// What a Rust type name means to an API user.
fn describe_type(rust_type: &str) -> &'static str {
    match rust_type.rsplit("::").next().unwrap_or(rust_type) {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64" | "u128"
        | "usize" => "an integer",
        "f32" | "f64" => "a number",
        "bool" => "`true` or `false`",
        "Uuid" => "a UUID",
        _ => "a valid value",
    }
}

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let detail = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    ApiError::bad_request(format!("invalid query string: {}", plain_serde(detail)))
}

/// serde's message without Rust's vocabulary: `expected struct NewAgent with 5 elements`
/// reads `expected a JSON object`.
fn plain_serde(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("expected struct ") {
        out.push_str(&rest[..at]);
        out.push_str("expected a JSON object");
        let after = &rest[at + "expected struct ".len()..];
        // Skip the type name and an optional ` with N element(s)`.
        let name_end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let mut tail = &after[name_end..];
        if let Some(with) = tail.strip_prefix(" with ") {
            let digits = with
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(with.len());
            if digits > 0 {
                let counted = &with[digits..];
                tail = counted
                    .strip_prefix(" elements")
                    .or_else(|| counted.strip_prefix(" element"))
                    .unwrap_or(tail);
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text();
            let detail = text
                .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                .unwrap_or(&text);
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid request body: {}", plain_serde(detail)),
            )
        }
        JsonRejection::JsonSyntaxError(e) => {
            let text = e.body_text();
            let detail = text
                .strip_prefix("Failed to parse the request body as JSON: ")
                .unwrap_or(&text);
            ApiError::bad_request(format!("malformed JSON: {detail}"))
        }
        JsonRejection::MissingJsonContentType(_) => missing_json_content_type(),
        JsonRejection::BytesRejection(e) => bytes_rejection(e),
        other => ApiError::bad_request(other.body_text()),
    }
}

fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than the server accepts",
        )
    } else {
        ApiError::bad_request(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_lose_rust_vocabulary() {
        assert_eq!(
            plain_serde(
                "invalid type: sequence, expected struct NewAgent with 5 elements at line 1 column 2"
            ),
            "invalid type: sequence, expected a JSON object at line 1 column 2"
        );
        assert_eq!(
            plain_serde("invalid type: integer `1`, expected struct Step with 1 element"),
            "invalid type: integer `1`, expected a JSON object"
        );
        assert_eq!(
            plain_serde("invalid type: string, expected struct Patch"),
            "invalid type: string, expected a JSON object"
        );
        assert_eq!(plain_serde("missing field `name`"), "missing field `name`");
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        name: String,
        size: Option<i64>,
    }

    /// The status of a refused body, and the error's `Debug`, which holds its message.
    fn refusal(bytes: &str) -> (StatusCode, String) {
        match object_from_bytes::<Body>(bytes.as_bytes()) {
            Ok(body) => panic!("{bytes:?} was accepted as {body:?}"),
            Err(err) => (err.status(), format!("{err:?}")),
        }
    }

    #[test]
    fn only_an_object_is_a_body() {
        let body = object_from_bytes::<Body>(br#" {"name": "a", "size": 2}"#).ok();
        assert_eq!(
            body.map(|b| (b.name, b.size)),
            Some(("a".to_owned(), Some(2)))
        );
        for (bytes, kind) in [
            (r#"["a", 2]"#, "an array"),
            ("\n\t [ ]", "an array"),
            (r#""a""#, "a string"),
            ("-1.5", "a number"),
            ("7", "a number"),
            ("true", "a boolean"),
            ("null", "null"),
        ] {
            let (status, error) = refusal(bytes);
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{bytes:?}: {error}"
            );
            let message = format!("\"invalid request body: expected a JSON object, got {kind}\"");
            assert!(error.contains(&message), "{bytes:?}: {error}");
        }
        // Malformed JSON stays malformed, whatever its first byte.
        for bytes in [
            "", "  ", "[bad", r#"["a","#, "tru", "nul", "abc", "{bad", "[] []",
        ] {
            let (status, error) = refusal(bytes);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bytes:?}: {error}");
            assert!(error.contains("\"malformed JSON: "), "{bytes:?}: {error}");
        }
    }

    #[test]
    fn json_content_types_are_axums() {
        let headers = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, axum::http::HeaderValue::from_static(value));
            headers
        };
        for value in [
            "application/json",
            "application/json; charset=utf-8",
            "application/json;charset=utf-8",
            "Application/JSON",
            "application/cloudevents+json",
            "application/merge-patch+json; charset=utf-8",
        ] {
            assert!(json_content_type(&headers(value)), "{value}");
        }
        for value in [
            "text/json",
            "text/plain",
            "application/jsonx",
            "application/json+xml",
            "application/+json",
            "application",
            "json",
            "",
        ] {
            assert!(!json_content_type(&headers(value)), "{value}");
        }
        assert!(!json_content_type(&HeaderMap::new()));
    }

    #[test]
    fn rust_types_read_as_api_words() {
        assert_eq!(describe_type("i64"), "an integer");
        assert_eq!(describe_type("uuid::Uuid"), "a UUID");
        assert_eq!(describe_type("alloc::string::String"), "a valid value");
    }
}
