//! API keys: stored as a SHA-256 hash of the secret, looked up by id.

use super::{Db, Tx, db};

use crate::error::Result;

crate::row! {
    /// An API key as stored, without its secret.
    #[derive(Debug, Clone)]
    pub struct ApiKeyRow {
        /// `key_...`
        pub id: String,
        /// Operator-chosen name.
        pub name: String,
        /// Hex SHA-256 of the secret.
        pub key_hash: String,
        /// Unix ms.
        pub created_at: i64,
        /// Unix ms, when revoked.
        pub revoked_at: Option<i64>,
    }
}

/// Stores a new key.
pub async fn insert(conn: &mut Tx, id: &str, name: &str, key_hash: &str, now: i64) -> Result<()> {
    db::query("INSERT INTO api_keys (id, name, key_hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(name)
        .bind(key_hash)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// What checking a key needs of it as stored, read by a statement that also reads what the
/// request asked for: its columns there are `k_key_hash` and `k_revoked_at`.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// Unix ms, when revoked.
    pub revoked_at: Option<i64>,
}

impl StoredKey {
    /// The key from a row's `k_key_hash` and `k_revoked_at`; `None` when there was no such key.
    pub(super) fn from_columns(row: &db::Row<'_>) -> Result<Option<Self>> {
        let Some(hash) = row.get::<Option<String>>("k_key_hash")? else { return Ok(None) };
        Ok(Some(StoredKey { hash, revoked_at: row.get("k_revoked_at")? }))
    }
}

/// The key with this id, revoked or not.
pub async fn get<'e>(db: impl Into<Db<'e>>, id: &str) -> Result<Option<ApiKeyRow>> {
    db::query("SELECT id, name, key_hash, created_at, revoked_at FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Every key, oldest first.
pub async fn list<'e>(db: impl Into<Db<'e>>) -> Result<Vec<ApiKeyRow>> {
    db::query("SELECT id, name, key_hash, created_at, revoked_at FROM api_keys ORDER BY created_at, id")
        .fetch_all(db)
        .await
}

/// Revokes a key; false when there is no such active key.
pub async fn revoke(conn: &mut Tx, id: &str, now: i64) -> Result<bool> {
    let done = db::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
