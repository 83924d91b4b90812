//! Metadata of stored files. The bytes live in a file store (`groundwork-storage`); a row is
//! written only once its object is complete, so a partial upload is never visible.
//!
//! Nothing is left unreferenced in the store, whatever crashes when. An upload reserves its
//! storage key ([`Files::reserve_key`]) before its first byte, and [`Files::create`] turns
//! the reservation into the file's row in one transaction; [`Files::delete`] records the
//! key of the deleted row's object in the transaction that deletes the row. Keys recorded so
//! (an upload abandoned by a crash, an object whose removal failed) are claimed by a sweep
//! ([`Files::claim_unrecorded`]), which removes their objects and then forgets them
//! ([`Files::release_key`]). A claimed reservation can no longer become a file, so the sweep
//! never removes the object of a file that gets recorded after all.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Database;
use crate::audit::{AuditRecord, record_audit};
use crate::database::{in_tx, now, on_pool};
use crate::error::{DbError, Result};
use crate::page::{Listing, Page};
use crate::validate::{self, limits};

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct File {
    /// Identity.
    pub id: i64,
    /// Display name (sanitised; never a path).
    pub name: String,
    /// MIME type given at upload.
    pub content_type: String,
    /// Size in bytes.
    pub size: i64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// Where the store keeps it (generated, never from user input).
    pub storage_key: String,
    /// Who uploaded it (API key name, `anonymous` without keys).
    pub owner: String,
    /// The execution it is attached to, if any.
    pub execution_id: Option<i64>,
    /// The e-mail digest it is attached to, if any.
    pub digest_id: Option<i64>,
    /// When the upload completed.
    pub created_at: DateTime<Utc>,
}

/// A file to record, once its object is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// Display name.
    pub name: String,
    /// MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub size: i64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// The store's key.
    pub storage_key: String,
    /// The uploader.
    pub owner: String,
    /// Attach to this execution.
    pub execution_id: Option<i64>,
    /// Attach to this digest.
    pub digest_id: Option<i64>,
}

/// Filters of [`Files::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileFilter {
    /// Only files uploaded by this owner.
    pub owner: Option<String>,
    /// Only files attached to this execution.
    pub execution_id: Option<i64>,
    /// Only files attached to this digest.
    pub digest_id: Option<i64>,
}

macro_rules! file_columns {
    () => {
        "id, name, content_type, size, sha256, storage_key, owner, execution_id, digest_id, \
         created_at"
    };
}

/// Why a storage key is recorded as possibly unreferenced (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnrecordedReason {
    /// An upload reserved the key and has not recorded its file (yet).
    Upload,
    /// The key's file was deleted; its object may still be in the store.
    Delete,
}

impl UnrecordedReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Delete => "delete",
        }
    }
}

/// A storage key claimed by a sweep: its object, if the store has one, is referenced by no
/// file and is to be removed, then the key released with [`Files::release_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnrecordedObject {
    /// The store's key.
    pub storage_key: String,
    /// Why it was recorded.
    pub reason: UnrecordedReason,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// File metadata repository. Reached through [`Database::files`].
#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    db: &'a Database,
}

impl<'a> Files<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// Reserves `storage_key` for an upload about to store it: until [`Files::create`]
    /// records the file, the key stays listed as possibly unreferenced, and a sweep removes
    /// its object once the reservation is older than the sweep's age (the upload was
    /// abandoned).
    ///
    /// # Errors
    /// [`DbError::Conflict`] for a key reserved or recorded already; [`DbError::Invalid`] for
    /// an empty or oversize key; [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn reserve_key(&self, storage_key: &str) -> Result<()> {
        validate::text("storage_key", storage_key, limits::NAME)?;
        let at = now();
        in_tx!(self.db, |tx, _pg| {
            let recorded: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM files WHERE storage_key = $1")
                    .bind(storage_key)
                    .fetch_one(&mut *tx)
                    .await?;
            if recorded > 0 {
                return Err(DbError::conflict(format!(
                    "storage key {storage_key:?} is recorded already"
                )));
            }
            sqlx::query(
                "INSERT INTO unrecorded_objects (storage_key, reason, claimed, created_at) \
                 VALUES ($1, $2, FALSE, $3)",
            )
            .bind(storage_key)
            .bind(UnrecordedReason::Upload.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(|err| {
                DbError::from(err)
                    .on_conflict(|| format!("storage key {storage_key:?} is reserved already"))
            })?;
        })
    }

    /// Forgets `storage_key` as possibly unreferenced: call it once its object is known to
    /// be gone (an upload that failed and was aborted, a deleted file's object removed, a
    /// swept object removed). Releasing a key that is not recorded does nothing.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached (the key then stays
    /// recorded, and a later sweep removes the object again, which is harmless).
    pub async fn release_key(&self, storage_key: &str) -> Result<()> {
        on_pool!(self.db, |pool| {
            sqlx::query("DELETE FROM unrecorded_objects WHERE storage_key = $1")
                .bind(storage_key)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Claims, for a sweep, up to `limit` keys whose objects may be referenced by no file,
    /// in key order after `after`: reservations older than `reserved_before` (abandoned
    /// uploads), and keys claimed already: those of deleted files (claimed when recorded) and
    /// those an earlier sweep did not finish. A claimed reservation can no longer be recorded as a file ([`Files::create`]
    /// refuses it), so removing its object is safe even if its upload is still running.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn claim_unrecorded(
        &self,
        reserved_before: DateTime<Utc>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<UnrecordedObject>> {
        let rows = in_tx!(self.db, |tx, _pg| {
            sqlx::query_as::<_, (String, String, DateTime<Utc>)>(
                "UPDATE unrecorded_objects SET claimed = TRUE WHERE storage_key IN (\
                 SELECT storage_key FROM unrecorded_objects \
                 WHERE (claimed = TRUE OR created_at < $1) \
                 AND ($2 IS NULL OR storage_key > $2) \
                 ORDER BY storage_key LIMIT $3) \
                 RETURNING storage_key, reason, created_at",
            )
            .bind(reserved_before)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?
        })?;
        let mut claimed: Vec<UnrecordedObject> = rows
            .into_iter()
            .map(|(storage_key, reason, recorded_at)| UnrecordedObject {
                storage_key,
                reason: if reason == UnrecordedReason::Delete.as_str() {
                    UnrecordedReason::Delete
                } else {
                    UnrecordedReason::Upload
                },
                recorded_at,
            })
            .collect();
        // RETURNING gives no order.
        claimed.sort_by(|a, b| a.storage_key.cmp(&b.storage_key));
        Ok(claimed)
    }

    /// Records a stored file (and its audit entry), turning its key's reservation
    /// ([`Files::reserve_key`]) into the file's row in one transaction.
    ///
    /// # Errors
    /// [`DbError::Invalid`] for an empty or oversize name or type, a malformed SHA-256, or an
    /// execution or digest that does not exist; [`DbError::Conflict`] for a storage key
    /// recorded already, never reserved, or whose reservation a sweep has claimed (the
    /// upload outlasted the sweep's age: its object is being removed).
    pub async fn create(&self, new: &NewFile) -> Result<File> {
        validate::text("name", &new.name, limits::NAME * 2)?;
        validate::text("content_type", &new.content_type, limits::NAME)?;
        validate::text("owner", &new.owner, limits::NAME)?;
        if new.size < 0 {
            return Err(DbError::invalid("size must not be negative"));
        }
        if new.sha256.len() != 64 || !new.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DbError::invalid("sha256 must be 64 hexadecimal digits"));
        }
        let at = now();
        in_tx!(self.db, |tx, _pg| {
            let reserved = sqlx::query(
                "DELETE FROM unrecorded_objects WHERE storage_key = $1 \
                 AND reason = 'upload' AND claimed = FALSE",
            )
            .bind(&new.storage_key)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if reserved == 0 {
                return Err(DbError::conflict(format!(
                    "storage key {:?} is not reserved for an upload (any more): the upload \
                     took longer than its reservation lasts, or was recorded already",
                    new.storage_key
                )));
            }
            let file = sqlx::query_as::<_, File>(concat!(
                "INSERT INTO files (name, content_type, size, sha256, storage_key, owner, ",
                "execution_id, digest_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ",
                "RETURNING ",
                file_columns!()
            ))
            .bind(&new.name)
            .bind(&new.content_type)
            .bind(new.size)
            .bind(new.sha256.to_ascii_lowercase())
            .bind(&new.storage_key)
            .bind(&new.owner)
            .bind(new.execution_id)
            .bind(new.digest_id)
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .map_err(|err| {
                DbError::from(err).on_conflict(|| {
                    format!("storage key {:?} is recorded already", new.storage_key)
                })
            })?;
            record_audit!(
                tx,
                AuditRecord {
                    actor: &new.owner,
                    action: "file.create",
                    entity_type: "file",
                    entity_id: file.id.to_string(),
                    details: json!({ "name": file.name, "size": file.size }),
                }
            );
            file
        })
        .map_err(|err| match err {
            DbError::Invalid {
                source: Some(_), ..
            } => DbError::invalid("the execution or digest to attach the file to does not exist"),
            other => other,
        })
    }

    /// Checks that the execution and the digest a file is to be attached to exist, in one
    /// query and without writing anything, so that an upload can be refused before its
    /// content is stored. `None` is nothing to check (and no query at all when both are).
    /// The foreign keys checked by [`Files::create`] remain the guard against a concurrent
    /// delete.
    ///
    /// # Errors
    /// [`DbError::Invalid`] naming every one that is missing (`execution 42 does not
    /// exist`); [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn check_attachments(
        &self,
        execution_id: Option<i64>,
        digest_id: Option<i64>,
    ) -> Result<()> {
        if execution_id.is_none() && digest_id.is_none() {
            return Ok(());
        }
        let (executions, digests) = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, (i64, i64)>(concat!(
                "SELECT (SELECT COUNT(*) FROM executions WHERE id = $1), ",
                "(SELECT COUNT(*) FROM email_digests WHERE id = $2)"
            ))
            .bind(execution_id)
            .bind(digest_id)
            .fetch_one(pool)
            .await
        })?;
        let missing: Vec<String> = [
            execution_id
                .filter(|_| executions == 0)
                .map(|id| format!("execution {id}")),
            digest_id
                .filter(|_| digests == 0)
                .map(|id| format!("digest {id}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        match missing.as_slice() {
            [] => Ok(()),
            [one] => Err(DbError::invalid(format!("{one} does not exist"))),
            _ => Err(DbError::invalid(format!(
                "{} do not exist",
                missing.join(" and ")
            ))),
        }
    }

    /// The file with `id`.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn get(&self, id: i64) -> Result<File> {
        let file = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, File>(concat!(
                "SELECT ",
                file_columns!(),
                " FROM files WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })?;
        file.ok_or_else(|| DbError::not_found("file", id))
    }

    /// Files matching `filter`, newest first.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn list(&self, filter: &FileFilter, page: Page) -> Result<Listing<File>> {
        let (items, total) = on_pool!(self.db, |pool| {
            let items = sqlx::query_as::<_, File>(concat!(
                "SELECT ",
                file_columns!(),
                " FROM files WHERE ($1 IS NULL OR owner = $1) ",
                "AND ($2 IS NULL OR execution_id = $2) AND ($3 IS NULL OR digest_id = $3) ",
                "ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
            ))
            .bind(filter.owner.as_deref())
            .bind(filter.execution_id)
            .bind(filter.digest_id)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *pool)
            .await?;
            let total: i64 = sqlx::query_scalar(concat!(
                "SELECT COUNT(*) FROM files WHERE ($1 IS NULL OR owner = $1) ",
                "AND ($2 IS NULL OR execution_id = $2) AND ($3 IS NULL OR digest_id = $3)"
            ))
            .bind(filter.owner.as_deref())
            .bind(filter.execution_id)
            .bind(filter.digest_id)
            .fetch_one(&mut *pool)
            .await?;
            Ok::<_, sqlx::Error>((items, total))
        })?;
        Ok(Listing { items, total })
    }

    /// Deletes the record of file `id` (and writes its audit entry) and records its storage
    /// key as unreferenced; returns it, so that the caller removes the object and then
    /// releases the key ([`Files::release_key`]). If that fails half-way, a sweep removes the
    /// object later: never a record without its bytes, never bytes left for good.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn delete(&self, actor: &str, id: i64) -> Result<File> {
        let deleted = in_tx!(self.db, |tx, _pg| {
            let file = sqlx::query_as::<_, File>(concat!(
                "DELETE FROM files WHERE id = $1 RETURNING ",
                file_columns!()
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(file) = &file {
                sqlx::query(
                    "INSERT INTO unrecorded_objects (storage_key, reason, claimed, created_at) \
                     VALUES ($1, $2, TRUE, $3) ON CONFLICT (storage_key) DO NOTHING",
                )
                .bind(&file.storage_key)
                .bind(UnrecordedReason::Delete.as_str())
                .bind(now())
                .execute(&mut *tx)
                .await?;
                record_audit!(
                    tx,
                    AuditRecord {
                        actor,
                        action: "file.delete",
                        entity_type: "file",
                        entity_id: file.id.to_string(),
                        details: json!({ "name": file.name }),
                    }
                );
            }
            file
        })?;
        deleted.ok_or_else(|| DbError::not_found("file", id))
    }
}
