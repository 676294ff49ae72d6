//! Firebase Cloud Messaging, HTTP v1 API: `POST /v1/projects/{project}/messages:send` with an
//! OAuth2 access token obtained by the JWT-bearer grant (RFC 7523) with a service account key.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::config::FcmConfig;
use super::{PushConfigError, PushMessage, PushOutcome, PushSender, jwt};
use crate::clock::Clock;
use crate::config::{Mode, Secret};

/// Google's FCM endpoint.
pub const DEFAULT_BASE_URL: &str = "https://fcm.googleapis.com";
/// The only OAuth scope the client asks for.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// RFC 7523 §2.1 grant type.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Lifetime asked for in the assertion; Google's maximum.
const ASSERTION_LIFETIME: time::Duration = time::Duration::hours(1);
/// An access token is replaced this long before it expires, so none expires in flight.
const TOKEN_MARGIN: time::Duration = time::Duration::minutes(5);

/// An FCM client: one HTTP client, one service account, one cached access token.
pub struct FcmClient {
    http: reqwest::Client,
    send_url: String,
    auth: TokenSource,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for FcmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmClient")
            .field("send_url", &self.send_url)
            .field("client_email", &self.auth.client_email)
            .field("token_uri", &self.auth.token_uri)
            .finish_non_exhaustive()
    }
}

/// The fields of a service account JSON key that the client uses; the rest are ignored.
#[derive(Deserialize)]
struct ServiceAccountKey {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    private_key_id: Option<String>,
    private_key: Secret,
    client_email: String,
    token_uri: String,
}

impl FcmClient {
    /// Reads the service account key and prepares the client. Nothing is sent until the first
    /// push: a key Google refuses shows up as [`PushOutcome::Failed`] then.
    pub fn from_config(config: &FcmConfig, mode: Mode, clock: Arc<dyn Clock>) -> Result<Self, PushConfigError> {
        let json = super::load_credential(
            config.credentials.as_ref(),
            config.credentials_file.as_deref(),
            "push.fcm.credentials",
            "push.fcm.credentials_file",
        )?;
        let source_key =
            if config.credentials_file.is_some() { "push.fcm.credentials_file" } else { "push.fcm.credentials" };
        // serde's message is not shown: it may quote a fragment of the key.
        let key: ServiceAccountKey = serde_json::from_str(json.expose()).map_err(|e| {
            PushConfigError::new(
                source_key,
                format!(
                    "not a service account JSON key ({:?} error at line {}, column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if let Some(kind) = key.kind.as_deref()
            && kind != "service_account"
        {
            return Err(PushConfigError::new(source_key, format!("type is {kind:?}, expected \"service_account\"")));
        }
        let der = PrivatePkcs8KeyDer::from_pem_slice(key.private_key.expose().as_bytes())
            .map_err(|_| PushConfigError::new(source_key, "private_key is not a PKCS#8 PEM private key"))?;
        let signing_key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|_| PushConfigError::new(source_key, "private_key is not a usable RSA key (2048 to 8192 bits)"))?;
        let project_id = config
            .project_id
            .clone()
            .or(key.project_id)
            .filter(|p| !p.trim().is_empty())
            .ok_or_else(|| PushConfigError::new("push.fcm.project_id", "missing, and the key has no project_id"))?;
        if !project_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b':' || b == b'.') {
            return Err(PushConfigError::new("push.fcm.project_id", format!("{project_id:?} is not a project id")));
        }
        if key.client_email.trim().is_empty() {
            return Err(PushConfigError::new(source_key, "client_email is empty"));
        }
        let token_uri = super::check_url(&key.token_uri, mode, source_key)?;
        let base_url =
            super::check_url(config.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL), mode, "push.fcm.base_url")?;
        let http = super::http_client(
            reqwest::Client::builder(),
            Duration::from_secs(config.timeout_seconds.max(1)),
            "push.fcm.timeout_seconds",
        )?;
        Ok(Self {
            send_url: format!("{base_url}/v1/projects/{project_id}/messages:send"),
            auth: TokenSource {
                http: http.clone(),
                token_uri,
                client_email: key.client_email,
                key_id: key.private_key_id,
                key: signing_key,
                rng: SystemRandom::new(),
                clock: clock.clone(),
                cached: tokio::sync::Mutex::new(None),
            },
            http,
            clock,
        })
    }

    /// The v1 message: data only (the app builds its own notification), high priority so a
    /// dozing phone wakes, and a TTL that ends with the challenge.
    fn message(msg: &PushMessage, ttl: time::Duration) -> serde_json::Value {
        json!({
            "message": {
                "token": msg.device_token,
                "data": { "challenge_id": msg.challenge_id },
                "android": { "priority": "HIGH", "ttl": format!("{}s", ttl.whole_seconds().max(0)) },
            }
        })
    }
}

impl PushSender for FcmClient {
    fn provider(&self) -> &'static str {
        "fcm"
    }

    async fn send(&self, msg: &PushMessage) -> PushOutcome {
        let now = self.clock.now();
        if msg.expires_at <= now {
            return PushOutcome::Failed { reason: "challenge expired before sending".to_owned() };
        }
        let body = Self::message(msg, msg.expires_at - now);
        // A 401 means the access token was refused before its time (revoked, or our clock is
        // off): fetch a new one and try once more.
        let mut refreshed = false;
        loop {
            let token = match self.auth.token().await {
                Ok(token) => token,
                Err(outcome) => return outcome,
            };
            let response = self.http.post(&self.send_url).bearer_auth(token.expose()).json(&body).send().await;
            let response = match response {
                Ok(response) => response,
                Err(e) => return super::transport_failure(e),
            };
            let status = response.status();
            if status.is_success() {
                let name = response.json::<SendResponse>().await.ok().and_then(|r| r.name);
                return PushOutcome::Delivered { provider_message_id: name };
            }
            let after = super::retry_after(response.headers(), now);
            let error = response.json::<ErrorBody>().await.ok().map(|b| b.error);
            match classify(status, error, after) {
                Classified::Unauthenticated(_) if !refreshed => {
                    self.auth.invalidate(&token).await;
                    refreshed = true;
                }
                Classified::Unauthenticated(reason) => return PushOutcome::Failed { reason },
                Classified::Outcome(outcome) => return outcome,
            }
        }
    }
}

#[derive(Deserialize)]
struct SendResponse {
    name: Option<String>,
}

/// `{"error": {"code", "message", "status", "details": [...]}}` (google.rpc.Status).
#[derive(Deserialize)]
struct ErrorBody {
    error: RpcStatus,
}

#[derive(Deserialize)]
struct RpcStatus {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "@type", default)]
    kind: String,
    #[serde(rename = "errorCode", default)]
    error_code: Option<String>,
}

const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

enum Classified {
    /// The access token was refused.
    Unauthenticated(String),
    Outcome(PushOutcome),
}

/// What an FCM error means for this message, after the FCM v1 `ErrorCode` reference. The FCM
/// error code is the reason when there is one, else the RPC status, else the HTTP status.
fn classify(status: StatusCode, error: Option<RpcStatus>, after: Option<Duration>) -> Classified {
    let fcm_code = error
        .as_ref()
        .and_then(|e| e.details.iter().find(|d| d.kind == FCM_ERROR_TYPE).and_then(|d| d.error_code.clone()));
    let rpc_status = error.and_then(|e| e.status);
    let reason = fcm_code.clone().or(rpc_status.clone()).unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    let outcome = match (fcm_code.as_deref(), rpc_status.as_deref(), status.as_u16()) {
        // Only Google's own words disable a token: a bare 404 (a wrong base URL, a proxy) falls
        // through to Failed, or one misconfiguration would disable every Android device.
        (Some("UNREGISTERED"), _, _) | (_, Some("NOT_FOUND"), _) => PushOutcome::TokenGone { reason },
        // The APNs credentials in the Firebase project (iOS via FCM), a token from another
        // sender, or a malformed request: another try will not help.
        (Some("THIRD_PARTY_AUTH_ERROR" | "SENDER_ID_MISMATCH" | "INVALID_ARGUMENT"), _, _) => {
            PushOutcome::Failed { reason }
        }
        (Some("QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL"), _, _) | (_, _, 429 | 500..=599) => {
            PushOutcome::Retry { after, reason }
        }
        (_, _, 401) => return Classified::Unauthenticated(reason),
        _ => PushOutcome::Failed { reason },
    };
    Classified::Outcome(outcome)
}

/// OAuth2 access tokens for the service account, cached until [`TOKEN_MARGIN`] before expiry.
struct TokenSource {
    http: reqwest::Client,
    token_uri: String,
    client_email: String,
    key_id: Option<String>,
    key: RsaKeyPair,
    rng: SystemRandom,
    clock: Arc<dyn Clock>,
    /// Held across a fetch, so concurrent sends wait for one exchange instead of each making one.
    cached: tokio::sync::Mutex<Option<AccessToken>>,
}

struct AccessToken {
    value: Secret,
    refresh_at: OffsetDateTime,
}

#[derive(Serialize)]
struct AssertionHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'static str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Secret,
    expires_in: i64,
}

/// RFC 6749 §5.2 error body.
#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl TokenSource {
    async fn token(&self) -> Result<Secret, PushOutcome> {
        let mut cached = self.cached.lock().await;
        let now = self.clock.now();
        if let Some(token) = cached.as_ref()
            && now < token.refresh_at
        {
            return Ok(token.value.clone());
        }
        let fresh = self.fetch(now).await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    /// Forgets `used` if it is still the cached token.
    async fn invalidate(&self, used: &Secret) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == *used) {
            *cached = None;
        }
    }

    /// The JWT-bearer grant: an RS256 assertion `{iss, scope, aud: token_uri, iat, exp}`
    /// exchanged at the key's `token_uri`.
    async fn fetch(&self, now: OffsetDateTime) -> Result<AccessToken, PushOutcome> {
        let assertion = jwt::compact(
            &AssertionHeader { alg: "RS256", typ: "JWT", kid: self.key_id.as_deref() },
            &AssertionClaims {
                iss: &self.client_email,
                scope: SCOPE,
                aud: &self.token_uri,
                iat: now.unix_timestamp(),
                exp: (now + ASSERTION_LIFETIME).unix_timestamp(),
            },
            |input| {
                let mut signature = vec![0; self.key.public().modulus_len()];
                self.key
                    .sign(&RSA_PKCS1_SHA256, &self.rng, input, &mut signature)
                    .map_err(|_| "signing the OAuth assertion failed".to_owned())?;
                Ok(signature)
            },
        )
        .map_err(|reason| PushOutcome::Failed { reason })?;
        let response = self
            .http
            .post(&self.token_uri)
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", assertion.as_str())])
            .send()
            .await
            .map_err(super::transport_failure)?;
        let status = response.status();
        if status.is_success() {
            let token = response.json::<TokenResponse>().await.map_err(|_| PushOutcome::Retry {
                after: None,
                reason: "oauth: unreadable token response".to_owned(),
            })?;
            let lifetime = time::Duration::seconds(token.expires_in.max(0));
            let margin = TOKEN_MARGIN.min(lifetime / 2);
            return Ok(AccessToken { value: token.access_token, refresh_at: now + lifetime - margin });
        }
        let after = super::retry_after(response.headers(), now);
        let error = response.json::<OAuthError>().await.ok();
        let reason = match error {
            Some(OAuthError { error, error_description: Some(description) }) => format!("oauth {error}: {description}"),
            Some(OAuthError { error, error_description: None }) => format!("oauth {error}"),
            None => format!("oauth: HTTP {}", status.as_u16()),
        };
        Err(if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            PushOutcome::Retry { after, reason }
        } else {
            // invalid_grant (key deleted, clock far off), invalid_client, ...: fix the configuration.
            PushOutcome::Failed { reason }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, status: &str, fcm: Option<&str>) -> Classified {
        let error = RpcStatus {
            status: Some(status.to_owned()),
            details: fcm
                .map(|c| ErrorDetail { kind: FCM_ERROR_TYPE.to_owned(), error_code: Some(c.to_owned()) })
                .into_iter()
                .collect(),
        };
        classify(StatusCode::from_u16(code).unwrap(), Some(error), None)
    }

    fn outcome(c: Classified) -> PushOutcome {
        match c {
            Classified::Outcome(o) => o,
            Classified::Unauthenticated(r) => panic!("unauthenticated: {r}"),
        }
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(
            outcome(status(404, "NOT_FOUND", Some("UNREGISTERED"))),
            PushOutcome::TokenGone { reason: "UNREGISTERED".into() }
        );
        assert_eq!(outcome(status(404, "NOT_FOUND", None)), PushOutcome::TokenGone { reason: "NOT_FOUND".into() });
        assert!(matches!(
            outcome(status(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"))),
            PushOutcome::Failed { .. }
        ));
        assert!(matches!(
            outcome(status(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"))),
            PushOutcome::Failed { .. }
        ));
        assert!(matches!(
            outcome(status(401, "UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR"))),
            PushOutcome::Failed { .. }
        ));
        assert!(matches!(status(401, "UNAUTHENTICATED", None), Classified::Unauthenticated(_)));
        assert!(matches!(
            outcome(status(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"))),
            PushOutcome::Retry { .. }
        ));
        assert!(matches!(outcome(status(503, "UNAVAILABLE", Some("UNAVAILABLE"))), PushOutcome::Retry { .. }));
        assert!(matches!(outcome(status(500, "INTERNAL", Some("INTERNAL"))), PushOutcome::Retry { .. }));
        assert!(matches!(outcome(status(403, "PERMISSION_DENIED", None)), PushOutcome::Failed { .. }));
        assert_eq!(
            outcome(classify(StatusCode::NOT_FOUND, None, None)),
            PushOutcome::Failed { reason: "HTTP 404".into() }
        );
        assert_eq!(
            outcome(classify(StatusCode::BAD_GATEWAY, None, Some(Duration::from_secs(5)))),
            PushOutcome::Retry { after: Some(Duration::from_secs(5)), reason: "HTTP 502".into() }
        );
    }
}
