//! Storage keys and display names.

/// The longest display name, in bytes (the usual file-system limit for one component).
pub const MAX_NAME_BYTES: usize = 255;

/// The display name used when nothing usable is left of the supplied one.
const FALLBACK_NAME: &str = "file";

/// A fresh storage key, `files/<UUID v7>`.
///
/// Keys are never derived from user input: a client cannot choose, guess or overwrite a
/// path. UUID v7 keys sort roughly by creation time.
///
/// ```
/// let key = groundwork_storage::new_key();
/// assert!(key.starts_with("files/"));
/// assert_ne!(key, groundwork_storage::new_key());
/// ```
#[must_use]
pub fn new_key() -> String {
    format!("files/{}", uuid::Uuid::now_v7())
}

/// Whether `key` has the shape of a storage key: `/`-separated segments of ASCII letters,
/// digits, `-`, `_` and `.`, none empty, `.` or `..`.
pub(crate) fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 1024
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

/// A safe display name made from a user-supplied file name.
///
/// Keeps the last path component (after `/` or `\`), drops control characters and the
/// Unicode bidirectional overrides used to disguise extensions, trims white space, and
/// cuts to at most [`MAX_NAME_BYTES`] bytes on a character boundary. The result is never
/// empty, `.` or `..` (`"file"` instead). The name is only ever shown (for instance in a
/// `Content-Disposition` header): storage keys come from [`new_key`].
///
/// ```
/// use groundwork_storage::sanitize_name;
///
/// assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
/// assert_eq!(sanitize_name("C:\\Users\\me\\report.pdf"), "report.pdf");
/// assert_eq!(sanitize_name(".."), "file");
/// assert_eq!(sanitize_name("  résumé 2024.pdf "), "résumé 2024.pdf");
/// ```
#[must_use]
pub fn sanitize_name(name: &str) -> String {
    let cleaned: String = name.chars().filter(|&c| !is_unsafe_char(c)).collect();
    let component = cleaned
        .rsplit(['/', '\\'])
        .map(str::trim)
        .find(|part| !part.is_empty())
        .unwrap_or_default();
    let mut end = component.len().min(MAX_NAME_BYTES);
    while !component.is_char_boundary(end) {
        end -= 1;
    }
    let name = component[..end].trim_end();
    if name.is_empty() || name == "." || name == ".." {
        FALLBACK_NAME.to_owned()
    } else {
        name.to_owned()
    }
}

/// Control characters and bidirectional embedding, override and isolate marks.
fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let key = new_key();
        assert!(is_valid_key(&key), "{key}");
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/./b", "a b", "a#1", "ä", "a\\b",
        ] {
            assert!(!is_valid_key(bad), "{bad:?}");
        }
        assert!(is_valid_key("files/abc-DEF_1.2"));
    }
}
