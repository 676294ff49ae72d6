//! Passkeys (WebAuthn, DESIGN section 6) on `webauthn-rs`: registration and authentication
//! ceremonies with user verification required, discoverable credentials for usernameless
//! sign-in, ceremony state kept in the database so any replica can finish a ceremony, and
//! the stored credentials with their signature counter and backup state.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use webauthn_rs::prelude::{
    Credential, DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};
use webauthn_rs_proto::ResidentKeyRequirement;

use crate::audit::{self, Actor};
use crate::clock::{from_millis, to_millis};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ids::{IdKind, new_id};
use crate::state::AppState;
use crate::store::{self, flag, passkeys::CeremonyRow, passkeys::PasskeyRow};
use crate::users::UserId;

/// How long a started ceremony can be finished.
pub const CEREMONY_TTL_SECS: i64 = 5 * 60;

/// Ceremonies that expired longer ago than this are deleted (until then, finishing one
/// answers `ceremony_expired` rather than `not_found`).
pub(crate) const CEREMONY_FORGET_SECS: i64 = 60 * 60;

const REGISTRATION: &str = "registration";
const AUTHENTICATION: &str = "authentication";

/// The relying party: `webauthn-rs` configured from `[passkeys]`, or why passkeys are off.
#[derive(Debug)]
pub struct Passkeys {
    webauthn: std::result::Result<Webauthn, String>,
    rp_id: String,
    origins: Vec<String>,
}

impl Passkeys {
    /// Builds the relying party from the configuration. An explicit `[passkeys]` setting that
    /// cannot work is an error; defaults that cannot work (a `public_url` on a non-loopback IP
    /// address, which WebAuthn does not accept as an RP id) turn passkeys off with a reason.
    pub fn from_config(config: &Config) -> Result<Self> {
        let explicit = config.passkeys.rp_id.is_some() || !config.passkeys.origins.is_empty();
        let public = Url::parse(&config.public_url())
            .map_err(|e| Error::internal(format!("public_url {:?}: {e}", config.public_url())))?;
        let host = public.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let loopback = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let rp_id = match &config.passkeys.rp_id {
            Some(id) => id.trim().to_ascii_lowercase(),
            None if loopback => "localhost".to_owned(),
            None => public.host_str().unwrap_or_default().to_owned(),
        };
        let origins: Vec<String> = if config.passkeys.origins.is_empty() {
            let mut origin = public.clone();
            if loopback {
                // Browsers treat http://localhost as a secure context; an IP address is never
                // a valid RP id, so development pages are opened on localhost.
                let _ = origin.set_host(Some("localhost"));
            }
            vec![origin.origin().ascii_serialization()]
        } else {
            config.passkeys.origins.iter().map(|o| o.trim().trim_end_matches('/').to_owned()).collect()
        };
        let rp_name = config.passkeys.rp_name.clone().unwrap_or_else(|| config.app_name.clone());
        let webauthn = build(&rp_id, &rp_name, &origins);
        match webauthn {
            Err(why) if explicit => Err(Error::internal(format!("[passkeys]: {why}"))),
            Err(why) => {
                tracing::warn!(reason = %why, "passkeys are off: set [passkeys] rp_id and origins");
                Ok(Passkeys { webauthn: Err(why), rp_id, origins })
            }
            Ok(w) => Ok(Passkeys { webauthn: Ok(w), rp_id, origins }),
        }
    }

    /// The RP id passkeys are bound to.
    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }

    /// The origins allowed to use passkeys.
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    fn webauthn(&self) -> Result<&Webauthn> {
        self.webauthn.as_ref().map_err(|why| {
            Error::conflict("passkeys_not_configured", format!("passkeys are off on this server: {why}"))
        })
    }
}

fn build(rp_id: &str, rp_name: &str, origins: &[String]) -> std::result::Result<Webauthn, String> {
    let urls = origins
        .iter()
        .map(|o| Url::parse(o).map_err(|e| format!("origin {o:?} is not a URL: {e}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let Some((first, rest)) = urls.split_first() else {
        return Err("no origins".to_owned());
    };
    if rp_id.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("the RP id {rp_id:?} is an IP address; WebAuthn needs a domain name"));
    }
    for url in &urls {
        let host = url.host_str().unwrap_or_default();
        if host != rp_id && !host.ends_with(&format!(".{rp_id}")) {
            return Err(format!("origin {url} is not on the RP id {rp_id:?} or a subdomain of it"));
        }
    }
    let mut builder = WebauthnBuilder::new(rp_id, first)
        .map_err(|e| format!("RP id {rp_id:?} with origin {first}: {e}"))?
        .rp_name(rp_name)
        .timeout(std::time::Duration::from_secs(CEREMONY_TTL_SECS as u64));
    for url in rest {
        builder = builder.append_allowed_origin(url);
    }
    builder.build().map_err(|e| format!("{e}"))
}

/// `POST /v1/passkeys/registrations`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRegistration {
    /// The user the passkey is for; they must exist (`PUT /v1/users/{id}`).
    pub user_id: String,
}

/// `POST /v1/passkeys/authentications`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartAuthentication {
    /// The user signing in; leave it out for a usernameless sign-in (the browser offers
    /// whichever of this site's passkeys it has, and the answer says whose it was).
    pub user_id: Option<String>,
}

/// A started ceremony: pass `options.publicKey` to the browser.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CeremonyStarted {
    /// `cer_...`: finish the ceremony with it, within five minutes, once.
    pub ceremony_id: String,
    /// When the ceremony can no longer be finished.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// WebAuthn options as JSON: `{publicKey: {...}}` for `navigator.credentials.create()`
    /// (registration) or `.get()` (authentication); the browser's
    /// `PublicKeyCredential.parseCreationOptionsFromJSON(options.publicKey)` or
    /// `parseRequestOptionsFromJSON(options.publicKey)` turns it into what they take. A
    /// usernameless authentication also has `mediation: "conditional"` for autofill.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

/// `POST /v1/passkeys/registrations/{ceremony_id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRegistration {
    /// The new credential, as the browser's `credential.toJSON()` gives it.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
    /// A name the user will recognise it by (default "Passkey"), up to 100 characters.
    pub name: Option<String>,
}

/// `POST /v1/passkeys/authentications/{ceremony_id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishAuthentication {
    /// The assertion, as the browser's `credential.toJSON()` gives it.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

/// A registered passkey.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PasskeyView {
    /// `pk_...`
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// A name the user recognises it by.
    pub name: String,
    /// The WebAuthn credential id (base64url).
    pub credential_id: String,
    /// The credential may be synced to the user's other devices (a multi-device passkey).
    pub backup_eligible: bool,
    /// It is synced (backed up), as of its last use.
    pub backed_up: bool,
    /// The authenticator's signature counter at its last use (0: it keeps none).
    pub sign_count: i64,
    /// When registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Its last sign-in.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

impl From<&PasskeyRow> for PasskeyView {
    fn from(r: &PasskeyRow) -> Self {
        PasskeyView {
            id: r.id.clone(),
            user_id: r.user_id.clone(),
            name: r.name.clone(),
            credential_id: r.credential_id.clone(),
            backup_eligible: flag(r.backup_eligible),
            backed_up: flag(r.backed_up),
            sign_count: r.sign_count,
            created_at: from_millis(r.created_at),
            last_used_at: r.last_used_at.map(from_millis),
        }
    }
}

/// `201` answer to a finished registration.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Registered {
    /// The new passkey's id.
    pub passkey_id: String,
    /// The passkey.
    pub passkey: PasskeyView,
}

/// `200` answer to a finished authentication: the user proved possession of this passkey.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Authenticated {
    /// Whose passkey it is (for a usernameless sign-in, this is who signed in).
    pub user_id: String,
    /// Which passkey.
    pub passkey_id: String,
    /// The authenticator verified the user (PIN or biometrics); always true, as it is required.
    pub user_verified: bool,
    /// The passkey is synced (backed up) to other devices.
    pub backed_up: bool,
}

/// The ceremony state as stored between the two calls.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum CeremonyState {
    Registration(PasskeyRegistration),
    Authentication(PasskeyAuthentication),
    Discoverable(DiscoverableAuthentication),
}

/// Starts registering a passkey for an existing user.
pub async fn start_registration(state: &AppState, input: StartRegistration) -> Result<CeremonyStarted> {
    let webauthn = state.passkeys.webauthn()?;
    let user_id: UserId = input.user_id.parse()?;
    let user = crate::users::get(&state.store, &user_id).await?;
    let handle = user_handle(state, &user_id).await?;
    let existing = store::passkeys::list_for_user(state.store.reader(), user_id.as_str()).await?;
    // Excluded: the authenticator refuses to make a second passkey for this account.
    let exclude = existing
        .iter()
        .map(|p| URL_SAFE_NO_PAD.decode(&p.credential_id))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::internal)?;
    let display_name = user.display_name.as_deref().unwrap_or(user_id.as_str());
    let (mut options, registration) = webauthn
        .start_passkey_registration(handle, user_id.as_str(), display_name, Some(exclude).filter(|e| !e.is_empty()))
        .map_err(|e| Error::internal(format!("starting a passkey registration: {e}")))?;
    // webauthn-rs asks for `residentKey: discouraged`; an authenticator may then make a
    // credential it cannot discover, and usernameless sign-in would fail with it. Requiring a
    // discoverable credential changes only what the browser is asked for: the stored state,
    // and so the checks on the answer, do not depend on it.
    if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
        selection.resident_key = Some(ResidentKeyRequirement::Required);
        selection.require_resident_key = true;
    }
    save_ceremony(state, REGISTRATION, Some(&user_id), CeremonyState::Registration(registration), options).await
}

/// Finishes a registration: verifies the new credential and stores it.
pub async fn finish_registration(
    state: &AppState,
    ceremony_id: &str,
    input: FinishRegistration,
    actor: &Actor,
) -> Result<Registered> {
    let webauthn = state.passkeys.webauthn()?;
    let name = match input.name.as_deref().map(str::trim) {
        None => "Passkey".to_owned(),
        Some(n) if !n.is_empty() && n.chars().count() <= 100 && !n.chars().any(char::is_control) => n.to_owned(),
        Some(_) => return Err(Error::invalid("invalid_name", "name must be 1 to 100 printable characters")),
    };
    let credential: RegisterPublicKeyCredential = parse_credential(input.credential)?;
    let ceremony = take_ceremony(state, ceremony_id, REGISTRATION).await?;
    let (CeremonyState::Registration(registration), Some(user_id)) = (decode_state(&ceremony)?, ceremony.user_id)
    else {
        return Err(Error::internal(format!("ceremony {ceremony_id} holds no registration")));
    };
    let passkey = webauthn.finish_passkey_registration(&credential, &registration).map_err(refused)?;
    let cred = Credential::from(passkey.clone());
    let now = state.now();
    let row = PasskeyRow {
        id: new_id(IdKind::Passkey),
        user_id: user_id.clone(),
        credential_id: URL_SAFE_NO_PAD.encode(passkey.cred_id()),
        name,
        credential: serde_json::to_string(&passkey)?,
        sign_count: i64::from(cred.counter),
        backup_eligible: i64::from(cred.backup_eligible),
        backed_up: i64::from(cred.backup_state),
        created_at: to_millis(now),
        last_used_at: None,
    };
    let mut tx = state.store.begin().await?;
    if crate::store::users::get(&mut tx, &user_id).await?.is_none() {
        return Err(Error::NotFound("user"));
    }
    if let Err(e) = store::passkeys::insert(&mut tx, &row).await {
        return Err(match e {
            Error::Database(db) if db.is_unique_violation() => {
                Error::conflict("passkey_exists", "this credential is already registered")
            }
            other => other,
        });
    }
    let data = serde_json::json!({
        "passkey_id": row.id, "name": row.name, "credential_id": row.credential_id,
        "backup_eligible": cred.backup_eligible, "backed_up": cred.backup_state,
    });
    let queued =
        audit::publish(&mut tx, &state.config.webhooks, now, "passkey.registered", Some(&user_id), actor, data).await?;
    tx.commit().await?;
    if queued {
        state.wake.outbox.notify_one();
    }
    let view = PasskeyView::from(&row);
    Ok(Registered { passkey_id: row.id, passkey: view })
}

/// Starts a sign-in: for the named user (their passkeys are allowed) or, without a user,
/// a discoverable one where the browser offers any passkey it holds for this site.
pub async fn start_authentication(state: &AppState, input: StartAuthentication) -> Result<CeremonyStarted> {
    let webauthn = state.passkeys.webauthn()?;
    match input.user_id {
        Some(user_id) => {
            let user_id: UserId = user_id.parse()?;
            crate::users::get(&state.store, &user_id).await?;
            let rows = store::passkeys::list_for_user(state.store.reader(), user_id.as_str()).await?;
            if rows.is_empty() {
                return Err(Error::invalid("no_passkey", "the user has no passkey"));
            }
            let keys = rows.iter().map(|r| stored_passkey(&r.credential)).collect::<Result<Vec<_>>>()?;
            let (options, auth) = webauthn
                .start_passkey_authentication(&keys)
                .map_err(|e| Error::internal(format!("starting a passkey authentication: {e}")))?;
            save_ceremony(state, AUTHENTICATION, Some(&user_id), CeremonyState::Authentication(auth), options).await
        }
        None => {
            let (options, auth) = webauthn
                .start_discoverable_authentication()
                .map_err(|e| Error::internal(format!("starting a discoverable authentication: {e}")))?;
            save_ceremony(state, AUTHENTICATION, None, CeremonyState::Discoverable(auth), options).await
        }
    }
}

/// Finishes a sign-in: verifies the assertion, updates the passkey's counter and backup
/// state, and says whose passkey it was.
pub async fn finish_authentication(
    state: &AppState,
    ceremony_id: &str,
    input: FinishAuthentication,
    actor: &Actor,
) -> Result<Authenticated> {
    let webauthn = state.passkeys.webauthn()?;
    let credential: PublicKeyCredential = parse_credential(input.credential)?;
    let ceremony = take_ceremony(state, ceremony_id, AUTHENTICATION).await?;
    let credential_id = URL_SAFE_NO_PAD.encode(credential.get_credential_id());
    let row = store::passkeys::by_credential_id(state.store.reader(), &credential_id).await?;
    let (row, result) = match (decode_state(&ceremony)?, ceremony.user_id.as_deref()) {
        (CeremonyState::Authentication(auth), Some(user_id)) => {
            // The ceremony allows only the named user's passkeys; webauthn-rs checks the
            // credential against that list, whatever this lookup finds.
            let result = webauthn.finish_passkey_authentication(&credential, &auth).map_err(refused)?;
            let row = row.filter(|r| r.user_id == user_id).ok_or_else(unknown_credential)?;
            (row, result)
        }
        (CeremonyState::Discoverable(auth), None) => {
            let (handle, _) = webauthn.identify_discoverable_authentication(&credential).map_err(refused)?;
            let row = row.ok_or_else(unknown_credential)?;
            // The user handle the authenticator returned must be that of the passkey's owner.
            let owner = store::passkeys::user_for_handle(state.store.reader(), &handle.to_string()).await?;
            if owner.as_deref() != Some(row.user_id.as_str()) {
                return Err(unknown_credential());
            }
            let key = stored_passkey(&row.credential)?;
            let result = webauthn.finish_discoverable_authentication_v2(&credential, auth, &key).map_err(refused)?;
            (row, result)
        }
        _ => return Err(Error::internal(format!("ceremony {ceremony_id} holds no authentication"))),
    };
    let mut key = stored_passkey(&row.credential)?;
    key.update_credential(&result);
    let cred = Credential::from(key.clone());
    let now = state.now();
    let mut tx = state.store.begin().await?;
    let recorded = store::passkeys::record_use(
        &mut tx,
        &row.id,
        &serde_json::to_string(&key)?,
        i64::from(cred.counter),
        result.backup_state(),
        cred.backup_eligible,
        to_millis(now),
    )
    .await?;
    if !recorded {
        // A concurrent sign-in with this passkey committed a counter at least as high.
        return Err(refused(WebauthnError::CredentialPossibleCompromise));
    }
    let data = serde_json::json!({
        "passkey_id": row.id, "ceremony_id": ceremony_id, "discoverable": ceremony.user_id.is_none(),
        "user_verified": result.user_verified(), "backed_up": result.backup_state(), "sign_count": result.counter(),
    });
    audit::record(&mut tx, now, "passkey.used", Some(&row.user_id), actor, data).await?;
    tx.commit().await?;
    Ok(Authenticated {
        user_id: row.user_id,
        passkey_id: row.id,
        user_verified: result.user_verified(),
        backed_up: result.backup_state(),
    })
}

/// The user's passkeys.
pub async fn list(state: &AppState, user_id: &UserId) -> Result<Vec<PasskeyView>> {
    crate::users::get(&state.store, user_id).await?;
    let rows = store::passkeys::list_for_user(state.store.reader(), user_id.as_str()).await?;
    Ok(rows.iter().map(PasskeyView::from).collect())
}

/// One of the user's passkeys.
pub async fn get(state: &AppState, user_id: &UserId, passkey_id: &str) -> Result<PasskeyView> {
    list(state, user_id).await?.into_iter().find(|p| p.id == passkey_id).ok_or(Error::NotFound("passkey"))
}

/// Deletes one of the user's passkeys: it can no longer sign in.
pub async fn delete(state: &AppState, user_id: &UserId, passkey_id: &str, actor: &Actor) -> Result<()> {
    let now = state.now();
    let mut tx = state.store.begin().await?;
    if !store::passkeys::delete(&mut tx, user_id.as_str(), passkey_id).await? {
        return Err(Error::NotFound("passkey"));
    }
    let data = serde_json::json!({ "passkey_id": passkey_id });
    let queued =
        audit::publish(&mut tx, &state.config.webhooks, now, "passkey.deleted", Some(user_id.as_str()), actor, data)
            .await?;
    tx.commit().await?;
    if queued {
        state.wake.outbox.notify_one();
    }
    Ok(())
}

/// Deletes all of the user's passkeys; returns how many there were.
pub async fn delete_all(state: &AppState, user_id: &UserId, actor: &Actor) -> Result<usize> {
    crate::users::get(&state.store, user_id).await?;
    let now = state.now();
    let mut tx = state.store.begin().await?;
    let rows = store::passkeys::list_for_user(&mut tx, user_id.as_str()).await?;
    let mut queued = false;
    for row in &rows {
        store::passkeys::delete(&mut tx, user_id.as_str(), &row.id).await?;
        let data = serde_json::json!({ "passkey_id": row.id });
        queued |= audit::publish(
            &mut tx,
            &state.config.webhooks,
            now,
            "passkey.deleted",
            Some(user_id.as_str()),
            actor,
            data,
        )
        .await?;
    }
    tx.commit().await?;
    if queued {
        state.wake.outbox.notify_one();
    }
    Ok(rows.len())
}

/// The user's WebAuthn user handle, made on first use.
async fn user_handle(state: &AppState, user_id: &UserId) -> Result<Uuid> {
    let mut tx = state.store.begin().await?;
    let handle = store::passkeys::user_handle(&mut tx, user_id.as_str(), &Uuid::new_v4().to_string()).await?;
    tx.commit().await?;
    Uuid::parse_str(&handle).map_err(Error::internal)
}

async fn save_ceremony(
    state: &AppState,
    kind: &str,
    user_id: Option<&UserId>,
    ceremony: CeremonyState,
    options: impl Serialize,
) -> Result<CeremonyStarted> {
    let now = state.now();
    let expires_at = now + time::Duration::seconds(CEREMONY_TTL_SECS);
    let row = CeremonyRow {
        id: new_id(IdKind::Ceremony),
        kind: kind.to_owned(),
        user_id: user_id.map(ToString::to_string),
        state: serde_json::to_string(&ceremony)?,
        created_at: to_millis(now),
        expires_at: to_millis(expires_at),
        used_at: None,
    };
    let mut tx = state.store.begin().await?;
    store::passkeys::insert_ceremony(&mut tx, &row).await?;
    tx.commit().await?;
    Ok(CeremonyStarted { ceremony_id: row.id, expires_at, options: serde_json::to_value(options)? })
}

/// Uses up a ceremony: whatever the outcome of the verification that follows, it cannot be
/// finished again (a second try with the same challenge is a replay).
async fn take_ceremony(state: &AppState, id: &str, kind: &str) -> Result<CeremonyRow> {
    let now = to_millis(state.now());
    let mut tx = state.store.begin().await?;
    let taken = store::passkeys::take_ceremony(&mut tx, id, kind, now).await?;
    tx.commit().await?;
    match taken {
        Some(row) if row.expires_at <= now => {
            Err(Error::gone("ceremony_expired", "the ceremony expired (they last five minutes): start a new one"))
        }
        Some(row) => Ok(row),
        None => match store::passkeys::ceremony_used_at(state.store.reader(), id, kind).await? {
            Some(_) => Err(Error::conflict("ceremony_used", "the ceremony was already finished: start a new one")),
            None => Err(Error::NotFound("ceremony")),
        },
    }
}

fn decode_state(ceremony: &CeremonyRow) -> Result<CeremonyState> {
    serde_json::from_str(&ceremony.state).map_err(|e| Error::internal(format!("ceremony {}: {e}", ceremony.id)))
}

fn stored_passkey(json: &str) -> Result<Passkey> {
    serde_json::from_str(json).map_err(|e| Error::internal(format!("stored passkey: {e}")))
}

fn parse_credential<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        Error::bad_request(
            "malformed_credential",
            format!("credential is not a WebAuthn public key credential as toJSON() gives it: {e}"),
        )
    })
}

fn unknown_credential() -> Error {
    Error::invalid("unknown_credential", "this passkey is not registered here (or not to this user)")
}

/// Why `webauthn-rs` refused a credential, as a stable problem code.
fn refused(e: WebauthnError) -> Error {
    use WebauthnError as W;
    let (code, detail) = match &e {
        W::InvalidRPOrigin => {
            ("origin_not_allowed", "the credential was made on a page whose origin is not in passkeys.origins")
        }
        W::InvalidRPIDHash => ("rp_id_mismatch", "the credential is scoped to another RP id than passkeys.rp_id"),
        W::MismatchedChallenge => ("challenge_mismatch", "the credential answers another ceremony's challenge"),
        W::InvalidClientDataType => ("invalid_client_data", "the client data is for another kind of ceremony"),
        W::CredentialCrossOrigin => ("cross_origin", "the credential was made in a cross-origin frame"),
        W::UserNotVerified => {
            ("user_not_verified", "the authenticator did not verify the user (a PIN or biometrics is required)")
        }
        W::UserNotPresent => ("user_not_present", "the authenticator did not see the user present"),
        W::CredentialNotFound => {
            ("credential_not_allowed", "this passkey is not one the ceremony allows (it is another user's)")
        }
        W::InvalidUserUniqueId => ("unknown_credential", "the assertion carries no valid user handle"),
        W::AuthenticationFailure | W::SignatureInvalid => {
            ("invalid_signature", "the signature does not verify over the authenticator and client data")
        }
        W::CredentialPossibleCompromise => (
            "sign_count_regressed",
            "the authenticator's signature counter did not increase: the passkey may have been cloned",
        ),
        W::CredentialBackupEligibilityInconsistent | W::CredentialMayNotBeHardwareBound => {
            ("backup_state_inconsistent", "the passkey's backup eligibility changed since it was registered")
        }
        W::CredentialExcludedFromRequest | W::CredentialAlreadyExists => {
            return Error::conflict("passkey_exists", "this authenticator already holds a passkey for this user");
        }
        W::ParseBase64Failure(_)
        | W::ParseCBORFailure(_)
        | W::ParseJSONFailure(_)
        | W::ParseNOMFailure
        | W::ParseInsufficientBytesAvailable => {
            return Error::bad_request("malformed_credential", format!("the credential cannot be decoded: {e}"));
        }
        _ => return Error::invalid("invalid_credential", format!("the credential failed verification: {e}")),
    };
    Error::invalid(code, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(public_url: &str) -> Config {
        Config { public_url: Some(public_url.to_owned()), ..Config::default() }
    }

    #[test]
    fn development_defaults_use_localhost() {
        let passkeys = Passkeys::from_config(&config("http://127.0.0.1:8080")).unwrap();
        assert_eq!(passkeys.rp_id(), "localhost");
        assert_eq!(passkeys.origins(), ["http://localhost:8080"]);
        assert!(passkeys.webauthn().is_ok());
        let passkeys = Passkeys::from_config(&config("https://auth.example.com/")).unwrap();
        assert_eq!(passkeys.rp_id(), "auth.example.com");
        assert_eq!(passkeys.origins(), ["https://auth.example.com"]);
    }

    #[test]
    fn defaults_that_cannot_work_turn_passkeys_off() {
        let passkeys = Passkeys::from_config(&config("http://10.0.0.7:8080")).unwrap();
        let err = passkeys.webauthn().map(|_| ()).unwrap_err();
        assert!(matches!(err, Error::Conflict { code: "passkeys_not_configured", .. }), "{err:?}");
    }

    #[test]
    fn explicit_settings_must_work() {
        let mut c = config("http://127.0.0.1:8080");
        c.passkeys.rp_id = Some("example.com".into());
        c.passkeys.origins = vec!["https://app.example.com".into(), "https://example.com/".into()];
        let passkeys = Passkeys::from_config(&c).unwrap();
        assert_eq!(passkeys.origins(), ["https://app.example.com", "https://example.com"]);
        c.passkeys.origins = vec!["https://example.net".into()];
        assert!(Passkeys::from_config(&c).is_err(), "an origin outside the RP id");
        c.passkeys.rp_id = Some("10.0.0.7".into());
        c.passkeys.origins = vec!["https://10.0.0.7".into()];
        assert!(Passkeys::from_config(&c).is_err(), "an IP address as RP id");
    }
}
