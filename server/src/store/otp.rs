//! One-time codes of SMS and email challenges: the code's HMAC and the counters that bound
//! guessing and resending. Changes that must happen once are conditional UPDATEs.

use super::{Db, Tx, db};

use crate::error::Result;

crate::row! {
    /// An `otp_codes` row.
    #[derive(Debug, Clone)]
    pub struct OtpRow {
        /// The challenge.
        pub challenge_id: String,
        /// sms | email
        pub channel: String,
        /// The E.164 number or email address the code went to.
        pub destination: String,
        /// hex HMAC-SHA256(pepper, challenge id || code).
        pub code_hash: String,
        /// How long each code lives, ms.
        pub code_ttl: i64,
        /// Wrong codes so far.
        pub failed_attempts: i64,
        /// Resends so far.
        pub resends: i64,
        /// Unix ms of the latest send.
        pub last_sent_at: i64,
        /// The provider that delivered the latest code.
        pub provider: Option<String>,
        /// Its message id.
        pub message_id: Option<String>,
        /// Why the latest send failed.
        pub delivery_error: Option<String>,
        /// Unix ms when the code was accepted.
        pub used_at: Option<i64>,
    }
}

const COLUMNS: &str = "challenge_id, channel, destination, code_hash, code_ttl, failed_attempts, resends, \
    last_sent_at, provider, message_id, delivery_error, used_at";

/// Stores the code of a new challenge.
pub async fn insert(conn: &mut Tx, r: &OtpRow) -> Result<()> {
    db::query(format!("INSERT INTO otp_codes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"))
        .bind(&r.challenge_id)
        .bind(&r.channel)
        .bind(&r.destination)
        .bind(&r.code_hash)
        .bind(r.code_ttl)
        .bind(r.failed_attempts)
        .bind(r.resends)
        .bind(r.last_sent_at)
        .bind(&r.provider)
        .bind(&r.message_id)
        .bind(&r.delivery_error)
        .bind(r.used_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// The code row of a challenge.
pub async fn get<'e>(db: impl Into<Db<'e>>, challenge_id: &str) -> Result<Option<OtpRow>> {
    db::query(format!("SELECT {COLUMNS} FROM otp_codes WHERE challenge_id = $1"))
        .bind(challenge_id)
        .fetch_optional(db)
        .await
}

/// Reads the row and locks it for the rest of the transaction (a no-op UPDATE: PostgreSQL
/// takes the row lock, SQLite has one writer), so concurrent verifies and resends of one
/// challenge take turns.
pub async fn lock(conn: &mut Tx, challenge_id: &str) -> Result<Option<OtpRow>> {
    db::query(format!(
        "UPDATE otp_codes SET failed_attempts = failed_attempts WHERE challenge_id = $1 RETURNING {COLUMNS}"
    ))
    .bind(challenge_id)
    .fetch_optional(conn)
    .await
}

/// Counts a wrong code; returns the failures so far.
pub async fn count_failure(conn: &mut Tx, challenge_id: &str) -> Result<i64> {
    let (n,): (i64,) = db::query(
        "UPDATE otp_codes SET failed_attempts = failed_attempts + 1 WHERE challenge_id = $1 RETURNING failed_attempts",
    )
    .bind(challenge_id)
    .fetch_one(conn)
    .await?;
    Ok(n)
}

/// Marks the code used.
pub async fn mark_used(conn: &mut Tx, challenge_id: &str, now: i64) -> Result<()> {
    db::query("UPDATE otp_codes SET used_at = $1 WHERE challenge_id = $2 AND used_at IS NULL")
        .bind(now)
        .bind(challenge_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Replaces the code with a new one for a resend.
pub async fn replace_code(conn: &mut Tx, challenge_id: &str, code_hash: &str, now: i64) -> Result<()> {
    db::query(
        "UPDATE otp_codes SET code_hash = $1, resends = resends + 1, last_sent_at = $2, provider = NULL,
                message_id = NULL, delivery_error = NULL
         WHERE challenge_id = $3",
    )
    .bind(code_hash)
    .bind(now)
    .bind(challenge_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records who delivered the latest code (or why nobody did).
pub async fn record_delivery(
    conn: &mut Tx,
    challenge_id: &str,
    provider: Option<&str>,
    message_id: Option<&str>,
    error: Option<&str>,
) -> Result<()> {
    db::query("UPDATE otp_codes SET provider = $1, message_id = $2, delivery_error = $3 WHERE challenge_id = $4")
        .bind(provider)
        .bind(message_id)
        .bind(error)
        .bind(challenge_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks the user's phone or email verified, if it is still `destination`. Returns whether
/// it changed from unverified.
pub async fn verify_destination(conn: &mut Tx, user_id: &str, channel: &str, destination: &str) -> Result<bool> {
    let sql = match channel {
        "sms" => "UPDATE users SET phone_verified = 1 WHERE id = $1 AND phone = $2 AND phone_verified = 0",
        _ => "UPDATE users SET email_verified = 1 WHERE id = $1 AND email = $2 AND email_verified = 0",
    };
    let done = db::query(sql).bind(user_id).bind(destination).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}
