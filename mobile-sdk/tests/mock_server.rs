//! The SDK over real HTTP against a small in-process mock of the Assent device API, which plays
//! the server with `assent-protocol`: it verifies enrollment proofs of possession, request
//! proofs and response JWS exactly as the contract says, and signs challenges. The SDK against
//! the real server, on both databases and through a tampering proxy, is `tests/sdk.rs`.
#![allow(clippy::unwrap_used, clippy::result_large_err)] // Test code: a failed unwrap is a failed test.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use assent_protocol::jws::{self, JwsType, KeyRef};
use assent_protocol::messages::{parse_proof_authorization, within_clock_skew};
use assent_protocol::p256::ecdsa::{SigningKey, VerifyingKey};
use assent_protocol::{
    ChallengeClaims, ChallengeResponseRequest, Context, Decision, Detail, DeviceChallenge, DeviceChallengeList,
    EcPublicJwk, EnrollClaims, EnrollResponse, EnrollUri, Jwks, ProofClaims, PushTokenUpdate, ResponseClaims,
    sha256_b64,
};
use assent_sdk::{
    AssentClient, AssentError, ChallengeStatus, ClientConfig, Clock, Connection, DeviceRegistration, FileStateStore,
    KeyStore, MemoryStateStore, Platform, PushProvider, PushRegistration, SignatureFormat, SoftwareKeyStore,
    StateStore, SystemClock,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::serve::ListenerExt as _;
use serde_json::json;

const TOKEN: &str = "enrollment-token-1";

#[derive(Default)]
struct Data {
    devices: HashMap<String, VerifyingKey>,
    revoked: HashSet<String>,
    seen_jtis: HashSet<String>,
    /// id -> (jws, status, correct number)
    challenges: Vec<(String, String, String, Option<u8>)>,
    responses: Vec<ResponseClaims>,
    push: Option<PushTokenUpdate>,
    /// Serve this JWKS at enrollment instead of the real one (a swapped key).
    jwks_override: Option<Jwks>,
    /// Serve this token instead of the stored challenge JWS (tampering in transit).
    jws_override: Option<String>,
    enroll_claims: Option<EnrollClaims>,
}

struct Mock {
    key: SigningKey,
    data: Mutex<Data>,
    /// TCP connections accepted.
    connections: AtomicUsize,
}

impl Mock {
    fn kid(&self) -> String {
        EcPublicJwk::from_verifying_key(self.key.verifying_key()).thumbprint()
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap()
    }

    /// Adds a pending challenge for every device, signed by `signer` (the server key unless a
    /// test forges one).
    fn add_challenge(&self, number_choices: Option<Vec<u8>>, ttl: i64, signer: Option<&SigningKey>) -> String {
        let mut data = self.data();
        let id = format!("chl_{}", data.challenges.len() + 1);
        let now = SystemClock.now();
        let claims = ChallengeClaims {
            jti: id.clone(),
            sub: "alice".into(),
            aud: data.devices.keys().cloned().collect(),
            iat: now,
            exp: now + ttl,
            title: "Pay EUR 250.00 to ACME".into(),
            details: vec![Detail { label: "IBAN".into(), value: "DE89 3704 0044 0532 0130 00".into() }],
            context: Context { ip: Some("203.0.113.7".into()), location: Some("Berlin, DE".into()), user_agent: None },
            number_choices: number_choices.clone(),
        };
        let signer = signer.unwrap_or(&self.key);
        let kid = EcPublicJwk::from_verifying_key(signer.verifying_key()).thumbprint();
        let token = jws::sign(JwsType::Challenge, KeyRef::Kid(&kid), &claims, signer).unwrap();
        let correct = number_choices.map(|c| c[1]);
        data.challenges.push((id.clone(), token, "pending".into(), correct));
        id
    }
}

fn problem(status: StatusCode, code: &str) -> Response {
    (
        status,
        [("content-type", "application/problem+json")],
        json!({"type": "about:blank", "title": code, "status": status.as_u16(), "code": code}).to_string(),
    )
        .into_response()
}

/// Checks `Authorization: Assent-Proof` as the server must; returns the device id.
fn authenticate(mock: &Mock, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<String, Response> {
    let unauthorized = || problem(StatusCode::UNAUTHORIZED, "invalid_proof");
    let value = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or_else(unauthorized)?;
    let token = parse_proof_authorization(value).ok_or_else(unauthorized)?;
    let unverified = jws::decode(token, JwsType::Proof).map_err(|_| unauthorized())?;
    let device_id = unverified.header().kid().unwrap_or_default().to_owned();
    let mut data = mock.data();
    if data.revoked.contains(&device_id) {
        return Err(problem(StatusCode::UNAUTHORIZED, "device_revoked"));
    }
    let key = *data.devices.get(&device_id).ok_or_else(unauthorized)?;
    let claims: ProofClaims = unverified.verify(&key).and_then(|v| v.claims()).map_err(|_| unauthorized())?;
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    claims.check_request(method.as_str(), target, body).map_err(|_| unauthorized())?;
    if !within_clock_skew(claims.iat, SystemClock.now()) || !data.seen_jtis.insert(claims.jti) {
        return Err(unauthorized());
    }
    Ok(device_id)
}

async fn enroll(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: String) -> Response {
    assert_eq!(headers["content-type"], "application/jose");
    let verified = jws::decode(&body, JwsType::Enroll).and_then(|u| u.verify_with_embedded_jwk()).unwrap();
    let claims: EnrollClaims = verified.claims().unwrap();
    if claims.token != TOKEN {
        return problem(StatusCode::GONE, "enrollment_expired");
    }
    let key = *verified.header().jwk().unwrap().verifying_key();
    let mut data = mock.data();
    let device_id = format!("dev_{}", data.devices.len() + 1);
    data.devices.insert(device_id.clone(), key);
    data.enroll_claims = Some(claims);
    let server_keys =
        data.jwks_override.clone().unwrap_or_else(|| Jwks::from_verifying_keys([mock.key.verifying_key()]));
    let answer = EnrollResponse { device_id, user_id: "alice".into(), user_display_name: "Alice".into(), server_keys };
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn list(State(mock): State<Arc<Mock>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = authenticate(&mock, &method, &uri, &headers, b"") {
        return r;
    }
    let data = mock.data();
    let challenges = data
        .challenges
        .iter()
        .filter(|c| c.2 == "pending")
        .map(|c| DeviceChallenge { id: c.0.clone(), jws: data.jws_override.clone().unwrap_or_else(|| c.1.clone()) })
        .collect();
    axum::Json(DeviceChallengeList { challenges }).into_response()
}

async fn one(
    State(mock): State<Arc<Mock>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authenticate(&mock, &method, &uri, &headers, b"") {
        return r;
    }
    let data = mock.data();
    match data.challenges.iter().find(|c| c.0 == id) {
        Some(c) => axum::Json(DeviceChallenge {
            id: c.0.clone(),
            jws: data.jws_override.clone().unwrap_or_else(|| c.1.clone()),
        })
        .into_response(),
        None => problem(StatusCode::NOT_FOUND, "not_found"),
    }
}

async fn respond(
    State(mock): State<Arc<Mock>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let device_id = match authenticate(&mock, &method, &uri, &headers, &body) {
        Ok(d) => d,
        Err(r) => return r,
    };
    assert_eq!(headers["content-type"], "application/json");
    let request: ChallengeResponseRequest = serde_json::from_slice(&body).unwrap();
    let unverified = jws::decode(&request.response, JwsType::Response).unwrap();
    assert_eq!(unverified.header().kid(), Some(device_id.as_str()));
    let mut data = mock.data();
    let key = data.devices[&device_id];
    let claims: ResponseClaims = unverified.verify(&key).unwrap().claims().unwrap();
    data.responses.push(claims.clone());
    let Some(challenge) = data.challenges.iter_mut().find(|c| c.0 == id) else {
        return problem(StatusCode::NOT_FOUND, "not_found");
    };
    assert_eq!(claims.jti, id);
    assert_eq!(claims.chash, sha256_b64(&challenge.1));
    if challenge.2 != "pending" {
        return problem(StatusCode::CONFLICT, "already_decided");
    }
    challenge.2 = match claims.decision {
        Decision::Approve if claims.number == challenge.3 => "approved",
        Decision::Approve | Decision::Deny => "denied",
        Decision::Fraud => "fraud_reported",
    }
    .into();
    axum::Json(json!({"id": id, "status": challenge.2})).into_response()
}

async fn push_token(
    State(mock): State<Arc<Mock>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&mock, &method, &uri, &headers, &body) {
        return r;
    }
    mock.data().push = Some(serde_json::from_slice(&body).unwrap());
    StatusCode::NO_CONTENT.into_response()
}

async fn delete_device(State(mock): State<Arc<Mock>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    match authenticate(&mock, &method, &uri, &headers, b"") {
        Ok(device_id) => {
            mock.data().devices.remove(&device_id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r,
    }
}

/// Starts the mock on 127.0.0.1 (port 0) and returns it with its enrollment URI.
async fn start() -> (Arc<Mock>, String) {
    let mock = Arc::new(Mock {
        key: jws::generate_signing_key().unwrap(),
        data: Mutex::new(Data::default()),
        connections: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/v1/device/enroll", post(enroll))
        .route("/v1/device/challenges", get(list))
        .route("/v1/device/challenges/{id}", get(one))
        .route("/v1/device/challenges/{id}/response", post(respond))
        .route("/v1/device/push-token", put(push_token))
        .route("/v1/device", axum::routing::delete(delete_device))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counter = mock.clone();
    let listener = listener.tap_io(move |_| {
        counter.connections.fetch_add(1, Ordering::Relaxed);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let uri = EnrollUri {
        server: format!("http://127.0.0.1:{port}"),
        token: TOKEN.into(),
        kid: mock.kid(),
        user: "Alice".into(),
    }
    .to_string();
    (mock, uri)
}

fn phone() -> DeviceRegistration {
    DeviceRegistration { name: "Test phone".into(), platform: Platform::Other, push: PushRegistration::poll_only() }
}

fn client(keys: Arc<SoftwareKeyStore>, state: Arc<dyn StateStore>) -> Arc<AssentClient> {
    AssentClient::new(keys, state, None).unwrap()
}

#[tokio::test]
async fn enroll_list_approve_with_and_without_number_matching() {
    for format in [SignatureFormat::Der, SignatureFormat::Raw] {
        let (mock, uri) = start().await;
        let keys = Arc::new(SoftwareKeyStore::new(format).with_user_verification(true));
        let client = client(keys.clone(), Arc::new(MemoryStateStore::new()));
        assert!(!client.is_enrolled());
        assert_eq!(client.pending_challenges().await, Err(AssentError::NotEnrolled));

        let enrollment = client.enroll(uri.clone(), phone()).await.unwrap();
        assert_eq!(enrollment.device_id, "dev_1");
        assert_eq!(enrollment.user_display_name, "Alice");
        assert_eq!(enrollment.server_key_id, mock.kid());
        assert_eq!(client.enrollment(), Some(enrollment));
        let sent = mock.data().enroll_claims.clone().unwrap();
        assert_eq!(sent.name, "Test phone");
        assert_eq!(sent.push.provider, assent_protocol::PushProvider::None);
        assert_eq!(client.enroll(uri.clone(), phone()).await, Err(AssentError::AlreadyEnrolled));

        // A plain challenge: listed, verified, approved; a second answer is refused.
        let id = mock.add_challenge(None, 120, None);
        let pending = client.pending_challenges().await.unwrap();
        assert_eq!(pending.len(), 1);
        let challenge = pending[0].clone();
        assert_eq!(challenge.id, id);
        assert_eq!(challenge.title, "Pay EUR 250.00 to ACME");
        assert_eq!(challenge.details[0].label, "IBAN");
        assert_eq!(challenge.context.location.as_deref(), Some("Berlin, DE"));
        assert_eq!(challenge.number_choices, None);
        let outcome = client.approve(challenge.clone(), None).await.unwrap();
        assert_eq!(outcome.challenge_id, id);
        assert_eq!(outcome.status, ChallengeStatus::Approved);
        let response = mock.data().responses.last().cloned().unwrap();
        assert!(response.uv);
        assert_eq!(response.number, None);
        assert_eq!(client.deny(challenge).await, Err(AssentError::AlreadyDecided));

        // Number matching: the number is required and must be one of the choices.
        let id = mock.add_challenge(Some(vec![17, 42, 93]), 120, None);
        let challenge = client.challenge(id.clone()).await.unwrap();
        assert_eq!(challenge.number_choices, Some(vec![17, 42, 93]));
        assert!(matches!(client.approve(challenge.clone(), None).await, Err(AssentError::InvalidInput { .. })));
        assert!(matches!(client.approve(challenge.clone(), Some(50)).await, Err(AssentError::InvalidInput { .. })));
        let outcome = client.approve(challenge, Some(42)).await.unwrap();
        assert_eq!(outcome.status, ChallengeStatus::Approved);
        assert_eq!(mock.data().responses.last().unwrap().number, Some(42));

        // Deny and fraud.
        let id = mock.add_challenge(None, 120, None);
        let challenge = client.challenge(id).await.unwrap();
        assert_eq!(client.report_fraud(challenge).await.unwrap().status, ChallengeStatus::FraudReported);
        assert_eq!(client.challenge("chl_404".into()).await, Err(AssentError::NotFound));
        assert!(matches!(client.challenge("chl_../../v1/device".into()).await, Err(AssentError::InvalidInput { .. })));

        // Push token update, then unenroll.
        let fcm = PushRegistration { provider: PushProvider::Fcm, token: Some("fcm-token-2".into()) };
        client.update_push_token(fcm.clone()).await.unwrap();
        assert_eq!(
            mock.data().push,
            Some(PushTokenUpdate { provider: assent_protocol::PushProvider::Fcm, token: Some("fcm-token-2".into()) })
        );
        assert_eq!(client.enrollment().unwrap().push, fcm);
        client.unenroll().await.unwrap();
        assert!(!client.is_enrolled());
        assert!(mock.data().devices.is_empty());
        assert!(keys.export_keys().is_empty());
    }
}

#[tokio::test]
async fn swapped_server_key_at_enrollment_is_refused_and_nothing_is_kept() {
    let (mock, uri) = start().await;
    let other = jws::generate_signing_key().unwrap();
    mock.data().jwks_override = Some(Jwks::from_verifying_keys([other.verifying_key()]));
    let keys = Arc::new(SoftwareKeyStore::default());
    let state = Arc::new(MemoryStateStore::new());
    let client = client(keys.clone(), state.clone());
    assert_eq!(client.enroll(uri, phone()).await, Err(AssentError::ServerKeyMismatch));
    assert!(!client.is_enrolled());
    assert!(keys.export_keys().is_empty());
    assert_eq!(state.load().unwrap(), None);
}

#[tokio::test]
async fn tampered_or_foreign_challenges_are_refused() {
    let (mock, uri) = start().await;
    let client = client(Arc::new(SoftwareKeyStore::default()), Arc::new(MemoryStateStore::new()));
    client.enroll(uri, phone()).await.unwrap();

    // Signed by another key, under its own kid.
    let attacker = jws::generate_signing_key().unwrap();
    let forged = mock.add_challenge(None, 120, Some(&attacker));
    assert_eq!(client.challenge(forged).await, Err(AssentError::ServerKeyMismatch));
    assert_eq!(client.pending_challenges().await, Err(AssentError::ServerKeyMismatch));
    mock.data().challenges.clear();

    // The genuine token with its payload altered in transit.
    let id = mock.add_challenge(None, 120, None);
    let genuine = mock.data().challenges[0].1.clone();
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let changed = assent_protocol::b64::encode(
        br#"{"jti":"chl_1","sub":"alice","aud":["dev_1"],"iat":1,"exp":99999999999,"title":"Pay EUR 9999 to MALLORY","details":[],"context":{}}"#,
    );
    parts[1] = &changed;
    mock.data().jws_override = Some(parts.join("."));
    assert!(matches!(client.challenge(id.clone()).await, Err(AssentError::Tampered { .. })));
    mock.data().jws_override = None;
    let challenge = client.challenge(id).await.unwrap();

    // A record edited by the app (or anything between it and the SDK) is refused too.
    let mut edited = challenge.clone();
    edited.jws = parts.join(".");
    assert!(matches!(client.approve(edited, None).await, Err(AssentError::Tampered { .. })));
    assert!(mock.data().responses.is_empty());
}

#[tokio::test]
async fn expired_challenges_are_refused_locally() {
    #[derive(Debug)]
    struct Ahead(AtomicI64);
    impl Clock for Ahead {
        fn now(&self) -> i64 {
            SystemClock.now() + self.0.load(Ordering::SeqCst)
        }
    }
    let (mock, uri) = start().await;
    let clock = Arc::new(Ahead(AtomicI64::new(0)));
    let client = AssentClient::with_clock(
        Arc::new(SoftwareKeyStore::default()),
        Arc::new(MemoryStateStore::new()),
        ClientConfig::default(),
        clock.clone(),
    )
    .unwrap();
    client.enroll(uri, phone()).await.unwrap();
    let id = mock.add_challenge(None, 20, None);
    let challenge = client.challenge(id.clone()).await.unwrap();
    // 30 s later (still inside the proof clock-skew window of the mock).
    clock.0.store(30, Ordering::SeqCst);
    assert_eq!(client.challenge(id).await, Err(AssentError::Expired));
    assert_eq!(client.pending_challenges().await, Ok(vec![]));
    assert_eq!(client.approve(challenge, None).await, Err(AssentError::Expired));
    assert!(mock.data().responses.is_empty());
}

#[tokio::test]
async fn revoked_device_and_state_that_survives_restarts() {
    let (mock, uri) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.json");
    let keys = Arc::new(SoftwareKeyStore::default());
    let first = client(keys.clone(), Arc::new(FileStateStore::new(&path)));
    let enrollment = first.enroll(uri, phone()).await.unwrap();
    drop(first);

    // A new client over the same files picks the enrollment up.
    let again = client(keys.clone(), Arc::new(FileStateStore::new(&path)));
    assert_eq!(again.enrollment(), Some(enrollment.clone()));
    assert_eq!(again.pending_challenges().await, Ok(vec![]));

    mock.data().revoked.insert(enrollment.device_id);
    assert_eq!(again.pending_challenges().await, Err(AssentError::DeviceRevoked));
    // Unenrolling a revoked device still forgets it locally.
    again.unenroll().await.unwrap();
    assert!(!path.exists());
    assert!(keys.export_keys().is_empty());
}

#[tokio::test]
async fn unreadable_state_is_reported_and_reset_recovers() {
    let state = Arc::new(MemoryStateStore::new());
    state.save("{\"version\": 99}".into()).unwrap();
    let client = client(Arc::new(SoftwareKeyStore::default()), state.clone());
    assert!(!client.is_enrolled());
    assert!(matches!(client.pending_challenges().await, Err(AssentError::Storage { .. })));
    client.reset().await.unwrap();
    assert_eq!(state.load().unwrap(), None);
    assert_eq!(client.pending_challenges().await, Err(AssentError::NotEnrolled));
}

#[tokio::test]
async fn refusals_before_any_request() {
    let client = client(Arc::new(SoftwareKeyStore::default()), Arc::new(MemoryStateStore::new()));
    let kid = EcPublicJwk::from_verifying_key(jws::generate_signing_key().unwrap().verifying_key()).thumbprint();
    let plain_http =
        EnrollUri { server: "http://assent.example.com".into(), token: "t".into(), kid, user: "Alice".into() }
            .to_string();
    assert!(matches!(
        client.enroll(plain_http, phone()).await,
        Err(AssentError::InvalidInput { detail }) if detail.contains("https")
    ));
    assert!(matches!(
        client.enroll("https://not-an-enroll-uri".into(), phone()).await,
        Err(AssentError::InvalidInput { .. })
    ));
    assert_eq!(client.handle_push(HashMap::from([("challenge_id".into(), "chl_abc".into())])), Ok("chl_abc".into()));
    assert_eq!(
        client.handle_push_json(r#"{"aps":{"alert":"Sign-in request"},"challenge_id":"chl_abc"}"#.into()),
        Ok("chl_abc".into())
    );
    assert!(client.handle_push(HashMap::new()).is_err());
    assert!(client.handle_push_json(r#"{"challenge_id":"../x"}"#.into()).is_err());
    assert!(matches!(
        AssentClient::new(
            Arc::new(SoftwareKeyStore::default()),
            Arc::new(MemoryStateStore::new()),
            Some(ClientConfig { server_url_override: Some("http://10.0.0.1".into()), ..ClientConfig::default() }),
        ),
        Err(AssentError::InvalidInput { .. })
    ));
    // A key store is usable through the trait object the bindings hand over.
    let store: Arc<dyn KeyStore> = assent_sdk::software_key_store(SignatureFormat::Der);
    assert_eq!(assent_sdk::check_key_store(store).unwrap().signature_format, SignatureFormat::Der);
}

#[tokio::test]
async fn clients_made_from_one_connection_share_its_pooled_connections() {
    let keys = || Arc::new(SoftwareKeyStore::default());
    // Two phones with their own clients: two TCP connections.
    let (mock, uri) = start().await;
    for _ in 0..2 {
        client(keys(), Arc::new(MemoryStateStore::new())).enroll(uri.clone(), phone()).await.unwrap();
    }
    assert_eq!(mock.connections.load(Ordering::Relaxed), 2);

    // Two phones over one connection: one, kept open across enrollment, listing and approval.
    let (mock, uri) = start().await;
    let connection = Connection::new(&ClientConfig::default()).unwrap();
    let phones: Vec<_> = (0..2)
        .map(|_| AssentClient::with_connection(keys(), Arc::new(MemoryStateStore::new()), connection.clone()))
        .collect();
    for phone_client in &phones {
        phone_client.enroll(uri.clone(), phone()).await.unwrap();
    }
    let id = mock.add_challenge(None, 120, None);
    for phone_client in &phones {
        assert_eq!(phone_client.pending_challenges().await.unwrap()[0].id, id);
    }
    let challenge = phones[1].challenge(id).await.unwrap();
    assert_eq!(phones[1].approve(challenge, None).await.unwrap().status, ChallengeStatus::Approved);
    assert_ne!(phones[0].enrollment().unwrap().device_id, phones[1].enrollment().unwrap().device_id);
    assert_eq!(mock.connections.load(Ordering::Relaxed), 1);
}
