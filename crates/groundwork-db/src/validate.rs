//! Input rules shared by the repositories. Every violation is a [`DbError::Invalid`] naming
//! the field, checked before anything is written.

use serde_json::Value;

use crate::error::{DbError, Result};

/// Upper bounds on text fields, in characters.
pub mod limits {
    /// Names of agents, tools, prompts, workflows, users.
    pub const NAME: usize = 128;
    /// Types (`agents.type`, `tools.type`, `prompts.agent_type`).
    pub const TYPE: usize = 64;
    /// Free-text descriptions.
    pub const DESCRIPTION: usize = 4096;
    /// Prompt versions.
    pub const VERSION: usize = 64;
    /// Prompt contents.
    pub const PROMPT_CONTENT: usize = 200_000;
    /// E-mail addresses (RFC 5321 path limit).
    pub const EMAIL: usize = 254;
    /// Digest subjects (RFC 5322 line limit).
    pub const SUBJECT: usize = 998;
    /// Digest bodies.
    pub const DIGEST_BODY: usize = 500_000;
    /// Digest periods (`daily`, `2026-W47`, ...) and workflow step names.
    pub const SHORT: usize = 64;
    /// Error messages stored on executions.
    pub const ERROR: usize = 8192;
}

/// A required text: not blank, at most `max` characters, no control characters.
pub(crate) fn text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(DbError::invalid(format!("{field} must not be empty")));
    }
    bounded(field, value, max)
}

/// An optional text: when present, at most `max` characters.
pub(crate) fn optional_text(field: &str, value: Option<&str>, max: usize) -> Result<()> {
    value.map_or(Ok(()), |v| bounded(field, v, max))
}

/// A text that may be long and multi-line (prompt content, digest body): tabs and newlines
/// are fine, other control characters are not checked.
pub(crate) fn long_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(DbError::invalid(format!("{field} must not be empty")));
    }
    if value.contains('\0') {
        return Err(DbError::invalid(format!(
            "{field} must not contain NUL characters"
        )));
    }
    let len = value.chars().count();
    if len > max {
        return Err(DbError::invalid(format!(
            "{field} must be at most {max} characters, got {len}"
        )));
    }
    Ok(())
}

fn bounded(field: &str, value: &str, max: usize) -> Result<()> {
    let len = value.chars().count();
    if len > max {
        return Err(DbError::invalid(format!(
            "{field} must be at most {max} characters, got {len}"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(DbError::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

/// Any JSON value both engines can store: no NUL character in a string or a key
/// (PostgreSQL's `jsonb` rejects `\u0000`; accepting it on SQLite only would make the engines
/// disagree).
pub(crate) fn json(field: &str, value: &Value) -> Result<()> {
    fn has_nul(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if has_nul(value) {
        return Err(DbError::invalid(format!(
            "{field} must not contain NUL characters (\\u0000)"
        )));
    }
    Ok(())
}

/// A JSON value that must be an object (`{...}`).
pub(crate) fn object(field: &str, value: &Value) -> Result<()> {
    if value.is_object() {
        json(field, value)
    } else {
        Err(DbError::invalid(format!(
            "{field} must be a JSON object, got {}",
            groundwork_core::json_type(value)
        )))
    }
}

/// A JSON value that must be an array (`[...]`).
pub(crate) fn array(field: &str, value: &Value) -> Result<()> {
    if value.is_array() {
        json(field, value)
    } else {
        Err(DbError::invalid(format!(
            "{field} must be a JSON array, got {}",
            groundwork_core::json_type(value)
        )))
    }
}

/// Escapes `%`, `_` and `\` so `value` matches literally inside a `LIKE … ESCAPE '\'` pattern.
pub(crate) fn like_contains(value: &str) -> String {
    let mut pattern = String::with_capacity(value.len() + 2);
    pattern.push('%');
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn texts() {
        assert!(text("name", "ok", 10).is_ok());
        assert!(text("name", "  ", 10).is_err());
        assert!(text("name", "elevenchars", 10).is_err());
        assert!(text("name", "é".repeat(10).as_str(), 10).is_ok());
        assert!(text("name", "a\u{0}b", 10).is_err());
        assert!(optional_text("d", None, 1).is_ok());
        assert!(optional_text("d", Some("ab"), 1).is_err());
    }

    #[test]
    fn json_shapes() {
        assert!(object("config", &json!({})).is_ok());
        let err = object("config", &json!([1])).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("config must be a JSON object, got an array")
        );
        assert!(array("steps", &json!([])).is_ok());
        assert!(array("steps", &json!("x")).is_err());
    }

    #[test]
    fn nul_is_refused_everywhere() {
        assert!(long_text("content", "a\0b", 10).is_err());
        assert!(object("config", &json!({ "k": "a\0" })).is_err());
        assert!(object("config", &json!({ "a\0": 1 })).is_err());
        assert!(array("steps", &json!([{ "x": ["\0"] }])).is_err());
        assert!(json("input", &json!({ "x": "fine" })).is_ok());
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_contains("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }
}
