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
    /// The database is failing and calls are refused at once, without waiting on it, until a
    /// health check or a probe call succeeds (the pool's circuit breaker is open).
    #[error("database unavailable: it is failing and calls are refused for now (retry in {} ms)", retry_in.as_millis())]
    CircuitOpen {
        /// How long until a probe is let through.
        retry_in: std::time::Duration,
    },
    /// An operation did not finish within its client-side deadline (the database or the
    /// network is stuck).
    #[error("database did not answer within {} ms", after.as_millis())]
    Timeout {
        /// The deadline that passed.
        after: std::time::Duration,
    },
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

impl DbError {
    /// Whether this error says the database could not be reached (a connection failure, a
    /// pool or deadline timeout, a server shutting down or out of connections), as opposed
    /// to an answer (a constraint, a missing row) or contention (a busy SQLite file, a
    /// serialization failure). These are the failures the pool supervisor counts.
    #[must_use]
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Timeout { .. } => true,
            Self::Unavailable(err) => match err {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::BeginFailed => true,
                sqlx::Error::Database(db) => db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some_and(|pg| {
                        let code = pg.code();
                        code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
                    }),
                _ => false,
            },
            _ => false,
        }
    }
}

impl Classify for DbError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Conflict { .. } => ErrorKind::Conflict,
            Self::Invalid { .. } => ErrorKind::Invalid,
            Self::Unavailable(_) | Self::CircuitOpen { .. } | Self::Timeout { .. } => {
                ErrorKind::Unavailable
            }
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
                    message: "a referenced row does not exist, or the row is still referenced"
                        .to_owned(),
                    source: Some(err),
                },
                Kind::NotNullViolation | Kind::CheckViolation => Self::Invalid {
                    message: "a value breaks a constraint of the table".to_owned(),
                    source: Some(err),
                },
                _ => match classify_code(db.as_ref()) {
                    CodeClass::Transient => Self::Unavailable(err),
                    CodeClass::BadValue => Self::Invalid {
                        message: "a value cannot be stored as given".to_owned(),
                        source: Some(err),
                    },
                    CodeClass::Other => Self::Internal(err),
                },
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

/// What a database error code says about the failure, beyond sqlx's [`sqlx::error::ErrorKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeClass {
    /// Trying again later may succeed.
    Transient,
    /// The input cannot be stored (a constraint or a value the engine rejects).
    BadValue,
    /// Anything else.
    Other,
}

/// Classifies by the engine's own code: SQLSTATE on PostgreSQL, result code on SQLite. The
/// engine is identified by the error's type, so the two code spaces never mix.
fn classify_code(db: &dyn sqlx::error::DatabaseError) -> CodeClass {
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        postgres_class(pg.code())
    } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        db.code()
            .and_then(|code| code.parse::<i32>().ok())
            .map_or(CodeClass::Other, sqlite_class)
    } else {
        CodeClass::Other
    }
}

/// PostgreSQL SQLSTATE: classes 08 (connection exception), 53 (insufficient resources),
/// 57P0x (shutdown, crash), 40001 / 40P01 (serialization failure, deadlock) are transient;
/// classes 22 (data exception: bad encoding, out of range) and 23 (integrity) are bad values.
fn postgres_class(sqlstate: &str) -> CodeClass {
    if sqlstate.starts_with("08")
        || sqlstate.starts_with("53")
        || sqlstate.starts_with("57P")
        || sqlstate == "40001"
        || sqlstate == "40P01"
    {
        CodeClass::Transient
    } else if sqlstate.starts_with("22") || sqlstate.starts_with("23") {
        CodeClass::BadValue
    } else {
        CodeClass::Other
    }
}

/// SQLite result code (sqlx reports the extended code; its low byte is the primary code):
/// 5 `SQLITE_BUSY`, 6 `SQLITE_LOCKED` are transient; 19 `SQLITE_CONSTRAINT` (including the
/// `ON DELETE RESTRICT` trigger variant, 1811) and 20 `SQLITE_MISMATCH` are bad values.
fn sqlite_class(code: i32) -> CodeClass {
    match code & 0xff {
        5 | 6 => CodeClass::Transient,
        19 | 20 => CodeClass::BadValue,
        _ => CodeClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_per_engine() {
        assert_eq!(postgres_class("08006"), CodeClass::Transient);
        assert_eq!(postgres_class("57P01"), CodeClass::Transient);
        assert_eq!(postgres_class("53300"), CodeClass::Transient);
        assert_eq!(postgres_class("40001"), CodeClass::Transient);
        assert_eq!(postgres_class("22021"), CodeClass::BadValue);
        assert_eq!(postgres_class("23503"), CodeClass::BadValue);
        // 42501 (permission denied) has a low byte of 5: it must not read as SQLITE_BUSY.
        assert_eq!(postgres_class("42501"), CodeClass::Other);
        assert_eq!(sqlite_class(5), CodeClass::Transient);
        assert_eq!(sqlite_class(517), CodeClass::Transient); // SQLITE_BUSY_SNAPSHOT
        assert_eq!(sqlite_class(1811), CodeClass::BadValue); // RESTRICT
        assert_eq!(sqlite_class(787), CodeClass::BadValue);
        assert_eq!(sqlite_class(1), CodeClass::Other);
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
