//! Challenges: the RP asks, the server signs, the phone answers, the RP reads the result.
//! DESIGN section 4, steps 1 to 6, with the anti-fatigue rules and the fraud lock.

use std::time::Duration as StdDuration;

use assent_protocol::jws::{self, JwsType, KeyRef};
use assent_protocol::messages::{
    ChallengeClaims, Context, Decision, Detail, DeviceChallenge, ResponseClaims, challenge_hash, within_clock_skew,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

use crate::audit::{self, Actor};
use crate::clock::{from_millis, to_millis};
use crate::devices::AuthenticatedDevice;
use crate::error::{Error, Result};
use crate::ids::{IdKind, new_id};
use crate::state::AppState;
use crate::store::{self, challenges::ChallengeRow};
use crate::users::UserId;

/// The anti-fatigue window.
pub const FATIGUE_WINDOW: Duration = Duration::minutes(10);
/// Longest long-poll.
pub const MAX_WAIT_SECS: u64 = 30;
const DEFAULT_TITLE: &str = "Confirm sign-in";

/// Which factor to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Push when the user has a device, otherwise a fallback.
    #[default]
    Auto,
    /// Push only.
    Push,
    /// SMS code.
    Sms,
    /// Email code.
    Email,
}

/// A line of transaction detail shown on the phone.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetailInput {
    /// e.g. "Amount"
    pub label: String,
    /// e.g. "EUR 1,250.00"
    pub value: String,
}

/// Where the request came from, shown on the phone.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextInput {
    /// Client IP address.
    pub ip: Option<String>,
    /// Approximate location, e.g. "Berlin, DE".
    pub location: Option<String>,
    /// Browser or app.
    pub user_agent: Option<String>,
}

/// `POST /v1/challenges`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChallenge {
    /// The user to ask.
    pub user_id: String,
    /// Headline on the phone (default "Confirm sign-in"), up to 100 characters.
    pub title: Option<String>,
    /// Transaction details (at most 20 lines); the phone's signature covers them.
    #[serde(default)]
    pub details: Vec<DetailInput>,
    /// Request context.
    pub context: Option<ContextInput>,
    /// Ask the user to pick the number the RP's page shows.
    #[serde(default)]
    pub number_matching: bool,
    /// 15 to 600, default 120.
    pub ttl_seconds: Option<i64>,
    /// `auto` (default), `push`, `sms` or `email`.
    #[serde(default)]
    pub channel: Channel,
}

/// `201` answer to `POST /v1/challenges`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChallengeCreated {
    /// `chl_...`
    pub id: String,
    /// Always `pending`.
    pub status: String,
    /// `push`, `sms` or `email`.
    pub factor: String,
    /// When it expires.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Number matching: show this on the RP's page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u8>,
}

/// What a decided push challenge keeps as proof.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Evidence {
    /// The device's response JWS (`assent-response+jwt`), verifiable with the device key.
    pub response: String,
    /// The server-signed challenge JWS the device answered (its SHA-256 is the response's `chash`).
    pub challenge: String,
    /// Whether the device said the user passed biometrics or a PIN.
    pub user_verified: bool,
}

/// Push delivery to one device.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    /// The device.
    pub device_id: String,
    /// `apns`, `fcm` or `none`.
    pub provider: String,
    /// `pending`, `sent`, `failed`, `not_sent` (poll-only device) or `cancelled`.
    pub status: String,
    /// The provider's reason for a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/challenges/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChallengeView {
    /// `chl_...`
    pub id: String,
    /// The user asked.
    pub user_id: String,
    /// `push`, `sms` or `email`.
    pub factor: String,
    /// `pending approved denied fraud_reported expired cancelled failed`.
    pub status: String,
    /// Why, when not obvious: `number_mismatch`, `superseded`, `user_deleted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it expires (or expired).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it left `pending`.
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<OffsetDateTime>,
    /// The device that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The signed answer, for your records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// Push delivery per device.
    pub deliveries: Vec<Delivery>,
}

/// `200` answer to a device's response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResponseOutcome {
    /// The challenge.
    pub id: String,
    /// Its status now.
    pub status: String,
}

fn validate(new: &NewChallenge) -> Result<(String, Vec<Detail>, Context, i64)> {
    let title = new.title.as_deref().map(str::trim).unwrap_or(DEFAULT_TITLE).to_owned();
    if title.is_empty() || title.chars().count() > 100 || title.chars().any(char::is_control) {
        return Err(Error::invalid("invalid_title", "title must be 1 to 100 printable characters"));
    }
    if new.details.len() > 20 {
        return Err(Error::invalid("invalid_details", "at most 20 detail lines"));
    }
    let mut details = Vec::with_capacity(new.details.len());
    for d in &new.details {
        let ok_label = !d.label.trim().is_empty() && d.label.chars().count() <= 64;
        let ok_value = d.value.chars().count() <= 512;
        if !ok_label || !ok_value || d.label.chars().chain(d.value.chars()).any(|c| c.is_control() && c != '\n') {
            return Err(Error::invalid(
                "invalid_details",
                "each detail needs a label (1-64 characters) and a value (up to 512)",
            ));
        }
        details.push(Detail { label: d.label.trim().to_owned(), value: d.value.clone() });
    }
    let ctx = new.context.clone().unwrap_or_default();
    for field in [&ctx.ip, &ctx.location, &ctx.user_agent].into_iter().flatten() {
        if field.chars().count() > 512 {
            return Err(Error::invalid("invalid_context", "context fields are at most 512 characters"));
        }
    }
    let context = Context { ip: ctx.ip, location: ctx.location, user_agent: ctx.user_agent };
    let ttl = new.ttl_seconds.unwrap_or(120);
    if !(15..=600).contains(&ttl) {
        return Err(Error::invalid("invalid_ttl", "ttl_seconds must be between 15 and 600"));
    }
    Ok((title, details, context, ttl))
}

/// Two-digit number (10-99) from the OS CSPRNG.
fn two_digits() -> u8 {
    // 90 values; rejection sampling keeps it uniform.
    loop {
        let b = (OsRng.next_u32() & 0x7f) as u8;
        if b < 90 {
            return b + 10;
        }
    }
}

/// The correct number and three distinct choices containing it, shuffled.
fn number_choices() -> (u8, Vec<u8>) {
    let correct = two_digits();
    let mut choices = vec![correct];
    while choices.len() < 3 {
        let n = two_digits();
        if !choices.contains(&n) {
            choices.push(n);
        }
    }
    let at = (OsRng.next_u32() % 3) as usize;
    choices.swap(0, at);
    (correct, choices)
}

/// Creates a challenge (DESIGN section 4, challenge steps 1-3).
pub async fn create(
    state: &AppState,
    api_key_id: &str,
    idempotency_key: Option<&str>,
    new: NewChallenge,
) -> Result<ChallengeCreated> {
    let user_id: UserId = new.user_id.parse()?;
    let request_hash = hex::encode(Sha256::digest(serde_json::to_vec(&new)?));
    if let Some(key) = idempotency_key {
        if key.is_empty() || key.len() > 255 {
            return Err(Error::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters"));
        }
        if let Some(existing) = store::challenges::by_idempotency_key(state.store.reader(), api_key_id, key).await? {
            return replay(existing, &request_hash);
        }
    }
    let (title, details, context, ttl) = validate(&new)?;
    let now = state.now();
    let now_ms = to_millis(now);
    let expires_at = now + Duration::seconds(ttl);

    let mut tx = state.store.begin().await?;
    let locked = store::challenges::lock_user(&mut tx, user_id.as_str()).await?.ok_or(Error::NotFound("user"))?;
    let devices = store::devices::list_for_user(&mut *tx, user_id.as_str(), false).await?;
    let factor = match (new.channel, devices.is_empty()) {
        (Channel::Auto | Channel::Push, false) => "push",
        (Channel::Push, true) => {
            return Err(Error::invalid("no_device", "the user has no active device for push"));
        }
        (Channel::Sms | Channel::Email, false) => {
            return Err(Error::conflict(
                "device_exists",
                "the user has a device: use push; revoke a lost device to fall back to a code",
            ));
        }
        (Channel::Auto | Channel::Sms | Channel::Email, true) => {
            return Err(Error::invalid("no_factor", "the user has no active device"));
        }
    };
    if locked.is_some() {
        return Err(Error::conflict(
            "push_locked",
            "push is locked for this user after a fraud report; unlock the user first",
        ));
    }
    let limit = state.config.challenges.push_per_user_per_10_minutes;
    let since = to_millis(now - FATIGUE_WINDOW);
    let recent = store::challenges::recent_push_times(&mut tx, user_id.as_str(), since, i64::from(limit)).await?;
    if recent.len() >= limit as usize {
        // The oldest of the last `limit` leaves the window first.
        let oldest = recent.last().copied().unwrap_or(now_ms);
        let free_at = oldest + i64::try_from(FATIGUE_WINDOW.whole_milliseconds()).unwrap_or(600_000);
        let retry_after = u64::try_from((free_at - now_ms + 999) / 1000).unwrap_or(1).max(1);
        return Err(Error::RateLimited {
            retry_after,
            detail: format!("at most {limit} push challenges per user per 10 minutes"),
        });
    }
    let superseded = store::challenges::supersede_pending_push(&mut tx, user_id.as_str(), now_ms).await?;

    let id = new_id(IdKind::Challenge);
    let (number, choices) = if new.number_matching {
        let (n, c) = number_choices();
        (Some(n), Some(c))
    } else {
        (None, None)
    };
    let claims = ChallengeClaims {
        jti: id.clone(),
        sub: user_id.to_string(),
        aud: devices.iter().map(|d| d.id.clone()).collect(),
        iat: now.unix_timestamp(),
        exp: expires_at.unix_timestamp(),
        title: title.clone(),
        details: details.clone(),
        context: context.clone(),
        number_choices: choices,
    };
    let jws =
        jws::sign(JwsType::Challenge, KeyRef::Kid(state.server_key.kid()), &claims, state.server_key.signing_key())
            .map_err(|e| Error::internal(format!("signing a challenge: {e}")))?;
    let row = ChallengeRow {
        id: id.clone(),
        user_id: user_id.to_string(),
        factor: factor.to_owned(),
        status: "pending".to_owned(),
        reason: None,
        title,
        details: serde_json::to_string(&details)?,
        context: serde_json::to_string(&context)?,
        number: number.map(i64::from),
        jws: Some(jws),
        created_at: now_ms,
        expires_at: to_millis(expires_at),
        decided_at: None,
        device_id: None,
        evidence: None,
        user_verified: None,
        api_key_id: api_key_id.to_owned(),
        idempotency_key: idempotency_key.map(str::to_owned),
        request_hash: Some(request_hash),
    };
    if let Err(e) = store::challenges::insert(&mut tx, &row).await {
        // Two requests with one idempotency key raced and the other one won: answer as it did.
        let raced = matches!(&e, Error::Database(sqlx::Error::Database(db)) if db.is_unique_violation());
        if let (Some(key), true) = (idempotency_key, raced) {
            drop(tx);
            let existing = store::challenges::by_idempotency_key(state.store.reader(), api_key_id, key).await?;
            return replay(existing.ok_or(e)?, row.request_hash.as_deref().unwrap_or_default());
        }
        return Err(e);
    }
    for device in &devices {
        let status = if device.push_provider == "none" || device.push_token.is_none() { "not_sent" } else { "pending" };
        store::challenges::insert_delivery(&mut tx, &id, &device.id, &device.push_provider, status, now_ms).await?;
    }
    let actor = Actor::ApiKey(api_key_id.to_owned());
    for old in &superseded {
        audit::record(
            &mut tx,
            now,
            "challenge.cancelled",
            Some(user_id.as_str()),
            &actor,
            serde_json::json!({ "challenge_id": old, "reason": "superseded", "by": id }),
        )
        .await?;
        state.store.notify_challenge(&mut tx, old).await?;
    }
    audit::record(
        &mut tx,
        now,
        "challenge.created",
        Some(user_id.as_str()),
        &actor,
        serde_json::json!({ "challenge_id": id, "factor": factor, "devices": devices.len() }),
    )
    .await?;
    tx.commit().await?;
    for old in &superseded {
        state.wake.challenge_changed(old);
    }
    state.wake.push.notify_one();
    Ok(ChallengeCreated { id, status: "pending".to_owned(), factor: factor.to_owned(), expires_at, number })
}

fn replay(existing: ChallengeRow, request_hash: &str) -> Result<ChallengeCreated> {
    if existing.request_hash.as_deref() != Some(request_hash) {
        return Err(Error::conflict("idempotency_conflict", "this Idempotency-Key was used with a different request"));
    }
    Ok(ChallengeCreated {
        id: existing.id,
        status: "pending".to_owned(),
        factor: existing.factor,
        expires_at: from_millis(existing.expires_at),
        number: existing.number.and_then(|n| u8::try_from(n).ok()),
    })
}

/// Loads a challenge, first expiring it if its time is up.
async fn load(state: &AppState, id: &str) -> Result<ChallengeRow> {
    let row = store::challenges::get(state.store.reader(), id).await?.ok_or(Error::NotFound("challenge"))?;
    if row.status == "pending" && row.expires_at <= to_millis(state.now()) {
        expire_due(state, Some(id)).await?;
        return store::challenges::get(state.store.reader(), id).await?.ok_or(Error::NotFound("challenge"));
    }
    Ok(row)
}

/// Expires due challenges (all, or one), recording events and webhooks. Returns how many.
pub async fn expire_due(state: &AppState, only: Option<&str>) -> Result<usize> {
    let now = state.now();
    let mut tx = state.store.begin().await?;
    let expired = store::challenges::expire_due(&mut tx, to_millis(now), only).await?;
    let mut queued = false;
    for (id, user_id) in &expired {
        queued |= audit::publish(
            &mut tx,
            &state.config.webhooks,
            now,
            "challenge.expired",
            Some(user_id),
            &Actor::System,
            serde_json::json!({ "challenge_id": id, "status": "expired" }),
        )
        .await?;
        state.store.notify_challenge(&mut tx, id).await?;
    }
    tx.commit().await?;
    for (id, _) in &expired {
        state.wake.challenge_changed(id);
    }
    if queued {
        state.wake.outbox.notify_one();
    }
    Ok(expired.len())
}

async fn view(state: &AppState, row: ChallengeRow) -> Result<ChallengeView> {
    let deliveries = store::challenges::deliveries(state.store.reader(), &row.id).await?;
    let evidence = match (&row.evidence, &row.jws) {
        (Some(response), Some(challenge)) => Some(Evidence {
            response: response.clone(),
            challenge: challenge.clone(),
            user_verified: row.user_verified.is_some_and(|v| v != 0),
        }),
        _ => None,
    };
    Ok(ChallengeView {
        id: row.id,
        user_id: row.user_id,
        factor: row.factor,
        status: row.status,
        reason: row.reason,
        created_at: from_millis(row.created_at),
        expires_at: from_millis(row.expires_at),
        decided_at: row.decided_at.map(from_millis),
        device_id: row.device_id,
        evidence,
        deliveries: deliveries
            .into_iter()
            .map(|d| Delivery { device_id: d.device_id, provider: d.provider, status: d.status, error: d.error })
            .collect(),
    })
}

/// Reads a challenge; with `wait`, holds the request until it leaves `pending`, it expires,
/// or `wait` seconds (at most 30) pass.
pub async fn get(state: &AppState, id: &str, wait: Option<u64>) -> Result<ChallengeView> {
    let wait = StdDuration::from_secs(wait.unwrap_or(0).min(MAX_WAIT_SECS));
    // Subscribe before reading, so a decision between the read and the wait is not missed.
    let mut changes = state.wake.subscribe();
    let mut row = load(state, id).await?;
    if row.status == "pending" && !wait.is_zero() {
        let _waiting = GaugeGuard::new(&state.metrics.long_polls);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let until_expiry =
                StdDuration::from_millis(u64::try_from(row.expires_at - to_millis(state.now())).unwrap_or(0));
            let sleep_until = deadline.min(tokio::time::Instant::now() + until_expiry + StdDuration::from_millis(50));
            tokio::select! {
                changed = changes.recv() => match changed {
                    Ok(changed) if changed != id => continue,
                    // Ours, or we lagged behind and may have missed ours: read again.
                    _ => {}
                },
                () = tokio::time::sleep_until(sleep_until) => {}
            }
            row = load(state, id).await?;
            if row.status != "pending" || tokio::time::Instant::now() >= deadline {
                break;
            }
        }
    }
    view(state, row).await
}

/// Counts a waiter for as long as it lives.
struct GaugeGuard<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> GaugeGuard<'a> {
    fn new(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Cancels a pending challenge.
pub async fn cancel(state: &AppState, id: &str, actor: &Actor) -> Result<ChallengeView> {
    let row = load(state, id).await?;
    if row.status != "pending" {
        return Err(Error::conflict("already_decided", format!("the challenge is {}", row.status)));
    }
    let now = state.now();
    let mut tx = state.store.begin().await?;
    if !store::challenges::decide(&mut tx, id, "cancelled", None, to_millis(now), None, None, None).await? {
        return Err(Error::conflict("already_decided", "the challenge was decided meanwhile"));
    }
    audit::record(
        &mut tx,
        now,
        "challenge.cancelled",
        Some(&row.user_id),
        actor,
        serde_json::json!({ "challenge_id": id }),
    )
    .await?;
    state.store.notify_challenge(&mut tx, id).await?;
    tx.commit().await?;
    state.wake.challenge_changed(id);
    view(state, load(state, id).await?).await
}

/// Pending challenges addressed to the device (DESIGN section 4, step 4).
pub async fn pending_for_device(state: &AppState, device: &AuthenticatedDevice) -> Result<Vec<DeviceChallenge>> {
    let rows =
        store::challenges::pending_for_device(state.store.reader(), &device.row.id, to_millis(state.now())).await?;
    Ok(rows.into_iter().map(|(id, jws)| DeviceChallenge { id, jws }).collect())
}

/// One challenge addressed to the device, if it can still be answered.
pub async fn one_for_device(state: &AppState, device: &AuthenticatedDevice, id: &str) -> Result<DeviceChallenge> {
    let row = load_for_device(state, device, id).await?;
    Ok(DeviceChallenge { id: row.id, jws: row.jws.unwrap_or_default() })
}

async fn load_for_device(state: &AppState, device: &AuthenticatedDevice, id: &str) -> Result<ChallengeRow> {
    if !store::challenges::addressed_to(state.store.reader(), id, &device.row.id).await? {
        return Err(Error::NotFound("challenge"));
    }
    let row = load(state, id).await?;
    match row.status.as_str() {
        "pending" => Ok(row),
        "expired" => Err(Error::gone("challenge_expired", "the challenge expired")),
        other => Err(Error::conflict("already_decided", format!("the challenge is {other}"))),
    }
}

/// Verifies and applies a device's signed answer (DESIGN section 4, step 5), exactly once.
pub async fn respond(
    state: &AppState,
    device: &AuthenticatedDevice,
    id: &str,
    response: &str,
) -> Result<ResponseOutcome> {
    let bad = |e: assent_protocol::Error| Error::bad_request("invalid_response", e.to_string());
    let unverified = jws::decode(response, JwsType::Response).map_err(bad)?;
    if unverified.header().kid() != Some(device.row.id.as_str()) {
        return Err(Error::bad_request("invalid_response", "the response kid is not this device"));
    }
    let verified = unverified.verify(&device.key).map_err(bad)?;
    let claims: ResponseClaims = verified.claims().map_err(bad)?;
    if claims.jti != id {
        return Err(Error::bad_request("invalid_response", "the response is for another challenge"));
    }
    let now = state.now();
    if !within_clock_skew(claims.iat, now.unix_timestamp()) {
        return Err(Error::bad_request("stale_response", "iat is more than 60 seconds from the server's time"));
    }
    let row = load_for_device(state, device, id).await?;
    let challenge_jws = row.jws.clone().unwrap_or_default();
    if claims.chash != challenge_hash(&challenge_jws) {
        return Err(Error::invalid(
            "chash_mismatch",
            "the response does not cover this challenge as the server signed it",
        ));
    }
    let (status, reason) = match claims.decision {
        Decision::Approve => match row.number {
            Some(expected) if claims.number.map(i64::from) != Some(expected) => ("denied", Some("number_mismatch")),
            _ => ("approved", None),
        },
        Decision::Deny => ("denied", None),
        Decision::Fraud => ("fraud_reported", None),
    };

    let mut tx = state.store.begin().await?;
    let decided = store::challenges::decide(
        &mut tx,
        id,
        status,
        reason,
        to_millis(now),
        Some(&device.row.id),
        Some(response),
        Some(claims.uv),
    )
    .await?;
    if !decided {
        drop(tx);
        let row = load(state, id).await?;
        return Err(match row.status.as_str() {
            "expired" => Error::gone("challenge_expired", "the challenge expired"),
            other => Error::conflict("already_decided", format!("the challenge is {other}")),
        });
    }
    let actor = Actor::Device(device.row.id.clone());
    let kind = format!("challenge.{status}");
    let mut data = serde_json::json!({ "challenge_id": id, "status": status, "device_id": device.row.id, "user_verified": claims.uv });
    if let Some(reason) = reason {
        data["reason"] = reason.into();
    }
    let mut queued =
        audit::publish(&mut tx, &state.config.webhooks, now, &kind, Some(&row.user_id), &actor, data).await?;
    if claims.decision == Decision::Fraud
        && store::challenges::set_push_lock(&mut tx, &row.user_id, Some(to_millis(now))).await?
    {
        queued |= audit::publish(
            &mut tx,
            &state.config.webhooks,
            now,
            "user.locked",
            Some(&row.user_id),
            &actor,
            serde_json::json!({ "reason": "fraud_reported", "challenge_id": id }),
        )
        .await?;
    }
    state.store.notify_challenge(&mut tx, id).await?;
    tx.commit().await?;
    state.wake.challenge_changed(id);
    if queued {
        state.wake.outbox.notify_one();
    }
    Ok(ResponseOutcome { id: id.to_owned(), status: status.to_owned() })
}

/// Lifts the fraud lock on push for a user.
pub async fn unlock(state: &AppState, user_id: &UserId, actor: &Actor) -> Result<bool> {
    crate::users::get(&state.store, user_id).await?;
    let now = state.now();
    let mut tx = state.store.begin().await?;
    let changed = store::challenges::set_push_lock(&mut tx, user_id.as_str(), None).await?;
    if changed {
        audit::record(&mut tx, now, "user.unlocked", Some(user_id.as_str()), actor, serde_json::json!({})).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_choices_are_three_distinct_two_digit_numbers_with_the_answer() {
        for _ in 0..1000 {
            let (n, c) = number_choices();
            assert_eq!(c.len(), 3);
            assert!(c.contains(&n));
            assert!(c.iter().all(|x| (10..=99).contains(x)));
            assert!(c[0] != c[1] && c[1] != c[2] && c[0] != c[2]);
        }
    }
}
