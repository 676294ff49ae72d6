//! The fallback for users without a device (DESIGN section 5): a one-time code by SMS or
//! email, verified by the RP, resent on request, bounded by attempts, resends, cooldowns and
//! the toll-fraud limits.

use serde::Deserialize;
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

use crate::audit::{self, Actor};
use crate::challenges::{self, ChallengeCreated, ChallengeView};
use crate::clock::{from_millis, to_millis};
use crate::config::Config;
use crate::email::{self, EmailProvider};
use crate::error::{Error, Result};
use crate::limits::{self, Limit};
use crate::otp::{self, Pepper};
use crate::sms::{self, Delivered, SmsChain};
use crate::state::AppState;
use crate::store::challenges::{ChallengeRow, Verdict};
use crate::store::{self, Tx, otp::OtpRow};

/// The senders and the pepper, built once at start.
#[derive(Debug)]
pub struct Fallback {
    /// The HMAC key codes are kept under.
    pub pepper: Pepper,
    /// SMS providers in failover order (empty: no SMS).
    pub sms: SmsChain,
    /// The email provider (none: no email).
    pub email: Option<Box<dyn EmailProvider>>,
}

impl Fallback {
    /// Checks the fallback configuration and builds the senders; loads or creates the pepper.
    pub fn from_config(config: &Config) -> Result<Self> {
        otp::validate_templates(config)?;
        if config.app_name.trim().is_empty() || config.app_name.chars().any(char::is_control) {
            return Err(Error::internal("app_name must be a non-empty, printable name"));
        }
        Ok(Fallback {
            pepper: Pepper::load_or_create(config)?,
            sms: SmsChain::from_config(config)?,
            email: email::from_config(config)?,
        })
    }
}

/// How a code travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpChannel {
    /// Text message.
    Sms,
    /// Email.
    Email,
}

impl OtpChannel {
    /// `sms` or `email`, as stored in `challenges.factor`.
    pub fn as_str(self) -> &'static str {
        match self {
            OtpChannel::Sms => "sms",
            OtpChannel::Email => "email",
        }
    }

    fn from_factor(factor: &str) -> Option<Self> {
        match factor {
            "sms" => Some(OtpChannel::Sms),
            "email" => Some(OtpChannel::Email),
            _ => None,
        }
    }
}

/// `POST /v1/challenges/{id}/verify`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyCode {
    /// The six digits the user typed (spaces and dashes are ignored).
    #[schema(example = "123456")]
    pub code: String,
}

/// The toll-fraud guard for a destination: which limits a send counts against, after the
/// checks that need no counting (SMS: region allowlist, number type).
fn guard(config: &Config, channel: OtpChannel, destination: &str) -> Result<Vec<Limit>> {
    Ok(match channel {
        OtpChannel::Sms => {
            let checked = sms::check_number(&config.sms, destination)?;
            limits::sms(&config.sms.limits, &checked.e164, checked.calling_code)
        }
        OtpChannel::Email => limits::email(&config.email.limits, destination),
    })
}

/// Sends a code through the channel's providers.
async fn deliver(state: &AppState, channel: OtpChannel, destination: &str, code: &str) -> Result<Delivered> {
    let config = &state.config;
    match channel {
        OtpChannel::Sms => sms::send(state, destination, &otp::sms_text(config, code)).await,
        OtpChannel::Email => {
            let subject = otp::render(&config.email.subject, &config.app_name, code);
            let body = otp::render(&config.email.template, &config.app_name, code);
            email::send(state, destination, &subject, &body).await
        }
    }
}

/// Creates an SMS or email challenge within the transaction `challenges::create` opened (the
/// user row is locked), sends the code after commit, and records who delivered it.
pub(crate) async fn create(
    state: &AppState,
    mut tx: Tx,
    row: ChallengeRow,
    channel: OtpChannel,
    destination: String,
) -> Result<ChallengeCreated> {
    let now = state.now();
    let now_ms = to_millis(now);
    let limits = guard(&state.config, channel, &destination)?;
    // One pending code per user: a new one replaces the old.
    let superseded = store::challenges::supersede_pending_otp(&mut tx, &row.user_id, now_ms).await?;
    limits::check_and_count(&mut tx, now, &limits).await?;

    let code = otp::new_code();
    if let Some(replayed) = challenges::insert_or_replay(state, &mut tx, &row, &[], None).await? {
        return Ok(replayed);
    }
    store::otp::insert(
        &mut tx,
        &OtpRow {
            challenge_id: row.id.clone(),
            channel: channel.as_str().to_owned(),
            destination: destination.clone(),
            code_hash: state.fallback.pepper.hash(&row.id, &code)?,
            code_ttl: row.expires_at - now_ms,
            failed_attempts: 0,
            resends: 0,
            last_sent_at: now_ms,
            provider: None,
            message_id: None,
            delivery_error: None,
            used_at: None,
        },
    )
    .await?;
    let actor = Actor::ApiKey(row.api_key_id.clone());
    let masked = challenges::mask(channel.as_str(), &destination);
    challenges::record_superseded(state, &mut tx, now, &row.user_id, &actor, &superseded, &row.id).await?;
    audit::record(
        &mut tx,
        now,
        "challenge.created",
        Some(&row.user_id),
        &actor,
        serde_json::json!({ "challenge_id": row.id, "factor": channel.as_str(), "to": masked }),
    )
    .await?;
    tx.commit().await?;
    for old in &superseded {
        state.wake.challenge_changed(old);
    }

    match deliver(state, channel, &destination, &code).await {
        Ok(delivered) => {
            record_delivery(state, &row.id, Ok(&delivered)).await?;
            Ok(ChallengeCreated {
                id: row.id,
                status: "pending".to_owned(),
                factor: channel.as_str().to_owned(),
                expires_at: from_millis(row.expires_at),
                number: None,
                destination: Some(masked),
            })
        }
        Err(e) => {
            // Nobody got the code: the challenge cannot succeed, so it ends now.
            let detail = delivery_detail(&e);
            record_delivery(state, &row.id, Err(&detail)).await?;
            fail(state, &row.id, &row.user_id, channel, "delivery_failed", &Actor::System).await?;
            Err(Error::DeliveryFailed { detail, challenge_id: Some(row.id) })
        }
    }
}

fn delivery_detail(e: &Error) -> String {
    match e {
        Error::DeliveryFailed { detail, .. } => detail.clone(),
        Error::Internal(_) | Error::Database(_) => {
            tracing::error!(error = %e, "sending a code failed");
            "sending the code failed; the error was logged".to_owned()
        }
        other => other.to_string(),
    }
}

async fn record_delivery(
    state: &AppState,
    challenge_id: &str,
    outcome: std::result::Result<&Delivered, &str>,
) -> Result<()> {
    let mut tx = state.store.begin().await?;
    match outcome {
        Ok(d) => {
            store::otp::record_delivery(&mut tx, challenge_id, Some(&d.provider), Some(&d.message_id), None).await?
        }
        Err(error) => store::otp::record_delivery(&mut tx, challenge_id, None, None, Some(error)).await?,
    }
    tx.commit().await?;
    Ok(())
}

/// Ends a pending code challenge as `failed` with `reason`, recording `challenge.failed`.
async fn fail(
    state: &AppState,
    id: &str,
    user_id: &str,
    channel: OtpChannel,
    reason: &str,
    actor: &Actor,
) -> Result<()> {
    let now = state.now();
    let mut tx = state.store.begin().await?;
    let queued = fail_in(state, &mut tx, now, id, user_id, channel, reason, actor).await?;
    tx.commit().await?;
    after_decision(state, id, queued);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn fail_in(
    state: &AppState,
    tx: &mut Tx,
    now: OffsetDateTime,
    id: &str,
    user_id: &str,
    channel: OtpChannel,
    reason: &str,
    actor: &Actor,
) -> Result<bool> {
    if !store::challenges::decide(tx, &Verdict::by_server(id, "failed", Some(reason), to_millis(now))).await? {
        return Ok(false);
    }
    let queued = audit::publish(
        tx,
        &state.config.webhooks,
        now,
        "challenge.failed",
        Some(user_id),
        actor,
        serde_json::json!({ "challenge_id": id, "status": "failed", "reason": reason, "factor": channel.as_str() }),
    )
    .await?;
    state.store.notify_challenge(tx, id).await?;
    Ok(queued)
}

fn after_decision(state: &AppState, id: &str, queued: bool) {
    state.wake.challenge_changed(id);
    if queued {
        state.wake.outbox.notify_one();
    }
}

/// The challenge, if it is a pending code challenge; the usual problems otherwise.
async fn load_pending(state: &AppState, id: &str) -> Result<(ChallengeRow, OtpChannel)> {
    let row = challenges::load(state, id).await?;
    let channel = OtpChannel::from_factor(&row.factor).ok_or_else(|| {
        Error::conflict("wrong_factor", "this is a push challenge: the phone answers it, no code is involved")
    })?;
    pending_or_problem(&row)?;
    Ok((row, channel))
}

fn pending_or_problem(row: &ChallengeRow) -> Result<()> {
    match row.status.as_str() {
        "pending" => Ok(()),
        "expired" => Err(Error::gone("challenge_expired", "the challenge expired; create a new one")),
        other => Err(Error::conflict("already_decided", format!("the challenge is {other}"))),
    }
}

/// Locks the code row and re-reads the challenge inside the transaction: it must still be
/// pending and unexpired.
async fn lock_pending(tx: &mut Tx, id: &str, now_ms: i64) -> Result<(ChallengeRow, OtpRow)> {
    let code = store::otp::lock(tx, id).await?.ok_or_else(|| Error::internal(format!("{id} has no code row")))?;
    let row = store::challenges::get(&mut *tx, id).await?.ok_or(Error::NotFound("challenge"))?;
    if row.status == "pending" && row.expires_at <= now_ms {
        return Err(Error::gone("challenge_expired", "the challenge expired; create a new one"));
    }
    pending_or_problem(&row)?;
    Ok((row, code))
}

/// Checks a code the user typed (DESIGN section 5). Right: the challenge is approved, the
/// destination it went to is verified, and the code is spent. Wrong: `invalid_code` with the
/// tries left; the fifth wrong code fails the challenge.
pub async fn verify(state: &AppState, id: &str, input: &str, actor: &Actor) -> Result<ChallengeView> {
    let (_, channel) = load_pending(state, id).await?;
    let now = state.now();
    let now_ms = to_millis(now);
    let mut tx = state.store.begin().await?;
    let (row, code_row) = lock_pending(&mut tx, id, now_ms).await?;
    let right = match otp::normalize_code(input) {
        Some(code) => state.fallback.pepper.verify(id, &code, &code_row.code_hash)?,
        None => false,
    };
    if !right {
        let failures = store::otp::count_failure(&mut tx, id).await?;
        let remaining = u32::try_from(otp::MAX_FAILED_ATTEMPTS - failures).unwrap_or(0);
        let mut queued = false;
        if remaining == 0 {
            queued = fail_in(state, &mut tx, now, id, &row.user_id, channel, "too_many_attempts", actor).await?;
        }
        tx.commit().await?;
        if remaining == 0 {
            after_decision(state, id, queued);
        }
        return Err(Error::InvalidCode { attempts_remaining: remaining });
    }

    if !store::challenges::decide(&mut tx, &Verdict::by_server(id, "approved", None, now_ms)).await? {
        return Err(Error::conflict("already_decided", "the challenge was decided meanwhile"));
    }
    store::otp::mark_used(&mut tx, id, now_ms).await?;
    let queued = audit::publish(
        &mut tx,
        &state.config.webhooks,
        now,
        "challenge.approved",
        Some(&row.user_id),
        actor,
        serde_json::json!({ "challenge_id": id, "status": "approved", "factor": channel.as_str() }),
    )
    .await?;
    // The code reached whoever typed it: the destination is proven, if it is still on file.
    if store::otp::verify_destination(&mut tx, &row.user_id, channel.as_str(), &code_row.destination).await? {
        let kind = match channel {
            OtpChannel::Sms => "user.phone_verified",
            OtpChannel::Email => "user.email_verified",
        };
        audit::record(
            &mut tx,
            now,
            kind,
            Some(&row.user_id),
            actor,
            serde_json::json!({ "challenge_id": id, "to": challenges::mask(channel.as_str(), &code_row.destination) }),
        )
        .await?;
    }
    state.store.notify_challenge(&mut tx, id).await?;
    tx.commit().await?;
    after_decision(state, id, queued);
    challenges::view(state, challenges::load(state, id).await?).await
}

/// Sends a new code for a pending challenge (the old one stops working, and the new one
/// lives 5 minutes): at most [`otp::MAX_RESENDS`] times, [`otp::RESEND_COOLDOWN_SECS`] apart,
/// and within the destination's send limits.
pub async fn resend(state: &AppState, id: &str, actor: &Actor) -> Result<ChallengeView> {
    let (_, channel) = load_pending(state, id).await?;
    let now = state.now();
    let now_ms = to_millis(now);
    let mut tx = state.store.begin().await?;
    let (row, code_row) = lock_pending(&mut tx, id, now_ms).await?;
    if code_row.resends >= otp::MAX_RESENDS {
        return Err(Error::LimitReached {
            code: "resend_limit",
            detail: format!("a code is resent at most {} times; create a new challenge", otp::MAX_RESENDS),
        });
    }
    let free_at = code_row.last_sent_at + otp::RESEND_COOLDOWN_SECS * 1000;
    if now_ms < free_at {
        return Err(Error::RateLimited {
            retry_after: u64::try_from((free_at - now_ms + 999) / 1000).unwrap_or(1).max(1),
            detail: format!("wait {} seconds between sends", otp::RESEND_COOLDOWN_SECS),
        });
    }
    let limits = guard(&state.config, channel, &code_row.destination)?;
    limits::check_and_count(&mut tx, now, &limits).await?;
    let code = otp::new_code();
    store::otp::replace_code(&mut tx, id, &state.fallback.pepper.hash(id, &code)?, now_ms).await?;
    let expires_at = now + Duration::milliseconds(code_row.code_ttl);
    if !store::challenges::extend(&mut tx, id, now_ms, to_millis(expires_at)).await? {
        return Err(Error::conflict("already_decided", "the challenge was decided meanwhile"));
    }
    audit::record(
        &mut tx,
        now,
        "challenge.resent",
        Some(&row.user_id),
        actor,
        serde_json::json!({
            "challenge_id": id,
            "resend": code_row.resends + 1,
            "to": challenges::mask(channel.as_str(), &code_row.destination),
        }),
    )
    .await?;
    tx.commit().await?;

    match deliver(state, channel, &code_row.destination, &code).await {
        Ok(delivered) => record_delivery(state, id, Ok(&delivered)).await?,
        Err(e) => {
            // The challenge stays pending: a later resend may reach the user.
            let detail = delivery_detail(&e);
            record_delivery(state, id, Err(&detail)).await?;
            return Err(Error::DeliveryFailed { detail, challenge_id: Some(id.to_owned()) });
        }
    }
    challenges::view(state, challenges::load(state, id).await?).await
}
