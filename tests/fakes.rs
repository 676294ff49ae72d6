//! Fakes of APNs, FCM, Twilio and Vonage, and a real SMTP sink, on 127.0.0.1. They speak the providers' documented
//! wire formats and check what they receive; the literals below come from Apple's and Google's
//! documentation, not from our client, so a mistake in the client cannot hide in both.

#![allow(missing_debug_implementations)] // test fakes

mod messaging;
pub use messaging::*;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// RFC 7523 grant type Google's token endpoint expects.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The OAuth scope of FCM's HTTP v1 API.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

use assent_protocol::b64;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::net::TcpListener;

pub fn at(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap()
}

/// Serves `router` on a fresh loopback port, HTTP/1.1 and HTTP/2 (h2c) alike.
async fn serve(listener: TcpListener, router: Router) {
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// One request as a fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub version: Version,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

impl Reply {
    pub fn new(status: u16, body: Value) -> Self {
        Self { status: StatusCode::from_u16(status).unwrap(), headers: Vec::new(), body }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, HeaderValue::from_str(&value).unwrap());
        }
        response
    }
}

/// Splits a compact JWT into its decoded header, claims, signing input and signature.
pub fn split_jwt(token: &str) -> (Value, Value, String, Vec<u8>) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let header = serde_json::from_slice(&b64::decode(parts[0]).unwrap()).unwrap();
    let claims = serde_json::from_slice(&b64::decode(parts[1]).unwrap()).unwrap();
    (header, claims, format!("{}.{}", parts[0], parts[1]), b64::decode(parts[2]).unwrap())
}

// ---------------------------------------------------------------------------------------------
// APNs

/// A fake APNs: `POST /3/device/{token}`, answering scripted replies, else `200` with an
/// `apns-id`.
#[derive(Clone)]
pub struct FakeApns {
    pub base_url: String,
    state: Arc<ApnsState>,
}

#[derive(Default)]
struct ApnsState {
    requests: Mutex<Vec<Recorded>>,
    replies: Mutex<VecDeque<Reply>>,
}

impl FakeApns {
    pub async fn start() -> Self {
        let (listener, addr) = bind().await;
        let state = Arc::new(ApnsState::default());
        let router = Router::new().route("/3/device/{token}", post(apns_send)).with_state(state.clone());
        serve(listener, router).await;
        Self { base_url: format!("http://{addr}"), state }
    }

    pub fn reply(&self, reply: Reply) {
        self.state.replies.lock().unwrap().push_back(reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }
}

async fn apns_send(
    State(state): State<Arc<ApnsState>>,
    Path(_token): Path<String>,
    version: Version,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(Recorded { version, method, path: uri.path().to_owned(), headers, body });
        requests.len()
    };
    match state.replies.lock().unwrap().pop_front() {
        Some(reply) => reply.into_response(),
        None => {
            let mut response = StatusCode::OK.into_response();
            response.headers_mut().insert("apns-id", HeaderValue::from_str(&format!("apns-id-{n}")).unwrap());
            response
        }
    }
}

// ---------------------------------------------------------------------------------------------
// FCM

/// A fake Google: the OAuth token endpoint (`/token`), which verifies the JWT-bearer grant, and
/// FCM's `messages:send`, which accepts only the latest access token it issued.
#[derive(Clone)]
pub struct FakeFcm {
    pub base_url: String,
    pub token_uri: String,
    state: Arc<FcmState>,
}

struct FcmState {
    token_uri: String,
    client_email: String,
    key_id: String,
    public_key: Vec<u8>,
    token_requests: Mutex<Vec<HashMap<String, String>>>,
    token_replies: Mutex<VecDeque<Reply>>,
    issued: Mutex<Vec<String>>,
    valid: Mutex<Option<String>>,
    sends: Mutex<Vec<Recorded>>,
    send_replies: Mutex<VecDeque<Reply>>,
}

impl FakeFcm {
    /// `public_key` is the service account's RSA public key (PKCS#1 DER).
    pub async fn start(client_email: &str, key_id: &str, public_key: Vec<u8>) -> Self {
        let (listener, addr) = bind().await;
        let token_uri = format!("http://{addr}/token");
        let state = Arc::new(FcmState {
            token_uri: token_uri.clone(),
            client_email: client_email.to_owned(),
            key_id: key_id.to_owned(),
            public_key,
            token_requests: Mutex::default(),
            token_replies: Mutex::default(),
            issued: Mutex::default(),
            valid: Mutex::default(),
            sends: Mutex::default(),
            send_replies: Mutex::default(),
        });
        let router = Router::new()
            .route("/token", post(fcm_token))
            .route("/v1/projects/{project}/messages:send", post(fcm_send))
            .with_state(state.clone());
        serve(listener, router).await;
        Self { base_url: format!("http://{addr}"), token_uri, state }
    }

    /// Scripts the next answer of `messages:send` (after the bearer check).
    pub fn reply(&self, reply: Reply) {
        self.state.send_replies.lock().unwrap().push_back(reply);
    }

    /// Scripts the next answer of the token endpoint (after the grant checks).
    pub fn token_reply(&self, reply: Reply) {
        self.state.token_replies.lock().unwrap().push_back(reply);
    }

    /// Makes FCM refuse every access token issued so far (as after a revocation).
    pub fn revoke_tokens(&self) {
        *self.state.valid.lock().unwrap() = None;
    }

    pub fn issued(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().clone()
    }

    pub fn token_requests(&self) -> Vec<HashMap<String, String>> {
        self.state.token_requests.lock().unwrap().clone()
    }

    pub fn sends(&self) -> Vec<Recorded> {
        self.state.sends.lock().unwrap().clone()
    }
}

fn oauth_error(description: impl Into<String>) -> Response {
    let body = json!({"error": "invalid_grant", "error_description": description.into()});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// Google's checks of an RFC 7523 grant, strictly enough to catch any drift in what we send.
fn check_grant(state: &FcmState, form: &HashMap<String, String>) -> Result<(), String> {
    if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER_GRANT) {
        return Err(format!("grant_type {:?}", form.get("grant_type")));
    }
    if form.len() != 2 {
        return Err(format!("unexpected form fields: {:?}", form.keys().collect::<Vec<_>>()));
    }
    let assertion = form.get("assertion").ok_or("no assertion")?;
    let (header, claims, input, signature) = split_jwt(assertion);
    if header != json!({"alg": "RS256", "typ": "JWT", "kid": state.key_id}) {
        return Err(format!("header {header}"));
    }
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &state.public_key);
    key.verify(input.as_bytes(), &signature).map_err(|_| "bad signature".to_owned())?;
    let iat = claims["iat"].as_i64().ok_or("no iat")?;
    let expected = json!({
        "iss": state.client_email,
        "scope": SCOPE,
        "aud": state.token_uri,
        "iat": iat,
        "exp": iat + 3600,
    });
    if claims != expected {
        return Err(format!("claims {claims}, expected {expected}"));
    }
    Ok(())
}

async fn fcm_token(
    State(state): State<Arc<FcmState>>,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    // The extractor insists on `application/x-www-form-urlencoded`.
    let Ok(Form(form)) = form else {
        return oauth_error("not a form");
    };
    state.token_requests.lock().unwrap().push(form.clone());
    if let Err(problem) = check_grant(&state, &form) {
        return oauth_error(problem);
    }
    if let Some(reply) = state.token_replies.lock().unwrap().pop_front() {
        return reply.into_response();
    }
    let token = {
        let mut issued = state.issued.lock().unwrap();
        let token = format!("ya29.fake-{}", issued.len() + 1);
        issued.push(token.clone());
        token
    };
    *state.valid.lock().unwrap() = Some(token.clone());
    Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})).into_response()
}

async fn fcm_send(
    State(state): State<Arc<FcmState>>,
    Path(project): Path<String>,
    version: Version,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorized = {
        let valid = state.valid.lock().unwrap();
        let presented = headers.get("authorization").and_then(|v| v.to_str().ok());
        valid.as_ref().is_some_and(|token| presented == Some(format!("Bearer {token}").as_str()))
    };
    let n = {
        let mut sends = state.sends.lock().unwrap();
        sends.push(Recorded { version, method, path: uri.path().to_owned(), headers, body });
        sends.len()
    };
    if !authorized {
        let body = json!({"error": {
            "code": 401,
            "message": "Request had invalid authentication credentials.",
            "status": "UNAUTHENTICATED",
        }});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    match state.send_replies.lock().unwrap().pop_front() {
        Some(reply) => reply.into_response(),
        None => Json(json!({"name": format!("projects/{project}/messages/0:{n}")})).into_response(),
    }
}

/// An FCM v1 error body.
pub fn fcm_error(code: u16, status: &str, error_code: Option<&str>) -> Value {
    let details: Vec<Value> = error_code
        .map(|c| json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}))
        .into_iter()
        .collect();
    json!({"error": {"code": code, "message": "fake", "status": status, "details": details}})
}

// The FCM test service account

/// A throwaway RSA key, generated for these tests only; it authorises nothing anywhere.
pub const FCM_TEST_KEY_PEM: &str = include_str!("fixtures/fcm-test-key.pem");
/// The test service account's email.
pub const FCM_CLIENT_EMAIL: &str = "assent-push@example-project.iam.gserviceaccount.com";
/// The test service account's key id.
pub const FCM_KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";
/// The test service account's project.
pub const FCM_PROJECT: &str = "example-project";

/// The service account key as Google issues it, aimed at `token_uri`.
pub fn fcm_service_account(token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": FCM_PROJECT,
        "private_key_id": FCM_KEY_ID,
        "private_key": FCM_TEST_KEY_PEM,
        "client_email": FCM_CLIENT_EMAIL,
        "client_id": "123456789012345678901",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/assent-push",
        "universe_domain": "googleapis.com"
    })
    .to_string()
}

/// The test service account's RSA public key (PKCS#1 DER), for verifying its grants.
pub fn fcm_test_public_key() -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(FCM_TEST_KEY_PEM.as_bytes()).unwrap();
    use ring::signature::KeyPair as _;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    pair.public_key().as_ref().to_vec()
}

impl FakeFcm {
    /// A fake FCM that knows the test service account; returns it with the account's JSON.
    pub async fn start_for_test_account() -> (Self, String) {
        let fake = Self::start(FCM_CLIENT_EMAIL, FCM_KEY_ID, fcm_test_public_key()).await;
        let account = fcm_service_account(&fake.token_uri);
        (fake, account)
    }
}
