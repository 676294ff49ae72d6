//! Devices: registered phones and their public keys.

use super::{Backend, Db, Store, Tx, db};

use crate::error::Result;

crate::row! {
    /// A device row.
    #[derive(Debug, Clone)]
    pub struct DeviceRow {
        /// `dev_...`
        pub id: String,
        /// Owner.
        pub user_id: String,
        /// Name the phone gave itself.
        pub name: String,
        /// ios | android | other
        pub platform: String,
        /// Public JWK (JSON).
        pub jwk: String,
        /// RFC 7638 thumbprint of the key.
        pub thumbprint: String,
        /// apns | fcm | none
        pub push_provider: String,
        /// Provider token, if any.
        pub push_token: Option<String>,
        /// Unix ms.
        pub created_at: i64,
        /// Unix ms of the last authenticated request.
        pub last_seen_at: Option<i64>,
        /// Unix ms, when revoked.
        pub revoked_at: Option<i64>,
    }
}

pub(super) const COLUMNS: &str =
    "id, user_id, name, platform, jwk, thumbprint, push_provider, push_token, created_at, last_seen_at, revoked_at";

/// Stores a new device.
pub async fn insert(conn: &mut Tx, d: &DeviceRow) -> Result<()> {
    db::query(format!("INSERT INTO devices ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"))
        .bind(&d.id)
        .bind(&d.user_id)
        .bind(&d.name)
        .bind(&d.platform)
        .bind(&d.jwk)
        .bind(&d.thumbprint)
        .bind(&d.push_provider)
        .bind(&d.push_token)
        .bind(d.created_at)
        .bind(d.last_seen_at)
        .bind(d.revoked_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// The device with this id, revoked or not.
pub async fn get<'e>(db: impl Into<Db<'e>>, id: &str) -> Result<Option<DeviceRow>> {
    db::query(format!("SELECT {COLUMNS} FROM devices WHERE id = $1")).bind(id).fetch_optional(db).await
}

/// The user's devices, oldest first; revoked ones only when asked.
pub async fn list_for_user<'e>(db: impl Into<Db<'e>>, user_id: &str, include_revoked: bool) -> Result<Vec<DeviceRow>> {
    db::query(format!(
        "SELECT {COLUMNS} FROM devices WHERE user_id = $1 AND ($2 = 1 OR revoked_at IS NULL) ORDER BY created_at, id"
    ))
    .bind(user_id)
    .bind(i64::from(include_revoked))
    .fetch_all(db)
    .await
}

/// Whether an active device already holds this key.
pub async fn active_with_thumbprint<'e>(db: impl Into<Db<'e>>, thumbprint: &str) -> Result<bool> {
    let found: Option<(String,)> =
        db::query("SELECT id FROM devices WHERE thumbprint = $1 AND revoked_at IS NULL LIMIT 1")
            .bind(thumbprint)
            .fetch_optional(db)
            .await?;
    Ok(found.is_some())
}

/// Revokes a device; false when it was not active (or not the user's).
pub async fn revoke(conn: &mut Tx, user_id: &str, id: &str, now: i64) -> Result<bool> {
    let done = db::query("UPDATE devices SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL")
        .bind(now)
        .bind(id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes every device of a user (the user is being deleted).
pub async fn revoke_all_for_user(conn: &mut Tx, user_id: &str, now: i64) -> Result<Vec<String>> {
    let rows: Vec<(String,)> =
        db::query("UPDATE devices SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL RETURNING id")
            .bind(now)
            .bind(user_id)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Sets the device's push registration.
pub async fn set_push(conn: &mut Tx, id: &str, provider: &str, token: Option<&str>) -> Result<()> {
    db::query("UPDATE devices SET push_provider = $1, push_token = $2 WHERE id = $3")
        .bind(provider)
        .bind(token)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// What a device's signed request found in the store.
#[derive(Debug)]
pub struct ProofCheck {
    /// The device as it was before this request.
    pub device: DeviceRow,
    /// Whether the proof id was new and is now recorded. Always false for a revoked device,
    /// for which nothing is written.
    pub fresh: bool,
}

/// A verified device proof to record: its id `jti` (kept until `keep_until`), and
/// `last_seen_at`, set to `now` when it is at or before `seen_before`.
#[derive(Debug, Clone, Copy)]
pub struct ProofUse<'a> {
    /// `dev_...`
    pub device_id: &'a str,
    /// The proof's `jti`.
    pub jti: &'a str,
    /// Unix ms until which the id is kept.
    pub keep_until: i64,
    /// Unix ms.
    pub now: i64,
    /// Unix ms; an older `last_seen_at` is moved to `now`.
    pub seen_before: i64,
}

impl<'a> ProofUse<'a> {
    /// Binds the five values in the order [`proof_ctes`] numbers them.
    pub(super) fn bind_to(&self, query: db::Query<'a>) -> db::Query<'a> {
        query.bind(self.device_id).bind(self.jti).bind(self.keep_until).bind(self.now).bind(self.seen_before)
    }

    /// Whether recording this proof moves the device's `last_seen_at`.
    fn moves_last_seen(&self, device: &DeviceRow) -> bool {
        device.last_seen_at.is_none_or(|seen| seen <= self.seen_before)
    }
}

/// Why a proof was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofRefused {
    /// No device has this id.
    UnknownDevice,
    /// The device is revoked.
    Revoked,
    /// The device already used this proof id.
    Replayed,
}

/// Whether a proof to an existing device stands, from whether the device is revoked and
/// whether the proof id was new (and is now recorded).
pub(super) fn refusal(revoked: bool, fresh: bool) -> std::result::Result<(), ProofRefused> {
    match (revoked, fresh) {
        (true, _) => Err(ProofRefused::Revoked),
        (false, false) => Err(ProofRefused::Replayed),
        (false, true) => Ok(()),
    }
}

impl ProofCheck {
    /// The device as it was before the request, when the proof stands.
    pub fn accepted(self) -> std::result::Result<DeviceRow, ProofRefused> {
        refusal(self.device.revoked_at.is_some(), self.fresh).map(|()| self.device)
    }
}

/// PostgreSQL's data-modifying CTEs that record a [`ProofUse`] in one statement, its five
/// values bound from `$first` on ([`ProofUse::bind_to`]): `device` (the device row),
/// `proof` (one row when the id was new and the device active, and now recorded), and the
/// `last_seen_at` update, made only with a recorded proof.
pub(super) fn proof_ctes(first: usize) -> String {
    let [id, jti, keep, now, seen] = std::array::from_fn(|i| format!("${}", first + i));
    format!(
        "device AS (SELECT {COLUMNS} FROM devices WHERE id = {id}),
         proof AS (INSERT INTO proof_jtis (device_id, jti, expires_at)
                   SELECT id, {jti}, {keep} FROM device WHERE revoked_at IS NULL
                   ON CONFLICT (device_id, jti) DO NOTHING RETURNING 1),
         seen AS (UPDATE devices SET last_seen_at = {now}
                  WHERE id = {id} AND (last_seen_at IS NULL OR last_seen_at <= {seen})
                    AND EXISTS (SELECT 1 FROM proof))"
    )
}

/// [`check_proof`] on PostgreSQL.
pub(super) static CHECK_PROOF: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("WITH {} SELECT {COLUMNS}, EXISTS (SELECT 1 FROM proof) AS fresh FROM device", proof_ctes(1))
});

/// Reads the device and, when it is active, records the proof (see [`ProofUse`]). `None`
/// when there is no such device.
///
/// The caller has checked the signature with the device's key (a key never changes) and
/// checks revocation and replay on what this returns. On PostgreSQL this is one statement
/// (data-modifying CTEs) committed on its own; on SQLite, a read then the writes.
pub async fn check_proof(store: &Store, proof: &ProofUse<'_>) -> Result<Option<ProofCheck>> {
    if store.backend() == Backend::Postgres {
        let found: Option<WithFresh> =
            proof.bind_to(db::query(&*CHECK_PROOF)).fetch_optional(store.autocommit()).await?;
        return Ok(found.map(|f| ProofCheck { device: f.device, fresh: f.fresh }));
    }
    let Some(device) = get(store.reader(), proof.device_id).await? else { return Ok(None) };
    if device.revoked_at.is_some() {
        return Ok(Some(ProofCheck { device, fresh: false }));
    }
    let fresh = if proof.moves_last_seen(&device) {
        let mut tx = store.begin().await?;
        let fresh = super::proofs::insert_once(&mut tx, proof.device_id, proof.jti, proof.keep_until).await?;
        if fresh {
            touch(&mut tx, proof.device_id, proof.now).await?;
            tx.commit().await?;
        }
        fresh
    } else {
        super::proofs::insert_once(store.autocommit(), proof.device_id, proof.jti, proof.keep_until).await?
    };
    Ok(Some(ProofCheck { device, fresh }))
}

/// Records the proof in the caller's transaction, when the device is active and the id is
/// new; otherwise writes nothing and says why. The caller commits it with the effect of the
/// request the proof authorised, so the two are durable together or not at all.
pub async fn record_proof(conn: &mut Tx, proof: &ProofUse<'_>) -> Result<std::result::Result<(), ProofRefused>> {
    let (revoked, fresh) = if conn.backend() == Backend::Postgres {
        let sql =
            format!("WITH {} SELECT revoked_at, EXISTS (SELECT 1 FROM proof) AS fresh FROM device", proof_ctes(1));
        let found: Option<(Option<i64>, bool)> = proof.bind_to(db::query(sql)).fetch_optional(&mut *conn).await?;
        let Some((revoked_at, fresh)) = found else { return Ok(Err(ProofRefused::UnknownDevice)) };
        (revoked_at.is_some(), fresh)
    } else {
        let Some(device) = get(&mut *conn, proof.device_id).await? else { return Ok(Err(ProofRefused::UnknownDevice)) };
        let revoked = device.revoked_at.is_some();
        let fresh =
            !revoked && super::proofs::insert_once(&mut *conn, proof.device_id, proof.jti, proof.keep_until).await?;
        if fresh && proof.moves_last_seen(&device) {
            touch(conn, proof.device_id, proof.now).await?;
        }
        (revoked, fresh)
    };
    Ok(refusal(revoked, fresh))
}

struct WithFresh {
    device: DeviceRow,
    fresh: bool,
}

impl db::FromRow for WithFresh {
    fn from_row(row: &db::Row<'_>) -> Result<Self> {
        Ok(WithFresh { device: DeviceRow::from_row(row)?, fresh: row.get("fresh")? })
    }
}

/// Records the time of an authenticated request.
async fn touch(conn: &mut Tx, id: &str, now: i64) -> Result<()> {
    db::query("UPDATE devices SET last_seen_at = $1 WHERE id = $2").bind(now).bind(id).execute(conn).await?;
    Ok(())
}
