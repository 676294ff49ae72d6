//! Fixed-window rate counters, shared by every replica through the database.

use super::{Tx, db};

use crate::error::Result;

/// Adds one to the counter `name` for the window starting at `window_start` and returns the
/// new count. One statement, so concurrent callers (on any replica) never lose an increment;
/// on PostgreSQL the row stays locked until the caller's transaction ends.
pub async fn increment(conn: &mut Tx, name: &str, window_start: i64, expires_at: i64) -> Result<i64> {
    let (count,): (i64,) = db::query(
        "INSERT INTO rate_counters (name, window_start, expires_at, count) VALUES ($1, $2, $3, 1)
         ON CONFLICT (name, window_start) DO UPDATE SET count = rate_counters.count + 1
         RETURNING count",
    )
    .bind(name)
    .bind(window_start)
    .bind(expires_at)
    .fetch_one(conn)
    .await?;
    Ok(count)
}

/// Forgets windows that ended before `now`.
pub async fn delete_expired(conn: &mut Tx, now: i64) -> Result<u64> {
    let done = db::query("DELETE FROM rate_counters WHERE expires_at < $1").bind(now).execute(conn).await?;
    Ok(done.rows_affected())
}
