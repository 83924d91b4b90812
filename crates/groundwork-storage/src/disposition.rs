//! File names in `Content-Disposition` (RFC 6266) and RFC 8187 extended values: reading the
//! name an upload gives, writing the name a download carries.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// What RFC 8187 `value-chars` leave unescaped (`attr-char`): letters, digits and
/// ``!#$&+-.^_`|~``; everything else is percent-encoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment` naming the file twice (RFC 6266 §4.3): `filename*` carries the exact name as
/// percent-encoded UTF-8 (RFC 8187), and `filename` an ASCII fallback for clients that do not
/// read `filename*` (other characters, quotes, backslashes and `%` become `_`).
///
/// ```
/// assert_eq!(
///     groundwork_storage::content_disposition("résumé.pdf"),
///     "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
/// );
/// ```
#[must_use]
pub fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%')) || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, ATTR_CHAR)
    )
}

/// The file name of a `Content-Disposition` value: its `filename*` (RFC 8187) when that
/// decodes, else its `filename` (RFC 6266 §4.3); `None` when it names none.
///
/// ```
/// use groundwork_storage::disposition_file_name as name;
///
/// assert_eq!(name("attachment; filename=\"a.txt\"").as_deref(), Some("a.txt"));
/// assert_eq!(
///     name("attachment; filename*=UTF-8''%E2%82%AC.txt; filename=\"e.txt\"").as_deref(),
///     Some("€.txt")
/// );
/// ```
#[must_use]
pub fn disposition_file_name(value: &str) -> Option<String> {
    let params = disposition_params(value);
    let param = |wanted: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.as_str())
    };
    param("filename*")
        .and_then(|v| decode_ext_value(v).flatten())
        .or_else(|| param("filename").map(str::to_owned))
        .filter(|name| !name.trim().is_empty())
}

/// The `key=value` parameters after the disposition type, values unquoted (a quoted string
/// may hold `;` and `\`-escapes). Written by hand: no maintained crate parses
/// `Content-Disposition` request headers (the `mime` and `headers` crates do not cover it).
fn disposition_params(value: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = value.chars().skip_while(|&c| c != ';').peekable();
    loop {
        while chars.next_if(|&c| c == ';' || c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return params;
        }
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        while chars.next_if(|&c| c.is_whitespace()).is_some() {}
        let mut text = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => text.extend(chars.next()),
                    c => text.push(c),
                }
            }
            // Anything between the closing quote and the next `;` is ignored.
            while chars.next_if(|&c| c != ';').is_some() {}
        } else {
            while let Some(c) = chars.next_if(|&c| c != ';') {
                text.push(c);
            }
            text.truncate(text.trim_end().len());
        }
        params.push((key.trim().to_owned(), text));
    }
}

/// Decodes an RFC 8187 extended value, `charset'[language]'percent-encoded`.
///
/// `None` when `value` does not have that shape (a plain value); `Some(None)` when it does
/// but its escapes are malformed or its bytes are not text in its charset (UTF-8, or
/// ISO-8859-1 which the RFC allows); else the text.
///
/// ```
/// use groundwork_storage::decode_ext_value;
///
/// assert_eq!(decode_ext_value("UTF-8''a%20b"), Some(Some("a b".to_owned())));
/// assert_eq!(decode_ext_value("UTF-8''%FF"), Some(None));
/// assert_eq!(decode_ext_value("plain.txt"), None);
/// ```
#[must_use]
pub fn decode_ext_value(value: &str) -> Option<Option<String>> {
    let (charset, rest) = value.split_once('\'')?;
    let (language, encoded) = rest.split_once('\'')?;
    if !language
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return None;
    }
    let utf8 = charset.eq_ignore_ascii_case("utf-8");
    if !utf8 && !charset.eq_ignore_ascii_case("iso-8859-1") {
        return None;
    }
    // percent_decode passes a malformed escape through as it is; RFC 8187 has none.
    let malformed = encoded.char_indices().any(|(at, c)| {
        c == '%'
            && !encoded
                .get(at + 1..at + 3)
                .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if malformed {
        return Some(None);
    }
    let bytes: Vec<u8> = percent_decode_str(encoded).collect();
    Some(if utf8 {
        String::from_utf8(bytes).ok()
    } else {
        Some(bytes.into_iter().map(char::from).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_names() {
        let name = |value: &str| disposition_file_name(value);
        assert_eq!(
            name("attachment; filename=\"a.txt\""),
            Some("a.txt".to_owned())
        );
        assert_eq!(name("attachment;filename=a.txt"), Some("a.txt".to_owned()));
        assert_eq!(
            name("attachment; FileName = \"a;b \\\"c\\\".txt\" ; size=3"),
            Some("a;b \"c\".txt".to_owned())
        );
        // filename* first, whatever the order; an undecodable one falls back to filename.
        assert_eq!(
            name("attachment; filename=\"e.txt\"; filename*=UTF-8''%E2%82%AC.txt"),
            Some("€.txt".to_owned())
        );
        assert_eq!(
            name("attachment; filename*=UTF-8''%E2%82.txt; filename=\"e.txt\""),
            Some("e.txt".to_owned())
        );
        assert_eq!(
            name("attachment; filename*=iso-8859-1'en'%A3%20rates.txt"),
            Some("£ rates.txt".to_owned())
        );
        for none in [
            "attachment",
            "attachment; filename=\"\"",
            "",
            "filename=a.txt",
        ] {
            assert_eq!(name(none), None, "{none:?}");
        }
    }

    #[test]
    fn extended_values() {
        assert_eq!(
            decode_ext_value("UTF-8''a%20b"),
            Some(Some("a b".to_owned()))
        );
        assert_eq!(
            decode_ext_value("utf-8'fr-CA'%C3%A9"),
            Some(Some("é".to_owned()))
        );
        // Malformed escapes, or bytes that are not UTF-8.
        for bad in [
            "UTF-8''%",
            "UTF-8''%4",
            "UTF-8''%G1",
            "UTF-8''%+1",
            "UTF-8''%FF",
            "UTF-8''é%",
        ] {
            assert_eq!(decode_ext_value(bad), Some(None), "{bad:?}");
        }
        // Not extended values: plain names.
        for plain in ["a%20b", "it's", "l'été'.txt", "koi8-r''%C1"] {
            assert_eq!(decode_ext_value(plain), None, "{plain:?}");
        }
    }

    #[test]
    fn names_round_trip_through_the_header() {
        for name in ["évé 文件 🚀.txt", "a%b\"c';d", "plain-name_1.txt"] {
            let header = content_disposition(name);
            assert!(header.is_ascii(), "{header}");
            assert_eq!(
                disposition_file_name(&header).as_deref(),
                Some(name),
                "{header}"
            );
        }
        assert_eq!(
            content_disposition("plain-name_1.txt"),
            "attachment; filename=\"plain-name_1.txt\"; filename*=UTF-8''plain-name_1.txt"
        );
        assert_eq!(
            content_disposition("évé \"x\".txt"),
            "attachment; filename=\"_v_ _x_.txt\"; filename*=UTF-8''%C3%A9v%C3%A9%20%22x%22.txt"
        );
    }
}
