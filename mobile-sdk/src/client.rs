//! [`AssentClient`], the one object an app holds: enrollment, push handling, fetching and
//! verifying challenges, answering them, push-token updates and unenrollment.
//!
//! Every server call is async (a Kotlin `suspend fun`, a Swift `async` method, a Python
//! coroutine). Key store calls, which may block on a biometric prompt, run on tokio's blocking
//! pool, never on the thread that polls the future.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use assent_protocol::jws::{self, JwsType, KeyRef};
use assent_protocol::messages::{self, proof_authorization};
use assent_protocol::{
    ChallengeResponseRequest, Decision, DeviceChallenge, DeviceChallengeList, EcPublicJwk, EnrollClaims,
    EnrollResponse, EnrollUri, ProofClaims, PushPayload, PushRegistration as WirePush, PushTokenUpdate,
};
use reqwest::{Method, Url};
use serde::Deserialize;

use crate::error::{AssentError, Error, KeyStoreError, Result};
use crate::http::{self, APPLICATION_JOSE, APPLICATION_JSON, Body, Connection};
use crate::keystore::{KeyStore, normalize_signature, parse_public_key};
use crate::model::{
    Challenge, ChallengeStatus, ClientConfig, DeviceRegistration, Enrollment, PushRegistration, ResponseOutcome,
};
use crate::state::{DeviceState, STATE_VERSION, StateStore};
use crate::verify::{Verifier, check_id, check_number, pin_server_key};

/// Source of the current time, NumericDate seconds. Replaceable in Rust so expiry can be tested
/// without waiting.
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// What the state store held when last read.
#[derive(Debug, Clone)]
enum Slot {
    Empty,
    Enrolled(Box<DeviceState>),
    /// Stored state that could not be read; only `reset()` gets out of it.
    Unreadable(String),
}

/// The Assent client an app creates once and keeps (it is thread-safe).
///
/// ```no_run
/// # async fn demo() -> Result<(), assent_sdk::AssentError> {
/// use std::sync::Arc;
/// use assent_sdk::*;
///
/// let client = AssentClient::new(
///     Arc::new(SoftwareKeyStore::default()),
///     Arc::new(FileStateStore::new("device.json")),
///     None,
/// )?;
/// let enrollment = client
///     .enroll(
///         "assent://enroll?server=https%3A%2F%2Fassent.example.com&token=...&kid=...&user=Alice".into(),
///         DeviceRegistration {
///             name: "Alice's laptop".into(),
///             platform: Platform::Other,
///             push: PushRegistration::poll_only(),
///         },
///     )
///     .await?;
/// for challenge in client.pending_challenges().await? {
///     println!("{}: {}", challenge.id, challenge.title);
///     client.approve(challenge, None).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(uniffi::Object)]
pub struct AssentClient {
    key_store: Arc<dyn KeyStore>,
    state_store: Arc<dyn StateStore>,
    connection: Connection,
    state: Mutex<Slot>,
    /// Serialises enroll, push-token updates, unenroll and reset (the state-changing calls).
    lifecycle: tokio::sync::Mutex<()>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for AssentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssentClient")
            .field("state", &*self.slot())
            .field("server_url_override", &self.connection.server_url_override)
            .finish_non_exhaustive()
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl AssentClient {
    /// Creates a client over the app's key store and state store, reading any saved state.
    /// `config` defaults to [`ClientConfig::default`]. Fails only on a bad `config`.
    #[uniffi::constructor(default(config = None))]
    pub fn new(
        key_store: Arc<dyn KeyStore>,
        state_store: Arc<dyn StateStore>,
        config: Option<ClientConfig>,
    ) -> Result<Arc<Self>, AssentError> {
        Self::with_clock(key_store, state_store, config.unwrap_or_default(), Arc::new(SystemClock))
    }

    /// Whether a device is enrolled.
    pub fn is_enrolled(&self) -> bool {
        matches!(*self.slot(), Slot::Enrolled(_))
    }

    /// The enrolled device, if any.
    pub fn enrollment(&self) -> Option<Enrollment> {
        match &*self.slot() {
            Slot::Enrolled(state) => Some(enrollment_of(state)),
            Slot::Empty | Slot::Unreadable(_) => None,
        }
    }

    /// Enrolls this device from an `assent://enroll?...` URI (the scanned QR code): creates
    /// the device key, proves possession of it to the server, checks that the server's keys
    /// include the one whose thumbprint the URI carries, pins it, and saves the state.
    ///
    /// Errors: `InvalidInput` (bad URI, plain-http server), `AlreadyEnrolled`,
    /// `ServerKeyMismatch` (the server's keys lack the pinned one: nothing is saved),
    /// `Expired` (the enrollment token was used or has expired: `410 enrollment_invalid`),
    /// `KeyStore`/`UserCancelled`, `Network`, `Server`.
    pub async fn enroll(&self, uri: String, device: DeviceRegistration) -> Result<Enrollment, AssentError> {
        Ok(self.enroll_inner(&uri, device).await?)
    }

    /// The challenge id a push notification carries, from the notification's data (FCM
    /// `RemoteMessage.data`, APNs `userInfo` as strings). Push payloads carry nothing else;
    /// fetch the challenge with [`Self::challenge`] when the user opens it.
    pub fn handle_push(&self, data: HashMap<String, String>) -> Result<String, AssentError> {
        let value = serde_json::to_value(data).map_err(|e| Error::PushPayload(e.to_string()))?;
        Ok(challenge_id_of(serde_json::from_value(value))?)
    }

    /// Like [`Self::handle_push`], from the payload as JSON text (e.g. a whole APNs payload:
    /// `{"aps": {...}, "challenge_id": "chl_..."}`).
    pub fn handle_push_json(&self, payload: String) -> Result<String, AssentError> {
        Ok(challenge_id_of(serde_json::from_str(&payload))?)
    }

    /// Every challenge pending for this device, verified, oldest first. Challenges that expire
    /// while being fetched are left out; any other verification failure fails the call.
    pub async fn pending_challenges(&self) -> Result<Vec<Challenge>, AssentError> {
        Ok(self.pending_inner().await?)
    }

    /// Fetches one challenge and verifies it: signature under the pinned server key, id, this
    /// device in `aud`, this user as `sub`, not expired. Show the user every field of it.
    ///
    /// Errors: `Tampered`, `ServerKeyMismatch`, `NotAddressedToDevice`, `Expired`, `NotFound`.
    pub async fn challenge(&self, id: String) -> Result<Challenge, AssentError> {
        Ok(self.challenge_inner(&id).await?)
    }

    /// Approves a challenge the user was shown. With number matching, `number` is the one the
    /// user picked among `number_choices` (required); otherwise pass none. A wrong number is
    /// sent anyway and the server denies the challenge (outcome status `Denied`).
    #[uniffi::method(default(number = None))]
    pub async fn approve(&self, challenge: Challenge, number: Option<u32>) -> Result<ResponseOutcome, AssentError> {
        Ok(self.respond(challenge, Decision::Approve, number).await?)
    }

    /// Denies a challenge the user was shown.
    pub async fn deny(&self, challenge: Challenge) -> Result<ResponseOutcome, AssentError> {
        Ok(self.respond(challenge, Decision::Deny, None).await?)
    }

    /// Reports a challenge as fraud: the user did not start it. The server denies it and locks
    /// push for the user until the relying party unlocks it.
    pub async fn report_fraud(&self, challenge: Challenge) -> Result<ResponseOutcome, AssentError> {
        Ok(self.respond(challenge, Decision::Fraud, None).await?)
    }

    /// Sends a new push registration (the platform rotated the token, or the user turned
    /// notifications off: `PollOnly`) and saves it.
    pub async fn update_push_token(&self, push: PushRegistration) -> Result<(), AssentError> {
        Ok(self.update_push_inner(push).await?)
    }

    /// Unenrolls: deletes the device on the server, then the device key and the saved state.
    /// A device the server already revoked or forgot is unenrolled locally all the same. On a
    /// network error nothing is deleted; retry, or `reset()` to forget the device locally.
    pub async fn unenroll(&self) -> Result<(), AssentError> {
        Ok(self.unenroll_inner().await?)
    }

    /// Forgets the device locally without telling the server: clears the saved state and
    /// deletes the device key. For a revoked device, an invalidated key or unreadable state.
    pub async fn reset(&self) -> Result<(), AssentError> {
        let _guard = self.lifecycle.lock().await;
        let alias = match &*self.slot() {
            Slot::Enrolled(state) => Some(state.key_alias.clone()),
            Slot::Empty | Slot::Unreadable(_) => None,
        };
        Ok(self.forget(alias).await?)
    }
}

/// Rust-only API.
impl AssentClient {
    /// [`Self::new`] with a given clock (tests).
    pub fn with_clock(
        key_store: Arc<dyn KeyStore>,
        state_store: Arc<dyn StateStore>,
        config: ClientConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, AssentError> {
        Ok(Self::from_parts(key_store, state_store, Connection::new(&config)?, clock))
    }

    /// [`Self::new`] over a [`Connection`]: every client made from clones of one connection
    /// shares its pooled HTTP connections, as a process holding many devices (a load test, a
    /// desktop agent with several accounts) wants.
    pub fn with_connection(
        key_store: Arc<dyn KeyStore>,
        state_store: Arc<dyn StateStore>,
        connection: Connection,
    ) -> Arc<Self> {
        Self::from_parts(key_store, state_store, connection, Arc::new(SystemClock))
    }

    fn from_parts(
        key_store: Arc<dyn KeyStore>,
        state_store: Arc<dyn StateStore>,
        connection: Connection,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let slot = match state_store.load() {
            Ok(None) => Slot::Empty,
            Ok(Some(json)) => match DeviceState::from_json(&json) {
                Ok(state) => Slot::Enrolled(Box::new(state)),
                Err(e) => Slot::Unreadable(e.to_string()),
            },
            Err(e) => Slot::Unreadable(e.to_string()),
        };
        Arc::new(AssentClient {
            key_store,
            state_store,
            connection,
            state: Mutex::new(slot),
            lifecycle: tokio::sync::Mutex::new(()),
            clock,
        })
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_slot(&self, slot: Slot) {
        *self.slot() = slot;
    }

    /// A snapshot of the enrolled state.
    fn session(&self) -> Result<DeviceState> {
        match &*self.slot() {
            Slot::Enrolled(state) => Ok((**state).clone()),
            Slot::Empty => Err(Error::NotEnrolled),
            Slot::Unreadable(reason) => Err(Error::CorruptState(reason.clone())),
        }
    }

    fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Runs a key store call on tokio's blocking pool (a biometric prompt may block it for a
    /// long time), or inline when no tokio runtime is around.
    async fn key_store_call<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KeyStore) -> Result<T, KeyStoreError> + Send + 'static,
    {
        let key_store = Arc::clone(&self.key_store);
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(move || f(key_store.as_ref())).await.map_err(|e| Error::Task(e.to_string()))?
            }
            Err(_) => f(key_store.as_ref()),
        };
        result.map_err(|source| Error::KeyStore { op, source })
    }

    /// Signs a JWS signing input with the device key and assembles the compact token, after
    /// checking the key store's signature against the device public key.
    async fn sign_jws(&self, alias: &str, device_key: &EcPublicJwk, input: String) -> Result<String> {
        let alias = alias.to_owned();
        let message = input.as_bytes().to_vec();
        let signature = self.key_store_call("sign", move |ks| ks.sign(alias, message)).await?;
        let (raw, _) = normalize_signature(&signature, input.as_bytes(), device_key.verifying_key())?;
        Ok(jws::assemble(&input, raw))
    }

    /// One device request with its `Authorization: Assent-Proof` header.
    async fn device_request(
        &self,
        state: &DeviceState,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<(u16, Vec<u8>)> {
        let base = http::validate_server_url(&state.server_url).map_err(|e| Error::CorruptState(e.to_string()))?;
        let url = http::endpoint(&base, path);
        let htu = http::path_and_query(&url);
        let body_bytes = body.as_ref().map_or(&[][..], |b| b.bytes.as_slice());
        let claims = ProofClaims::new(method.as_str(), &htu, body_bytes, self.now())?;
        let input = jws::signing_input(JwsType::Proof, KeyRef::Kid(&state.device_id), &claims)?;
        let proof = self.sign_jws(&state.key_alias, &state.device_key, input).await?;
        http::send(&self.connection.http, method, url, Some(proof_authorization(&proof)), body).await
    }

    async fn enroll_inner(&self, uri: &str, device: DeviceRegistration) -> Result<Enrollment> {
        let _guard = self.lifecycle.lock().await;
        match &*self.slot() {
            Slot::Empty => {}
            Slot::Enrolled(state) => {
                return Err(Error::AlreadyEnrolled { device_id: state.device_id.clone() });
            }
            Slot::Unreadable(reason) => return Err(Error::CorruptState(reason.clone())),
        }
        let uri = EnrollUri::parse(uri).map_err(Error::EnrollUri)?;
        let base = match &self.connection.server_url_override {
            Some(url) => url.clone(),
            None => http::validate_server_url(&uri.server)?,
        };
        let name = device.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::InvalidInput("device name must be 1 to 100 characters".into()));
        }
        device.push.validate()?;

        let alias = format!("assent-device-{}", messages::new_jti()?);
        let create_alias = alias.clone();
        self.key_store_call("create_key", move |ks| ks.create_key(create_alias)).await?;
        let result = self.register(&base, &uri, name, &device, &alias).await;
        if result.is_err() {
            // Best effort: the key is useless without an enrollment.
            let delete_alias = alias.clone();
            let _ = self.key_store_call("delete_key", move |ks| ks.delete_key(delete_alias)).await;
        }
        let state = result?;
        if let Err(e) = self.save(&state) {
            // The server has the device but we could not remember it: take it back.
            let _ = self.device_request(&state, Method::DELETE, "/v1/device", None).await;
            let _ = self.key_store_call("delete_key", move |ks| ks.delete_key(alias)).await;
            return Err(e);
        }
        let enrollment = enrollment_of(&state);
        self.set_slot(Slot::Enrolled(Box::new(state)));
        Ok(enrollment)
    }

    /// The enrollment exchange proper, with the device key already created under `alias`.
    async fn register(
        &self,
        base: &Url,
        uri: &EnrollUri,
        name: &str,
        device: &DeviceRegistration,
        alias: &str,
    ) -> Result<DeviceState> {
        let public_alias = alias.to_owned();
        let public = self.key_store_call("public_key", move |ks| ks.public_key(public_alias)).await?;
        let device_key = EcPublicJwk::from_verifying_key(&parse_public_key(&public)?);
        let info_alias = alias.to_owned();
        let info = self.key_store_call("key_info", move |ks| ks.key_info(info_alias)).await?;

        let claims = EnrollClaims {
            token: uri.token.clone(),
            name: name.to_owned(),
            platform: device.platform.into(),
            push: WirePush { provider: device.push.provider.into(), token: device.push.token.clone() },
            iat: self.now(),
        };
        let input = jws::signing_input(JwsType::Enroll, KeyRef::Jwk(&device_key), &claims)?;
        let token = self.sign_jws(alias, &device_key, input).await?;
        let (status, bytes) = http::send(
            &self.connection.http,
            Method::POST,
            http::endpoint(base, "/v1/device/enroll"),
            None,
            Some(Body { content_type: APPLICATION_JOSE, bytes: token.into_bytes() }),
        )
        .await?;
        let answer: EnrollResponse = http::json(status, &bytes)?;
        let pinned = pin_server_key(&answer.server_keys, &uri.kid)?;
        check_id("device", "dev_", &answer.device_id).map_err(|_| Error::UnexpectedResponse {
            status,
            reason: format!("unusable device id {:?}", answer.device_id),
        })?;
        Ok(DeviceState {
            version: STATE_VERSION,
            // As the enrollment URI and the server write it: no trailing `/` (a URL's root
            // path serialises as one).
            server_url: base.as_str().trim_end_matches('/').to_owned(),
            device_id: answer.device_id,
            user_id: answer.user_id,
            user_display_name: answer.user_display_name,
            key_alias: alias.to_owned(),
            device_key,
            pinned_server_key: pinned,
            push_provider: device.push.provider.into(),
            push_token: device.push.token.clone(),
            hardware_backed: info.hardware_backed,
        })
    }

    fn save(&self, state: &DeviceState) -> Result<()> {
        self.state_store.save(state.to_json()?).map_err(Error::Storage)
    }

    async fn pending_inner(&self) -> Result<Vec<Challenge>> {
        let state = self.session()?;
        let (status, bytes) = self.device_request(&state, Method::GET, "/v1/device/challenges", None).await?;
        let list: DeviceChallengeList = http::json(status, &bytes)?;
        let verifier = verifier_of(&state);
        let now = self.now();
        let mut challenges = Vec::with_capacity(list.challenges.len());
        for item in list.challenges {
            match verifier.challenge(&item.jws, Some(&item.id), now) {
                Ok(verified) => {
                    challenges.push(Challenge::from_claims(verified.claims, item.jws));
                }
                // Expired between the server's query and now: not pending any more.
                Err(Error::Expired { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(challenges)
    }

    async fn challenge_inner(&self, id: &str) -> Result<Challenge> {
        check_id("challenge", "chl_", id)?;
        let state = self.session()?;
        let path = format!("/v1/device/challenges/{id}");
        let (status, bytes) = self.device_request(&state, Method::GET, &path, None).await?;
        let item: DeviceChallenge = http::json(status, &bytes)?;
        if item.id != id {
            return Err(Error::ChallengeIdMismatch { requested: id.to_owned(), found: item.id });
        }
        let verified = verifier_of(&state).challenge(&item.jws, Some(id), self.now())?;
        Ok(Challenge::from_claims(verified.claims, item.jws))
    }

    async fn respond(&self, challenge: Challenge, decision: Decision, number: Option<u32>) -> Result<ResponseOutcome> {
        check_id("challenge", "chl_", &challenge.id)?;
        let state = self.session()?;
        let now = self.now();
        // Verify again what the app hands back: the signed hash must be of a genuine challenge.
        let verified = verifier_of(&state).challenge(&challenge.jws, Some(&challenge.id), now)?;
        let number = match decision {
            Decision::Approve => check_number(verified.claims.number_choices.as_deref(), number)?,
            Decision::Deny | Decision::Fraud => None,
        };
        let alias = state.key_alias.clone();
        let uv = self.key_store_call("key_info", move |ks| ks.key_info(alias)).await?.user_verification;
        let claims = assent_protocol::ResponseClaims {
            jti: verified.claims.jti.clone(),
            decision,
            chash: verified.jws.sha256(),
            number,
            uv,
            iat: now,
        };
        let input = jws::signing_input(JwsType::Response, KeyRef::Kid(&state.device_id), &claims)?;
        let response = self.sign_jws(&state.key_alias, &state.device_key, input).await?;
        let body = serde_json::to_vec(&ChallengeResponseRequest { response }).map_err(|e| Error::Protocol(e.into()))?;
        let path = format!("/v1/device/challenges/{}/response", challenge.id);
        let (status, bytes) = self
            .device_request(&state, Method::POST, &path, Some(Body { content_type: APPLICATION_JSON, bytes: body }))
            .await?;
        #[derive(Deserialize)]
        struct Answer {
            id: String,
            status: String,
        }
        let answer: Answer = http::json(status, &bytes)?;
        if answer.id != challenge.id {
            return Err(Error::UnexpectedResponse { status, reason: format!("answer is for {:?}", answer.id) });
        }
        Ok(ResponseOutcome { challenge_id: answer.id, status: ChallengeStatus::from(answer.status.as_str()) })
    }

    async fn update_push_inner(&self, push: PushRegistration) -> Result<()> {
        push.validate()?;
        let _guard = self.lifecycle.lock().await;
        let mut state = self.session()?;
        let update = PushTokenUpdate { provider: push.provider.into(), token: push.token.clone() };
        let body = serde_json::to_vec(&update).map_err(|e| Error::Protocol(e.into()))?;
        self.device_request(
            &state,
            Method::PUT,
            "/v1/device/push-token",
            Some(Body { content_type: APPLICATION_JSON, bytes: body }),
        )
        .await?;
        state.push_provider = update.provider;
        state.push_token = update.token;
        self.save(&state)?;
        self.set_slot(Slot::Enrolled(Box::new(state)));
        Ok(())
    }

    async fn unenroll_inner(&self) -> Result<()> {
        let _guard = self.lifecycle.lock().await;
        let state = self.session()?;
        match self.device_request(&state, Method::DELETE, "/v1/device", None).await {
            Ok(_) => {}
            // Already revoked or gone on the server (the real server answers `401
            // unknown_device` for a device it never had or lost with its database): finish
            // locally.
            Err(e)
                if matches!(e.problem_code(), Some("device_revoked" | "unknown_device")) || e.status() == Some(404) => {
            }
            Err(e) => return Err(e),
        }
        self.forget(Some(state.key_alias)).await
    }

    /// Clears the saved state, then deletes the device key (best effort: a key the platform
    /// already dropped is fine).
    async fn forget(&self, alias: Option<String>) -> Result<()> {
        self.state_store.clear().map_err(Error::Storage)?;
        self.set_slot(Slot::Empty);
        if let Some(alias) = alias {
            match self.key_store_call("delete_key", move |ks| ks.delete_key(alias)).await {
                Ok(()) | Err(Error::KeyStore { source: KeyStoreError::KeyInvalidated, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn verifier_of(state: &DeviceState) -> Verifier<'_> {
    Verifier { pinned: &state.pinned_server_key, device_id: &state.device_id, user_id: &state.user_id }
}

fn enrollment_of(state: &DeviceState) -> Enrollment {
    Enrollment {
        device_id: state.device_id.clone(),
        user_id: state.user_id.clone(),
        user_display_name: state.user_display_name.clone(),
        server_url: state.server_url.clone(),
        server_key_id: state.pinned_kid(),
        push: PushRegistration { provider: state.push_provider.into(), token: state.push_token.clone() },
        hardware_backed: state.hardware_backed,
    }
}

fn challenge_id_of(payload: serde_json::Result<PushPayload>) -> Result<String> {
    let payload = payload.map_err(|e| Error::PushPayload(e.to_string()))?;
    check_id("challenge", "chl_", &payload.challenge_id)?;
    Ok(payload.challenge_id)
}
