//! One-off installation facts.

use sqlx::AnyConnection;

use crate::error::Result;

/// Records `name` once; returns false when it was already recorded.
pub async fn insert_once(conn: &mut AnyConnection, name: &str, value: &str) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(value)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
