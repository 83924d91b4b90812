//! API-key authentication: `Authorization: Bearer <secret>` on every route but `/health`
//! when keys are configured. The key's name becomes the request's [`Actor`].

use std::sync::Arc;

use axum::extract::{Request, State};
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
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return challenge(
            "missing `Authorization: Bearer <API key>` header",
            r#"Bearer realm="groundwork""#,
        );
    };
    match keys.identify(token) {
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

/// A 401 with the challenge RFC 9110 §11.6.1 requires (`WWW-Authenticate`, in the form of
/// RFC 6750 §3 for bearer tokens).
fn challenge(message: &str, www_authenticate: &'static str) -> Response {
    let mut response = ApiError::unauthorized(message).into_response();
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static(www_authenticate),
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
}
