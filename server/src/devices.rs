//! Devices: enrollment by QR token and proof of possession, device-signed requests,
//! push registration, revocation.

use std::collections::HashMap;
use std::sync::Mutex;

use assent_protocol::jwk::EcPublicJwk;
use assent_protocol::jws::{self, JwsType};
use assent_protocol::messages::{
    EnrollClaims, EnrollResponse, MAX_CLOCK_SKEW_SECS, ProofClaims, PushProvider, PushTokenUpdate,
    parse_proof_authorization, within_clock_skew,
};
use assent_protocol::{EnrollUri, p256::ecdsa::VerifyingKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

use crate::audit::{self, Actor};
use crate::clock::{from_millis, to_millis};
use crate::error::{Error, Result};
use crate::ids::{IdKind, new_id, random_bytes};
use crate::state::AppState;
use crate::store::{self, devices::DeviceRow, devices::ProofRefused};
use crate::users::UserId;

/// `last_seen_at` is refreshed by a device request only when it is at least this old.
const LAST_SEEN_RESOLUTION_MS: i64 = 60_000;

/// How long an enrollment QR code stays usable.
pub const ENROLLMENT_TTL: Duration = Duration::minutes(10);

/// `POST /v1/users/{id}/enrollments`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentCreated {
    /// `enr_...`
    pub id: String,
    /// The single-use token (also inside `uri`).
    pub token: String,
    /// `assent://enroll?server=...&token=...&kid=...&user=...`: put it in a QR code.
    pub uri: String,
    /// `uri` as an SVG QR code, ready to embed in the signed-in page.
    pub qr_svg: String,
    /// After this the token is refused.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// A device as the RP sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Device {
    /// `dev_...`
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Name the phone gave itself.
    pub name: String,
    /// `ios`, `android` or `other`.
    pub platform: String,
    /// The device's public key (JWK): verifies the `evidence.response` of its answers.
    #[schema(value_type = Object)]
    pub public_key: serde_json::Value,
    /// `apns`, `fcm` or `none` (polls).
    pub push_provider: String,
    /// Whether a push token is on file.
    pub push_enabled: bool,
    /// When enrolled.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last authenticated request.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<OffsetDateTime>,
    /// When revoked.
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<&DeviceRow> for Device {
    fn from(r: &DeviceRow) -> Self {
        Device {
            id: r.id.clone(),
            user_id: r.user_id.clone(),
            name: r.name.clone(),
            platform: r.platform.clone(),
            public_key: serde_json::from_str(&r.jwk).unwrap_or_default(),
            push_provider: r.push_provider.clone(),
            push_enabled: r.push_token.is_some(),
            created_at: from_millis(r.created_at),
            last_seen_at: r.last_seen_at.map(from_millis),
            revoked_at: r.revoked_at.map(from_millis),
        }
    }
}

/// A device that proved possession of its key for this request.
#[derive(Debug, Clone)]
pub struct AuthenticatedDevice {
    /// The device row.
    pub row: DeviceRow,
    /// Its public key.
    pub key: VerifyingKey,
}

/// A device request whose proof checked out (signature, method, path, query, body and
/// freshness) and whose proof id is not recorded yet: [`VerifiedProof::record`] records it
/// on its own, or a handler records it in the commit of the request's effect
/// ([`VerifiedProof::to_use`]), and must record it on its own when it refuses the request
/// before that commit, so that a proof is spent by every request that reached the handler.
#[derive(Debug, Clone)]
pub struct VerifiedProof {
    /// `dev_...`; the device was active when its key was read, if it was read.
    pub device_id: String,
    /// The device's public key.
    pub key: VerifyingKey,
    jti: String,
    /// Unix ms until which the proof id is kept.
    keep_until: i64,
    /// Unix ms.
    now: i64,
}

impl VerifiedProof {
    /// The proof as the store records it.
    pub fn to_use(&self) -> store::devices::ProofUse<'_> {
        store::devices::ProofUse {
            device_id: &self.device_id,
            jti: &self.jti,
            keep_until: self.keep_until,
            now: self.now,
            // last_seen_at is kept to the minute: one write per device per minute.
            seen_before: self.now - LAST_SEEN_RESOLUTION_MS,
        }
    }

    /// Records the proof id on its own commit and reads the device: the request is then
    /// authenticated, unless the device is unknown or revoked or the proof was used before.
    pub async fn record(&self, state: &AppState) -> Result<AuthenticatedDevice> {
        let checked =
            store::devices::check_proof(&state.store, &self.to_use()).await?.ok_or(ProofRefused::UnknownDevice)?;
        Ok(AuthenticatedDevice { row: checked.accepted()?, key: self.key })
    }
}

impl From<ProofRefused> for Error {
    fn from(refused: ProofRefused) -> Self {
        match refused {
            ProofRefused::UnknownDevice => Error::device_unauthorized("unknown_device", "no device with this kid"),
            ProofRefused::Revoked => Error::device_unauthorized("device_revoked", "this device was revoked"),
            ProofRefused::Replayed => Error::device_unauthorized("proof_replayed", "this proof was already used"),
        }
    }
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Creates a single-use enrollment for an existing user.
pub async fn create_enrollment(state: &AppState, user_id: &UserId, actor: &Actor) -> Result<EnrollmentCreated> {
    let user = crate::users::get(&state.store, user_id).await?;
    let now = state.now();
    let expires_at = now + ENROLLMENT_TTL;
    let id = new_id(IdKind::Enrollment);
    let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    let uri = EnrollUri {
        server: state.config.public_url(),
        token: token.clone(),
        kid: state.server_key.kid().to_owned(),
        user: user.display_name.clone().unwrap_or_else(|| user.id.clone()),
    }
    .to_string();
    let qr_svg = qrcode::QrCode::new(uri.as_bytes())
        .map_err(|e| Error::internal(format!("QR code: {e}")))?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build();

    let mut tx = state.store.begin().await?;
    store::enrollments::insert(
        &mut tx,
        &id,
        user_id.as_str(),
        &sha256_hex(&token),
        to_millis(now),
        to_millis(expires_at),
    )
    .await?;
    audit::record(
        &mut tx,
        now,
        "enrollment.created",
        Some(user_id.as_str()),
        actor,
        serde_json::json!({ "enrollment_id": id }),
    )
    .await?;
    tx.commit().await?;
    Ok(EnrollmentCreated { id, token, uri, qr_svg, expires_at })
}

fn jws_error(code: &'static str, e: &assent_protocol::Error) -> Error {
    Error::bad_request(code, format!("{e}"))
}

/// Enrolls a device from its proof-of-possession JWS (DESIGN section 4, enrollment step 2).
pub async fn enroll(state: &AppState, body: &str) -> Result<EnrollResponse> {
    let token = body.trim();
    let unverified = jws::decode(token, JwsType::Enroll).map_err(|e| jws_error("invalid_enrollment", &e))?;
    let verified = unverified.verify_with_embedded_jwk().map_err(|e| jws_error("invalid_enrollment", &e))?;
    let jwk = verified.header().jwk().ok_or_else(|| Error::bad_request("invalid_enrollment", "no jwk"))?.bare();
    let claims: EnrollClaims = verified.claims().map_err(|e| jws_error("invalid_enrollment", &e))?;
    let now = state.now();
    if !within_clock_skew(claims.iat, now.unix_timestamp()) {
        return Err(Error::bad_request("stale_enrollment", "iat is more than 60 seconds from the server's time"));
    }
    let name = claims.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Error::invalid("invalid_device_name", "name must be 1 to 100 printable characters"));
    }
    validate_push(claims.push.provider, claims.push.token.as_deref())?;
    let thumbprint = jwk.thumbprint();
    if store::devices::active_with_thumbprint(state.store.reader(), &thumbprint).await? {
        return Err(Error::conflict("key_in_use", "this key is already registered to a device"));
    }

    let device_id = new_id(IdKind::Device);
    let mut tx = state.store.begin().await?;
    let Some((enrollment_id, user_id)) =
        store::enrollments::consume(&mut tx, &sha256_hex(&claims.token), &device_id, to_millis(now)).await?
    else {
        return Err(Error::gone("enrollment_invalid", "the enrollment token is unknown, used or expired"));
    };
    let user = store::users::get(&mut tx, &user_id)
        .await?
        .ok_or(Error::gone("enrollment_invalid", "the user no longer exists"))?;
    let row = DeviceRow {
        id: device_id.clone(),
        user_id: user_id.clone(),
        name: name.to_owned(),
        platform: claims.platform.as_str().to_owned(),
        jwk: serde_json::to_string(&jwk)?,
        thumbprint,
        push_provider: claims.push.provider.as_str().to_owned(),
        push_token: claims.push.token.clone(),
        created_at: to_millis(now),
        last_seen_at: Some(to_millis(now)),
        revoked_at: None,
    };
    store::devices::insert(&mut tx, &row).await?;
    let actor = Actor::Device(device_id.clone());
    let data = serde_json::json!({
        "device_id": device_id, "enrollment_id": enrollment_id, "name": row.name,
        "platform": row.platform, "push_provider": row.push_provider,
    });
    let queued =
        audit::publish(&mut tx, &state.config.webhooks, now, "device.enrolled", Some(&user_id), &actor, data).await?;
    tx.commit().await?;
    if queued {
        state.wake.outbox.notify_one();
    }
    Ok(EnrollResponse {
        device_id,
        user_display_name: user.display_name.unwrap_or_else(|| user_id.clone()),
        user_id,
        server_keys: state.server_key.jwks().clone(),
    })
}

fn validate_push(provider: PushProvider, token: Option<&str>) -> Result<()> {
    match (provider, token) {
        (PushProvider::None, None) => Ok(()),
        (PushProvider::None, Some(_)) => Err(Error::invalid("invalid_push", "provider none takes no token")),
        (_, Some(t)) if !t.is_empty() && t.len() <= 4096 && t.is_ascii() => Ok(()),
        _ => Err(Error::invalid("invalid_push", "apns and fcm need a push token (1-4096 ASCII characters)")),
    }
}

/// Checks `Authorization: Assent-Proof <JWS>` for a request (DESIGN section 4, device
/// requests), all but what needs a write: revocation (unless the key had to be read), replay
/// and `last_seen_at` are checked where the proof is recorded (see [`VerifiedProof`]).
pub async fn verify_proof(
    state: &AppState,
    authorization: Option<&str>,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Result<VerifiedProof> {
    let token = authorization
        .and_then(parse_proof_authorization)
        .ok_or_else(|| Error::device_unauthorized("missing_proof", "send Authorization: Assent-Proof <JWS>"))?;
    let unverified =
        jws::decode(token, JwsType::Proof).map_err(|e| Error::device_unauthorized("invalid_proof", e.to_string()))?;
    let device_id = unverified.header().kid().unwrap_or_default().to_owned();
    // A device's key never changes: when it is cached, the signature is checked before the
    // store is asked, and revocation, the proof id and `last_seen_at` take one round trip.
    let key = match state.device_keys.cached(&device_id) {
        Some(key) => key,
        None => {
            let row =
                store::devices::get(state.store.reader(), &device_id).await?.ok_or(ProofRefused::UnknownDevice)?;
            if row.revoked_at.is_some() {
                return Err(ProofRefused::Revoked.into());
            }
            state.device_keys.get(&row)?
        }
    };
    let verified = unverified.verify(&key).map_err(|e| Error::device_unauthorized("invalid_proof", e.to_string()))?;
    let claims: ProofClaims =
        verified.claims().map_err(|e| Error::device_unauthorized("invalid_proof", e.to_string()))?;
    claims
        .check_request(method, path_and_query, body)
        .map_err(|e| Error::device_unauthorized("proof_mismatch", e.to_string()))?;
    let now = state.now();
    if !within_clock_skew(claims.iat, now.unix_timestamp()) {
        return Err(Error::device_unauthorized("stale_proof", "iat is more than 60 seconds from the server's time"));
    }
    if claims.jti.is_empty() || claims.jti.len() > 128 {
        return Err(Error::device_unauthorized("invalid_proof", "jti must be 1 to 128 characters"));
    }
    Ok(VerifiedProof {
        device_id,
        key,
        jti: claims.jti,
        // Keep the id as long as a proof with this iat could still be accepted.
        keep_until: (claims.iat + 2 * MAX_CLOCK_SKEW_SECS) * 1000,
        now: to_millis(now),
    })
}

/// Parsed device public keys by device id, so a key's JWK is read and its point validated once
/// rather than on every device request. A device's key never changes (re-enrolling makes a new
/// device), so the id alone is the cache key; revocation is still read from the row on every
/// request. Bounded: when full, the cache starts over.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<String, VerifyingKey>>,
}

impl KeyCache {
    /// Entries kept at most (about 100 bytes each).
    pub const CAPACITY: usize = 50_000;

    /// The key of device `id`, if it is cached.
    pub fn cached(&self, id: &str) -> Option<VerifyingKey> {
        self.keys.lock().ok().and_then(|keys| keys.get(id).copied())
    }

    /// The key of `row`'s device, parsed at most once while cached.
    pub fn get(&self, row: &DeviceRow) -> Result<VerifyingKey> {
        if let Some(key) = self.cached(&row.id) {
            return Ok(key);
        }
        let key = device_key(row)?;
        if let Ok(mut keys) = self.keys.lock() {
            if keys.len() >= Self::CAPACITY {
                keys.clear();
            }
            keys.insert(row.id.clone(), key);
        }
        Ok(key)
    }
}

/// The device's public key, parsed from its stored JWK.
pub fn device_key(row: &DeviceRow) -> Result<VerifyingKey> {
    let jwk =
        EcPublicJwk::from_json(&row.jwk).map_err(|e| Error::internal(format!("stored key of {}: {e}", row.id)))?;
    Ok(*jwk.verifying_key())
}

/// The user's active devices.
pub async fn list(state: &AppState, user_id: &UserId) -> Result<Vec<Device>> {
    crate::users::get(&state.store, user_id).await?;
    let rows = store::devices::list_for_user(state.store.reader(), user_id.as_str(), false).await?;
    Ok(rows.iter().map(Device::from).collect())
}

/// Revokes a device (by the RP, or by the device itself); its pending challenges can no
/// longer be answered by it.
pub async fn revoke(state: &AppState, user_id: &str, device_id: &str, actor: &Actor) -> Result<()> {
    let now = state.now();
    let mut tx = state.store.begin().await?;
    if !store::devices::revoke(&mut tx, user_id, device_id, to_millis(now)).await? {
        return Err(Error::NotFound("active device"));
    }
    let data = serde_json::json!({ "device_id": device_id });
    let queued =
        audit::publish(&mut tx, &state.config.webhooks, now, "device.revoked", Some(user_id), actor, data).await?;
    tx.commit().await?;
    if queued {
        state.wake.outbox.notify_one();
    }
    Ok(())
}

/// Replaces the device's push registration.
pub async fn set_push_token(state: &AppState, device: &AuthenticatedDevice, update: &PushTokenUpdate) -> Result<()> {
    validate_push(update.provider, update.token.as_deref())?;
    let now = state.now();
    let mut tx = state.store.begin().await?;
    store::devices::set_push(&mut tx, &device.row.id, update.provider.as_str(), update.token.as_deref()).await?;
    let data = serde_json::json!({ "device_id": device.row.id, "push_provider": update.provider.as_str() });
    audit::record(
        &mut tx,
        now,
        "device.push_token_updated",
        Some(&device.row.user_id),
        &Actor::Device(device.row.id.clone()),
        data,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
