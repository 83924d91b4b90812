//! Choosing and building a store from a URL ([`open`]) or from settings ([`S3Settings`]).

use std::fmt;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

use crate::{FileStore, ObjectFileStore, StorageError};

/// The storage URL used when `GROUNDWORK_STORAGE_URL` is not set.
pub const DEFAULT_STORAGE_URL: &str = "file://./groundwork-data/files";

/// The environment variable that chooses the store (read by the server, passed to [`open`]).
pub const STORAGE_URL_ENV: &str = "GROUNDWORK_STORAGE_URL";

/// Opens the store a storage URL names.
///
/// * `file://PATH`: a directory on the local disk, created if missing. `PATH` may be
///   relative (`file://./groundwork-data/files`) or absolute (`file:///var/lib/files`).
///   Objects are written to a staging file next to their final name and renamed into place
///   once complete; the file and its directory are fsynced first, so a completed upload
///   survives a crash.
/// * `memory://`: kept in memory, lost on exit (tests).
/// * `s3://BUCKET?endpoint=…&region=…&path_style=true&access_key_id=…&secret_access_key=…`:
///   an S3-compatible store. Every query parameter is optional and overrides the matching
///   `AWS_*` environment variable (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
///   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, …); see [`S3Settings`]. Values may be
///   percent-encoded.
///
/// Opening makes no connection.
///
/// # Errors
///
/// [`StorageError::Config`] for another scheme, a malformed URL, an unknown query
/// parameter, or settings the S3 client rejects; [`StorageError::Unavailable`] when the
/// local directory cannot be created.
///
/// ```
/// let store = groundwork_storage::open("memory://")?;
/// assert_eq!(store.describe(), "memory://");
/// assert!(groundwork_storage::open("ftp://example.com").is_err());
/// # Ok::<(), groundwork_storage::StorageError>(())
/// ```
pub fn open(url: &str) -> Result<Arc<dyn FileStore>, StorageError> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(StorageError::Config(format!(
            "storage URL `{url}` has no scheme: expected file://PATH, memory:// or s3://BUCKET"
        )));
    };
    let store = match scheme.to_ascii_lowercase().as_str() {
        "file" => open_local(rest)?,
        "memory" if rest.is_empty() => ObjectFileStore::memory(),
        "memory" => {
            return Err(StorageError::Config(format!(
                "storage URL `{url}`: memory:// takes no path or parameters"
            )));
        }
        "s3" => S3Settings::from_url_parts(rest)?.build()?,
        other => {
            return Err(StorageError::Config(format!(
                "unsupported storage URL scheme `{other}`: expected file://, memory:// or s3://"
            )));
        }
    };
    Ok(Arc::new(store))
}

impl ObjectFileStore {
    /// An empty in-memory store (tests), described as `memory://`.
    #[must_use]
    pub fn memory() -> Self {
        Self::new(Arc::new(InMemory::new()), "memory://")
    }

    /// A store in the directory `dir` (created if missing), described as `file://` and the
    /// absolute directory.
    ///
    /// # Errors
    ///
    /// [`StorageError::Unavailable`] when the directory cannot be created or resolved.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self, StorageError> {
        local(dir.as_ref())
    }

    /// An S3-compatible store; see [`S3Settings::build`].
    ///
    /// # Errors
    ///
    /// As [`S3Settings::build`].
    pub fn s3(settings: &S3Settings) -> Result<Self, StorageError> {
        settings.build()
    }
}

fn local(dir: &std::path::Path) -> Result<ObjectFileStore, StorageError> {
    let unavailable = |err: &(dyn std::error::Error + 'static)| {
        StorageError::Unavailable(format!(
            "storage directory `{}`: {}",
            dir.display(),
            groundwork_core::error_chain(err)
        ))
    };
    std::fs::create_dir_all(dir).map_err(|err| unavailable(&err))?;
    let absolute = std::fs::canonicalize(dir).map_err(|err| unavailable(&err))?;
    let store = LocalFileSystem::new_with_prefix(&absolute).map_err(|err| unavailable(&err))?;
    // Uploads are written by `LocalUpload`: durable on success, as on S3, so the metadata
    // row written next never points at a file a crash could still lose.
    Ok(ObjectFileStore::local_disk(
        Arc::new(store),
        &absolute,
        format!("file://{}", absolute.display()),
    ))
}

fn open_local(path: &str) -> Result<ObjectFileStore, StorageError> {
    if path.is_empty() || path.contains(['?', '#']) {
        return Err(StorageError::Config(format!(
            "storage URL `file://{path}`: expected file://PATH with a directory path and no \
             query (file://./groundwork-data/files or file:///var/lib/groundwork/files)"
        )));
    }
    let path = percent_decode(path)?;
    ObjectFileStore::local(path)
}

/// Settings of an S3-compatible store.
///
/// Unset fields fall back to the `AWS_*` environment variables (`AWS_ENDPOINT`,
/// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), then
/// to object_store's defaults (region `us-east-1`; without static credentials, the
/// instance or container credentials of the host). `Debug` hides the secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket. Required.
    pub bucket: String,
    /// The server, such as `http://127.0.0.1:9000` for a self-hosted one. Default: AWS.
    /// Plain `http://` is allowed only when the endpoint says so.
    pub endpoint: Option<String>,
    /// The region. Default: `AWS_REGION`, then `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which self-hosted servers need.
    /// Default: `true`; `false` uses virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Access key id. Default: `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Secret access key. Default: `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials. Default: `AWS_SESSION_TOKEN`.
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |value: &Option<String>| value.as_ref().map(|_| "<hidden>");
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .finish()
    }
}

impl S3Settings {
    /// Settings for `bucket` with every other field at its default.
    #[must_use]
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            path_style: true,
            ..Self::default()
        }
    }

    /// Parses what follows `s3://`: `BUCKET[?name=value&…]`.
    fn from_url_parts(rest: &str) -> Result<Self, StorageError> {
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bucket = bucket.strip_suffix('/').unwrap_or(bucket);
        if bucket.is_empty() || bucket.contains(['/', '#', '@']) {
            return Err(StorageError::Config(format!(
                "storage URL `s3://{rest}`: expected s3://BUCKET?endpoint=…&region=… (a key \
                 prefix after the bucket is not supported)"
            )));
        }
        let mut settings = Self::new(bucket);
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match name {
                "endpoint" => settings.endpoint = Some(value),
                "region" => settings.region = Some(value),
                "path_style" => settings.path_style = parse_bool(name, &value)?,
                "access_key_id" => settings.access_key_id = Some(value),
                "secret_access_key" => settings.secret_access_key = Some(value),
                "session_token" => settings.session_token = Some(value),
                other => {
                    return Err(StorageError::Config(format!(
                        "unknown s3:// URL parameter `{other}`: expected endpoint, region, \
                         path_style, access_key_id, secret_access_key or session_token"
                    )));
                }
            }
        }
        Ok(settings)
    }

    /// Builds the store. Makes no connection.
    ///
    /// Installs ring as the process's rustls crypto provider if none is installed (reqwest
    /// is built without one).
    ///
    /// # Errors
    ///
    /// [`StorageError::Config`] for an empty bucket, an endpoint that is not an `http://`
    /// or `https://` URL, or settings the S3 client rejects.
    pub fn build(&self) -> Result<ObjectFileStore, StorageError> {
        if self.bucket.is_empty() {
            return Err(StorageError::Config(
                "the S3 bucket name is empty".to_owned(),
            ));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_virtual_hosted_style_request(!self.path_style);
        // Bounded retries: a store that stops answering fails a request after about 30 s
        // without a byte (the read timeout), not after object_store's default 10 retries over
        // 3 minutes. The overall timeout is 5 minutes rather than object_store's 30 s, which
        // counts the whole response body and so would cut any download longer than that.
        // Key by key, so that the client options read from the environment (proxy, ...)
        // are kept.
        let client = |key| object_store::aws::AmazonS3ConfigKey::Client(key);
        builder = builder
            .with_retry(object_store::RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(15),
                ..object_store::RetryConfig::default()
            })
            .with_config(client(object_store::ClientConfigKey::ConnectTimeout), "5s")
            .with_config(client(object_store::ClientConfigKey::ReadTimeout), "30s")
            .with_config(client(object_store::ClientConfigKey::Timeout), "300s");
        if let Some(endpoint) = &self.endpoint {
            let lower = endpoint.to_ascii_lowercase();
            let http = lower.starts_with("http://");
            if !http && !lower.starts_with("https://") {
                return Err(StorageError::Config(format!(
                    "S3 endpoint `{endpoint}` must start with http:// or https://"
                )));
            }
            builder = builder.with_endpoint(endpoint).with_allow_http(http);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &self.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &self.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &self.session_token {
            builder = builder.with_token(token);
        }
        ensure_crypto_provider();
        let store = builder.build().map_err(|err| {
            StorageError::Config(format!(
                "S3 bucket `{}`: {}",
                self.bucket,
                groundwork_core::error_chain(&err)
            ))
        })?;
        let mut description = format!("s3://{}", self.bucket);
        let mut details = Vec::new();
        if let Some(endpoint) = &self.endpoint {
            details.push(format!("endpoint {}", strip_userinfo(endpoint)));
        }
        if let Some(region) = &self.region {
            details.push(format!("region {region}"));
        }
        details.push(
            if self.path_style {
                "path-style"
            } else {
                "virtual-hosted"
            }
            .to_owned(),
        );
        description.push_str(&format!(" ({})", details.join(", ")));
        let store = Arc::new(store);
        Ok(ObjectFileStore::tracked(store.clone(), store, description))
    }
}

/// Installs ring as the process's rustls crypto provider unless one is installed already
/// (the same as groundwork-clients does): reqwest is built with `rustls-no-provider` and
/// panics when building a client without one.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err means another thread installed a provider in between: that one is used.
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
    }
}

/// `http://user:pass@host` → `http://host`, so that a description never shows credentials.
fn strip_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, StorageError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(StorageError::Config(format!(
            "s3:// URL parameter `{name}` must be true or false, not `{value}`"
        ))),
    }
}

/// Decodes `%XX` escapes (`+` stays a plus: secret keys contain it).
fn percent_decode(text: &str) -> Result<String, StorageError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let escape = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            let Some(byte) = escape else {
                return Err(StorageError::Config(
                    "malformed percent-escape in the storage URL".to_owned(),
                ));
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| StorageError::Config("the storage URL decodes to invalid UTF-8".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rest: &str) -> S3Settings {
        match S3Settings::from_url_parts(rest) {
            Ok(settings) => settings,
            Err(err) => panic!("{rest}: {err}"),
        }
    }

    #[test]
    fn s3_url_parameters() {
        let parsed = settings(
            "media?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1&path_style=false\
             &access_key_id=AK&secret_access_key=a%2Fb+c",
        );
        assert_eq!(
            parsed,
            S3Settings {
                bucket: "media".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("eu-west-1".into()),
                path_style: false,
                access_key_id: Some("AK".into()),
                secret_access_key: Some("a/b+c".into()),
                session_token: None,
            }
        );
        assert!(settings("media").path_style);
        assert_eq!(settings("media/").bucket, "media");
    }

    #[test]
    fn debug_hides_secrets() {
        let parsed = settings("b?secret_access_key=TOPSECRET&session_token=TOKEN");
        let text = format!("{parsed:?}");
        assert!(
            !text.contains("TOPSECRET") && !text.contains("TOKEN"),
            "{text}"
        );
    }

    #[test]
    fn bad_s3_urls() {
        for rest in [
            "",
            "?endpoint=x",
            "bucket/prefix",
            "b?colour=blue",
            "b?path_style=maybe",
            "b?region=%zz",
        ] {
            assert!(
                matches!(
                    S3Settings::from_url_parts(rest),
                    Err(StorageError::Config(_))
                ),
                "{rest:?}"
            );
        }
    }

    #[test]
    fn userinfo_is_stripped() {
        assert_eq!(
            strip_userinfo("http://u:p@host:9000/x"),
            "http://host:9000/x"
        );
        assert_eq!(strip_userinfo("http://host:9000"), "http://host:9000");
    }
}
