//! Apple Push Notification service: `POST /3/device/{token}` over HTTP/2, authenticated with an
//! ES256 provider token signed by the team's `.p8` key.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use assent_protocol::p256::ecdsa::signature::Signer as _;
use assent_protocol::p256::ecdsa::{Signature, SigningKey};
use assent_protocol::p256::pkcs8::DecodePrivateKey as _;
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::config::{ApnsConfig, ApnsEnvironment};
use super::{PushConfigError, PushMessage, PushOutcome, PushSender, jwt};
use crate::clock::Clock;
use crate::config::Mode;

/// APNs for App Store, TestFlight and ad-hoc builds.
pub const PRODUCTION_URL: &str = "https://api.push.apple.com";
/// APNs for development builds.
pub const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";

/// Age at which a provider token is replaced. Apple refuses tokens older than 60 minutes and
/// answers `TooManyProviderTokenUpdates` to a team that changes tokens more often than every 20;
/// 30 leaves room for clock skew on both sides.
pub const PROVIDER_TOKEN_REFRESH: time::Duration = time::Duration::minutes(30);

/// Longest device token accepted. Apple's are 32 bytes (64 hex digits) today and documented as
/// variable in length; this only bounds what goes into the request path.
const MAX_DEVICE_TOKEN_LEN: usize = 200;

/// An APNs client: one HTTP/2 connection pool and one provider token shared by all sends.
pub struct ApnsClient {
    http: reqwest::Client,
    base_url: String,
    topic: String,
    title: String,
    body: String,
    tokens: ProviderTokens,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ApnsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsClient")
            .field("base_url", &self.base_url)
            .field("topic", &self.topic)
            .field("key_id", &self.tokens.key_id)
            .field("team_id", &self.tokens.team_id)
            .finish_non_exhaustive()
    }
}

impl ApnsClient {
    /// Loads the signing key and prepares the HTTP/2 client.
    pub fn from_config(config: &ApnsConfig, mode: Mode, clock: Arc<dyn Clock>) -> Result<Self, PushConfigError> {
        for (key, value) in [
            ("push.apns.topic", &config.topic),
            ("push.apns.key_id", &config.key_id),
            ("push.apns.team_id", &config.team_id),
        ] {
            if value.trim().is_empty() {
                return Err(PushConfigError::new(key, "must not be empty"));
            }
        }
        let pem = super::load_credential(
            config.key.as_ref(),
            config.key_file.as_deref(),
            "push.apns.key",
            "push.apns.key_file",
        )?;
        let (source_key, source) = match &config.key_file {
            Some(path) => ("push.apns.key_file", path.display().to_string()),
            None => ("push.apns.key", "the key".to_owned()),
        };
        // The parse error is not shown: it says nothing useful and must not echo key material.
        let key = SigningKey::from_pkcs8_pem(pem.expose().trim()).map_err(|_| {
            PushConfigError::new(source_key, format!("{source} is not a P-256 private key in PKCS#8 PEM (.p8) form"))
        })?;
        let base_url = match &config.base_url {
            Some(url) => super::check_url(url, mode, "push.apns.base_url")?,
            None => match config.environment {
                ApnsEnvironment::Production => PRODUCTION_URL.to_owned(),
                ApnsEnvironment::Sandbox => SANDBOX_URL.to_owned(),
            },
        };
        // Apple speaks only HTTP/2: over TLS this offers only `h2` in ALPN; with a plain-http
        // test URL it is HTTP/2 with prior knowledge (h2c). Pings keep the idle connection
        // open between sign-ins, as Apple asks.
        let builder = reqwest::Client::builder()
            .http2_prior_knowledge()
            .http2_keep_alive_interval(Duration::from_secs(60))
            .http2_keep_alive_while_idle(true);
        let http = super::http_client(
            builder,
            Duration::from_secs(config.timeout_seconds.max(1)),
            "push.apns.timeout_seconds",
        )?;
        Ok(Self {
            http,
            base_url,
            topic: config.topic.clone(),
            title: config.title.clone(),
            body: config.body.clone(),
            tokens: ProviderTokens {
                key,
                key_id: config.key_id.clone(),
                team_id: config.team_id.clone(),
                current: Mutex::new(None),
            },
            clock,
        })
    }

    /// The notification payload: the challenge id and a generic alert, nothing about the
    /// transaction. `mutable-content` lets a notification service extension fetch and show the
    /// details on the phone.
    fn payload(&self, msg: &PushMessage) -> serde_json::Value {
        json!({
            "aps": {
                "alert": { "title": self.title, "body": self.body },
                "mutable-content": 1,
                "sound": "default",
            },
            "challenge_id": msg.challenge_id,
        })
    }
}

impl PushSender for ApnsClient {
    fn provider(&self) -> &'static str {
        "apns"
    }

    async fn send(&self, msg: &PushMessage) -> PushOutcome {
        let now = self.clock.now();
        if msg.expires_at <= now {
            return PushOutcome::Failed { reason: "challenge expired before sending".to_owned() };
        }
        if !is_device_token(&msg.device_token) {
            // It would never work, and it must not reach the request path as it is.
            return PushOutcome::TokenGone { reason: "malformed device token (not hex)".to_owned() };
        }
        let bearer = match self.tokens.bearer(now) {
            Ok(bearer) => bearer,
            Err(reason) => return PushOutcome::Failed { reason },
        };
        let response = self
            .http
            .post(format!("{}/3/device/{}", self.base_url, msg.device_token))
            .header(AUTHORIZATION, format!("bearer {bearer}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", "10")
            .header("apns-expiration", msg.expires_at.unix_timestamp().to_string())
            .header("apns-collapse-id", &msg.challenge_id)
            .json(&self.payload(msg))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => return super::transport_failure(e),
        };
        let status = response.status();
        if status.is_success() {
            let apns_id = response.headers().get("apns-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
            return PushOutcome::Delivered { provider_message_id: apns_id };
        }
        let after = super::retry_after(response.headers(), now);
        let reason = match response.bytes().await {
            Ok(body) => serde_json::from_slice::<ErrorBody>(&body).ok().map(|b| b.reason),
            Err(_) => None,
        }
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
        if status == StatusCode::FORBIDDEN && matches!(reason.as_str(), "ExpiredProviderToken" | "InvalidProviderToken")
        {
            // The next send signs a new token (this one may carry a skewed `iat`).
            self.tokens.invalidate(&bearer);
        }
        classify(status, reason, after)
    }
}

/// APNs error body: `{"reason": "BadDeviceToken"}` (with a `timestamp` on 410).
#[derive(Deserialize)]
struct ErrorBody {
    reason: String,
}

/// What an APNs error means for this message. Apple's reasons are documented in "Handling
/// notification responses from APNs".
fn classify(status: StatusCode, reason: String, after: Option<Duration>) -> PushOutcome {
    match (status.as_u16(), reason.as_str()) {
        // The app was uninstalled or the token expired.
        (410, _) => PushOutcome::TokenGone { reason },
        (400, "BadDeviceToken") => PushOutcome::TokenGone { reason },
        // Apple closed an idle connection; the request itself was fine.
        (400, "IdleTimeout") => PushOutcome::Retry { after, reason },
        // Clock skew made the token look old; the client drops it and signs a new one.
        (403, "ExpiredProviderToken") => PushOutcome::Retry { after, reason },
        // TooManyRequests (to this device), TooManyProviderTokenUpdates, and overload.
        (429, _) | (500..=599, _) => PushOutcome::Retry { after, reason },
        // BadTopic, DeviceTokenNotForTopic, InvalidProviderToken, PayloadTooLarge, ...:
        // configuration or request errors that another try will not fix.
        _ => PushOutcome::Failed { reason },
    }
}

/// Hex digits only, of a sane length.
fn is_device_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_DEVICE_TOKEN_LEN && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The provider token, signed on first use and reused until [`PROVIDER_TOKEN_REFRESH`].
struct ProviderTokens {
    key: SigningKey,
    key_id: String,
    team_id: String,
    current: Mutex<Option<ProviderToken>>,
}

struct ProviderToken {
    jwt: String,
    issued_at: OffsetDateTime,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: i64,
}

impl ProviderTokens {
    fn bearer(&self, now: OffsetDateTime) -> Result<String, String> {
        // A poisoned lock only means another send panicked mid-way; the cache is still usable.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = current.as_ref()
            && now - token.issued_at < PROVIDER_TOKEN_REFRESH
        {
            return Ok(token.jwt.clone());
        }
        let jwt = jwt::compact(
            &Header { alg: "ES256", kid: &self.key_id },
            &Claims { iss: &self.team_id, iat: now.unix_timestamp() },
            |input| {
                let signature: Signature =
                    self.key.try_sign(input).map_err(|e| format!("signing the provider token: {e}"))?;
                Ok(signature.to_bytes().to_vec())
            },
        )?;
        *current = Some(ProviderToken { jwt: jwt.clone(), issued_at: now });
        Ok(jwt)
    }

    /// Forgets `used` if it is still the current token (another send may have replaced it).
    fn invalidate(&self, used: &str) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|t| t.jwt == used) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tokens_are_hex() {
        assert!(is_device_token(&"ab12".repeat(16)));
        assert!(!is_device_token(""));
        assert!(!is_device_token("../../2/other"));
        assert!(!is_device_token("abc?x=1"));
        assert!(!is_device_token(&"a".repeat(MAX_DEVICE_TOKEN_LEN + 1)));
    }

    #[test]
    fn errors_are_classified() {
        let c = |status: u16, reason: &str| classify(StatusCode::from_u16(status).unwrap(), reason.to_owned(), None);
        assert!(matches!(c(410, "Unregistered"), PushOutcome::TokenGone { .. }));
        assert!(matches!(c(410, "ExpiredToken"), PushOutcome::TokenGone { .. }));
        assert!(matches!(c(400, "BadDeviceToken"), PushOutcome::TokenGone { .. }));
        assert!(matches!(c(400, "BadTopic"), PushOutcome::Failed { .. }));
        assert!(matches!(c(400, "DeviceTokenNotForTopic"), PushOutcome::Failed { .. }));
        assert!(matches!(c(400, "IdleTimeout"), PushOutcome::Retry { .. }));
        assert!(matches!(c(403, "InvalidProviderToken"), PushOutcome::Failed { .. }));
        assert!(matches!(c(403, "ExpiredProviderToken"), PushOutcome::Retry { .. }));
        assert!(matches!(c(413, "PayloadTooLarge"), PushOutcome::Failed { .. }));
        assert!(matches!(c(429, "TooManyRequests"), PushOutcome::Retry { .. }));
        assert!(matches!(c(500, "InternalServerError"), PushOutcome::Retry { .. }));
        assert!(matches!(c(503, "ServiceUnavailable"), PushOutcome::Retry { .. }));
    }
}
