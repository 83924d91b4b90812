//! Where a service URL points, and the same URL pointed at a proxy.

use std::io;
use std::net::SocketAddr;

/// The parts of `scheme://[userinfo@]host[:port][/path][?query][#fragment]` this module
/// needs, borrowed from the URL.
struct Parts<'a> {
    /// The scheme, without `://`; `None` when the URL has none.
    scheme: Option<&'a str>,
    /// The user info without the `@` (`user` or `user:password`), if any.
    userinfo: Option<&'a str>,
    /// Host and port, as written.
    host_port: &'a str,
    /// Everything after the authority: path, query and fragment.
    tail: &'a str,
}

impl<'a> Parts<'a> {
    fn split(url: &'a str) -> Self {
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, url),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        Self {
            scheme,
            userinfo,
            host_port,
            tail,
        }
    }

    /// The query, without `?` and fragment.
    fn query(&self) -> &'a str {
        let Some((_, query)) = self.tail.split_once('?') else {
            return "";
        };
        query.split_once('#').map_or(query, |(query, _)| query)
    }
}

/// The default port of a URL scheme.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" => Some(5432),
        "redis" | "rediss" => Some(6379),
        "amqp" => Some(5672),
        "amqps" => Some(5671),
        _ => None,
    }
}

fn invalid(url: &str, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{why}: {url}"))
}

/// The TCP address a `postgres://`, `redis://` or `amqp://` URL points at: its host,
/// resolved, and its port, or the scheme's default port (5432 for `postgres` and
/// `postgresql`, 6379 for `redis` and `rediss`, 5672 for `amqp`, 5671 for `amqps`).
///
/// When the host resolves to several addresses, the first is returned.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let addr = groundwork_testkit::upstream_of("postgres://app:secret@127.0.0.1/test").await?;
/// assert_eq!(addr.to_string(), "127.0.0.1:5432");
/// let addr = groundwork_testkit::upstream_of("redis://[::1]:6380/0").await?;
/// assert_eq!(addr.to_string(), "[::1]:6380");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`io::ErrorKind::InvalidInput`] when the URL has no scheme or no host, when its port is
/// not a number, when it names no port and its scheme has no known default, when its host
/// is a Unix socket path, or when its query sets `host`, `hostaddr` or `port` (a proxy in
/// front of such a URL would be bypassed); otherwise the error of resolving the host.
pub async fn upstream_of(url: &str) -> io::Result<SocketAddr> {
    let parts = Parts::split(url);
    let scheme = parts
        .scheme
        .ok_or_else(|| invalid(url, "no scheme in the URL"))?;
    let overridden = parts.query().split('&').any(|pair| {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        matches!(key, "host" | "hostaddr" | "port")
    });
    if overridden {
        return Err(invalid(
            url,
            "the query of the URL sets the host or port, which a proxy cannot take over",
        ));
    }
    let (host, port) = match parts.host_port.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid(url, "no `]` after the IPv6 address"))?;
            let port = match after {
                "" => None,
                after => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| invalid(url, "junk after the IPv6 address"))?,
                ),
            };
            (host, port)
        }
        None => match parts.host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (parts.host_port, None),
        },
    };
    if host.is_empty() {
        return Err(invalid(url, "no host in the URL"));
    }
    if host.starts_with('/') || host.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("%2f")) {
        return Err(invalid(
            url,
            "the proxy needs a TCP address, not a Unix socket",
        ));
    }
    let port = match port.filter(|port| !port.is_empty()) {
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| invalid(url, "the port is not a number"))?,
        None => default_port(scheme)
            .ok_or_else(|| invalid(url, "no port, and no default port for the scheme"))?,
    };
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} resolves to no address"),
            )
        })
}

/// `url` with its host and port replaced by `127.0.0.1:port`, keeping the scheme, user,
/// password, path, query and fragment — the URL a client uses to go through a
/// [`TcpProxy`](crate::TcpProxy) listening on `port`.
///
/// A URL without a scheme is treated as starting with its authority (`user@host:port/...`).
///
/// ```
/// use groundwork_testkit::with_port;
///
/// assert_eq!(
///     with_port("postgres://app:secret@db.internal:5432/test?sslmode=disable", 40001),
///     "postgres://app:secret@127.0.0.1:40001/test?sslmode=disable"
/// );
/// assert_eq!(with_port("redis://cache", 40002), "redis://127.0.0.1:40002");
/// ```
#[must_use]
pub fn with_port(url: &str, port: u16) -> String {
    let parts = Parts::split(url);
    let scheme = parts
        .scheme
        .map(|scheme| format!("{scheme}://"))
        .unwrap_or_default();
    let user = parts
        .userinfo
        .map(|userinfo| format!("{userinfo}@"))
        .unwrap_or_default();
    format!("{scheme}{user}127.0.0.1:{port}{}", parts.tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn kind_of(url: &str) -> Option<io::ErrorKind> {
        upstream_of(url).await.err().map(|err| err.kind())
    }

    #[tokio::test]
    async fn upstream_of_reads_host_and_port() -> io::Result<()> {
        let cases = [
            ("postgres://postgres@127.0.0.1:5432/test", "127.0.0.1:5432"),
            (
                "postgresql://u:p@127.0.0.1:6000/db?sslmode=disable",
                "127.0.0.1:6000",
            ),
            ("postgres://127.0.0.1", "127.0.0.1:5432"),
            ("postgres://u:p%40ss@127.0.0.1/db", "127.0.0.1:5432"),
            ("redis://127.0.0.1", "127.0.0.1:6379"),
            ("rediss://:secret@127.0.0.1:/2", "127.0.0.1:6379"),
            ("amqp://guest:guest@127.0.0.1/%2f", "127.0.0.1:5672"),
            ("amqps://127.0.0.1", "127.0.0.1:5671"),
            ("AMQP://127.0.0.1:5673?heartbeat=10", "127.0.0.1:5673"),
            ("redis://[::1]", "[::1]:6379"),
            ("postgres://u@[::1]:5433/db", "[::1]:5433"),
        ];
        for (url, expected) in cases {
            assert_eq!(upstream_of(url).await?.to_string(), expected, "{url}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn upstream_of_resolves_names() -> io::Result<()> {
        let addr = upstream_of("postgres://postgres@localhost/test").await?;
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.port(), 5432);
        Ok(())
    }

    #[tokio::test]
    async fn upstream_of_rejects_what_a_proxy_cannot_serve() {
        let invalid = Some(io::ErrorKind::InvalidInput);
        for url in [
            "127.0.0.1:5432",
            "postgres:///test",
            "postgres://u@/test?host=/var/run/postgresql",
            "postgres://%2Fvar%2Frun%2Fpostgresql/test",
            "postgres://127.0.0.1/test?port=5433",
            "postgres://127.0.0.1:port/test",
            "postgres://127.0.0.1:70000/test",
            "http://127.0.0.1/",
            "redis://[::1/0",
            "redis://[::1]6379/0",
        ] {
            assert_eq!(kind_of(url).await, invalid, "{url}");
        }
    }

    #[test]
    fn with_port_keeps_everything_but_the_address() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/test",
                "postgres://postgres@127.0.0.1:9/test",
            ),
            (
                "postgres://u:p%40ss@db.example:5432/test?sslmode=disable&x=1#frag",
                "postgres://u:p%40ss@127.0.0.1:9/test?sslmode=disable&x=1#frag",
            ),
            ("redis://cache.internal", "redis://127.0.0.1:9"),
            (
                "redis://:secret@[::1]:6379/3",
                "redis://:secret@127.0.0.1:9/3",
            ),
            (
                "amqp://guest:guest@mq/%2f",
                "amqp://guest:guest@127.0.0.1:9/%2f",
            ),
            ("amqp://mq?heartbeat=10", "amqp://127.0.0.1:9?heartbeat=10"),
            ("user@host:1/db", "user@127.0.0.1:9/db"),
        ];
        for (url, expected) in cases {
            assert_eq!(with_port(url, 9), expected, "{url}");
        }
    }
}
