//! Users and the e-mail digests stored for them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json;

use crate::Database;
use crate::agents::empty_object;
use crate::audit::{AuditRecord, record_audit};
use crate::database::{in_tx, now, on_pool};
use crate::error::{DbError, Result};
use crate::page::{Listing, Page};
use crate::validate::{self, limits};

/// A user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Identity.
    pub id: i64,
    /// Unique e-mail address.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Fields of a new user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Unique e-mail address (`local@domain`, at most 254 characters).
    pub email: String,
    /// Display name, 1 to 128 characters.
    pub name: String,
}

/// A partial update of a user: absent fields are left alone. Neither field can be cleared
/// (`null` is refused).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// New unique e-mail address (`local@domain`, at most 254 characters; stored
    /// lower-cased).
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub email: Option<String>,
    /// New display name, 1 to 128 characters.
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub name: Option<String>,
}

impl UserPatch {
    /// The names of the fields this patch sets, in a fixed order.
    #[must_use]
    pub fn fields(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.email.is_some() {
            fields.push("email");
        }
        if self.name.is_some() {
            fields.push("name");
        }
        fields
    }
}

/// Filters for [`Users::list`].
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Only the user with this e-mail address.
    pub email: Option<String>,
}

/// A stored e-mail digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmailDigest {
    /// Identity.
    pub id: i64,
    /// The recipient.
    pub user_id: i64,
    /// Subject line.
    pub subject: String,
    /// Body.
    pub body: String,
    /// The period covered (`daily`, `weekly`, `2026-W47`, ...).
    pub period: String,
    /// Free-form metadata (a JSON object).
    #[sqlx(json)]
    pub metadata: Value,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// Fields of a new digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewDigest {
    /// Subject line, 1 to 998 characters.
    pub subject: String,
    /// Body, 1 to 500,000 characters.
    pub body: String,
    /// The period covered, 1 to 64 characters.
    pub period: String,
    /// Metadata; must be a JSON object. Default `{}`.
    #[serde(default = "empty_object")]
    pub metadata: Value,
}

macro_rules! user_columns {
    () => {
        "id, email, name, created_at, updated_at"
    };
}

/// User repository. Reached through [`Database::users`].
#[derive(Debug, Clone, Copy)]
pub struct Users<'a> {
    db: &'a Database,
}

impl<'a> Users<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// The user with `id`.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn get(&self, id: i64) -> Result<User> {
        let user = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, User>(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })?;
        user.ok_or_else(|| DbError::not_found("user", id))
    }

    /// Users matching `filter`, by id, one page of them.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn list(&self, filter: &UserFilter, page: Page) -> Result<Listing<User>> {
        let email = filter.email.as_deref().map(|e| e.trim().to_lowercase());
        let (items, total) = on_pool!(self.db, |pool| {
            let items = sqlx::query_as::<_, User>(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE ($1 IS NULL OR email = $1) ORDER BY id LIMIT $2 OFFSET $3"
            ))
            .bind(email.as_deref())
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *pool)
            .await?;
            let total: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE ($1 IS NULL OR email = $1)")
                    .bind(email.as_deref())
                    .fetch_one(&mut *pool)
                    .await?;
            Ok::<_, sqlx::Error>((items, total))
        })?;
        Ok(Listing { items, total })
    }

    /// Creates a user. The e-mail address is stored lower-cased, so addresses differing only
    /// in case conflict.
    ///
    /// # Errors
    /// [`DbError::Invalid`] for a malformed address or name, [`DbError::Conflict`] when the
    /// address is taken.
    pub async fn create(&self, actor: &str, new: &NewUser) -> Result<User> {
        let email = normalized_email(&new.email)?;
        validate::text("name", &new.name, limits::NAME)?;
        let at = now();
        let user = in_tx!(self.db, |tx, _pg| {
            let user = sqlx::query_as::<_, User>(concat!(
                "INSERT INTO users (email, name, created_at, updated_at) VALUES ($1, $2, $3, $3) ",
                "RETURNING ",
                user_columns!()
            ))
            .bind(&email)
            .bind(&new.name)
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| email_taken(e, &email))?;
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "user.create",
                    entity_type: "user",
                    entity_id: user.id.to_string(),
                    details: json!({ "email": user.email }),
                }
            );
            user
        })?;
        Ok(user)
    }

    /// Changes the fields `patch` sets; an empty patch changes nothing and returns the user
    /// as stored. The e-mail address is normalized as in [`Users::create`].
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is no user `id`, [`DbError::Invalid`] for a malformed
    /// address or name, [`DbError::Conflict`] when the address belongs to another user.
    pub async fn update(&self, actor: &str, id: i64, patch: &UserPatch) -> Result<User> {
        let fields = patch.fields();
        let email = patch.email.as_deref().map(normalized_email).transpose()?;
        if let Some(name) = &patch.name {
            validate::text("name", name, limits::NAME)?;
        }
        if fields.is_empty() {
            return self.get(id).await;
        }
        let at = now();
        let user = in_tx!(self.db, |tx, _pg| {
            let user = sqlx::query_as::<_, User>(concat!(
                "UPDATE users SET email = COALESCE($2, email), name = COALESCE($3, name), ",
                "updated_at = $4 WHERE id = $1 RETURNING ",
                user_columns!()
            ))
            .bind(id)
            .bind(email.as_deref())
            .bind(patch.name.as_deref())
            .bind(at)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| email_taken(e, email.as_deref().unwrap_or_default()))?
            .ok_or_else(|| DbError::not_found("user", id))?;
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "user.update",
                    entity_type: "user",
                    entity_id: id.to_string(),
                    details: json!({ "email": user.email, "fields": fields }),
                }
            );
            user
        })?;
        Ok(user)
    }

    /// Deletes the user with `id`, together with their sessions and e-mail digests (files
    /// attached to those digests stay, detached).
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none; [`DbError::Invalid`] if a row that must not
    /// lose its user still refers to it (no such reference exists in the schema today).
    pub async fn delete(&self, actor: &str, id: i64) -> Result<()> {
        in_tx!(self.db, |tx, _pg| {
            let email: Option<String> =
                sqlx::query_scalar("DELETE FROM users WHERE id = $1 RETURNING email")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| {
                        DbError::from(e)
                            .on_invalid(|| format!("user {id} is still referenced elsewhere"))
                    })?;
            let email = email.ok_or_else(|| DbError::not_found("user", id))?;
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "user.delete",
                    entity_type: "user",
                    entity_id: id.to_string(),
                    details: json!({ "email": email }),
                }
            );
        })?;
        Ok(())
    }
}

/// `email` trimmed and lower-cased, checked for length and shape.
fn normalized_email(email: &str) -> Result<String> {
    let normalized = email.trim().to_lowercase();
    validate::text("email", &normalized, limits::EMAIL)?;
    if !is_plausible_email(&normalized) {
        return Err(DbError::invalid(format!(
            "email {email:?} is not an address of the form local@domain"
        )));
    }
    Ok(normalized)
}

fn email_taken(err: sqlx::Error, email: &str) -> DbError {
    DbError::from(err).on_conflict(|| format!("a user with email {email:?} already exists"))
}

fn is_plausible_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

macro_rules! digest_columns {
    () => {
        "id, user_id, subject, body, period, metadata, created_at"
    };
}

/// E-mail digest storage (the seeds' `EmailDigestStorageService`). Reached through
/// [`Database::digests`].
#[derive(Debug, Clone, Copy)]
pub struct Digests<'a> {
    db: &'a Database,
}

impl<'a> Digests<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// Stores a digest for user `user_id`.
    ///
    /// # Errors
    /// [`DbError::NotFound`] when the user does not exist, [`DbError::Invalid`] for a field
    /// out of bounds.
    pub async fn create(&self, actor: &str, user_id: i64, new: &NewDigest) -> Result<EmailDigest> {
        validate::text("subject", &new.subject, limits::SUBJECT)?;
        validate::long_text("body", &new.body, limits::DIGEST_BODY)?;
        validate::text("period", &new.period, limits::SHORT)?;
        validate::object("metadata", &new.metadata)?;
        let at = now();
        let digest = in_tx!(self.db, |tx, _pg| {
            let user: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?;
            user.ok_or_else(|| DbError::not_found("user", user_id))?;
            let digest = sqlx::query_as::<_, EmailDigest>(concat!(
                "INSERT INTO email_digests (user_id, subject, body, period, metadata, created_at) ",
                "VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
                digest_columns!()
            ))
            .bind(user_id)
            .bind(&new.subject)
            .bind(&new.body)
            .bind(&new.period)
            .bind(Json(&new.metadata))
            .bind(at)
            .fetch_one(&mut *tx)
            .await?;
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "digest.create",
                    entity_type: "email_digest",
                    entity_id: digest.id.to_string(),
                    details: json!({ "user_id": user_id, "period": digest.period }),
                }
            );
            digest
        })?;
        Ok(digest)
    }

    /// The digests of user `user_id`, most recent first (the seeds' `get_recent_digests`).
    ///
    /// # Errors
    /// [`DbError::NotFound`] when the user does not exist.
    pub async fn recent(&self, user_id: i64, page: Page) -> Result<Listing<EmailDigest>> {
        let (user, items, total) = on_pool!(self.db, |pool| {
            let user: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&mut *pool)
                .await?;
            let items = sqlx::query_as::<_, EmailDigest>(concat!(
                "SELECT ",
                digest_columns!(),
                " FROM email_digests WHERE user_id = $1 ",
                "ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
            ))
            .bind(user_id)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *pool)
            .await?;
            let total: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM email_digests WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_one(&mut *pool)
                    .await?;
            Ok::<_, sqlx::Error>((user, items, total))
        })?;
        user.ok_or_else(|| DbError::not_found("user", user_id))?;
        Ok(Listing { items, total })
    }
}

#[cfg(test)]
mod tests {
    use super::is_plausible_email;

    #[test]
    fn email_shape() {
        assert!(is_plausible_email("a@b.c"));
        assert!(!is_plausible_email("ab.c"));
        assert!(!is_plausible_email("@b.c"));
        assert!(!is_plausible_email("a@"));
        assert!(!is_plausible_email("a b@c"));
        assert!(!is_plausible_email("a@b@c"));
    }
}
