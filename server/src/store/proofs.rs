//! Proof ids (`jti`) a device has used: inserting one twice fails, which is how replays are caught.

use super::{Db, Tx, db};

use crate::error::Result;

/// Records a proof id; false when this device already used it.
pub async fn insert_once<'e>(db: impl Into<Db<'e>>, device_id: &str, jti: &str, expires_at: i64) -> Result<bool> {
    let done = db::query(
        "INSERT INTO proof_jtis (device_id, jti, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (device_id, jti) DO NOTHING",
    )
    .bind(device_id)
    .bind(jti)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets proof ids past their useful life (a proof older than the clock-skew window is
/// refused on its `iat` anyway).
pub async fn delete_expired(conn: &mut Tx, now: i64) -> Result<u64> {
    let done = db::query("DELETE FROM proof_jtis WHERE expires_at < $1").bind(now).execute(conn).await?;
    Ok(done.rows_affected())
}
