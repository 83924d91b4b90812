//! Partial updates: telling "field absent" apart from "field set to null".
//!
//! A `PATCH` body of `{"description": null}` clears the description, while `{}` leaves it
//! alone. Serde maps both to `None` for an `Option<T>` field; [`double_option`] keeps them
//! apart as `Option<Option<T>>`: `None` = absent, `Some(None)` = null, `Some(Some(v))` = value.
//!
//! ```
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Patch {
//!     #[serde(default, deserialize_with = "groundwork_core::patch::double_option")]
//!     description: Option<Option<String>>,
//! }
//!
//! let absent: Patch = serde_json::from_str("{}").unwrap();
//! let null: Patch = serde_json::from_str(r#"{"description": null}"#).unwrap();
//! let set: Patch = serde_json::from_str(r#"{"description": "x"}"#).unwrap();
//! assert_eq!(absent.description, None);
//! assert_eq!(null.description, Some(None));
//! assert_eq!(set.description, Some(Some("x".to_owned())));
//! ```

use serde::{Deserialize, Deserializer};

/// For a field that may be left out but not cleared: `null` is an error naming the expected
/// type, where a plain `Option<T>` would silently read it as "absent". Use with
/// `#[serde(default)]`.
///
/// ```
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Patch {
///     #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
///     name: Option<String>,
/// }
///
/// assert!(serde_json::from_str::<Patch>("{}").is_ok());
/// assert!(serde_json::from_str::<Patch>(r#"{"name": null}"#).is_err());
/// ```
///
/// # Errors
/// On `null`, and whatever the inner type's deserializer reports.
pub fn non_null<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    // Through `Option<T>` so that `null` is caught here for every `T` (serde_json reports a
    // null enum as a syntax error otherwise) and explained.
    match Option::<T>::deserialize(deserializer)? {
        Some(value) => Ok(Some(value)),
        None => Err(serde::de::Error::custom(
            "null is not allowed here: leave the field out to keep its value",
        )),
    }
}

/// Deserializes a present field (null or not) into `Some(..)`; use with `#[serde(default)]`
/// so that an absent field stays `None`.
///
/// # Errors
/// Whatever the inner type's deserializer reports.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
