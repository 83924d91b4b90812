//! HTTP helpers for downloads: `Range` parsing and resolution (RFC 9110 §14), the ETag
//! derived from the SHA-256, and `If-None-Match` matching.

use crate::StorageError;

/// One byte range of a `Range: bytes=…` header, not yet resolved against the object size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteRange {
    /// `bytes=N-`: from offset N to the end.
    From(u64),
    /// `bytes=N-M`: offsets N to M, both inclusive (M may lie beyond the end).
    Between(u64, u64),
    /// `bytes=-N`: the last N bytes.
    Last(u64),
}

impl ByteRange {
    /// The inclusive `(start, end)` offsets this range selects in an object of `size` bytes.
    ///
    /// An end beyond the object is clamped to its last byte, a suffix longer than the object
    /// selects all of it (RFC 9110 §14.1.2).
    ///
    /// # Errors
    ///
    /// [`StorageError::InvalidRange`] when no byte is selected: a start at or past the end,
    /// a zero-length suffix, any range on an empty object (answer 416).
    ///
    /// ```
    /// use groundwork_storage::ByteRange;
    ///
    /// assert_eq!(ByteRange::Between(0, 99).resolve(50).ok(), Some((0, 49)));
    /// assert_eq!(ByteRange::Last(10).resolve(50).ok(), Some((40, 49)));
    /// assert_eq!(ByteRange::From(10).resolve(50).ok(), Some((10, 49)));
    /// assert!(ByteRange::From(50).resolve(50).is_err());
    /// ```
    pub fn resolve(self, size: u64) -> Result<(u64, u64), StorageError> {
        let unsatisfiable = || StorageError::InvalidRange(format!("{self} of {size} bytes"));
        let last = size.checked_sub(1).ok_or_else(unsatisfiable)?;
        match self {
            Self::From(start) if start <= last => Ok((start, last)),
            Self::Between(start, end) if start <= last && start <= end => {
                Ok((start, end.min(last)))
            }
            Self::Last(n) if n > 0 => Ok((size - n.min(size), last)),
            _ => Err(unsatisfiable()),
        }
    }
}

impl std::fmt::Display for ByteRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::From(start) => write!(f, "bytes={start}-"),
            Self::Between(start, end) => write!(f, "bytes={start}-{end}"),
            Self::Last(n) => write!(f, "bytes=-{n}"),
        }
    }
}

/// Parses a `Range` header value holding a single byte range.
///
/// `Ok(None)` means "ignore the header and serve the whole object", as RFC 9110 §14.2
/// allows: a malformed header, another unit, a range whose last position is before its
/// first, and multiple ranges (not supported) all give `Ok(None)`.
///
/// # Errors
///
/// [`StorageError::InvalidRange`] for `bytes=-0`, which is well-formed but can never be
/// satisfied.
///
/// ```
/// use groundwork_storage::{parse_range, ByteRange};
///
/// assert_eq!(parse_range("bytes=0-99")?, Some(ByteRange::Between(0, 99)));
/// assert_eq!(parse_range("bytes=100-")?, Some(ByteRange::From(100)));
/// assert_eq!(parse_range("bytes=-500")?, Some(ByteRange::Last(500)));
/// assert_eq!(parse_range("bytes=0-1,5-6")?, None);
/// # Ok::<(), groundwork_storage::StorageError>(())
/// ```
pub fn parse_range(header: &str) -> Result<Option<ByteRange>, StorageError> {
    let Some((unit, spec)) = header.trim().split_once('=') else {
        return Ok(None);
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ok(None);
    }
    let spec = spec.trim();
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let range = match (number(first), number(last)) {
        (Some(start), Some(end)) if start <= end => Some(ByteRange::Between(start, end)),
        (Some(start), None) if last.is_empty() => Some(ByteRange::From(start)),
        (None, Some(0)) if first.is_empty() => {
            return Err(StorageError::InvalidRange(
                "bytes=-0 selects no byte".to_owned(),
            ));
        }
        (None, Some(n)) if first.is_empty() => Some(ByteRange::Last(n)),
        _ => None,
    };
    Ok(range)
}

/// A run of ASCII digits as a number; `None` if empty, not digits or too large.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The strong ETag of an object: its SHA-256 in lowercase hex, quoted.
///
/// ```
/// assert_eq!(groundwork_storage::etag("ab12"), "\"ab12\"");
/// ```
#[must_use]
pub fn etag(sha256: &str) -> String {
    format!("\"{sha256}\"")
}

/// Whether an `If-None-Match` header value matches `etag` (answer 304 when it does).
///
/// Uses the weak comparison RFC 9110 §13.1.2 asks for: `W/` prefixes are ignored; `*`
/// matches any existing object.
///
/// ```
/// use groundwork_storage::{etag, if_none_match};
///
/// let tag = etag("ab12");
/// assert!(if_none_match("\"x\", W/\"ab12\"", &tag));
/// assert!(if_none_match("*", &tag));
/// assert!(!if_none_match("\"ab1\"", &tag));
/// ```
#[must_use]
pub fn if_none_match(header: &str, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let wanted = opaque(etag);
    header.split(',').any(|candidate| {
        let candidate = candidate.trim();
        candidate == "*" || (!candidate.is_empty() && opaque(candidate) == wanted)
    })
}

/// Whether a `Range` may apply under the request's `If-Range` value (RFC 9110 §13.1.5): when
/// it is an entity tag that strongly matches `etag`. Our ETags are strong, so strong
/// comparison is equality: a weak tag (`W/"…"`) never matches. An HTTP date never matches
/// either, as downloads carry no `Last-Modified` to compare it with. Without `If-Range`, the
/// range applies: do not call this.
///
/// ```
/// let etag = groundwork_storage::etag(&"ab".repeat(32));
/// assert!(groundwork_storage::if_range(&etag, &etag));
/// assert!(!groundwork_storage::if_range(&format!("W/{etag}"), &etag));
/// assert!(!groundwork_storage::if_range("Sat, 21 Nov 2026 10:00:00 GMT", &etag));
/// ```
#[must_use]
pub fn if_range(header: &str, etag: &str) -> bool {
    header.trim() == etag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(header: &str) -> Option<ByteRange> {
        match parse_range(header) {
            Ok(range) => range,
            Err(err) => panic!("{header}: {err}"),
        }
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-99"), Some(ByteRange::Between(0, 99)));
        assert_eq!(parse("bytes=5-5"), Some(ByteRange::Between(5, 5)));
        assert_eq!(parse("bytes=100-"), Some(ByteRange::From(100)));
        assert_eq!(parse("bytes=-500"), Some(ByteRange::Last(500)));
        assert_eq!(parse(" Bytes = 1-2 "), Some(ByteRange::Between(1, 2)));
        assert_eq!(
            parse("bytes=0-18446744073709551615"),
            Some(ByteRange::Between(0, u64::MAX))
        );
    }

    #[test]
    fn ignored_headers() {
        for header in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=abc",
            "bytes=1-a",
            "bytes=+1-2",
            "bytes=1 -2",
            "bytes=5-1",
            "bytes=0-1,5-6",
            "bytes=0-1, -5",
            "items=0-1",
            "bytes=0-99999999999999999999999",
            "bytes=--5",
        ] {
            assert_eq!(parse(header), None, "{header:?}");
        }
    }

    #[test]
    fn zero_suffix_is_unsatisfiable() {
        assert!(matches!(
            parse_range("bytes=-0"),
            Err(StorageError::InvalidRange(_))
        ));
    }

    #[test]
    fn resolve() {
        let ok = |range: ByteRange, size| range.resolve(size).ok();
        assert_eq!(ok(ByteRange::Between(0, 99), 1000), Some((0, 99)));
        assert_eq!(ok(ByteRange::Between(990, 2000), 1000), Some((990, 999)));
        assert_eq!(ok(ByteRange::Between(999, 999), 1000), Some((999, 999)));
        assert_eq!(ok(ByteRange::Between(1000, 1000), 1000), None);
        assert_eq!(ok(ByteRange::Between(5, 1), 1000), None);
        assert_eq!(ok(ByteRange::From(0), 1000), Some((0, 999)));
        assert_eq!(ok(ByteRange::From(999), 1000), Some((999, 999)));
        assert_eq!(ok(ByteRange::From(1000), 1000), None);
        assert_eq!(ok(ByteRange::Last(1), 1000), Some((999, 999)));
        assert_eq!(ok(ByteRange::Last(5000), 1000), Some((0, 999)));
        assert_eq!(ok(ByteRange::Last(0), 1000), None);
        assert_eq!(ok(ByteRange::From(0), 0), None);
        assert_eq!(ok(ByteRange::Last(5), 0), None);
    }

    #[test]
    fn display_round_trips() {
        for range in [
            ByteRange::From(3),
            ByteRange::Between(1, 2),
            ByteRange::Last(7),
        ] {
            assert_eq!(parse(&range.to_string()), Some(range));
        }
    }

    #[test]
    fn if_none_match_lists() {
        let tag = etag("abc");
        assert!(if_none_match("\"abc\"", &tag));
        assert!(if_none_match("W/\"abc\"", &tag));
        assert!(if_none_match("\"x\" , \"abc\"", &tag));
        assert!(if_none_match(" * ", &tag));
        assert!(!if_none_match("", &tag));
        assert!(!if_none_match("abc", &tag));
        assert!(!if_none_match("\"abcd\"", &tag));
    }
}
