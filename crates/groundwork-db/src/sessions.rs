//! User sessions with an agent, until they expire.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;

use crate::Database;
use crate::agents::empty_object;
use crate::database::{now, on_pool, to_micros};
use crate::error::{DbError, Result};
use crate::validate;

/// A session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    /// Identity.
    pub id: i64,
    /// The user.
    pub user_id: i64,
    /// The agent the user talks to, if any (cleared when the agent is deleted).
    pub agent_id: Option<i64>,
    /// Free-form metadata (a JSON object).
    #[sqlx(json)]
    pub metadata: Value,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// After this instant the session is over.
    pub expires_at: DateTime<Utc>,
}

/// Fields of a new session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// The user.
    pub user_id: i64,
    /// The agent, if any.
    #[serde(default)]
    pub agent_id: Option<i64>,
    /// Metadata; must be a JSON object. Default `{}`.
    #[serde(default = "empty_object")]
    pub metadata: Value,
    /// Must be in the future.
    pub expires_at: DateTime<Utc>,
}

macro_rules! session_columns {
    () => {
        "id, user_id, agent_id, metadata, created_at, expires_at"
    };
}

/// Session repository. Reached through [`Database::sessions`].
#[derive(Debug, Clone, Copy)]
pub struct Sessions<'a> {
    db: &'a Database,
}

impl<'a> Sessions<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// Opens a session.
    ///
    /// # Errors
    /// [`DbError::Invalid`] when the user or agent does not exist, the metadata is not an
    /// object or `expires_at` is not in the future.
    pub async fn create(&self, new: &NewSession) -> Result<Session> {
        validate::object("metadata", &new.metadata)?;
        let at = now();
        let expires_at = to_micros(new.expires_at);
        if expires_at <= at {
            return Err(DbError::invalid("expires_at must be in the future"));
        }
        let session = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, Session>(concat!(
                "INSERT INTO sessions (user_id, agent_id, metadata, created_at, expires_at) ",
                "VALUES ($1, $2, $3, $4, $5) RETURNING ",
                session_columns!()
            ))
            .bind(new.user_id)
            .bind(new.agent_id)
            .bind(Json(&new.metadata))
            .bind(at)
            .bind(expires_at)
            .fetch_one(pool)
            .await
        })
        .map_err(|e| {
            e.on_invalid(|| {
                format!(
                    "user {} or agent {:?} does not exist",
                    new.user_id, new.agent_id
                )
            })
        })?;
        Ok(session)
    }

    /// The session with `id` if it has not expired.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none or it has expired.
    pub async fn get_active(&self, id: i64) -> Result<Session> {
        let session = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, Session>(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE id = $1 AND expires_at > $2"
            ))
            .bind(id)
            .bind(now())
            .fetch_optional(pool)
            .await
        })?;
        session.ok_or_else(|| DbError::not_found("session", id))
    }

    /// The unexpired sessions of user `user_id`, newest first.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn active_for_user(&self, user_id: i64) -> Result<Vec<Session>> {
        let sessions = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, Session>(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE user_id = $1 AND expires_at > $2 ",
                "ORDER BY created_at DESC, id DESC"
            ))
            .bind(user_id)
            .bind(now())
            .fetch_all(pool)
            .await
        })?;
        Ok(sessions)
    }

    /// Ends the session with `id`.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn delete(&self, id: i64) -> Result<()> {
        let deleted = on_pool!(self.db, |pool| {
            sqlx::query("DELETE FROM sessions WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        if deleted == 0 {
            return Err(DbError::not_found("session", id));
        }
        Ok(())
    }

    /// Deletes every session that expired at or before `at`; returns how many.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn delete_expired(&self, at: DateTime<Utc>) -> Result<u64> {
        let deleted = on_pool!(self.db, |pool| {
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
                .bind(to_micros(at))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(deleted)
    }
}
