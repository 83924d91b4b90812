//! Pagination of list queries.

use serde::Serialize;

use crate::error::{DbError, Result};

/// A validated `limit` / `offset` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    limit: i64,
    offset: i64,
}

impl Page {
    /// Rows returned when no limit is given.
    pub const DEFAULT_LIMIT: i64 = 50;
    /// The largest accepted limit.
    pub const MAX_LIMIT: i64 = 500;

    /// A page of at most `limit` rows (default [`Page::DEFAULT_LIMIT`]) after skipping
    /// `offset` rows (default 0).
    ///
    /// # Errors
    /// [`DbError::Invalid`] when `limit` is outside `1..=500` or `offset` is negative.
    pub fn new(limit: Option<i64>, offset: Option<i64>) -> Result<Self> {
        let limit = limit.unwrap_or(Self::DEFAULT_LIMIT);
        let offset = offset.unwrap_or(0);
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(DbError::invalid(format!(
                "limit must be between 1 and {}, got {limit}",
                Self::MAX_LIMIT
            )));
        }
        if offset < 0 {
            return Err(DbError::invalid(format!(
                "offset must not be negative, got {offset}"
            )));
        }
        Ok(Self { limit, offset })
    }

    /// At most this many rows.
    #[must_use]
    pub fn limit(&self) -> i64 {
        self.limit
    }

    /// Rows skipped before the first one returned.
    #[must_use]
    pub fn offset(&self) -> i64 {
        self.offset
    }
}

impl Default for Page {
    fn default() -> Self {
        Self {
            limit: Self::DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

/// One page of a list and the number of rows matching the filters over all pages.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Listing<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// Rows matching the filters, over all pages.
    pub total: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_enforced() {
        assert_eq!(Page::new(None, None).ok(), Some(Page::default()));
        assert!(Page::new(Some(500), Some(0)).is_ok());
        assert!(Page::new(Some(501), None).is_err());
        assert!(Page::new(Some(0), None).is_err());
        assert!(Page::new(None, Some(-1)).is_err());
    }
}
