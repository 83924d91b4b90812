//! API-key authentication: `Authorization: Bearer <secret>` on every route but `/health`
//! when keys are configured. The key's name becomes the request's [`Actor`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ApiKey;
use crate::error::ApiError;

/// Who is making the request: an API key's name, or `anonymous` when no keys are configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub Arc<str>);

impl Actor {
    /// The actor's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// The configured keys, kept as SHA-256 digests so that every comparison is between two
/// 32-byte values: constant time, and no leak of a secret's length.
#[derive(Debug, Default)]
pub struct ApiKeys {
    keys: Vec<(Arc<str>, [u8; 32])>,
}

impl ApiKeys {
    /// Prepares `keys` for checking.
    #[must_use]
    pub fn new(keys: &[ApiKey]) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|k| (Arc::from(k.name.as_str()), digest(&k.secret)))
                .collect(),
        }
    }

    /// Whether any key is configured (if not, every request is `anonymous`).
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The name of the key whose secret is `presented`. Every key is compared, in constant
    /// time, whichever matches.
    #[must_use]
    pub fn identify(&self, presented: &str) -> Option<Arc<str>> {
        let presented = digest(presented);
        let mut found = None;
        for (name, secret) in &self.keys {
            if bool::from(secret.ct_eq(&presented)) {
                found = Some(Arc::clone(name));
            }
        }
        found
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Paths that never need a key.
fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/api/v1/health")
}

/// Middleware: authenticates the request and inserts its [`Actor`].
pub async fn authenticate(
    State(keys): State<Arc<ApiKeys>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !keys.enabled() {
        req.extensions_mut().insert(Actor(Arc::from("anonymous")));
        return next.run(req).await;
    }
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let token = match bearer_token(req.headers().get(AUTHORIZATION)) {
        Ok(token) => token,
        Err(message) => return challenge(message, r#"Bearer realm="groundwork""#),
    };
    // Secrets are ASCII in practice; any other token is simply not one of them.
    let name = std::str::from_utf8(token)
        .ok()
        .filter(|token| token.is_ascii())
        .and_then(|token| keys.identify(token));
    match name {
        Some(name) => {
            req.extensions_mut().insert(Actor(name));
            next.run(req).await
        }
        None => challenge(
            "invalid API key",
            r#"Bearer realm="groundwork", error="invalid_token""#,
        ),
    }
}

/// The token of an `Authorization: Bearer <token>` header, or why there is none: the
/// header is missing, or uses another scheme (`Basic ...`, a bare secret), or names no
/// token. The token's bytes are checked by the caller.
fn bearer_token(header: Option<&HeaderValue>) -> Result<&[u8], &'static str> {
    let Some(header) = header else {
        return Err("missing `Authorization: Bearer <API key>` header");
    };
    let credentials = header.as_bytes().trim_ascii();
    let (scheme, token) = credentials
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .map_or((credentials, &b""[..]), |at| {
            (&credentials[..at], credentials[at..].trim_ascii())
        });
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(
            "the Authorization header must use the Bearer scheme: `Authorization: Bearer <API key>`",
        );
    }
    if token.is_empty() {
        return Err("the Authorization header has no API key after `Bearer`");
    }
    Ok(token)
}

/// A 401 with the challenge RFC 9110 §11.6.1 requires (`WWW-Authenticate`, in the form of
/// RFC 6750 §3 for bearer tokens).
fn challenge(message: &str, www_authenticate: &'static str) -> Response {
    let mut response = ApiError::unauthorized(message).into_response();
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static(www_authenticate),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_identify_their_owner() {
        let keys = ApiKeys::new(&[
            ApiKey {
                name: "ci".into(),
                secret: "s1".into(),
            },
            ApiKey {
                name: "ops".into(),
                secret: "s2".into(),
            },
        ]);
        assert!(keys.enabled());
        assert_eq!(keys.identify("s2").as_deref(), Some("ops"));
        assert_eq!(keys.identify("s1").as_deref(), Some("ci"));
        assert_eq!(keys.identify("s3"), None);
        assert_eq!(keys.identify(""), None);
        assert!(!ApiKeys::new(&[]).enabled());
    }

    #[test]
    fn bearer_tokens_are_told_from_other_credentials() {
        let token = |value: &'static str| {
            bearer_token(Some(&HeaderValue::from_static(value))).map(<[u8]>::to_vec)
        };
        for (value, expected) in [
            ("Bearer s3cret", "s3cret"),
            ("bearer s3cret", "s3cret"),
            ("  BEARER \t s3cret  ", "s3cret"),
            ("Bearer\ts3cret", "s3cret"),
            ("Bearer s3cret and more", "s3cret and more"),
        ] {
            assert_eq!(token(value), Ok(expected.as_bytes().to_vec()), "{value:?}");
        }
        let wrong_scheme = "the Authorization header must use the Bearer scheme: `Authorization: Bearer <API key>`";
        for value in [
            "Basic Y2k6czNjcmV0",
            "s3cret",
            "Bearers3cret",
            "Token s3cret",
            "",
        ] {
            assert_eq!(token(value), Err(wrong_scheme), "{value:?}");
        }
        for value in ["Bearer", "Bearer ", " bearer \t "] {
            assert_eq!(
                token(value),
                Err("the Authorization header has no API key after `Bearer`"),
                "{value:?}"
            );
        }
        assert_eq!(
            bearer_token(None),
            Err("missing `Authorization: Bearer <API key>` header")
        );
    }
}
