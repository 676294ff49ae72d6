//! The mobile SDK (`assent-sdk`) against the real `assent` binary, on SQLite and PostgreSQL:
//! the whole device flow as an app drives it while the relying party watches the results; a
//! tampering proxy between the SDK and the server for everything the SDK must refuse; the
//! `assent-device` reference app as the README walks through it; and the SDK's Python bindings,
//! generated here from the built library, driven by `mobile-sdk/tests/python/test_bindings.py`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use assent_protocol::jws::{self, JwsType, KeyRef};
use assent_protocol::messages::Decision;
use assent_protocol::p256::ecdsa::SigningKey;
use assent_protocol::{EcPublicJwk, EnrollUri, Jwks, ResponseClaims, b64, sha256_b64};
use assent_sdk::{
    AssentClient, AssentError, Challenge, ChallengeStatus, ClientConfig, Clock, DeviceRegistration, KeyStore,
    MemoryStateStore, Platform, PushProvider, PushRegistration, SignatureFormat, SoftwareKeyStore, StateStore,
    SystemClock,
};
use assent_tests::phone::{Phone, Rp};
use assent_tests::{PgDatabase, Server, assent_bin};
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// A server per test, on either database.

#[derive(Debug, Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
}

/// A running server with its RP client. Dropped in field order: the process, then the
/// database, then the data directory.
struct Assent {
    server: Server,
    rp: Rp,
    _db: Option<PgDatabase>,
    _dir: tempfile::TempDir,
}

async fn start(db: Db) -> Assent {
    start_with_key(db, None).await
}

/// A server on fresh storage; with `key_file`, signing with that key instead of a new one.
async fn start_with_key(db: Db, key_file: Option<&Path>) -> Assent {
    let dir = tempfile::tempdir().unwrap();
    let pg = match db {
        Db::Sqlite => None,
        Db::Postgres => Some(PgDatabase::create().await),
    };
    let args: Vec<&str> = pg.as_ref().map(|pg| vec!["--database-url", pg.url.as_str()]).unwrap_or_default();
    let key_file = key_file.map(|path| path.to_str().unwrap());
    let env: Vec<(&str, &str)> = key_file.map(|path| ("ASSENT_SERVER_KEY_FILE", path)).into_iter().collect();
    let server = Server::start(dir.path(), &env, &args);
    let rp = Rp::new(&server.url, &server.admin_key());
    Assent { server, rp, _db: pg, _dir: dir }
}

/// Generates `mod name { sqlite, postgres }`, each running `name(Db::...)`.
macro_rules! on_both_databases {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Db::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(super::Db::Postgres).await;
            }
        }
    )+};
}

on_both_databases!(
    device_flow,
    tampered_challenges_are_refused,
    swapped_server_key_at_enrollment_is_refused,
    revoked_or_forgotten_device_unenrolls_locally,
);

// ---------------------------------------------------------------------------------------------
// The app side.

/// The system clock plus an offset a test can move, so expiry is tested without waiting.
#[derive(Debug, Default)]
struct TestClock {
    offset: AtomicI64,
}

impl TestClock {
    fn advance_to(&self, offset: i64) {
        self.offset.store(offset, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> i64 {
        SystemClock.now() + self.offset.load(Ordering::SeqCst)
    }
}

/// One app install: the SDK client over a software key store and an in-memory state store.
struct App {
    client: Arc<AssentClient>,
    keys: Arc<SoftwareKeyStore>,
    state: Arc<MemoryStateStore>,
    clock: Arc<TestClock>,
}

impl App {
    /// An app that talks to the server named in the enrollment URI, or to `server` instead.
    fn new(server: Option<&str>) -> App {
        let keys = Arc::new(SoftwareKeyStore::new(SignatureFormat::Der).with_user_verification(true));
        let state = Arc::new(MemoryStateStore::new());
        let clock = Arc::new(TestClock::default());
        let config = ClientConfig {
            server_url_override: server.map(str::to_owned),
            request_timeout_seconds: 40,
            ..ClientConfig::default()
        };
        let client = AssentClient::with_clock(
            keys.clone() as Arc<dyn KeyStore>,
            state.clone() as Arc<dyn StateStore>,
            config,
            clock.clone(),
        )
        .unwrap();
        App { client, keys, state, clock }
    }

    /// The same install after a restart: a new client over the same stores.
    fn restarted(&self) -> Arc<AssentClient> {
        AssentClient::new(self.keys.clone(), self.state.clone(), None).unwrap()
    }

    async fn enroll(&self, uri: &str) -> Result<assent_sdk::Enrollment, AssentError> {
        self.client
            .enroll(
                uri.to_owned(),
                DeviceRegistration {
                    name: "Test phone".into(),
                    platform: Platform::Android,
                    push: PushRegistration::poll_only(),
                },
            )
            .await
    }
}

// ---------------------------------------------------------------------------------------------
// The relying party side.

/// Creates a challenge and returns its `201` body.
async fn create_challenge(rp: &Rp, body: Value) -> Value {
    rp.challenge(body).await.expect(201).clone()
}

fn id_of(created: &Value) -> String {
    created["id"].as_str().unwrap().to_owned()
}

/// The RP's view of a challenge (`wait` seconds of long-poll, 0 for none).
async fn rp_view(rp: &Rp, id: &str, wait: u64) -> Value {
    rp.get(&format!("/v1/challenges/{id}?wait={wait}")).await.expect(200).clone()
}

async fn rp_status(rp: &Rp, id: &str) -> String {
    rp_view(rp, id, 0).await["status"].as_str().unwrap().to_owned()
}

/// The user's active devices as the RP lists them.
async fn rp_devices(rp: &Rp, user: &str) -> Vec<Value> {
    rp.get(&format!("/v1/users/{user}/devices")).await.expect(200).as_array().unwrap().clone()
}

// ---------------------------------------------------------------------------------------------
// The whole flow.

async fn device_flow(db: Db) {
    let assent = start(db).await;
    let rp = &assent.rp;
    rp.user("alice", "Alice Liddell").await;
    let uri = rp.enrollment_uri("alice").await;
    let pinned_kid = EnrollUri::parse(&uri).unwrap().kid;

    // Enroll from the URI the RP got (the QR code's content), straight to the server it names.
    let app = App::new(None);
    let enrollment = app.enroll(&uri).await.unwrap();
    assert!(enrollment.device_id.starts_with("dev_"), "{enrollment:?}");
    assert_eq!(enrollment.user_id, "alice");
    assert_eq!(enrollment.user_display_name, "Alice Liddell");
    assert_eq!(enrollment.server_url, assent.server.url);
    assert_eq!(enrollment.server_key_id, pinned_kid);
    assert_eq!(enrollment.push, PushRegistration::poll_only());
    assert!(app.client.is_enrolled());
    let devices = rp_devices(rp, "alice").await;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["id"], enrollment.device_id.as_str());
    assert_eq!(devices[0]["name"], "Test phone");
    assert_eq!(devices[0]["platform"], "android");
    assert_eq!(devices[0]["push_provider"], "none");
    let device_key = EcPublicJwk::from_value(devices[0]["public_key"].clone()).unwrap();
    // The token is single use: a second phone is told it expired (`410 enrollment_invalid`).
    let second = App::new(None);
    assert_eq!(second.enroll(&uri).await.unwrap_err(), AssentError::Expired);
    assert!(!second.client.is_enrolled() && second.keys.export_keys().is_empty());

    assert!(app.client.pending_challenges().await.unwrap().is_empty());

    // 1. Number matching, approved with the number the RP's page shows; the RP is long-polling.
    let created = create_challenge(
        rp,
        json!({
            "user_id": "alice",
            "title": "Pay EUR 250.00 to ACME",
            "details": [{"label": "Amount", "value": "EUR 250.00"}, {"label": "Payee", "value": "ACME GmbH"}],
            "context": {"ip": "203.0.113.7", "location": "Berlin, DE", "user_agent": "Firefox 128"},
            "number_matching": true,
            "ttl_seconds": 120,
        }),
    )
    .await;
    let id = id_of(&created);
    let number = u32::try_from(created["number"].as_u64().unwrap()).unwrap();
    let pending = app.client.pending_challenges().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let challenge = pending[0].clone();
    assert_eq!(challenge.id, id);
    assert_eq!(challenge.user_id, "alice");
    assert_eq!(challenge.title, "Pay EUR 250.00 to ACME");
    let details: Vec<(&str, &str)> = challenge.details.iter().map(|d| (d.label.as_str(), d.value.as_str())).collect();
    assert_eq!(details, [("Amount", "EUR 250.00"), ("Payee", "ACME GmbH")]);
    assert_eq!(challenge.context.ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(challenge.context.location.as_deref(), Some("Berlin, DE"));
    assert_eq!(challenge.context.user_agent.as_deref(), Some("Firefox 128"));
    let choices = challenge.number_choices.clone().unwrap();
    assert_eq!(choices.len(), 3);
    assert!(choices.contains(&number), "{choices:?} lacks {number}");
    let expires_at = time::OffsetDateTime::parse(
        created["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires_secs = challenge.expires_at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(i64::try_from(expires_secs).unwrap(), expires_at.unix_timestamp());
    assert!(challenge.issued_at <= std::time::SystemTime::now() + std::time::Duration::from_secs(5));
    // Fetching it by id (what an app does on a push) gives the same verified challenge.
    assert_eq!(app.client.challenge(id.clone()).await.unwrap(), challenge);
    // A number that is not offered, or none at all, is refused before anything is sent.
    let not_offered = (10..=99).find(|n| !choices.contains(n)).unwrap();
    for number in [Some(not_offered), None] {
        let refused = app.client.approve(challenge.clone(), number).await.unwrap_err();
        assert!(matches!(refused, AssentError::InvalidInput { .. }), "{refused:?}");
    }
    assert_eq!(rp_status(rp, &id).await, "pending");

    let (view, outcome) = tokio::join!(rp_view(rp, &id, 20), app.client.approve(challenge.clone(), Some(number)));
    let outcome = outcome.unwrap();
    assert_eq!(outcome.challenge_id, id);
    assert_eq!(outcome.status, ChallengeStatus::Approved);
    assert_eq!(view["status"], "approved", "{view}");
    assert_eq!(view["device_id"], enrollment.device_id.as_str());
    // The evidence is the SDK's signed answer, bound to the exact challenge it verified.
    let evidence = &view["evidence"];
    assert_eq!(evidence["challenge"], challenge.jws.as_str());
    assert_eq!(evidence["user_verified"], true);
    let answer: ResponseClaims =
        jws::decode_and_verify(evidence["response"].as_str().unwrap(), JwsType::Response, device_key.verifying_key())
            .unwrap()
            .claims()
            .unwrap();
    assert_eq!(answer.jti, id);
    assert_eq!(answer.decision, Decision::Approve);
    assert_eq!(answer.number, Some(u8::try_from(number).unwrap()));
    assert_eq!(answer.chash, sha256_b64(&challenge.jws));
    assert!(answer.uv);
    // Answered once only; and once decided, it cannot be fetched any more.
    assert_eq!(app.client.deny(challenge.clone()).await.unwrap_err(), AssentError::AlreadyDecided);
    assert_eq!(app.client.challenge(id.clone()).await.unwrap_err(), AssentError::AlreadyDecided);
    assert!(app.client.pending_challenges().await.unwrap().is_empty());

    // 2. The wrong number among the choices: sent, and the server denies it.
    let created = create_challenge(rp, json!({"user_id": "alice", "number_matching": true})).await;
    let id = id_of(&created);
    let challenge = app.client.challenge(id.clone()).await.unwrap();
    assert_eq!(challenge.title, "Confirm sign-in");
    assert!(challenge.details.is_empty());
    let right = created["number"].as_u64().unwrap();
    let wrong = challenge.number_choices.clone().unwrap().into_iter().find(|n| u64::from(*n) != right).unwrap();
    let outcome = app.client.approve(challenge, Some(wrong)).await.unwrap();
    assert_eq!(outcome.status, ChallengeStatus::Denied);
    let view = rp_view(rp, &id, 0).await;
    assert_eq!(view["status"], "denied", "{view}");
    assert_eq!(view["reason"], "number_mismatch", "{view}");

    // 3. Denied; a number for a challenge without number matching is refused locally first.
    let id = id_of(&create_challenge(rp, json!({"user_id": "alice", "title": "Sign in to ACME"})).await);
    let challenge = app.client.challenge(id.clone()).await.unwrap();
    assert_eq!(challenge.number_choices, None);
    let refused = app.client.approve(challenge.clone(), Some(42)).await.unwrap_err();
    assert!(matches!(refused, AssentError::InvalidInput { .. }), "{refused:?}");
    let (view, outcome) = tokio::join!(rp_view(rp, &id, 20), app.client.deny(challenge));
    assert_eq!(outcome.unwrap().status, ChallengeStatus::Denied);
    assert_eq!(view["status"], "denied", "{view}");
    assert!(view.get("reason").is_none(), "{view}");

    // 4. Reported as fraud: push is locked for Alice until the RP unlocks her.
    let id = id_of(&create_challenge(rp, json!({"user_id": "alice", "title": "Sign in to ACME"})).await);
    let challenge = app.client.challenge(id.clone()).await.unwrap();
    let (view, outcome) = tokio::join!(rp_view(rp, &id, 20), app.client.report_fraud(challenge));
    assert_eq!(outcome.unwrap().status, ChallengeStatus::FraudReported);
    assert_eq!(view["status"], "fraud_reported", "{view}");
    rp.challenge(json!({"user_id": "alice"})).await.problem(409, "push_locked");
    assert_eq!(rp.post("/v1/users/alice/unlock", json!({})).await.expect(200)["unlocked"], true);

    // 5. After the unlock, push works again; the app was restarted in between.
    let id = id_of(&create_challenge(rp, json!({"user_id": "alice", "title": "Sign in again"})).await);
    let restarted = app.restarted();
    assert_eq!(restarted.enrollment().unwrap(), enrollment);
    let pending = restarted.pending_challenges().await.unwrap();
    assert_eq!(pending.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
    let outcome = restarted.approve(pending[0].clone(), None).await.unwrap();
    assert_eq!(outcome.status, ChallengeStatus::Approved);
    assert_eq!(rp_status(rp, &id).await, "approved");

    // Push registration changes reach the server and the saved state.
    let fcm = PushRegistration { provider: PushProvider::Fcm, token: Some("fcm-registration-token-1".into()) };
    app.client.update_push_token(fcm.clone()).await.unwrap();
    assert_eq!(app.client.enrollment().unwrap().push, fcm);
    let devices = rp_devices(rp, "alice").await;
    assert_eq!((devices[0]["push_provider"].as_str(), devices[0]["push_enabled"].as_bool()), (Some("fcm"), Some(true)));
    assert_eq!(app.restarted().enrollment().unwrap().push, fcm);
    app.client.update_push_token(PushRegistration::poll_only()).await.unwrap();
    let devices = rp_devices(rp, "alice").await;
    assert_eq!(
        (devices[0]["push_provider"].as_str(), devices[0]["push_enabled"].as_bool()),
        (Some("none"), Some(false))
    );

    // Unenrolled: gone on the server (Alice has no factor left), and locally.
    app.client.unenroll().await.unwrap();
    assert!(!app.client.is_enrolled());
    assert!(app.keys.export_keys().is_empty());
    assert_eq!(app.state.load().unwrap(), None);
    assert_eq!(rp_devices(rp, "alice").await, Vec::<Value>::new());
    rp.challenge(json!({"user_id": "alice"})).await.problem(422, "no_factor");
    assert_eq!(app.client.pending_challenges().await.unwrap_err(), AssentError::NotEnrolled);
    // Another client over the same stores still holds the old state in memory, but its key
    // went with the unenrollment.
    assert_eq!(restarted.pending_challenges().await.unwrap_err(), AssentError::KeyInvalidated);
}

// ---------------------------------------------------------------------------------------------
// A tampering reverse proxy between the SDK and the server.

/// Rewrites an upstream answer: gets the request method and path, the status and the JSON
/// body; returns the status and body to send instead, or `None` to pass it through.
type Rewrite = Box<dyn Fn(&Method, &str, u16, &Value) -> Option<(u16, Value)> + Send + Sync>;

struct ProxyState {
    upstream: Mutex<String>,
    http: reqwest::Client,
    rewrite: Mutex<Option<Rewrite>>,
    /// `METHOD path?query` of every request forwarded.
    seen: Mutex<Vec<String>>,
}

/// A reverse proxy on `127.0.0.1:0` forwarding every request unchanged (method, path and
/// query, headers including `Authorization`, body) and, when told, rewriting answers.
struct Proxy {
    url: String,
    state: Arc<ProxyState>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let state = Arc::new(ProxyState {
            upstream: Mutex::new(upstream.trim_end_matches('/').to_owned()),
            http: reqwest::Client::new(),
            rewrite: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new().fallback(forward).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Proxy { url, state }
    }

    fn set(&self, rewrite: impl Fn(&Method, &str, u16, &Value) -> Option<(u16, Value)> + Send + Sync + 'static) {
        *self.state.rewrite.lock().unwrap() = Some(Box::new(rewrite));
    }

    /// Rewrites the `jws` of every challenge the device fetches, one by one or listed.
    fn challenges(&self, f: impl Fn(&str) -> String + Send + Sync + 'static) {
        self.set(move |method, path, status, body| {
            if method != Method::GET || !path.starts_with("/v1/device/challenges") || status != 200 {
                return None;
            }
            let mut body = body.clone();
            let items = match body.get_mut("challenges") {
                Some(list) => list.as_array_mut()?.iter_mut().collect::<Vec<_>>(),
                None => vec![&mut body],
            };
            for item in items {
                let jws = item["jws"].as_str()?.to_owned();
                item["jws"] = f(&jws).into();
            }
            Some((status, body))
        });
    }

    /// Forwards to another server from now on.
    fn retarget(&self, upstream: &str) {
        *self.state.upstream.lock().unwrap() = upstream.trim_end_matches('/').to_owned();
    }

    fn pass_through(&self) {
        *self.state.rewrite.lock().unwrap() = None;
    }

    /// Forgets the requests seen so far.
    fn take_seen(&self) -> Vec<String> {
        std::mem::take(&mut *self.state.seen.lock().unwrap())
    }
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 1 << 20).await.unwrap();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    state.seen.lock().unwrap().push(format!("{} {target}", parts.method));
    let base = state.upstream.lock().unwrap().clone();
    let mut upstream = state.http.request(parts.method.clone(), format!("{base}{target}"));
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            upstream = upstream.header(name, value);
        }
    }
    let answer = upstream.body(body).send().await.unwrap();
    let status = answer.status().as_u16();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = answer.bytes().await.unwrap();
    let rewritten = {
        let rewrite = state.rewrite.lock().unwrap();
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        match (rewrite.as_ref(), json) {
            (Some(f), Some(json)) => f(&parts.method, parts.uri.path(), status, &json),
            _ => None,
        }
    };
    let (status, content_type, body) = match rewritten {
        Some((status, json)) => {
            (status, Some(HeaderValue::from_static("application/json")), Body::from(json.to_string()))
        }
        None => (status, content_type, Body::from(bytes)),
    };
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    if let Some(value) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// The payload of a compact JWS, unverified.
fn payload_of(token: &str) -> Value {
    serde_json::from_slice(&b64::decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

/// The same token with its payload replaced and its header and signature kept.
fn with_payload(token: &str, payload: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64::encode(serde_json::to_vec(payload).unwrap()), parts[2])
}

/// The token's claims signed again as a challenge by `key` under `kid`.
fn resigned(token: &str, key: &SigningKey, kid: &str) -> String {
    jws::sign(JwsType::Challenge, KeyRef::Kid(kid), &payload_of(token), key).unwrap()
}

fn thumbprint_of(key: &SigningKey) -> String {
    EcPublicJwk::from_verifying_key(key.verifying_key()).thumbprint()
}

/// Asserts the call was refused with a `Tampered` error whose detail contains `why`.
#[track_caller]
fn assert_tampered<T: std::fmt::Debug>(result: Result<T, AssentError>, why: &str) {
    match result {
        Err(AssentError::Tampered { detail }) => assert!(detail.contains(why), "{detail:?} lacks {why:?}"),
        other => panic!("expected Tampered ({why}), got {other:?}"),
    }
}

/// What the SDK must refuse on the way from the server: a challenge altered in transit, signed
/// by a key other than the pinned one (under the pinned kid or its own: the server key swapped
/// after enrollment), addressed to another device, or expired. Each is refused with its typed
/// error, nothing of it is returned to the app, and no answer is sent.
async fn tampered_challenges_are_refused(db: Db) {
    let assent = start(db).await;
    let rp = &assent.rp;
    let proxy = Proxy::start(&assent.server.url).await;
    rp.user("tom", "Tom").await;
    rp.user("eve", "Eve").await;
    let app = App::new(Some(&proxy.url));
    let tom = app.enroll(&rp.enrollment_uri("tom").await).await.unwrap();
    assert_eq!(tom.server_url, proxy.url, "the SDK talks to the proxy");
    let pinned_kid = tom.server_key_id.clone();
    // Eve's phone talks to the server directly.
    let eve_phone = Phone::enroll(&rp.enrollment_uri("eve").await).await;

    let created = create_challenge(
        rp,
        json!({"user_id": "tom", "title": "Pay EUR 250.00 to ACME",
               "details": [{"label": "Amount", "value": "EUR 250.00"}], "number_matching": true}),
    )
    .await;
    let id = id_of(&created);
    let number = u32::try_from(created["number"].as_u64().unwrap()).unwrap();
    let genuine = app.client.challenge(id.clone()).await.unwrap();
    let attacker = jws::generate_signing_key().unwrap();
    proxy.take_seen();

    // Every refusal below leaves the challenge pending and unanswered on the server.
    let untouched = |what: &str| {
        let seen = proxy.take_seen();
        assert!(!seen.iter().any(|r| r.starts_with("POST")), "{what}: an answer was sent: {seen:?}");
    };

    // (a) Altered in transit: the amount changed, the server's signature kept.
    proxy.challenges(|jws| {
        let mut payload = payload_of(jws);
        payload["details"][0]["value"] = "EUR 25,000.00".into();
        with_payload(jws, &payload)
    });
    assert_tampered(app.client.challenge(id.clone()).await, "signature");
    assert_tampered(app.client.pending_challenges().await, "signature");
    untouched("altered");
    // The same alteration made by a buggy or hostile app to the record it hands back.
    let mut payload = payload_of(&genuine.jws);
    payload["details"][0]["value"] = "EUR 25,000.00".into();
    let altered = Challenge { jws: with_payload(&genuine.jws, &payload), ..genuine.clone() };
    assert_tampered(app.client.approve(altered, Some(number)).await, "signature");
    untouched("altered record");

    // (b) Signed by another key under the pinned kid: the signature does not verify.
    let key = attacker.clone();
    let kid = pinned_kid.clone();
    proxy.challenges(move |jws| resigned(jws, &key, &kid));
    assert_tampered(app.client.challenge(id.clone()).await, "signature");
    assert_tampered(app.client.pending_challenges().await, "signature");
    untouched("re-signed under the pinned kid");

    // The server key swapped after enrollment: challenges signed by another key, named by its
    // own thumbprint. (A real `assent` refuses to start on a database recorded with another
    // key, so the proxy plays the swapped server.)
    let key = attacker.clone();
    proxy.challenges(move |jws| resigned(jws, &key, &thumbprint_of(&key)));
    assert_eq!(app.client.challenge(id.clone()).await.unwrap_err(), AssentError::ServerKeyMismatch);
    assert_eq!(app.client.pending_challenges().await.unwrap_err(), AssentError::ServerKeyMismatch);
    untouched("swapped server key");

    // (c) Addressed to another device: Eve's challenge, genuinely signed by the server, for
    // Eve's phone. The server would answer Tom's device 404 for it; the proxy serves it.
    let eve_id = id_of(&create_challenge(rp, json!({"user_id": "eve", "title": "Eve's sign-in"})).await);
    let (eve_jws, eve_claims) = eve_phone.fetch(&eve_id).await;
    assert_eq!(eve_claims.aud, std::slice::from_ref(&eve_phone.device_id));
    proxy.pass_through();
    assert_eq!(app.client.challenge(eve_id.clone()).await.unwrap_err(), AssentError::NotFound);
    let target = format!("/v1/device/challenges/{eve_id}");
    let item = json!({"id": eve_id, "jws": eve_jws});
    proxy.set(move |method, path, status, body| {
        if method != Method::GET {
            None
        } else if path == target {
            Some((200, item.clone()))
        } else if path == "/v1/device/challenges" && status == 200 {
            let mut body = body.clone();
            body["challenges"].as_array_mut()?.push(item.clone());
            Some((200, body))
        } else {
            None
        }
    });
    assert_eq!(app.client.challenge(eve_id.clone()).await.unwrap_err(), AssentError::NotAddressedToDevice);
    assert_eq!(app.client.pending_challenges().await.unwrap_err(), AssentError::NotAddressedToDevice);
    // Served in place of Tom's own challenge it does not even name the challenge asked for.
    let foreign = eve_jws.clone();
    proxy.challenges(move |_| foreign.clone());
    assert_tampered(app.client.challenge(id.clone()).await, "asked for challenge");
    untouched("another device's challenge");
    assert_eq!(rp_status(rp, &eve_id).await, "pending");

    // Through all of it the server kept Tom's challenge pending; untampered, it is answerable.
    assert_eq!(rp_status(rp, &id).await, "pending");
    proxy.pass_through();
    let fetched = app.client.challenge(id.clone()).await.unwrap();
    assert_eq!(fetched, genuine);
    assert_eq!(app.client.approve(fetched, Some(number)).await.unwrap().status, ChallengeStatus::Approved);
    assert_eq!(rp_status(rp, &id).await, "approved");

    // (d) Expired: the phone's clock passes `exp` (30 s ttl, the clock 35 s ahead: within the
    // server's 60 s proof window, so only the SDK's own check can refuse it).
    let id = id_of(&create_challenge(rp, json!({"user_id": "tom", "ttl_seconds": 30})).await);
    let shown = app.client.challenge(id.clone()).await.unwrap();
    proxy.take_seen();
    app.clock.advance_to(35);
    assert_eq!(app.client.approve(shown.clone(), None).await.unwrap_err(), AssentError::Expired);
    untouched("expired, answered late");
    assert_eq!(app.client.challenge(id.clone()).await.unwrap_err(), AssentError::Expired);
    // A listing leaves expired challenges out rather than failing.
    assert!(app.client.pending_challenges().await.unwrap().is_empty());
    untouched("expired");
    assert_eq!(rp_status(rp, &id).await, "pending");
    app.clock.advance_to(0);
    let (view, outcome) = tokio::join!(rp_view(rp, &id, 20), app.client.deny(shown));
    assert_eq!(outcome.unwrap().status, ChallengeStatus::Denied);
    assert_eq!(view["status"], "denied");
}

/// The enrollment answer's keys lack the key whose thumbprint the QR code carried: the SDK
/// refuses to enroll and keeps nothing; a JWKS holding the pinned key among others is fine.
async fn swapped_server_key_at_enrollment_is_refused(db: Db) {
    let assent = start(db).await;
    let rp = &assent.rp;
    let proxy = Proxy::start(&assent.server.url).await;
    rp.user("ann", "Ann").await;
    let other = jws::generate_signing_key().unwrap();
    let other_jwk = EcPublicJwk::jwks_entry(other.verifying_key());

    let swap_keys = |f: Box<dyn Fn(Jwks) -> Jwks + Send + Sync>| {
        proxy.set(move |method, path, status, body| {
            if method != Method::POST || path != "/v1/device/enroll" || status != 201 {
                return None;
            }
            let mut body = body.clone();
            let keys: Jwks = serde_json::from_value(body["server_keys"].clone()).unwrap();
            body["server_keys"] = serde_json::to_value(f(keys)).unwrap();
            Some((status, body))
        });
    };

    // Another key in place of the server's; then another key labelled with the pinned kid.
    let jwk = other_jwk.clone();
    swap_keys(Box::new(move |_| Jwks { keys: vec![jwk.clone()] }));
    let app = App::new(Some(&proxy.url));
    let uri = rp.enrollment_uri("ann").await;
    assert_eq!(app.enroll(&uri).await.unwrap_err(), AssentError::ServerKeyMismatch);
    assert!(!app.client.is_enrolled());
    assert!(app.keys.export_keys().is_empty(), "the new device key was deleted");
    assert_eq!(app.state.load().unwrap(), None);

    let jwk = other_jwk.clone();
    swap_keys(Box::new(move |keys| Jwks { keys: vec![jwk.clone().with_kid(keys.keys[0].kid().unwrap())] }));
    assert_eq!(app.enroll(&rp.enrollment_uri("ann").await).await.unwrap_err(), AssentError::ServerKeyMismatch);
    assert!(!app.client.is_enrolled() && app.keys.export_keys().is_empty());

    // During a key rotation the JWKS holds more than one key: the pinned one is found.
    let jwk = other_jwk.clone();
    swap_keys(Box::new(move |mut keys| {
        keys.keys.insert(0, jwk.clone());
        keys
    }));
    let uri = rp.enrollment_uri("ann").await;
    let enrollment = app.enroll(&uri).await.unwrap();
    assert_eq!(enrollment.server_key_id, EnrollUri::parse(&uri).unwrap().kid);
    proxy.pass_through();
    let id = id_of(&create_challenge(rp, json!({"user_id": "ann"})).await);
    let challenge = app.client.challenge(id.clone()).await.unwrap();
    assert_eq!(app.client.approve(challenge, None).await.unwrap().status, ChallengeStatus::Approved);
    assert_eq!(rp_status(rp, &id).await, "approved");
}

/// A device the RP revoked, or that the server no longer knows (it lost its database and came
/// back with the same key), is reported as `DeviceRevoked`, and `unenroll` then forgets it
/// locally.
async fn revoked_or_forgotten_device_unenrolls_locally(db: Db) {
    let first = start(db).await;
    let proxy = Proxy::start(&first.server.url).await;
    first.rp.user("rob", "Rob").await;
    let app = App::new(Some(&proxy.url));

    let device = app.enroll(&first.rp.enrollment_uri("rob").await).await.unwrap();
    let revoke = first.rp.call(Method::DELETE, &format!("/v1/users/rob/devices/{}", device.device_id), None).await;
    assert!(revoke.status == 204 || revoke.status == 200, "{}", revoke.body);
    assert_eq!(app.client.pending_challenges().await.unwrap_err(), AssentError::DeviceRevoked);
    app.client.unenroll().await.unwrap();
    assert!(!app.client.is_enrolled() && app.keys.export_keys().is_empty());
    assert_eq!(app.state.load().unwrap(), None);

    app.enroll(&first.rp.enrollment_uri("rob").await).await.unwrap();
    let key_file = first.server.data_dir.join("server-key.pem");
    let second = start_with_key(db, Some(&key_file)).await;
    proxy.retarget(&second.server.url);
    assert_eq!(app.client.pending_challenges().await.unwrap_err(), AssentError::DeviceRevoked);
    app.client.unenroll().await.unwrap();
    assert!(!app.client.is_enrolled() && app.keys.export_keys().is_empty());
    // Same key, so a fresh enrollment with the new server pins the same kid.
    second.rp.user("rob", "Rob").await;
    let again = app.enroll(&second.rp.enrollment_uri("rob").await).await.unwrap();
    assert_eq!(again.server_key_id, device.server_key_id);
}

// ---------------------------------------------------------------------------------------------
// The reference app, as the README walks through it.

fn assent_device_bin() -> PathBuf {
    let bin = assent_bin().with_file_name(format!("assent-device{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} is missing: run the tests with `cargo test --workspace`", bin.display());
    bin
}

/// Runs `assent-device --state <state> <args>` and returns its stdout; fails on a non-zero exit.
fn assent_device(state: &Path, args: &[&str]) -> String {
    let out = Command::new(assent_device_bin()).arg("--state").arg(state).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "assent-device {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// README, "Try it with a phone": enroll `assent-device` from the URI, approve a challenge (and
/// one with number matching, non-interactively), the RP sees the results.
#[tokio::test]
async fn readme_walk_through_with_assent_device() {
    let assent = start(Db::Sqlite).await;
    let rp = &assent.rp;
    let phone = tempfile::tempdir().unwrap();
    let state = phone.path().join("assent-device.json");
    rp.user("jane", "Jane Doe").await;
    let uri = rp.enrollment_uri("jane").await;

    let out = assent_device(&state, &["enroll", &uri]);
    assert!(out.contains("Enrolled device dev_") && out.contains("for Jane Doe (jane)"), "{out}");
    let status = assent_device(&state, &["status"]);
    assert!(status.contains(&assent.server.url), "{status}");

    let id = id_of(
        &create_challenge(
            rp,
            json!({"user_id": "jane", "title": "Sign in to Example",
                   "details": [{"label": "Browser", "value": "Firefox on Linux"}]}),
        )
        .await,
    );
    let list = assent_device(&state, &["list"]);
    assert!(list.contains(&id) && list.contains("Sign in to Example"), "{list}");
    let out = assent_device(&state, &["approve", &id]);
    assert!(out.contains("Browser: Firefox on Linux") && out.contains("Request approved"), "{out}");
    let view = rp_view(rp, &id, 0).await;
    assert_eq!(view["status"], "approved", "{view}");

    // Number matching: `--number` answers without a prompt (stdin is closed here).
    let created = create_challenge(rp, json!({"user_id": "jane", "number_matching": true})).await;
    let id = id_of(&created);
    let number = created["number"].as_u64().unwrap().to_string();
    let out = assent_device(&state, &["approve", &id, "--number", &number]);
    assert!(out.contains("number matching:") && out.contains("Request approved"), "{out}");
    assert_eq!(rp_status(rp, &id).await, "approved");

    assert!(assent_device(&state, &["unenroll"]).contains("Device unenrolled"));
    assert!(!state.exists());
    assert_eq!(rp_devices(rp, "jane").await, Vec::<Value>::new());
}

// ---------------------------------------------------------------------------------------------
// The Python bindings.

/// The SDK's cdylib that cargo built for this test run: cargo builds every crate type of a
/// dependency, and cdylibs keep their plain name in `deps/`, next to this test's executable.
fn sdk_cdylib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let name = format!("{}assent_sdk{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let lib = exe.parent().unwrap().join(name);
    assert!(lib.exists(), "{} is missing", lib.display());
    lib
}

/// Finds the SDK's crate (for its `uniffi.toml`) without running `cargo metadata`.
struct SdkCrateRoot;

impl uniffi_bindgen::BindgenPathsLayer for SdkCrateRoot {
    fn get_crate_root(&self, crate_name: &str) -> Option<camino::Utf8PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join("mobile-sdk");
        (crate_name == "assent_sdk").then(|| camino::Utf8PathBuf::from_path_buf(root).ok()).flatten()
    }
}

/// Generates the Python bindings from the built library (what `scripts/bindings.sh` does with
/// the `uniffi-bindgen` binary) into `out`, with the library next to them.
fn generate_python_bindings(out: &Path) {
    use uniffi_bindgen::bindings::{GenerateOptions, TargetLanguage, generate_with_bindgen_paths};
    let lib = sdk_cdylib();
    let mut paths = uniffi_bindgen::BindgenPaths::default();
    paths.add_layer(SdkCrateRoot);
    let options = GenerateOptions {
        languages: vec![TargetLanguage::Python],
        source: camino::Utf8PathBuf::from_path_buf(lib.clone()).unwrap(),
        out_dir: camino::Utf8PathBuf::from_path_buf(out.to_owned()).unwrap(),
        config_override: None,
        format: false,
        crate_filter: Some("assent_sdk".into()),
        metadata_no_deps: true,
    };
    generate_with_bindgen_paths(options, paths).unwrap();
    std::fs::copy(&lib, out.join(lib.file_name().unwrap())).unwrap();
    assert!(out.join("assent_sdk.py").exists());
}

/// Issue 5: the Python bindings enroll against a running `assent`, receive challenges and
/// answer them, with the key store and the state store implemented in Python through the
/// foreign-trait interfaces (`mobile-sdk/tests/python/test_bindings.py`, which also runs its
/// self-checks against a Python mock of the device API first).
#[tokio::test]
async fn python_bindings_against_the_real_server() {
    let bindings = tempfile::tempdir().unwrap();
    generate_python_bindings(bindings.path());
    let assent = start(Db::Sqlite).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mobile-sdk/tests/python/test_bindings.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(script)
        .env("ASSENT_BINDINGS_DIR", bindings.path())
        .env("ASSENT_URL", &assent.server.url)
        .env("ASSENT_API_KEY", assent.server.admin_key())
        .env("ASSENT_USER_ID", "python-user")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!(
        "python bindings test (pip install -r mobile-sdk/requirements.txt):\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        assent.server.log()
    );
    assert!(out.status.success(), "{report}");
    assert!(stdout.contains(&format!("# device flow against the server at {}", assent.server.url)), "{report}");
    assert!(stdout.contains("ok    approved through the bindings; the RP sees approved"), "{report}");
    assert!(stdout.trim_end().ends_with(" passed, 0 failed"), "{report}");
    // The RP sees what the Python app did.
    let devices = rp_devices(&assent.rp, "python-user").await;
    assert!(devices.is_empty(), "the Python test unenrolls at the end: {devices:?}");
    let events = assent.rp.get("/v1/events?user_id=python-user").await;
    let text = events.expect(200).to_string();
    for kind in ["device.enrolled", "challenge.approved", "challenge.denied", "device.revoked"] {
        assert!(text.contains(kind), "{kind} missing from {text}");
    }
}
