//! The data layer's error type, classified by database error kind.

use groundwork_core::{Classify, ErrorKind};

/// Result alias for data-layer operations.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// A failed data-layer operation.
///
/// Database failures are classified by the driver's error kind (unique violation, foreign key,
/// check, connection failure) and SQLSTATE / SQLite result codes — never by matching message
/// text. Repositories add context (which entity, which value) to the variants they produce.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// No row with that identity exists.
    #[error("{entity} {id} not found")]
    NotFound {
        /// The kind of entity asked for (`"agent"`, `"tool"`, ...).
        entity: &'static str,
        /// The identity asked for, as text.
        id: String,
    },
    /// The write conflicts with existing data (a unique value already taken, a row still
    /// referenced elsewhere).
    #[error("{message}")]
    Conflict {
        /// What conflicted, for the caller.
        message: String,
        /// The database error, when there was one.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The input breaks a rule: a bound, a required field, a JSON shape, a check constraint or
    /// a reference to a row that does not exist.
    #[error("{message}")]
    Invalid {
        /// What is wrong, for the caller.
        message: String,
        /// The database error, when there was one.
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The database cannot be reached or is overloaded (connection refused or lost, pool
    /// timeout, SQLite busy). Retrying later may succeed.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database URL or options are unusable.
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// Applying migrations failed.
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Anything else: a bug or an unexpected database state. Details stay in logs.
    #[error("internal database error")]
    Internal(#[source] sqlx::Error),
}

impl DbError {
    /// A [`DbError::NotFound`] for `entity` with identity `id`.
    pub fn not_found(entity: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            entity,
            id: id.to_string(),
        }
    }

    /// A [`DbError::Invalid`] with `message` and no underlying database error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            source: None,
        }
    }

    /// A [`DbError::Conflict`] with `message` and no underlying database error.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
            source: None,
        }
    }

    /// Replaces the generic message of a unique-violation conflict with `message`.
    ///
    /// Repositories call this on the result of an insert or update, where they know which
    /// value was taken; every other error passes through unchanged.
    #[must_use]
    pub(crate) fn on_conflict(self, message: impl FnOnce() -> String) -> Self {
        match self {
            Self::Conflict { source, .. } => Self::Conflict {
                message: message(),
                source,
            },
            other => other,
        }
    }

    /// Replaces the generic message of a reference or check failure with `message`.
    #[must_use]
    pub(crate) fn on_invalid(self, message: impl FnOnce() -> String) -> Self {
        match self {
            Self::Invalid { source, .. } => Self::Invalid {
                message: message(),
                source,
            },
            other => other,
        }
    }
}

impl Classify for DbError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Conflict { .. } => ErrorKind::Conflict,
            Self::Invalid { .. } => ErrorKind::Invalid,
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Config(_) | Self::Migrate(_) | Self::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind as Kind;
        match &err {
            sqlx::Error::Database(db) => match db.kind() {
                Kind::UniqueViolation | Kind::ExclusionViolation => Self::Conflict {
                    message: "a row with the same unique value already exists".to_owned(),
                    source: Some(err),
                },
                Kind::ForeignKeyViolation => Self::Invalid {
                    message: "a referenced row does not exist".to_owned(),
                    source: Some(err),
                },
                Kind::NotNullViolation | Kind::CheckViolation => Self::Invalid {
                    message: "a value breaks a constraint of the table".to_owned(),
                    source: Some(err),
                },
                _ if is_transient_code(db.code().as_deref()) => Self::Unavailable(err),
                _ => Self::Internal(err),
            },
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed => Self::Unavailable(err),
            sqlx::Error::RowNotFound => Self::NotFound {
                entity: "row",
                id: String::new(),
            },
            _ => Self::Internal(err),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for DbError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(err)
    }
}

/// Whether a database error code means "try again later" rather than "this request is wrong".
///
/// PostgreSQL SQLSTATE classes 08 (connection exception), 53 (insufficient resources),
/// 57P0x (operator intervention: shutdown, crash) and 40001/40P01 (serialization failure,
/// deadlock); SQLite primary result codes 5 (`SQLITE_BUSY`) and 6 (`SQLITE_LOCKED`), which
/// sqlx reports as the extended code whose low byte is the primary code.
fn is_transient_code(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") {
        return true;
    }
    if code == "40001" || code == "40P01" {
        return true;
    }
    match code.parse::<i32>() {
        Ok(sqlite) => matches!(sqlite & 0xff, 5 | 6),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_are_recognised_by_code_not_text() {
        assert!(is_transient_code(Some("08006")));
        assert!(is_transient_code(Some("57P01")));
        assert!(is_transient_code(Some("53300")));
        assert!(is_transient_code(Some("40001")));
        assert!(is_transient_code(Some("5")));
        assert!(is_transient_code(Some("517"))); // SQLITE_BUSY_SNAPSHOT
        assert!(!is_transient_code(Some("23505")));
        assert!(!is_transient_code(Some("19")));
        assert!(!is_transient_code(None));
    }

    #[test]
    fn pool_failures_are_unavailable() {
        assert_eq!(
            DbError::from(sqlx::Error::PoolTimedOut).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            DbError::from(sqlx::Error::PoolClosed).kind(),
            ErrorKind::Unavailable
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            DbError::from(sqlx::Error::Io(io)).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            DbError::from(sqlx::Error::RowNotFound).kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn context_replaces_only_the_matching_kind() {
        let conflict = DbError::conflict("generic").on_conflict(|| "agent \"a\" exists".into());
        assert_eq!(conflict.to_string(), "agent \"a\" exists");
        let invalid = DbError::invalid("generic").on_conflict(|| "unused".into());
        assert_eq!(invalid.to_string(), "generic");
        let invalid = DbError::invalid("generic").on_invalid(|| "tool 3 not found".into());
        assert_eq!(invalid.to_string(), "tool 3 not found");
    }
}
