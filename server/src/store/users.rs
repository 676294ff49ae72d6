//! Users: the RP's ids with their fallback destinations.

use super::{Db, Tx, db};

use crate::error::Result;

crate::row! {
    /// A user row.
    #[derive(Debug, Clone)]
    pub struct UserRow {
        /// The RP's user id.
        pub id: String,
        /// Name shown on the phone.
        pub display_name: Option<String>,
        /// E.164.
        pub phone: Option<String>,
        /// 0 or 1.
        pub phone_verified: i64,
        /// Email address.
        pub email: Option<String>,
        /// 0 or 1.
        pub email_verified: i64,
        /// Unix ms.
        pub created_at: i64,
        /// Unix ms.
        pub updated_at: i64,
    }
}

pub(crate) const COLUMNS: &str =
    "id, display_name, phone, phone_verified, email, email_verified, created_at, updated_at";

/// The user with this id.
pub async fn get<'e>(db: impl Into<Db<'e>>, id: &str) -> Result<Option<UserRow>> {
    db::query(format!("SELECT {COLUMNS} FROM users WHERE id = $1")).bind(id).fetch_optional(db).await
}

/// Inserts or replaces the user's row with `user`.
pub async fn upsert(conn: &mut Tx, user: &UserRow) -> Result<()> {
    db::query(
        "INSERT INTO users (id, display_name, phone, phone_verified, email, email_verified, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET
             display_name = excluded.display_name, phone = excluded.phone,
             phone_verified = excluded.phone_verified, email = excluded.email,
             email_verified = excluded.email_verified, updated_at = excluded.updated_at",
    )
    .bind(&user.id)
    .bind(&user.display_name)
    .bind(&user.phone)
    .bind(user.phone_verified)
    .bind(&user.email)
    .bind(user.email_verified)
    .bind(user.created_at)
    .bind(user.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the user; false when there was none.
pub async fn delete(conn: &mut Tx, id: &str) -> Result<bool> {
    let done = db::query("DELETE FROM users WHERE id = $1").bind(id).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}
