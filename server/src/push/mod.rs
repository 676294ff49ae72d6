//! Push delivery to phones: clients for Apple's APNs and Google's FCM behind one small interface.
//!
//! A push only wakes the phone: it carries the challenge id and a generic title, never the
//! transaction (it travels through Apple or Google). The phone then fetches the signed challenge
//! from Assent. The delivery outbox calls [`PushSender::send`] and acts on the [`PushOutcome`];
//! the clients never retry on their own beyond refreshing an expired credential once.
//!
//! Both clients speak the providers' HTTP APIs through `reqwest` with a configurable base URL,
//! so tests aim the real implementation at a local fake. See `docs/push.md` and
//! `docs/adr/0002-own-apns-and-fcm-clients.md`.

pub mod apns;
mod config;
pub mod fcm;
mod jwt;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use time::OffsetDateTime;

pub use apns::ApnsClient;
pub use config::{ApnsConfig, ApnsEnvironment, FcmConfig, PushConfig};
pub use fcm::FcmClient;

use crate::clock::Clock;
use crate::config::Mode;

/// What a provider is asked to deliver. Carries no transaction details on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    /// The device's push token, as the phone registered it (APNs: hex; FCM: registration token).
    pub device_token: String,
    /// The challenge to fetch (`chl_...`).
    pub challenge_id: String,
    /// When the challenge expires; the provider drops the push after this.
    pub expires_at: OffsetDateTime,
}

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The provider accepted the push.
    Delivered {
        /// The provider's id for the message (APNs `apns-id`, FCM message `name`), for support.
        provider_message_id: Option<String>,
    },
    /// A transient failure (5xx, 429, timeout, connection error): try again later.
    Retry {
        /// How long the provider asked us to wait (`Retry-After`), if it said.
        after: Option<Duration>,
        /// What went wrong, for the delivery record and logs.
        reason: String,
    },
    /// A permanent failure for this message (bad configuration, invalid request): do not retry.
    Failed {
        /// The provider's reason (`BadTopic`, `INVALID_ARGUMENT`, ...) or ours.
        reason: String,
    },
    /// The provider says this device token will never work again: disable it.
    TokenGone {
        /// The provider's reason (`Unregistered`, `BadDeviceToken`, `UNREGISTERED`, ...).
        reason: String,
    },
}

/// A push provider client.
pub trait PushSender: Send + Sync + std::fmt::Debug {
    /// The provider's name for logs and metrics: `apns` or `fcm`.
    fn provider(&self) -> &'static str;

    /// Sends one push. Never panics and never retries a transient failure itself: the outcome
    /// says what the caller should do.
    fn send(&self, msg: &PushMessage) -> impl Future<Output = PushOutcome> + Send;
}

/// The configured push clients; a provider without configuration is `None`.
#[derive(Debug, Clone, Default)]
pub struct PushClients {
    /// APNs, when `[push.apns]` is configured.
    pub apns: Option<Arc<ApnsClient>>,
    /// FCM, when `[push.fcm]` is configured.
    pub fcm: Option<Arc<FcmClient>>,
}

impl PushClients {
    /// Builds a client for each configured provider, loading its credentials now, so a missing
    /// or unreadable key is reported at start-up rather than at the first sign-in. In
    /// production mode, plain-`http` provider URLs (meant for test fakes) are refused.
    pub fn from_config(config: &PushConfig, mode: Mode, clock: Arc<dyn Clock>) -> Result<Self, PushConfigError> {
        let apns = match &config.apns {
            Some(c) => Some(Arc::new(ApnsClient::from_config(c, mode, clock.clone())?)),
            None => None,
        };
        let fcm = match &config.fcm {
            Some(c) => Some(Arc::new(FcmClient::from_config(c, mode, clock)?)),
            None => None,
        };
        Ok(Self { apns, fcm })
    }
}

/// Push configuration that cannot be used: names the key and says why, never the secret.
#[derive(Debug, thiserror::Error)]
#[error("push configuration: {key}: {detail}")]
pub struct PushConfigError {
    /// The configuration key at fault, e.g. `push.apns.key_file`.
    pub key: &'static str,
    /// What is wrong with it.
    pub detail: String,
}

impl PushConfigError {
    fn new(key: &'static str, detail: impl Into<String>) -> Self {
        Self { key, detail: detail.into() }
    }
}

impl From<PushConfigError> for crate::Error {
    fn from(e: PushConfigError) -> Self {
        crate::Error::internal(e)
    }
}

/// Reads a credential given either inline (usually from the environment) or as a file path.
/// Exactly one must be set.
fn load_credential(
    inline: Option<&crate::config::Secret>,
    file: Option<&std::path::Path>,
    inline_key: &'static str,
    file_key: &'static str,
) -> Result<crate::config::Secret, PushConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            Err(PushConfigError::new(file_key, format!("set either {file_key} or {inline_key}, not both")))
        }
        (Some(secret), None) => Ok(secret.clone()),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(crate::config::Secret::new)
            .map_err(|e| PushConfigError::new(file_key, format!("cannot read {}: {e}", path.display()))),
        (None, None) => Err(PushConfigError::new(file_key, format!("missing: set {file_key} (or {inline_key})"))),
    }
}

/// Checks a provider URL and strips its trailing slash. `http://` is for local fakes only.
fn check_url(url: &str, mode: Mode, key: &'static str) -> Result<String, PushConfigError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| PushConfigError::new(key, format!("{url:?} is not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if mode == Mode::Dev => {}
        "http" => return Err(PushConfigError::new(key, format!("{url} is plain http, refused in production mode"))),
        other => return Err(PushConfigError::new(key, format!("unsupported scheme {other:?} in {url}"))),
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// A `reqwest` client with the settings both providers share: no redirects (a provider never
/// redirects, and following one would carry our bearer token), bounded connect and total time.
fn http_client(
    builder: reqwest::ClientBuilder,
    timeout: Duration,
    key: &'static str,
) -> Result<reqwest::Client, PushConfigError> {
    builder
        .use_rustls_tls()
        .user_agent(concat!("assent/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|e| PushConfigError::new(key, format!("cannot build the HTTP client: {e}")))
}

/// A transport failure (connect, TLS, timeout, reset) as a retryable outcome. The URL is left
/// out of the reason: for APNs it contains the device token.
fn transport_failure(error: reqwest::Error) -> PushOutcome {
    let error = error.without_url();
    let mut reason = if error.is_timeout() { "timeout".to_owned() } else { format!("transport: {error}") };
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    PushOutcome::Retry { after: None, reason }
}

/// The `Retry-After` header (delay-seconds or an HTTP-date, RFC 9110 §10.2.3) as a duration
/// from `now`. A date in the past means "now"; an unreadable header is ignored.
fn retry_after(headers: &HeaderMap, now: OffsetDateTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, format).ok()?.assume_utc();
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use time::macros::datetime;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = datetime!(2025-03-01 12:00:00 UTC);
        assert_eq!(retry_after(&headers("30"), now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(&headers("Sat, 01 Mar 2025 12:01:30 GMT"), now), Some(Duration::from_secs(90)));
        assert_eq!(retry_after(&headers("Sat, 01 Mar 2025 11:00:00 GMT"), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn urls_are_checked_per_mode() {
        assert_eq!(
            check_url("https://api.push.apple.com/", Mode::Production, "k").unwrap(),
            "https://api.push.apple.com"
        );
        assert_eq!(check_url("http://127.0.0.1:9/", Mode::Dev, "k").unwrap(), "http://127.0.0.1:9");
        let err = check_url("http://127.0.0.1:9", Mode::Production, "push.apns.base_url").unwrap_err();
        assert_eq!(err.key, "push.apns.base_url");
        assert!(check_url("ftp://x", Mode::Dev, "k").is_err());
        assert!(check_url("not a url", Mode::Dev, "k").is_err());
    }
}
