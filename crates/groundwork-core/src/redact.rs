//! Secrets out of URLs before they reach a log line, an error message or `groundwork config`.

/// Words that make a query parameter's name a secret's (compared in lower case, `-` read as
/// `_`): `password`, `secret_access_key`, `session_token`, `api-key`, `X-Amz-Signature`...
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "key",
    "signature",
    "credential",
    "auth",
];

/// `url` with the secrets it may carry replaced by `***`: the password of its user info
/// (`user:***@host`; a user info without a password may itself be a token, so all of it:
/// `***@host`) and the values of query parameters whose names suggest a secret (containing
/// `password`, `secret`, `token`, `key`, `signature`, `credential`, `auth`, or named `sig`).
/// Everything else is kept, so that the result still says where it points. A string that
/// is not a URL is returned as given.
///
/// ```
/// use groundwork_core::redact_url;
///
/// assert_eq!(
///     redact_url("postgres://app:s3cret@db:5432/gw?sslmode=require&password=x"),
///     "postgres://app:***@db:5432/gw?sslmode=require&password=***"
/// );
/// assert_eq!(
///     redact_url("s3://files?endpoint=http://minio:9000&access_key_id=AK&secret_access_key=SK"),
///     "s3://files?endpoint=http://minio:9000&access_key_id=***&secret_access_key=***"
/// );
/// assert_eq!(redact_url("redis://:pw@cache:6379/2"), "redis://:***@cache:6379/2");
/// assert_eq!(redact_url("sqlite://./groundwork-data/groundwork.db"), "sqlite://./groundwork-data/groundwork.db");
/// ```
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = format!("{scheme}://");
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str("***@"),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (tail, None),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<String> = query.split('&').map(redact_pair).collect();
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(before_fragment),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn redact_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((name, _value)) if is_secret_name(name) => format!("{name}=***"),
        // A URL inside a parameter (an S3 `endpoint=http://key:secret@host`) has its own.
        Some((name, value)) if value.contains("://") => format!("{name}={}", redact_url(value)),
        _ => pair.to_owned(),
    }
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    name == "sig" || SECRET_WORDS.iter().any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_parameters_are_masked() {
        let cases = [
            (
                "postgres://app:s3cret@db.internal:5432/groundwork?sslmode=require",
                "postgres://app:***@db.internal:5432/groundwork?sslmode=require",
            ),
            ("postgres://app@db/x", "postgres://***@db/x"),
            (
                "amqp://guest:guest@[::1]:5672/%2f?heartbeat=5",
                "amqp://guest:***@[::1]:5672/%2f?heartbeat=5",
            ),
            ("https://ghp_token@github.com/x", "https://***@github.com/x"),
            (
                "http://llm:8000/v1?api-key=abc&model=m",
                "http://llm:8000/v1?api-key=***&model=m",
            ),
            (
                "https://hooks.example/x?token=t&X-Amz-Signature=s&sig=q&Credential=c#frag",
                "https://hooks.example/x?token=***&X-Amz-Signature=***&sig=***&Credential=***#frag",
            ),
            (
                "s3://bucket?session_token=T",
                "s3://bucket?session_token=***",
            ),
            ("s3://bucket?flag&region=eu", "s3://bucket?flag&region=eu"),
            (
                "s3://b?endpoint=http://AK:SK@minio:9000&region=eu",
                "s3://b?endpoint=http://AK:***@minio:9000&region=eu",
            ),
            ("memory://", "memory://"),
            (
                "file://./groundwork-data/files",
                "file://./groundwork-data/files",
            ),
            ("not a url", "not a url"),
            ("", ""),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
