//! Challenges: the RP asks, the server signs, the phone answers, the RP reads the result.
//! DESIGN section 4, steps 1 to 6, with the anti-fatigue rules and the fraud lock.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration as StdDuration;

use assent_protocol::jws::{self, JwsType};
use assent_protocol::messages::{
    ChallengeClaims, Context, Decision, Detail, DeviceChallenge, ResponseClaims, challenge_hash, within_clock_skew,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

use crate::api_keys::ApiKeyClaim;
use crate::audit::{self, Actor};
use crate::clock::{from_millis, to_millis};
use crate::devices::{AuthenticatedDevice, VerifiedProof};
use crate::error::{Error, Result};
use crate::fallback::OtpChannel;
use crate::ids::{IdKind, new_id};
use crate::otp;
use crate::state::AppState;
use crate::store::api_keys::StoredKey;
use crate::store::challenges::{Answered, ChallengeRow, NewDelivery, Verdict};
use crate::store::{self, Tx, users::UserRow};
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
    /// `push`, `sms` or `email`: the factor actually used.
    pub factor: String,
    /// When it expires.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Number matching: show this on the RP's page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u8>,
    /// SMS and email: where the code went, masked (`+1 *** *** 4567`, `j***@example.com`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
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
    /// Why, when not obvious: `number_mismatch`, `superseded`, `user_deleted`, `too_many_attempts`,
    /// `delivery_failed`.
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
    /// SMS and email challenges: where the code went and how many tries are left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otp: Option<OtpStatus>,
    /// Push delivery per device (empty for SMS and email challenges).
    pub deliveries: Vec<Delivery>,
}

/// The code of an SMS or email challenge.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OtpStatus {
    /// `sms` or `email`.
    pub channel: String,
    /// Where the code went, masked: `+1 *** *** 4567`, `j***@example.com`.
    pub destination: String,
    /// The latest code's delivery: `sent`, `failed` or `sending`.
    pub delivery: String,
    /// The provider that accepted the latest code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// That provider's message id (Twilio `SM...`, Vonage `message-id`, SMTP `Message-ID`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// When the latest code was sent.
    #[serde(with = "time::serde::rfc3339")]
    pub last_sent_at: OffsetDateTime,
    /// Wrong codes still allowed before the challenge fails.
    pub attempts_remaining: u32,
    /// Resends still allowed.
    pub resends_remaining: u32,
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

/// The factor a new challenge uses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Factor {
    Push,
    Otp(OtpChannel, String),
}

/// DESIGN section 4, step 2: push when the user has an active device; otherwise SMS when a
/// phone is on file, then email; an explicit code channel for a user with a device only when
/// configuration allows it.
fn choose_factor(state: &AppState, channel: Channel, has_device: bool, user: &UserRow) -> Result<Factor> {
    let fallback = &state.fallback;
    let sms = || Factor::Otp(OtpChannel::Sms, user.phone.clone().unwrap_or_default());
    let email = || Factor::Otp(OtpChannel::Email, user.email.clone().unwrap_or_default());
    let not_configured =
        |what: &str| Error::invalid("factor_not_configured", format!("no {what} provider is configured"));
    match channel {
        Channel::Auto | Channel::Push if has_device => Ok(Factor::Push),
        Channel::Push => Err(Error::invalid("no_device", "the user has no active device for push")),
        Channel::Sms | Channel::Email if has_device && !state.config.fallback.allow_with_device => {
            Err(Error::conflict(
                "device_exists",
                "the user has a device: use push; revoke a lost device to fall back to a code",
            ))
        }
        Channel::Sms if user.phone.is_none() => Err(Error::invalid("no_factor", "the user has no phone on file")),
        Channel::Sms if !fallback.sms.is_available() => Err(not_configured("SMS")),
        Channel::Sms => Ok(sms()),
        Channel::Email if user.email.is_none() => Err(Error::invalid("no_factor", "the user has no email on file")),
        Channel::Email if fallback.email.is_none() => Err(not_configured("email")),
        Channel::Email => Ok(email()),
        Channel::Auto if user.phone.is_some() && fallback.sms.is_available() => Ok(sms()),
        Channel::Auto if user.email.is_some() && fallback.email.is_some() => Ok(email()),
        Channel::Auto => Err(Error::invalid(
            "no_factor",
            "the user has no active device and no phone or email this server can send a code to",
        )),
    }
}

/// Creates a challenge (DESIGN section 4, challenge steps 1-3; section 5 for codes).
///
/// `caller`'s key is checked by the first step that answers or writes: on the common path,
/// in the statement that reads the user's devices ([`store::challenges::push_snapshot_and_key`]);
/// before an idempotent replay, a challenge created with the user's row locked, or any error,
/// on its own read.
pub async fn create(
    state: &AppState,
    caller: &ApiKeyClaim,
    idempotency_key: Option<&str>,
    new: NewChallenge,
) -> Result<ChallengeCreated> {
    let mut check = KeyCheck::Pending(caller);
    let created = create_as(state, &caller.id, &mut check, idempotency_key, new).await;
    if created.is_err() {
        // Nothing is answered to a caller whose key does not hold.
        check.now(state).await?;
    }
    created
}

/// [`create`] for a caller the server authenticated otherwise (the demo's signed-in user),
/// recorded as created by `api_key_id`.
pub async fn create_unkeyed(state: &AppState, api_key_id: &str, new: NewChallenge) -> Result<ChallengeCreated> {
    create_as(state, api_key_id, &mut KeyCheck::Done, None, new).await
}

/// Whether a creation's API key is yet to be checked.
enum KeyCheck<'a> {
    Pending(&'a ApiKeyClaim),
    Done,
}

impl KeyCheck<'_> {
    /// Checks the key on its own read, unless that was done.
    async fn now(&mut self, state: &AppState) -> Result<()> {
        if let KeyCheck::Pending(claim) = self {
            claim.authenticate(&state.store).await?;
            *self = KeyCheck::Done;
        }
        Ok(())
    }

    /// The key to read with the next read, if it is yet to be checked.
    fn to_read(&self) -> Option<&str> {
        match self {
            KeyCheck::Pending(claim) => Some(&claim.id),
            KeyCheck::Done => None,
        }
    }

    /// Checks the key on `stored`, read by the caller with [`KeyCheck::to_read`].
    fn on(&mut self, stored: Option<&StoredKey>) -> Result<()> {
        if let KeyCheck::Pending(claim) = self {
            claim.check(stored)?;
            *self = KeyCheck::Done;
        }
        Ok(())
    }
}

async fn create_as(
    state: &AppState,
    api_key_id: &str,
    check: &mut KeyCheck<'_>,
    idempotency_key: Option<&str>,
    new: NewChallenge,
) -> Result<ChallengeCreated> {
    let user_id: UserId = new.user_id.parse()?;
    let request_hash = hex::encode(Sha256::digest(serde_json::to_vec(&new)?));
    if let Some(key) = idempotency_key {
        if key.is_empty() || key.len() > 255 {
            return Err(Error::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters"));
        }
        check.now(state).await?;
        if let Some(existing) = store::challenges::by_idempotency_key(state.store.reader(), api_key_id, key).await? {
            return replay(state, existing, &request_hash).await;
        }
    }
    let (title, details, context, ttl) = validate(&new)?;
    let now = state.now();
    let draft = Draft {
        row: ChallengeRow {
            id: new_id(IdKind::Challenge),
            user_id: user_id.to_string(),
            factor: String::new(),
            status: "pending".to_owned(),
            reason: None,
            title: title.clone(),
            details: serde_json::to_string(&details)?,
            context: serde_json::to_string(&context)?,
            number: None,
            jws: None,
            created_at: to_millis(now),
            expires_at: 0,
            decided_at: None,
            device_id: None,
            evidence: None,
            user_verified: None,
            api_key_id: api_key_id.to_owned(),
            idempotency_key: idempotency_key.map(str::to_owned),
            request_hash: Some(request_hash),
        },
        title,
        details,
        context,
        expires_at: now + Duration::seconds(ttl),
        number_matching: new.number_matching,
        limit: state.config.challenges.push_per_user_per_10_minutes,
        actor: Actor::ApiKey(api_key_id.to_owned()),
        now,
    };
    if matches!(new.channel, Channel::Auto | Channel::Push)
        && let Some(created) = create_push_unlocked(state, &draft, check).await?
    {
        return Ok(created);
    }
    check.now(state).await?;
    create_locked(state, draft, new.channel, new.ttl_seconds).await
}

/// A challenge about to be created, before its factor is chosen.
struct Draft {
    /// The row so far: no factor, number, JWS or expiry yet.
    row: ChallengeRow,
    title: String,
    details: Vec<Detail>,
    context: Context,
    /// When a push challenge expires.
    expires_at: OffsetDateTime,
    number_matching: bool,
    /// Push challenges per user per [`FATIGUE_WINDOW`].
    limit: u32,
    actor: Actor,
    now: OffsetDateTime,
}

impl Draft {
    fn user_id(&self) -> &str {
        &self.row.user_id
    }

    /// Where the anti-fatigue window starts, Unix ms.
    fn window_start(&self) -> i64 {
        to_millis(self.now - FATIGUE_WINDOW)
    }

    /// The push challenge to `devices`: its row, signed, and the number to show, if any.
    fn seal_push(&self, state: &AppState, devices: &[store::devices::DeviceRow]) -> Result<(ChallengeRow, Option<u8>)> {
        let (number, choices) = if self.number_matching {
            let (n, c) = number_choices();
            (Some(n), Some(c))
        } else {
            (None, None)
        };
        let claims = ChallengeClaims {
            jti: self.row.id.clone(),
            sub: self.row.user_id.clone(),
            aud: devices.iter().map(|d| d.id.clone()).collect(),
            iat: self.now.unix_timestamp(),
            exp: self.expires_at.unix_timestamp(),
            title: self.title.clone(),
            details: self.details.clone(),
            context: self.context.clone(),
            number_choices: choices,
        };
        let row = ChallengeRow {
            factor: "push".to_owned(),
            number: number.map(i64::from),
            jws: Some(state.server_key.sign(JwsType::Challenge, &claims)?),
            expires_at: to_millis(self.expires_at),
            ..self.row.clone()
        };
        Ok((row, number))
    }

    /// The audit event of a push challenge's creation.
    fn created_event(&self, devices: usize) -> Result<audit::Entry<'_>> {
        let data = serde_json::json!({ "challenge_id": self.row.id, "factor": "push", "devices": devices });
        audit::Entry::new(self.now, "challenge.created", Some(self.user_id()), &self.actor, &data)
    }

    fn push_created(&self, number: Option<u8>) -> ChallengeCreated {
        ChallengeCreated {
            id: self.row.id.clone(),
            status: "pending".to_owned(),
            factor: "push".to_owned(),
            expires_at: self.expires_at,
            number,
            destination: None,
        }
    }
}

/// One delivery per device: pending when it can be woken by push, otherwise not sent.
fn deliveries_to(devices: &[store::devices::DeviceRow]) -> Vec<NewDelivery<'_>> {
    devices
        .iter()
        .map(|device| NewDelivery {
            device_id: &device.id,
            provider: &device.push_provider,
            status: if device.push_provider == "none" || device.push_token.is_none() { "not_sent" } else { "pending" },
        })
        .collect()
}

/// The common case without a lock: a push challenge to a user who has a device, within the
/// anti-fatigue limit, with nothing pending to supersede and push not locked. It is read in
/// one snapshot and stored only if the user's `challenge_seq` has not moved since
/// ([`store::challenges::insert_unless_changed`]). `None` when the case does not hold or the
/// snapshot went stale: [`create_locked`] then decides.
async fn create_push_unlocked(
    state: &AppState,
    draft: &Draft,
    check: &mut KeyCheck<'_>,
) -> Result<Option<ChallengeCreated>> {
    let (since, limit, now) = (draft.window_start(), i64::from(draft.limit), draft.row.created_at);
    let reader = state.store.reader();
    let snapshot = match check.to_read() {
        Some(key_id) => {
            let read = store::challenges::push_snapshot_and_key(reader, draft.user_id(), since, limit, now, key_id);
            let Some((snapshot, key)) = read.await? else { return Ok(None) };
            check.on(key.as_ref())?;
            snapshot
        }
        None => {
            let read = store::challenges::push_snapshot(reader, draft.user_id(), since, limit, now).await?;
            let Some(snapshot) = read else { return Ok(None) };
            snapshot
        }
    };
    if snapshot.push_locked
        || snapshot.recent.len() >= draft.limit as usize
        || snapshot.recent.iter().any(|r| r.live_pending)
    {
        return Ok(None);
    }
    let (row, number) = draft.seal_push(state, &snapshot.devices)?;
    let deliveries = deliveries_to(&snapshot.devices);
    let created = draft.created_event(snapshot.devices.len())?;
    let stored =
        store::challenges::insert_unless_changed(&state.store, snapshot.seq, &row, &deliveries, &created.row()).await;
    match stored {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => return replay_if_raced(state, &row, e).await.map(Some),
    }
    if deliveries.iter().any(|d| d.status == "pending") {
        state.wake.push.notify_one();
    }
    Ok(Some(draft.push_created(number)))
}

/// Creates a challenge with the user's row locked: every code, and every push challenge
/// [`create_push_unlocked`] left alone (one that supersedes, is refused, or lost a race).
async fn create_locked(
    state: &AppState,
    draft: Draft,
    channel: Channel,
    ttl_seconds: Option<i64>,
) -> Result<ChallengeCreated> {
    let now = draft.now;
    let now_ms = draft.row.created_at;
    let user_id = draft.user_id();
    let mut tx = state.store.begin().await?;
    let store::challenges::LockedUser { user, push_locked_at: locked } =
        store::challenges::lock_user(&mut tx, user_id).await?.ok_or(Error::NotFound("user"))?;
    let limit = draft.limit;
    let snapshot =
        store::challenges::push_snapshot(&mut tx, user_id, draft.window_start(), i64::from(limit), now_ms).await?;
    let (devices, recent) = snapshot.map(|s| (s.devices, s.recent)).unwrap_or_default();
    let factor = choose_factor(state, channel, !devices.is_empty(), &user)?;
    if let Factor::Otp(channel, destination) = factor {
        // A code lives 5 minutes; a shorter ttl_seconds shortens it.
        let lifetime = ttl_seconds.map_or(otp::CODE_TTL_SECS, |t| t.min(otp::CODE_TTL_SECS));
        let row = ChallengeRow {
            factor: channel.as_str().to_owned(),
            expires_at: to_millis(now + Duration::seconds(lifetime)),
            ..draft.row
        };
        return crate::fallback::create(state, tx, row, channel, destination).await;
    }

    if locked.is_some() {
        return Err(Error::conflict(
            "push_locked",
            "push is locked for this user after a fraud report; unlock the user first",
        ));
    }
    if recent.len() >= limit as usize {
        // The oldest of the last `limit` leaves the window first.
        let oldest = recent.last().map_or(now_ms, |r| r.created_at);
        let free_at = oldest + i64::try_from(FATIGUE_WINDOW.whole_milliseconds()).unwrap_or(600_000);
        let retry_after = u64::try_from((free_at - now_ms + 999) / 1000).unwrap_or(1).max(1);
        return Err(Error::RateLimited {
            retry_after,
            detail: format!("at most {limit} push challenges per user per 10 minutes"),
        });
    }
    // A live push challenge is at most 10 minutes old (ttl_seconds <= 600), so it is among the
    // window's challenges just read: without one there is nothing to supersede.
    let superseded = if recent.iter().any(|r| r.live_pending) {
        store::challenges::supersede_pending_push(&mut tx, user_id, now_ms).await?
    } else {
        Vec::new()
    };

    let (row, number) = draft.seal_push(state, &devices)?;
    let deliveries = deliveries_to(&devices);
    record_superseded(state, &mut tx, now, user_id, &draft.actor, &superseded, &row.id).await?;
    let created = draft.created_event(devices.len())?;
    if let Some(replayed) = insert_or_replay(state, &mut tx, &row, &deliveries, Some(&created.row())).await? {
        return Ok(replayed);
    }
    tx.commit().await?;
    for old in &superseded {
        state.wake.challenge_changed(old);
    }
    if deliveries.iter().any(|d| d.status == "pending") {
        state.wake.push.notify_one();
    }
    Ok(draft.push_created(number))
}

/// Inserts a new challenge. When a concurrent request with the same idempotency key won the
/// race, answers as that one did (the caller then drops its transaction).
pub(crate) async fn insert_or_replay(
    state: &AppState,
    tx: &mut Tx,
    row: &ChallengeRow,
    deliveries: &[NewDelivery<'_>],
    event: Option<&store::events::NewEvent<'_>>,
) -> Result<Option<ChallengeCreated>> {
    match store::challenges::insert(tx, row, deliveries, event).await {
        Ok(()) => Ok(None),
        Err(e) => replay_if_raced(state, row, e).await.map(Some),
    }
}

/// The answer to a failed insert of `row`: when it lost the race to a concurrent request with
/// the same idempotency key, that request's answer; otherwise the error.
async fn replay_if_raced(state: &AppState, row: &ChallengeRow, e: Error) -> Result<ChallengeCreated> {
    let raced = matches!(&e, Error::Database(db) if db.is_unique_violation());
    if let (Some(key), true) = (row.idempotency_key.as_deref(), raced) {
        let existing = store::challenges::by_idempotency_key(state.store.reader(), &row.api_key_id, key).await?;
        return replay(state, existing.ok_or(e)?, row.request_hash.as_deref().unwrap_or_default()).await;
    }
    Err(e)
}

/// Records the cancellation of challenges a new one replaced.
pub(crate) async fn record_superseded(
    state: &AppState,
    tx: &mut Tx,
    now: OffsetDateTime,
    user_id: &str,
    actor: &Actor,
    superseded: &[String],
    by: &str,
) -> Result<()> {
    for old in superseded {
        audit::record(
            tx,
            now,
            "challenge.cancelled",
            Some(user_id),
            actor,
            serde_json::json!({ "challenge_id": old, "reason": "superseded", "by": by }),
        )
        .await?;
        state.store.notify_challenge(tx, old).await?;
    }
    Ok(())
}

async fn replay(state: &AppState, existing: ChallengeRow, request_hash: &str) -> Result<ChallengeCreated> {
    if existing.request_hash.as_deref() != Some(request_hash) {
        return Err(Error::conflict("idempotency_conflict", "this Idempotency-Key was used with a different request"));
    }
    // The first answer was that no provider took the code: a retry gets the same answer.
    if existing.reason.as_deref() == Some("delivery_failed") {
        return Err(Error::DeliveryFailed {
            detail: "no provider accepted the code for this challenge (an earlier request with this Idempotency-Key)"
                .into(),
            challenge_id: Some(existing.id),
        });
    }
    let destination = match existing.factor.as_str() {
        "push" => None,
        _ => store::otp::get(state.store.reader(), &existing.id).await?.map(|o| mask(&o.channel, &o.destination)),
    };
    Ok(ChallengeCreated {
        id: existing.id,
        status: "pending".to_owned(),
        factor: existing.factor,
        expires_at: from_millis(existing.expires_at),
        number: existing.number.and_then(|n| u8::try_from(n).ok()),
        destination,
    })
}

/// The masked form of a destination.
pub(crate) fn mask(channel: &str, destination: &str) -> String {
    match channel {
        "sms" => otp::mask_phone(destination),
        _ => otp::mask_email(destination),
    }
}

/// Loads a challenge, first expiring it if its time is up.
pub(crate) async fn load(state: &AppState, id: &str) -> Result<ChallengeRow> {
    let row = store::challenges::get(state.store.reader(), id).await?.ok_or(Error::NotFound("challenge"))?;
    expire_if_due(state, row).await
}

/// [`load`] with the challenge's deliveries, read in the same statement.
async fn load_with_deliveries(
    state: &AppState,
    id: &str,
) -> Result<(ChallengeRow, Vec<store::challenges::DeliveryRow>)> {
    let read = store::challenges::get_with_deliveries(state.store.reader(), id).await?;
    expiry_applied(state, id, read).await
}

/// The challenge `id` as read (`None`: there is none), or read again once its expiry, if
/// due and not yet recorded, is applied.
async fn expiry_applied(
    state: &AppState,
    id: &str,
    read: Option<(ChallengeRow, Vec<store::challenges::DeliveryRow>)>,
) -> Result<(ChallengeRow, Vec<store::challenges::DeliveryRow>)> {
    let (row, deliveries) = read.ok_or(Error::NotFound("challenge"))?;
    if expiry_due(state, &row) {
        expire_due(state, Some(&row.id)).await?;
        return store::challenges::get_with_deliveries(state.store.reader(), id)
            .await?
            .ok_or(Error::NotFound("challenge"));
    }
    Ok((row, deliveries))
}

/// Whether `row` is still pending although its time is up (its expiry not yet recorded).
fn expiry_due(state: &AppState, row: &ChallengeRow) -> bool {
    row.status == "pending" && row.expires_at <= to_millis(state.now())
}

/// `row` as it stands once its expiry, if due and not yet recorded, is applied.
async fn expire_if_due(state: &AppState, row: ChallengeRow) -> Result<ChallengeRow> {
    if expiry_due(state, &row) {
        expire_due(state, Some(&row.id)).await?;
        return store::challenges::get(state.store.reader(), &row.id).await?.ok_or(Error::NotFound("challenge"));
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

pub(crate) async fn view(state: &AppState, row: ChallengeRow) -> Result<ChallengeView> {
    let deliveries = store::challenges::deliveries(state.store.reader(), &row.id).await?;
    view_with(state, row, deliveries).await
}

/// The RP's view of a challenge whose deliveries were read with it.
async fn view_with(
    state: &AppState,
    row: ChallengeRow,
    deliveries: Vec<store::challenges::DeliveryRow>,
) -> Result<ChallengeView> {
    let otp = match row.factor.as_str() {
        "push" => None,
        _ => store::otp::get(state.store.reader(), &row.id).await?.map(|o| OtpStatus {
            channel: o.channel.clone(),
            destination: mask(&o.channel, &o.destination),
            delivery: match (&o.provider, &o.delivery_error) {
                (Some(_), _) => "sent",
                (None, Some(_)) => "failed",
                (None, None) => "sending",
            }
            .to_owned(),
            provider: o.provider,
            message_id: o.message_id,
            last_sent_at: from_millis(o.last_sent_at),
            attempts_remaining: u32::try_from(otp::MAX_FAILED_ATTEMPTS - o.failed_attempts).unwrap_or(0),
            resends_remaining: u32::try_from(otp::MAX_RESENDS - o.resends).unwrap_or(0),
        }),
    };
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
        otp,
        deliveries: deliveries
            .into_iter()
            .map(|d| Delivery { device_id: d.device_id, provider: d.provider, status: d.status, error: d.error })
            .collect(),
    })
}

/// Reads a challenge for an RP; with `wait`, holds the request until it leaves `pending`, it
/// expires, or `wait` seconds (at most 30) pass.
///
/// `caller`'s key is checked in the statement of the first read, before anything is answered.
pub async fn get(state: &AppState, caller: &ApiKeyClaim, id: &str, wait: Option<u64>) -> Result<ChallengeView> {
    // Subscribe before reading, so a decision between the read and the wait is not missed.
    let changes = state.wake.subscribe();
    let (key, read) = store::challenges::get_with_deliveries_and_key(state.store.reader(), id, &caller.id).await?;
    caller.check(key.as_ref())?;
    let first = expiry_applied(state, id, read).await?;
    held(state, id, wait, changes, first).await
}

/// [`get`] for a caller the server authenticated otherwise (the demo's signed-in user).
pub async fn get_unkeyed(state: &AppState, id: &str, wait: Option<u64>) -> Result<ChallengeView> {
    let changes = state.wake.subscribe();
    let first = load_with_deliveries(state, id).await?;
    held(state, id, wait, changes, first).await
}

/// The view of a challenge first read as `first`: at once, or, with `wait` and the challenge
/// pending, once `changes` announces it changed (read again then) or the time is up.
async fn held(
    state: &AppState,
    id: &str,
    wait: Option<u64>,
    mut changes: tokio::sync::broadcast::Receiver<String>,
    first: (ChallengeRow, Vec<store::challenges::DeliveryRow>),
) -> Result<ChallengeView> {
    let wait = StdDuration::from_secs(wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let (mut row, mut deliveries) = first;
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
            (row, deliveries) = load_with_deliveries(state, id).await?;
            if row.status != "pending" || tokio::time::Instant::now() >= deadline {
                break;
            }
        }
    }
    view_with(state, row, deliveries).await
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
    if !store::challenges::decide(&mut tx, &Verdict::by_server(id, "cancelled", None, to_millis(now))).await? {
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
///
/// The request's proof is recorded in the statement that reads the challenge
/// ([`store::challenges::get_addressed_to_with_proof`]).
pub async fn one_for_device(state: &AppState, proof: &VerifiedProof, id: &str) -> Result<DeviceChallenge> {
    let row = store::challenges::get_addressed_to_with_proof(&state.store, &proof.to_use(), id)
        .await??
        .ok_or(Error::NotFound("challenge"))?;
    let row = answerable(state, row).await?;
    let fetched = Fetched::of(&row, &proof.device_id);
    state.fetched.keep(&row.id, fetched, to_millis(state.now()));
    Ok(DeviceChallenge { id: row.id, jws: row.jws.unwrap_or_default() })
}

/// What a device's answer is checked against, kept from the challenge as the device fetched
/// it. None of it changes once the challenge exists, so the copy is as good as a read; whether
/// the challenge can still be answered is for the decision's conditional UPDATE to say.
#[derive(Debug, Clone)]
struct Fetched {
    device_id: String,
    user_id: String,
    /// `chash` of the challenge JWS.
    chash: String,
    number: Option<i64>,
    expires_at: i64,
}

impl Fetched {
    fn of(row: &ChallengeRow, device_id: &str) -> Self {
        Fetched {
            device_id: device_id.to_owned(),
            user_id: row.user_id.clone(),
            chash: challenge_hash(row.jws.as_deref().unwrap_or_default()),
            number: row.number,
            expires_at: row.expires_at,
        }
    }
}

/// Challenges a device fetched and has not answered yet, by challenge id, so its answer
/// needs no second read of the challenge. Bounded: when full, expired entries go, and if
/// that is not enough the cache starts over (a miss only costs the read).
#[derive(Debug, Default)]
pub struct FetchedChallenges(Mutex<HashMap<String, Fetched>>);

impl FetchedChallenges {
    /// Entries kept at most (about 250 bytes each).
    pub const CAPACITY: usize = 10_000;

    fn keep(&self, challenge_id: &str, fetched: Fetched, now: i64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= Self::CAPACITY {
            map.retain(|_, f| f.expires_at > now);
            if map.len() >= Self::CAPACITY {
                map.clear();
            }
        }
        map.insert(challenge_id.to_owned(), fetched);
    }

    /// The entry the device left when it fetched the challenge, removed.
    fn take(&self, challenge_id: &str, device_id: &str) -> Option<Fetched> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(challenge_id) {
            Some(f) if f.device_id == device_id => map.remove(challenge_id),
            _ => None,
        }
    }
}

async fn load_for_device(state: &AppState, device_id: &str, id: &str) -> Result<ChallengeRow> {
    let row = store::challenges::get_addressed_to(state.store.reader(), id, device_id)
        .await?
        .ok_or(Error::NotFound("challenge"))?;
    answerable(state, row).await
}

/// `row`, if it can still be answered: pending and not expired.
async fn answerable(state: &AppState, row: ChallengeRow) -> Result<ChallengeRow> {
    let row = expire_if_due(state, row).await?;
    match row.status.as_str() {
        "pending" => Ok(row),
        "expired" => Err(Error::gone("challenge_expired", "the challenge expired")),
        other => Err(Error::conflict("already_decided", format!("the challenge is {other}"))),
    }
}

/// Verifies and applies a device's signed answer (DESIGN section 4, step 5), exactly once.
///
/// The request's proof is recorded in the commit of the decision, so an answer costs one
/// commit; an answer refused before that records the proof on its own.
pub async fn respond(state: &AppState, proof: &VerifiedProof, id: &str, response: &str) -> Result<ResponseOutcome> {
    let answer = match check_answer(state, proof, id, response).await {
        Ok(answer) => answer,
        Err(e) => {
            proof.record(state).await?;
            return Err(e);
        }
    };
    let now = state.now();
    let device_id = proof.device_id.as_str();
    let (status, reason) = answer.verdict();
    let verdict = Verdict {
        id,
        status,
        reason,
        now: to_millis(now),
        device_id: Some(device_id),
        evidence: Some(response),
        user_verified: Some(answer.claims.uv),
    };
    let actor = Actor::Device(device_id.to_owned());
    let kind = format!("challenge.{status}");
    let mut data = serde_json::json!({ "challenge_id": id, "status": status, "device_id": device_id, "user_verified": answer.claims.uv });
    if let Some(reason) = reason {
        data["reason"] = reason.into();
    }
    // The common answer (no fraud lock, no webhook to queue) is one write the store can
    // commit in a single round trip; the rest takes a transaction.
    let fraud = answer.claims.decision == Decision::Fraud;
    let (answered, queued) = if !fraud && !state.config.webhooks.iter().any(|e| e.wants(&kind)) {
        let event = audit::Entry::new(now, &kind, Some(&answer.challenge.user_id), &actor, &data)?;
        (store::challenges::decide_answer(&state.store, &proof.to_use(), &verdict, &event.row()).await?, false)
    } else {
        decide_with_consequences(state, proof, &verdict, &answer, &actor, &kind, data).await?
    };
    match answered {
        Answered::Decided => {}
        Answered::ProofRefused(refused) => return Err(refused.into()),
        Answered::NotPending => {
            let row = load(state, id).await?;
            return Err(match row.status.as_str() {
                "expired" => Error::gone("challenge_expired", "the challenge expired"),
                other => Error::conflict("already_decided", format!("the challenge is {other}")),
            });
        }
    }
    state.wake.challenge_changed(id);
    if queued {
        state.wake.outbox.notify_one();
    }
    Ok(ResponseOutcome { id: id.to_owned(), status: status.to_owned() })
}

/// A device's answer that checked out, not yet applied.
struct Answer {
    claims: ResponseClaims,
    challenge: Fetched,
}

impl Answer {
    /// The status the answer moves the challenge to, and why when the status alone does not say.
    fn verdict(&self) -> (&'static str, Option<&'static str>) {
        match self.claims.decision {
            Decision::Approve => match self.challenge.number {
                Some(expected) if self.claims.number.map(i64::from) != Some(expected) => {
                    ("denied", Some("number_mismatch"))
                }
                _ => ("approved", None),
            },
            Decision::Deny => ("denied", None),
            Decision::Fraud => ("fraud_reported", None),
        }
    }
}

/// Checks a device's signed answer against the challenge it fetched; writes nothing, unless
/// the challenge had to be read and turned out to be past its time.
async fn check_answer(state: &AppState, proof: &VerifiedProof, id: &str, response: &str) -> Result<Answer> {
    let bad = |e: assent_protocol::Error| Error::bad_request("invalid_response", e.to_string());
    let unverified = jws::decode(response, JwsType::Response).map_err(bad)?;
    if unverified.header().kid() != Some(proof.device_id.as_str()) {
        return Err(Error::bad_request("invalid_response", "the response kid is not this device"));
    }
    let verified = unverified.verify(&proof.key).map_err(bad)?;
    let claims: ResponseClaims = verified.claims().map_err(bad)?;
    if claims.jti != id {
        return Err(Error::bad_request("invalid_response", "the response is for another challenge"));
    }
    if !within_clock_skew(claims.iat, state.now().unix_timestamp()) {
        return Err(Error::bad_request("stale_response", "iat is more than 60 seconds from the server's time"));
    }
    // The phone fetched the challenge before answering; usually from this server.
    let challenge = match state.fetched.take(id, &proof.device_id) {
        Some(fetched) => fetched,
        None => Fetched::of(&load_for_device(state, &proof.device_id, id).await?, &proof.device_id),
    };
    if claims.chash != challenge.chash {
        return Err(Error::invalid(
            "chash_mismatch",
            "the response does not cover this challenge as the server signed it",
        ));
    }
    Ok(Answer { claims, challenge })
}

/// Applies a device's verdict in a transaction with the request's proof and what follows
/// from the verdict: webhook messages, and the user's push lock after a fraud report. Also
/// says whether a webhook was queued.
async fn decide_with_consequences(
    state: &AppState,
    proof: &VerifiedProof,
    verdict: &Verdict<'_>,
    answer: &Answer,
    actor: &Actor,
    kind: &str,
    data: serde_json::Value,
) -> Result<(Answered, bool)> {
    let mut tx = state.store.begin().await?;
    if let Err(refused) = store::devices::record_proof(&mut tx, &proof.to_use()).await? {
        return Ok((Answered::ProofRefused(refused), false));
    }
    if !store::challenges::decide(&mut tx, verdict).await? {
        tx.commit().await?;
        return Ok((Answered::NotPending, false));
    }
    let now = from_millis(verdict.now);
    let webhooks = &state.config.webhooks;
    let user_id = answer.challenge.user_id.as_str();
    let mut queued = audit::publish(&mut tx, webhooks, now, kind, Some(user_id), actor, data).await?;
    if answer.claims.decision == Decision::Fraud
        && store::challenges::set_push_lock(&mut tx, user_id, Some(verdict.now)).await?
    {
        let data = serde_json::json!({ "reason": "fraud_reported", "challenge_id": verdict.id });
        queued |= audit::publish(&mut tx, webhooks, now, "user.locked", Some(user_id), actor, data).await?;
    }
    state.store.notify_challenge(&mut tx, verdict.id).await?;
    tx.commit().await?;
    Ok((Answered::Decided, queued))
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
