//! Passkeys, the WebAuthn user handle of each user, and ceremony state between the two calls
//! of a registration or authentication.

use super::{Db, Tx, db};

use crate::error::Result;

crate::row! {
    /// A passkey row.
    #[derive(Debug, Clone)]
    pub struct PasskeyRow {
        /// `pk_...`
        pub id: String,
        /// Owner.
        pub user_id: String,
        /// base64url credential id.
        pub credential_id: String,
        /// A name the user recognises it by.
        pub name: String,
        /// The verified credential (JSON).
        pub credential: String,
        /// The authenticator's signature counter when last used (0: it keeps none).
        pub sign_count: i64,
        /// 0/1: the credential may be synced to other devices.
        pub backup_eligible: i64,
        /// 0/1: the credential is backed up (synced), as of its last use.
        pub backed_up: i64,
        /// Unix ms.
        pub created_at: i64,
        /// Unix ms of the last sign-in.
        pub last_used_at: Option<i64>,
    }
}

const COLUMNS: &str =
    "id, user_id, credential_id, name, credential, sign_count, backup_eligible, backed_up, created_at, last_used_at";

/// Stores a new passkey. A credential id registered before (to anyone) is a unique violation.
pub async fn insert(conn: &mut Tx, p: &PasskeyRow) -> Result<()> {
    db::query(format!("INSERT INTO passkeys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"))
        .bind(&p.id)
        .bind(&p.user_id)
        .bind(&p.credential_id)
        .bind(&p.name)
        .bind(&p.credential)
        .bind(p.sign_count)
        .bind(p.backup_eligible)
        .bind(p.backed_up)
        .bind(p.created_at)
        .bind(p.last_used_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// The user's passkeys, oldest first.
pub async fn list_for_user<'e>(db: impl Into<Db<'e>>, user_id: &str) -> Result<Vec<PasskeyRow>> {
    db::query(format!("SELECT {COLUMNS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"))
        .bind(user_id)
        .fetch_all(db)
        .await
}

/// The passkey with this credential id.
pub async fn by_credential_id<'e>(db: impl Into<Db<'e>>, credential_id: &str) -> Result<Option<PasskeyRow>> {
    db::query(format!("SELECT {COLUMNS} FROM passkeys WHERE credential_id = $1"))
        .bind(credential_id)
        .fetch_optional(db)
        .await
}

/// Records a sign-in: the new credential state, counter and backup state. False (nothing
/// written) when the stored counter is already at or above a non-zero `sign_count`: another
/// sign-in with a higher counter committed meanwhile, and the counter never moves back.
pub async fn record_use(
    conn: &mut Tx,
    id: &str,
    credential: &str,
    sign_count: i64,
    backed_up: bool,
    backup_eligible: bool,
    now: i64,
) -> Result<bool> {
    let done = db::query(
        "UPDATE passkeys SET credential = $1, sign_count = CASE WHEN $2 > sign_count THEN $2 ELSE sign_count END, \
         backed_up = $3, backup_eligible = $4, last_used_at = $5 WHERE id = $6 AND ($2 = 0 OR sign_count < $2)",
    )
    .bind(credential)
    .bind(sign_count)
    .bind(i64::from(backed_up))
    .bind(i64::from(backup_eligible))
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes one of the user's passkeys; false when the user has no such passkey.
pub async fn delete(conn: &mut Tx, user_id: &str, id: &str) -> Result<bool> {
    let done =
        db::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2").bind(id).bind(user_id).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes every passkey of a user and their user handle (the user is being deleted).
pub async fn delete_all_for_user(conn: &mut Tx, user_id: &str) -> Result<Vec<String>> {
    let rows: Vec<(String,)> =
        db::query("DELETE FROM passkeys WHERE user_id = $1 RETURNING id").bind(user_id).fetch_all(&mut *conn).await?;
    db::query("DELETE FROM passkey_users WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    db::query("DELETE FROM passkey_ceremonies WHERE user_id = $1").bind(user_id).execute(conn).await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// The user's WebAuthn user handle, created as `candidate` when they have none yet.
pub async fn user_handle(conn: &mut Tx, user_id: &str, candidate: &str) -> Result<String> {
    db::query("INSERT INTO passkey_users (user_id, handle) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING")
        .bind(user_id)
        .bind(candidate)
        .execute(&mut *conn)
        .await?;
    let (handle,): (String,) =
        db::query("SELECT handle FROM passkey_users WHERE user_id = $1").bind(user_id).fetch_one(conn).await?;
    Ok(handle)
}

/// The user whose handle this is.
pub async fn user_for_handle<'e>(db: impl Into<Db<'e>>, handle: &str) -> Result<Option<String>> {
    let row: Option<(String,)> =
        db::query("SELECT user_id FROM passkey_users WHERE handle = $1").bind(handle).fetch_optional(db).await?;
    Ok(row.map(|(u,)| u))
}

crate::row! {
    /// A stored ceremony.
    #[derive(Debug, Clone)]
    pub struct CeremonyRow {
        /// `cer_...`
        pub id: String,
        /// `registration` or `authentication`.
        pub kind: String,
        /// The user, absent for a discoverable sign-in.
        pub user_id: Option<String>,
        /// The ceremony state (JSON).
        pub state: String,
        /// Unix ms.
        pub created_at: i64,
        /// Unix ms.
        pub expires_at: i64,
        /// Unix ms, once finished (or tried).
        pub used_at: Option<i64>,
    }
}

/// Forgets ceremonies that expired before `cutoff`; returns how many.
pub async fn delete_expired_ceremonies(conn: &mut Tx, cutoff: i64) -> Result<u64> {
    let done = db::query("DELETE FROM passkey_ceremonies WHERE expires_at < $1").bind(cutoff).execute(conn).await?;
    Ok(done.rows_affected())
}

/// Stores a new ceremony.
pub async fn insert_ceremony(conn: &mut Tx, c: &CeremonyRow) -> Result<()> {
    db::query(
        "INSERT INTO passkey_ceremonies (id, kind, user_id, state, created_at, expires_at, used_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&c.id)
    .bind(&c.kind)
    .bind(&c.user_id)
    .bind(&c.state)
    .bind(c.created_at)
    .bind(c.expires_at)
    .bind(c.used_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a ceremony of this kind used, exactly once; `None` when it does not exist or was
/// used before (see [`ceremony_used_at`]).
pub async fn take_ceremony(conn: &mut Tx, id: &str, kind: &str, now: i64) -> Result<Option<CeremonyRow>> {
    db::query(
        "UPDATE passkey_ceremonies SET used_at = $1 WHERE id = $2 AND kind = $3 AND used_at IS NULL \
         RETURNING id, kind, user_id, state, created_at, expires_at, used_at",
    )
    .bind(now)
    .bind(id)
    .bind(kind)
    .fetch_optional(conn)
    .await
}

/// Whether a ceremony of this kind exists (`Some(used_at)`) or not (`None`).
pub async fn ceremony_used_at<'e>(db: impl Into<Db<'e>>, id: &str, kind: &str) -> Result<Option<Option<i64>>> {
    let row: Option<(Option<i64>,)> = db::query("SELECT used_at FROM passkey_ceremonies WHERE id = $1 AND kind = $2")
        .bind(id)
        .bind(kind)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|(u,)| u))
}
