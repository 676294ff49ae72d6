//! Challenges and their per-device push deliveries. A challenge leaves `pending` through
//! one conditional UPDATE, so it is decided exactly once whatever races.

use super::api_keys::StoredKey;
use super::devices::{ProofRefused, ProofUse};
use super::events::NewEvent;
use super::{Backend, Db, Store, Tx, db};

use crate::error::Result;

crate::row! {
    /// A challenge row.
    #[derive(Debug, Clone)]
    pub struct ChallengeRow {
        /// `chl_...`
        pub id: String,
        /// The user asked.
        pub user_id: String,
        /// push | sms | email
        pub factor: String,
        /// pending approved denied fraud_reported expired cancelled failed
        pub status: String,
        /// Why it ended as it did, when that is not obvious (`number_mismatch`, `superseded`).
        pub reason: Option<String>,
        /// Headline shown on the phone.
        pub title: String,
        /// JSON array of `{label, value}`.
        pub details: String,
        /// JSON object `{ip?, location?, user_agent?}`.
        pub context: String,
        /// Number matching: the correct number.
        pub number: Option<i64>,
        /// The server-signed challenge JWS.
        pub jws: Option<String>,
        /// Unix ms.
        pub created_at: i64,
        /// Unix ms.
        pub expires_at: i64,
        /// Unix ms.
        pub decided_at: Option<i64>,
        /// The device that answered.
        pub device_id: Option<String>,
        /// The device's response JWS.
        pub evidence: Option<String>,
        /// 0/1: whether the device said the user was verified.
        pub user_verified: Option<i64>,
        /// The API key that created it.
        pub api_key_id: String,
        /// `Idempotency-Key` header, if one was sent.
        pub idempotency_key: Option<String>,
        /// SHA-256 of the creating request, to refuse a reused key with another body.
        pub request_hash: Option<String>,
    }
}

const COLUMNS: &str = "id, user_id, factor, status, reason, title, details, context, number, jws, created_at, \
    expires_at, decided_at, device_id, evidence, user_verified, api_key_id, idempotency_key, request_hash";

/// A push delivery stored with a new challenge.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct NewDelivery<'a> {
    /// `dev_...`
    pub device_id: &'a str,
    /// apns | fcm | none
    pub provider: &'a str,
    /// pending | not_sent
    pub status: &'a str,
}

/// Stores a new challenge with its push deliveries (due at `created_at`) and, when given, the
/// audit event of its creation. On PostgreSQL this is one statement (data-modifying CTEs);
/// on SQLite, a statement each.
pub async fn insert(
    conn: &mut Tx,
    c: &ChallengeRow,
    deliveries: &[NewDelivery<'_>],
    event: Option<&NewEvent<'_>>,
) -> Result<()> {
    if conn.backend() == Backend::Postgres && (!deliveries.is_empty() || event.is_some()) {
        bind_insert(db::query(insert_with_cte(false, deliveries, event)), c, deliveries, event)?.execute(conn).await?;
        return Ok(());
    }
    insert_each(conn, c, deliveries, event).await
}

async fn insert_each(
    conn: &mut Tx,
    c: &ChallengeRow,
    deliveries: &[NewDelivery<'_>],
    event: Option<&NewEvent<'_>>,
) -> Result<()> {
    bind_challenge(db::query(format!("INSERT INTO challenges ({COLUMNS}) VALUES ({})", params(1..20))), c)
        .execute(&mut *conn)
        .await?;
    for d in deliveries {
        insert_delivery(conn, &c.id, d.device_id, d.provider, d.status, c.created_at).await?;
    }
    if let Some(event) = event {
        super::events::append(conn, event).await?;
    }
    Ok(())
}

/// Stores a new push challenge as [`insert`] does, provided no challenge was created for its
/// user since `seq` was read from [`PushSnapshot::seq`] and push has not been locked for them.
/// Returns false, having written nothing, when either happened. On PostgreSQL one statement
/// committed on its own; on SQLite, a transaction.
///
/// Every new challenge moves the user's `challenge_seq`, in the statement that inserts it, so
/// a snapshot whose `seq` is still current has seen every challenge the user has: this takes
/// the place of [`lock_user`] when the snapshot shows nothing to supersede or refuse.
pub async fn insert_unless_changed(
    store: &Store,
    seq: i64,
    c: &ChallengeRow,
    deliveries: &[NewDelivery<'_>],
    event: &NewEvent<'_>,
) -> Result<bool> {
    if store.backend() == Backend::Postgres {
        let sql = insert_with_cte(true, deliveries, Some(event));
        let done =
            bind_insert(db::query(sql), c, deliveries, Some(event))?.bind(seq).execute(store.autocommit()).await?;
        return Ok(done.rows_affected() == 1);
    }
    let mut tx = store.begin().await?;
    let bumped = db::query(bump_unless_changed("$1", "$2")).bind(&c.user_id).bind(seq).execute(&mut tx).await?;
    if bumped.rows_affected() == 0 {
        return Ok(false);
    }
    insert_each(&mut tx, c, deliveries, Some(event)).await?;
    tx.commit().await?;
    Ok(true)
}

/// Moves the user's `challenge_seq` on if it is still `seq` and push is not locked for them.
fn bump_unless_changed(user_id: &str, seq: &str) -> String {
    format!(
        "UPDATE users SET challenge_seq = challenge_seq + 1 \
         WHERE id = {user_id} AND challenge_seq = {seq} AND push_locked_at IS NULL"
    )
}

/// `$n` for each `n` of `range`, comma-separated.
fn params(range: std::ops::Range<usize>) -> String {
    range.map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// The PostgreSQL statement that inserts a challenge, its deliveries and its event at once.
/// Parameters: the challenge's 19 columns, then the deliveries as JSON (if any), then the
/// event's 6 (if any), then, when `guarded`, the `challenge_seq` of [`insert_unless_changed`];
/// with a guard the inserts happen only if it moved the sequence, and the statement returns
/// one row if they did.
fn insert_with_cte(guarded: bool, deliveries: &[NewDelivery<'_>], event: Option<&NewEvent<'_>>) -> String {
    let from_guard = if guarded { " FROM guard" } else { "" };
    let mut sql = format!("challenge AS (INSERT INTO challenges ({COLUMNS}) SELECT {}{from_guard})", params(1..20));
    let mut next = 20;
    if !deliveries.is_empty() {
        let from = if guarded { "guard, " } else { "" };
        sql.push_str(&format!(
            ", deliveries AS (INSERT INTO push_deliveries
                   (challenge_id, device_id, provider, status, next_attempt_at, updated_at)
               SELECT $1, d->>'device_id', d->>'provider', d->>'status', $11, $11
               FROM {from}json_array_elements(${next}::json) AS d)"
        ));
        next += 1;
    }
    if event.is_some() {
        sql.push_str(&format!(", logged AS ({} SELECT {}{from_guard})", super::events::INSERT, params(next..next + 6)));
        next += 6;
    }
    if guarded {
        // The guard comes first (a CTE sees only those before it); its parameter comes last.
        let guard = bump_unless_changed("$2", &format!("${next}"));
        format!("WITH guard AS ({guard} RETURNING 1), {sql} SELECT 1 FROM guard")
    } else {
        format!("WITH {sql} SELECT 1")
    }
}

fn bind_insert<'q>(
    query: db::Query<'q>,
    c: &'q ChallengeRow,
    deliveries: &[NewDelivery<'_>],
    event: Option<&'q NewEvent<'q>>,
) -> Result<db::Query<'q>> {
    let mut query = bind_challenge(query, c);
    if !deliveries.is_empty() {
        query = query.bind(serde_json::to_string(deliveries)?);
    }
    if let Some(event) = event {
        query = event.bind_to(query);
    }
    Ok(query)
}

fn bind_challenge<'q>(query: db::Query<'q>, c: &'q ChallengeRow) -> db::Query<'q> {
    query
        .bind(&c.id)
        .bind(&c.user_id)
        .bind(&c.factor)
        .bind(&c.status)
        .bind(&c.reason)
        .bind(&c.title)
        .bind(&c.details)
        .bind(&c.context)
        .bind(c.number)
        .bind(&c.jws)
        .bind(c.created_at)
        .bind(c.expires_at)
        .bind(c.decided_at)
        .bind(&c.device_id)
        .bind(&c.evidence)
        .bind(c.user_verified)
        .bind(&c.api_key_id)
        .bind(&c.idempotency_key)
        .bind(&c.request_hash)
}

/// The challenge with this id.
pub async fn get<'e>(db: impl Into<Db<'e>>, id: &str) -> Result<Option<ChallengeRow>> {
    db::query(format!("SELECT {COLUMNS} FROM challenges WHERE id = $1")).bind(id).fetch_optional(db).await
}

/// The challenge with this id and its deliveries, in one statement.
pub async fn get_with_deliveries<'e>(
    db: impl Into<Db<'e>>,
    id: &str,
) -> Result<Option<(ChallengeRow, Vec<DeliveryRow>)>> {
    let rows: Vec<WithDelivery> = db::query(&*WITH_DELIVERIES).bind(id).fetch_all(db).await?;
    Ok(gather(rows))
}

/// [`get_with_deliveries`], and the API key `key_id` as stored, in one statement: one round
/// trip where an RP's read of a challenge took two. The key is `None` when there is no such
/// key, and then nothing else is read; the caller checks the key before it looks at the rest.
pub async fn get_with_deliveries_and_key<'e>(
    db: impl Into<Db<'e>>,
    id: &str,
    key_id: &str,
) -> Result<(Option<StoredKey>, Option<(ChallengeRow, Vec<DeliveryRow>)>)> {
    let rows: Vec<Keyed> = db::query(&*WITH_DELIVERIES_AND_KEY).bind(id).bind(key_id).fetch_all(db).await?;
    let key = rows.first().and_then(|first| first.key.clone());
    Ok((key, gather(rows.into_iter().filter_map(|r| r.row))))
}

/// The challenge and its deliveries from the rows of one challenge, if there are any.
fn gather(rows: impl IntoIterator<Item = WithDelivery>) -> Option<(ChallengeRow, Vec<DeliveryRow>)> {
    let mut rows = rows.into_iter();
    let first = rows.next()?;
    let deliveries = std::iter::once(first.delivery).chain(rows.map(|r| r.delivery)).flatten().collect();
    Some((first.challenge, deliveries))
}

/// The challenge's columns, then its delivery's (prefixed `d_`, NULL when it has none).
fn with_delivery_columns() -> String {
    format!(
        "{}, d.device_id AS d_device_id, d.provider AS d_provider, d.status AS d_status,
         d.attempts AS d_attempts, d.error AS d_error",
        prefixed("c")
    )
}

static WITH_DELIVERIES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM challenges c LEFT JOIN push_deliveries d ON d.challenge_id = c.id
         WHERE c.id = $1 ORDER BY d.device_id",
        with_delivery_columns()
    )
});

/// [`WITH_DELIVERIES`] after the key's columns (prefixed `k_`): one row per delivery, or one
/// with NULL challenge columns, while the key exists.
static WITH_DELIVERIES_AND_KEY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT k.key_hash AS k_key_hash, k.revoked_at AS k_revoked_at, {}
         FROM api_keys k LEFT JOIN challenges c ON c.id = $1 LEFT JOIN push_deliveries d ON d.challenge_id = c.id
         WHERE k.id = $2 ORDER BY d.device_id",
        with_delivery_columns()
    )
});

struct Keyed {
    key: Option<StoredKey>,
    row: Option<WithDelivery>,
}

impl db::FromRow for Keyed {
    fn from_row(row: &db::Row<'_>) -> Result<Self> {
        let found = row.get::<Option<String>>("id")?.is_some();
        Ok(Keyed {
            key: StoredKey::from_columns(row)?,
            row: if found { Some(WithDelivery::from_row(row)?) } else { None },
        })
    }
}

struct WithDelivery {
    challenge: ChallengeRow,
    delivery: Option<DeliveryRow>,
}

impl db::FromRow for WithDelivery {
    fn from_row(row: &db::Row<'_>) -> Result<Self> {
        let challenge = ChallengeRow::from_row(row)?;
        let delivery = match row.get::<Option<String>>("d_device_id")? {
            None => None,
            Some(device_id) => Some(DeliveryRow {
                challenge_id: challenge.id.clone(),
                device_id,
                provider: row.get("d_provider")?,
                status: row.get("d_status")?,
                attempts: row.get("d_attempts")?,
                error: row.get("d_error")?,
            }),
        };
        Ok(WithDelivery { challenge, delivery })
    }
}

static BY_IDEMPOTENCY_KEY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM challenges WHERE api_key_id = $1 AND idempotency_key = $2")
});

/// The challenge an API key created with this idempotency key.
pub async fn by_idempotency_key<'e>(
    db: impl Into<Db<'e>>,
    api_key_id: &str,
    key: &str,
) -> Result<Option<ChallengeRow>> {
    db::query(&*BY_IDEMPOTENCY_KEY).bind(api_key_id).bind(key).fetch_optional(db).await
}

/// How a challenge leaves `pending`.
#[derive(Debug, Clone, Copy)]
pub struct Verdict<'a> {
    /// `chl_...`
    pub id: &'a str,
    /// The final status.
    pub status: &'a str,
    /// Why, when the status alone does not say.
    pub reason: Option<&'a str>,
    /// Unix ms.
    pub now: i64,
    /// The device that answered.
    pub device_id: Option<&'a str>,
    /// The device's response JWS.
    pub evidence: Option<&'a str>,
    /// Whether the device said the user was verified.
    pub user_verified: Option<bool>,
}

impl<'a> Verdict<'a> {
    /// A verdict no device gave (cancelled, failed, a code's approval).
    pub fn by_server(id: &'a str, status: &'a str, reason: Option<&'a str>, now: i64) -> Self {
        Verdict { id, status, reason, now, device_id: None, evidence: None, user_verified: None }
    }
}

const DECIDE: &str = "UPDATE challenges SET status = $1, reason = $2, decided_at = $3, device_id = $4, evidence = $5,
        user_verified = $6
    WHERE id = $7 AND status = 'pending' AND expires_at > $3";

fn bind_verdict<'q>(query: db::Query<'q>, v: &Verdict<'q>) -> db::Query<'q> {
    query
        .bind(v.status)
        .bind(v.reason)
        .bind(v.now)
        .bind(v.device_id)
        .bind(v.evidence)
        .bind(v.user_verified.map(i64::from))
        .bind(v.id)
}

/// Moves a pending, unexpired challenge to a final state. Returns false when it was no
/// longer pending (someone else decided it first) or has expired.
pub async fn decide(conn: &mut Tx, verdict: &Verdict<'_>) -> Result<bool> {
    let done = bind_verdict(db::query(DECIDE), verdict).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// What became of a device's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// The challenge is decided and the proof recorded.
    Decided,
    /// The challenge was no longer pending (decided, cancelled or expired); the proof is
    /// recorded all the same.
    NotPending,
    /// The proof was refused; nothing was written.
    ProofRefused(ProofRefused),
}

/// A device's answer committed at once with what makes it count: the proof of the request
/// that carried it ([`super::devices::record_proof`]), [`decide`], the verdict's audit event
/// and the announcement to other replicas. On PostgreSQL this is one statement run on its
/// own (data-modifying CTEs; the `NOTIFY` goes out at its commit): one round trip where a
/// proof check and a transaction took six. On SQLite, one transaction.
pub async fn decide_answer(
    store: &Store,
    proof: &ProofUse<'_>,
    verdict: &Verdict<'_>,
    event: &NewEvent<'_>,
) -> Result<Answered> {
    if store.backend() == Backend::Postgres {
        let query = event.bind_to(bind_verdict(db::query(&*DECIDE_ANSWER), verdict)).bind(super::notify::CHANNEL);
        let found: Option<(Option<i64>, bool, bool)> = proof.bind_to(query).fetch_optional(store.autocommit()).await?;
        let Some((revoked_at, fresh, decided)) = found else {
            return Ok(Answered::ProofRefused(ProofRefused::UnknownDevice));
        };
        return Ok(match super::devices::refusal(revoked_at.is_some(), fresh) {
            Err(refused) => Answered::ProofRefused(refused),
            Ok(()) if decided => Answered::Decided,
            Ok(()) => Answered::NotPending,
        });
    }
    let mut tx = store.begin().await?;
    if let Err(refused) = super::devices::record_proof(&mut tx, proof).await? {
        return Ok(Answered::ProofRefused(refused));
    }
    let decided = decide(&mut tx, verdict).await?;
    if decided {
        super::events::append(&mut tx, event).await?;
    }
    tx.commit().await?;
    Ok(if decided { Answered::Decided } else { Answered::NotPending })
}

/// [`decide_answer`] on PostgreSQL: one row while the device exists: its revocation, whether
/// the proof was recorded, and whether the challenge was decided (then announced; a function
/// in FROM always runs).
static DECIDE_ANSWER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH {},
              decided AS ({DECIDE} AND EXISTS (SELECT 1 FROM proof) RETURNING id),
              logged AS ({} SELECT $8, $9, $10, $11, $12, $13 FROM decided),
              announced AS (SELECT 1 FROM decided, pg_notify($14, decided.id))
         SELECT device.revoked_at, EXISTS (SELECT 1 FROM proof) AS fresh,
                EXISTS (SELECT 1 FROM announced) AS decided
         FROM device",
        super::devices::proof_ctes(15),
        super::events::INSERT
    )
});

const EXPIRE_DUE: &str = "UPDATE challenges SET status = 'expired', decided_at = expires_at
    WHERE status = 'pending' AND expires_at <= $1 AND ($2 IS NULL OR id = $2)
    RETURNING id, user_id";

/// Expires pending challenges whose time is up (all of them, or just `only`), returning
/// `(id, user_id)` of each one this call expired.
pub async fn expire_due(conn: &mut Tx, now: i64, only: Option<&str>) -> Result<Vec<(String, String)>> {
    db::query(EXPIRE_DUE).bind(now).bind(only).fetch_all(conn).await
}

/// Cancels the user's pending push challenges (a newer one replaces them), returning their ids.
pub async fn supersede_pending_push(conn: &mut Tx, user_id: &str, now: i64) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = db::query(
        "UPDATE challenges SET status = 'cancelled', reason = 'superseded', decided_at = $1
         WHERE user_id = $2 AND factor = 'push' AND status = 'pending' AND expires_at > $1
         RETURNING id",
    )
    .bind(now)
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Cancels every pending challenge of a user (the user is being deleted).
pub async fn cancel_pending_for_user(conn: &mut Tx, user_id: &str, now: i64) -> Result<u64> {
    let done = db::query(
        "UPDATE challenges SET status = 'cancelled', reason = 'user_deleted', decided_at = $1
         WHERE user_id = $2 AND status = 'pending'",
    )
    .bind(now)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Cancels the user's pending SMS and email challenges (a newer code replaces them),
/// returning their ids.
pub async fn supersede_pending_otp(conn: &mut Tx, user_id: &str, now: i64) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = db::query(
        "UPDATE challenges SET status = 'cancelled', reason = 'superseded', decided_at = $1
         WHERE user_id = $2 AND factor IN ('sms', 'email') AND status = 'pending' AND expires_at > $1
         RETURNING id",
    )
    .bind(now)
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Moves the expiry of a pending, unexpired challenge (a resent code lives anew); false when
/// it was no longer pending.
pub async fn extend(conn: &mut Tx, id: &str, now: i64, expires_at: i64) -> Result<bool> {
    let done =
        db::query("UPDATE challenges SET expires_at = $1 WHERE id = $2 AND status = 'pending' AND expires_at > $3")
            .bind(expires_at)
            .bind(id)
            .bind(now)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// The user's newest `limit` push challenges since `since` (Unix ms), newest first.
async fn recent_pushes(db: Db<'_>, user_id: &str, since: i64, limit: i64, now: i64) -> Result<Vec<RecentPush>> {
    let rows: Vec<(i64, String, i64)> = db::query(
        "SELECT created_at, status, expires_at FROM challenges WHERE user_id = $1 AND factor = 'push' AND created_at >= $2
         ORDER BY created_at DESC LIMIT $3",
    )
    .bind(user_id)
    .bind(since)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(created_at, status, expires_at)| RecentPush {
            created_at,
            live_pending: status == "pending" && expires_at > now,
        })
        .collect())
}

/// What a new push challenge is decided on: the user's active devices and recent pushes,
/// with the `challenge_seq` and push lock they were read at.
#[derive(Debug)]
pub struct PushSnapshot {
    /// The user's active devices, oldest first; never empty.
    pub devices: Vec<super::devices::DeviceRow>,
    /// The user's newest push challenges of the anti-fatigue window, newest first.
    pub recent: Vec<RecentPush>,
    /// The user's `challenge_seq`: [`insert_unless_changed`] takes it.
    pub seq: i64,
    /// Whether push is locked for the user after a fraud report.
    pub push_locked: bool,
}

/// Reads the user's [`PushSnapshot`] (at most `limit` recent pushes since `since`); `None` when
/// the user has no active device. On PostgreSQL one statement. On SQLite two, the sequence
/// read first: a challenge created between them moves the sequence past the one returned.
/// Inside a transaction after [`lock_user`], nothing can change between them.
pub async fn push_snapshot<'e>(
    db: impl Into<Db<'e>>,
    user_id: &str,
    since: i64,
    limit: i64,
    now: i64,
) -> Result<Option<PushSnapshot>> {
    Ok(snapshot_and_key(db, user_id, since, limit, now, None).await?.map(|(snapshot, _)| snapshot))
}

/// [`push_snapshot`], and the API key `key_id` as stored (`None`: no such key) in the same
/// statement, for the caller to check the key before it acts on the snapshot: one round trip
/// where a new challenge's key check and snapshot took two. `None` when the user has no active
/// device.
pub async fn push_snapshot_and_key<'e>(
    db: impl Into<Db<'e>>,
    user_id: &str,
    since: i64,
    limit: i64,
    now: i64,
    key_id: &str,
) -> Result<Option<(PushSnapshot, Option<StoredKey>)>> {
    snapshot_and_key(db, user_id, since, limit, now, Some(key_id)).await
}

async fn snapshot_and_key<'e>(
    db: impl Into<Db<'e>>,
    user_id: &str,
    since: i64,
    limit: i64,
    now: i64,
    key_id: Option<&str>,
) -> Result<Option<(PushSnapshot, Option<StoredKey>)>> {
    let mut db = db.into();
    let postgres = db.backend() == Backend::Postgres;
    let mut query = db::query(snapshot_sql(postgres, key_id.is_some())).bind(user_id);
    if postgres {
        query = query.bind(since).bind(limit).bind(now);
    }
    if let Some(key_id) = key_id {
        query = query.bind(key_id);
    }
    let rows: Vec<SnapshotRow> = query.fetch_all(db.reborrow()).await?;
    let Some(first) = rows.first() else { return Ok(None) };
    let (seq, push_locked, key) = (first.seq, first.push_locked, first.key.clone());
    let recent = match &first.recent {
        Some(json) => serde_json::from_str::<Vec<(i64, bool)>>(json)?
            .into_iter()
            .map(|(created_at, live_pending)| RecentPush { created_at, live_pending })
            .collect(),
        None if postgres => Vec::new(),
        None => recent_pushes(db, user_id, since, limit, now).await?,
    };
    let devices = rows.into_iter().map(|r| r.device).collect();
    Ok(Some((PushSnapshot { devices, recent, seq, push_locked }, key)))
}

/// The snapshot's statement: on PostgreSQL with the recent pushes as one JSON column (`$2` to
/// `$4`), and with the key (its id the last parameter) when `keyed`.
fn snapshot_sql(postgres: bool, keyed: bool) -> String {
    let recent = if postgres {
        "(SELECT json_agg(json_build_array(r.created_at, r.live) ORDER BY r.created_at DESC)
          FROM (SELECT created_at, status = 'pending' AND expires_at > $4 AS live FROM challenges
                WHERE user_id = $1 AND factor = 'push' AND created_at >= $2
                ORDER BY created_at DESC LIMIT $3) r)::text"
    } else {
        "NULL"
    };
    let key = if keyed {
        let n = if postgres { 5 } else { 2 };
        format!(
            "(SELECT key_hash FROM api_keys WHERE id = ${n}) AS k_key_hash,
             (SELECT revoked_at FROM api_keys WHERE id = ${n}) AS k_revoked_at"
        )
    } else {
        "NULL AS k_key_hash, NULL AS k_revoked_at".to_owned()
    };
    format!(
        "SELECT {}, u.challenge_seq, u.push_locked_at, {recent} AS recent, {key}
         FROM devices, (SELECT challenge_seq, push_locked_at FROM users WHERE id = $1) u
         WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at, id",
        super::devices::COLUMNS
    )
}

/// The PostgreSQL statements of a push approval cycle, by name, in the form they run in:
/// a test checks that none of their plans scans a whole table, even a generic plan made
/// while the tables were empty.
#[doc(hidden)]
pub fn push_cycle_statements() -> Vec<(&'static str, String)> {
    let delivery = [NewDelivery { device_id: "", provider: "", status: "" }];
    let event = NewEvent { id: "", at: 0, kind: "", user_id: None, actor: "", data: "" };
    vec![
        ("create: snapshot with the key", snapshot_sql(true, true)),
        ("create: insert unless changed", insert_with_cte(true, &delivery, Some(&event))),
        ("long-poll: read with the key", WITH_DELIVERIES_AND_KEY.clone()),
        ("long-poll: read", WITH_DELIVERIES.clone()),
        ("fetch with the proof", ADDRESSED_WITH_PROOF.clone()),
        ("answer with the proof", DECIDE_ANSWER.clone()),
        ("device request proof", super::devices::CHECK_PROOF.clone()),
        ("challenge addressed to a device", ADDRESSED_TO.clone()),
    ]
}

struct SnapshotRow {
    device: super::devices::DeviceRow,
    seq: i64,
    push_locked: bool,
    recent: Option<String>,
    key: Option<StoredKey>,
}

impl db::FromRow for SnapshotRow {
    fn from_row(row: &db::Row<'_>) -> Result<Self> {
        Ok(SnapshotRow {
            device: super::devices::DeviceRow::from_row(row)?,
            seq: row.get("challenge_seq")?,
            push_locked: row.get::<Option<i64>>("push_locked_at")?.is_some(),
            recent: row.get("recent")?,
            key: StoredKey::from_columns(row)?,
        })
    }
}

/// A push challenge of the anti-fatigue window.
#[derive(Debug, Clone, Copy)]
pub struct RecentPush {
    /// Unix ms.
    pub created_at: i64,
    /// Still pending and not expired: a new challenge supersedes it.
    pub live_pending: bool,
}

/// Locks the user's row for the rest of the transaction (PostgreSQL takes a row lock; SQLite
/// has one writer) and returns whether push is locked for them, or `None` if no such user.
pub async fn lock_user(conn: &mut Tx, user_id: &str) -> Result<Option<LockedUser>> {
    db::query(format!(
        "UPDATE users SET challenge_seq = challenge_seq + 1 WHERE id = $1 RETURNING {}, push_locked_at",
        super::users::COLUMNS
    ))
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// A user read by [`lock_user`], with the fraud lock on push.
#[derive(Debug)]
pub struct LockedUser {
    /// The user.
    pub user: super::users::UserRow,
    /// Unix ms of the fraud report that locked push, if locked.
    pub push_locked_at: Option<i64>,
}

impl db::FromRow for LockedUser {
    fn from_row(row: &db::Row<'_>) -> Result<Self> {
        Ok(LockedUser { user: super::users::UserRow::from_row(row)?, push_locked_at: row.get("push_locked_at")? })
    }
}

/// Sets or clears the fraud lock on push for a user; false when nothing changed.
pub async fn set_push_lock(conn: &mut Tx, user_id: &str, locked_at: Option<i64>) -> Result<bool> {
    let done =
        db::query("UPDATE users SET push_locked_at = $1 WHERE id = $2 AND (push_locked_at IS NULL) = ($1 IS NOT NULL)")
            .bind(locked_at)
            .bind(user_id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

crate::row! {
    /// A delivery row (one per challenge and device).
    #[derive(Debug, Clone)]
    pub struct DeliveryRow {
        /// The challenge.
        pub challenge_id: String,
        /// The device.
        pub device_id: String,
        /// apns | fcm | none
        pub provider: String,
        /// pending | sent | failed | not_sent | cancelled
        pub status: String,
        /// Sends tried.
        pub attempts: i64,
        /// The provider's reason for the last failure.
        pub error: Option<String>,
    }
}

/// Records that a challenge goes to a device.
pub async fn insert_delivery(
    conn: &mut Tx,
    challenge_id: &str,
    device_id: &str,
    provider: &str,
    status: &str,
    now: i64,
) -> Result<()> {
    db::query(
        "INSERT INTO push_deliveries (challenge_id, device_id, provider, status, next_attempt_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(challenge_id)
    .bind(device_id)
    .bind(provider)
    .bind(status)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The deliveries of a challenge.
pub async fn deliveries<'e>(db: impl Into<Db<'e>>, challenge_id: &str) -> Result<Vec<DeliveryRow>> {
    db::query(
        "SELECT challenge_id, device_id, provider, status, attempts, error FROM push_deliveries
         WHERE challenge_id = $1 ORDER BY device_id",
    )
    .bind(challenge_id)
    .fetch_all(db)
    .await
}

/// The challenge, if it was sent to the device.
pub async fn get_addressed_to<'e>(
    db: impl Into<Db<'e>>,
    challenge_id: &str,
    device_id: &str,
) -> Result<Option<ChallengeRow>> {
    db::query(&*ADDRESSED_TO).bind(challenge_id).bind(device_id).fetch_optional(db).await
}

static ADDRESSED_TO: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS} FROM challenges WHERE id = $1 AND EXISTS \
         (SELECT 1 FROM push_deliveries d WHERE d.challenge_id = $1 AND d.device_id = $2)"
    )
});

/// A device's fetch of one challenge with the proof of the request that asked for it: the
/// proof is recorded as [`super::devices::check_proof`] records it, then the challenge is read
/// if it was sent to the device ([`get_addressed_to`]). Nothing is read for a refused proof.
///
/// On PostgreSQL one statement (data-modifying CTEs) committed on its own, one round trip
/// where the proof and the read took two; on SQLite, the proof check, then a read on a reader.
pub async fn get_addressed_to_with_proof(
    store: &Store,
    proof: &ProofUse<'_>,
    challenge_id: &str,
) -> Result<std::result::Result<Option<ChallengeRow>, ProofRefused>> {
    if store.backend() == Backend::Postgres {
        let found: Option<ProvenFetch> = proof
            .bind_to(db::query(&*ADDRESSED_WITH_PROOF).bind(challenge_id))
            .fetch_optional(store.autocommit())
            .await?;
        let Some(found) = found else { return Ok(Err(ProofRefused::UnknownDevice)) };
        return Ok(super::devices::refusal(found.revoked, found.fresh).map(|()| found.challenge));
    }
    let Some(checked) = super::devices::check_proof(store, proof).await? else {
        return Ok(Err(ProofRefused::UnknownDevice));
    };
    if let Err(refused) = checked.accepted() {
        return Ok(Err(refused));
    }
    Ok(Ok(get_addressed_to(store.reader(), challenge_id, proof.device_id).await?))
}

/// [`get_addressed_to_with_proof`] on PostgreSQL: the proof's CTEs (from `$2`, the device id),
/// then one row while the device exists. The delivery is looked up by the parameters, not
/// correlated with the join: a plan made while the tables were empty (and kept as the
/// statement's generic plan) would otherwise hash the whole of `push_deliveries` on each run.
static ADDRESSED_WITH_PROOF: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH {}
         SELECT device.revoked_at AS device_revoked_at, EXISTS (SELECT 1 FROM proof) AS fresh, {}
         FROM device LEFT JOIN challenges c ON c.id = $1 AND EXISTS
              (SELECT 1 FROM push_deliveries d WHERE d.challenge_id = $1 AND d.device_id = $2)",
        super::devices::proof_ctes(2),
        prefixed("c")
    )
});

/// [`COLUMNS`], each qualified with `table`.
fn prefixed(table: &str) -> String {
    COLUMNS.split(',').map(|c| format!("{table}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

/// A row of [`get_addressed_to_with_proof`]'s statement: the device's revocation, whether the
/// proof was recorded, and the challenge's columns (all NULL when it was not found).
struct ProvenFetch {
    revoked: bool,
    fresh: bool,
    challenge: Option<ChallengeRow>,
}

impl db::FromRow for ProvenFetch {
    fn from_row(row: &db::Row<'_>) -> Result<Self> {
        let found = row.get::<Option<String>>("id")?.is_some();
        Ok(ProvenFetch {
            revoked: row.get::<Option<i64>>("device_revoked_at")?.is_some(),
            fresh: row.get("fresh")?,
            challenge: if found { Some(ChallengeRow::from_row(row)?) } else { None },
        })
    }
}

/// Pending, unexpired challenges addressed to a device: `(id, jws)`, oldest first.
pub async fn pending_for_device<'e>(db: impl Into<Db<'e>>, device_id: &str, now: i64) -> Result<Vec<(String, String)>> {
    db::query(
        "SELECT c.id, c.jws FROM push_deliveries d JOIN challenges c ON c.id = d.challenge_id
         WHERE d.device_id = $1 AND c.status = 'pending' AND c.expires_at > $2 AND c.jws IS NOT NULL
         ORDER BY c.created_at, c.id",
    )
    .bind(device_id)
    .bind(now)
    .fetch_all(db)
    .await
}

crate::row! {
    /// A claimed push delivery with what is needed to send it.
    #[derive(Debug, Clone)]
    pub struct DueDelivery {
        /// The challenge.
        pub challenge_id: String,
        /// The device.
        pub device_id: String,
        /// apns | fcm
        pub provider: String,
        /// Sends tried so far.
        pub attempts: i64,
    }
}

/// Claims up to `limit` due deliveries until `lease_until` (no other worker, on any replica,
/// takes them meanwhile).
pub async fn claim_due_deliveries(
    conn: &mut Tx,
    backend: super::Backend,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<DueDelivery>> {
    db::query(claim_due_sql(backend)).bind(lease_until).bind(now).bind(limit).fetch_all(conn).await
}

fn claim_due_sql(backend: super::Backend) -> String {
    format!(
        "UPDATE push_deliveries SET claimed_until = $1
         WHERE (challenge_id, device_id) IN (
             SELECT challenge_id, device_id FROM push_deliveries
             WHERE status = 'pending' AND next_attempt_at <= $2 AND claimed_until <= $2
             ORDER BY next_attempt_at LIMIT $3 {})
         RETURNING challenge_id, device_id, provider, attempts",
        backend.skip_locked()
    )
}

/// Statements that look for a few rows among many through a partial index (migration 0007),
/// with the index each must use: a test checks their plans on both databases.
#[doc(hidden)]
pub fn partial_index_statements(backend: super::Backend) -> Vec<(&'static str, String)> {
    vec![
        ("challenges_idempotency", BY_IDEMPOTENCY_KEY.clone()),
        ("challenges_pending", EXPIRE_DUE.to_owned()),
        ("push_deliveries_due", claim_due_sql(backend)),
    ]
}

crate::row! {
    /// What a delivery goes to: the device's current push token, and whether the challenge can
    /// still be answered by it.
    #[derive(Debug, Clone)]
    pub struct DeliveryTarget {
        /// The device's push token now (it may have changed since the challenge).
        pub push_token: Option<String>,
        /// The device's provider now.
        pub push_provider: String,
        /// Unix ms, when revoked.
        pub revoked_at: Option<i64>,
        /// The challenge's status.
        pub status: String,
        /// Unix ms.
        pub expires_at: i64,
    }
}

/// Loads the target of a delivery.
pub async fn delivery_target<'e>(
    db: impl Into<Db<'e>>,
    challenge_id: &str,
    device_id: &str,
) -> Result<Option<DeliveryTarget>> {
    db::query(
        "SELECT d.push_token, d.push_provider, d.revoked_at, c.status, c.expires_at
         FROM devices d, challenges c WHERE d.id = $1 AND c.id = $2",
    )
    .bind(device_id)
    .bind(challenge_id)
    .fetch_optional(db)
    .await
}

/// Records the outcome of a send: `status` with `error`; `next_attempt_at` when retried.
#[allow(clippy::too_many_arguments)]
pub async fn record_delivery(
    conn: &mut Tx,
    challenge_id: &str,
    device_id: &str,
    status: &str,
    error: Option<&str>,
    next_attempt_at: Option<i64>,
    counted: bool,
    now: i64,
) -> Result<()> {
    db::query(
        "UPDATE push_deliveries SET status = $1, error = $2, next_attempt_at = COALESCE($3, next_attempt_at),
                attempts = attempts + $4, claimed_until = 0, updated_at = $5
         WHERE challenge_id = $6 AND device_id = $7",
    )
    .bind(status)
    .bind(error)
    .bind(next_attempt_at)
    .bind(i64::from(counted))
    .bind(now)
    .bind(challenge_id)
    .bind(device_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Clears a device's push token if it is still `token` (Apple or Google said it is gone);
/// returns whether it was cleared.
pub async fn clear_push_token(conn: &mut Tx, device_id: &str, token: &str) -> Result<bool> {
    let done = db::query("UPDATE devices SET push_token = NULL WHERE id = $1 AND push_token = $2")
        .bind(device_id)
        .bind(token)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
