//! Enrollment tokens: single use, consumed by one conditional UPDATE.

use super::{Tx, db};

use crate::error::Result;

/// Stores a new enrollment.
pub async fn insert(conn: &mut Tx, id: &str, user_id: &str, token_hash: &str, now: i64, expires_at: i64) -> Result<()> {
    db::query("INSERT INTO enrollments (id, user_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(user_id)
        .bind(token_hash)
        .bind(now)
        .bind(expires_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// Consumes the unexpired, unused enrollment with this token hash for `device_id`, returning
/// `(enrollment id, user id)`. Of two concurrent callers (on any replicas) only one gets a row.
pub async fn consume(conn: &mut Tx, token_hash: &str, device_id: &str, now: i64) -> Result<Option<(String, String)>> {
    db::query(
        "UPDATE enrollments SET used_at = $1, device_id = $2
         WHERE token_hash = $3 AND used_at IS NULL AND expires_at > $1
         RETURNING id, user_id",
    )
    .bind(now)
    .bind(device_id)
    .bind(token_hash)
    .fetch_optional(conn)
    .await
}

/// Deletes enrollments that expired before `cutoff`.
pub async fn delete_expired(conn: &mut Tx, cutoff: i64) -> Result<u64> {
    let done = db::query("DELETE FROM enrollments WHERE expires_at < $1").bind(cutoff).execute(conn).await?;
    Ok(done.rows_affected())
}
