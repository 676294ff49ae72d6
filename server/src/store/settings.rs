//! One-off installation facts.

use super::{Db, Tx, db};

use crate::error::Result;

/// Records `name` once; returns false when it was already recorded.
pub async fn insert_once(conn: &mut Tx, name: &str, value: &str) -> Result<bool> {
    let done = db::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(value)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The value recorded under `name`.
pub async fn get<'e>(db: impl Into<Db<'e>>, name: &str) -> Result<Option<String>> {
    let row: Option<(String,)> =
        db::query("SELECT value FROM settings WHERE name = $1").bind(name).fetch_optional(db).await?;
    Ok(row.map(|(v,)| v))
}
