//! The records and enums apps see through the bindings, and their conversions from and to the
//! wire types of `assent-protocol` (which stay free of any FFI concern).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use assent_protocol as protocol;

use crate::error::{Error, Result};

/// The phone's operating system, as reported at enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Platform {
    /// iOS / iPadOS.
    Ios,
    /// Android.
    Android,
    /// Anything else (desktop tools, tests).
    Other,
}

impl From<Platform> for protocol::Platform {
    fn from(p: Platform) -> Self {
        match p {
            Platform::Ios => protocol::Platform::Ios,
            Platform::Android => protocol::Platform::Android,
            Platform::Other => protocol::Platform::Other,
        }
    }
}

/// How the server reaches the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum PushProvider {
    /// Apple Push Notification service (token: the APNs device token, hex).
    Apns,
    /// Firebase Cloud Messaging (token: the FCM registration token).
    Fcm,
    /// No push: the app polls `pending_challenges()` (wire value `none`; named so it does not
    /// clash with Swift's `Optional.none`).
    PollOnly,
}

impl From<PushProvider> for protocol::PushProvider {
    fn from(p: PushProvider) -> Self {
        match p {
            PushProvider::Apns => protocol::PushProvider::Apns,
            PushProvider::Fcm => protocol::PushProvider::Fcm,
            PushProvider::PollOnly => protocol::PushProvider::None,
        }
    }
}

impl From<protocol::PushProvider> for PushProvider {
    fn from(p: protocol::PushProvider) -> Self {
        match p {
            protocol::PushProvider::Apns => PushProvider::Apns,
            protocol::PushProvider::Fcm => PushProvider::Fcm,
            protocol::PushProvider::None => PushProvider::PollOnly,
        }
    }
}

/// A push registration: provider and token (none for [`PushProvider::PollOnly`]).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PushRegistration {
    /// The push service.
    pub provider: PushProvider,
    /// The APNs / FCM token; must be set for those providers and absent for poll-only.
    #[uniffi(default = None)]
    pub token: Option<String>,
}

impl PushRegistration {
    /// Poll-only: no push service.
    pub fn poll_only() -> Self {
        PushRegistration { provider: PushProvider::PollOnly, token: None }
    }

    /// Checks the provider/token combination.
    pub(crate) fn validate(&self) -> Result<()> {
        match (self.provider, self.token.as_deref()) {
            (PushProvider::PollOnly, None) => Ok(()),
            (PushProvider::PollOnly, Some(_)) => {
                Err(Error::InvalidInput("a poll-only registration takes no push token".into()))
            }
            (_, Some(token)) if !token.trim().is_empty() && token.len() <= 4096 => Ok(()),
            (_, _) => Err(Error::InvalidInput("APNs and FCM registrations need a non-empty push token".into())),
        }
    }
}

/// What the app tells the server about the device at enrollment.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DeviceRegistration {
    /// Name shown to the user and the relying party ("Alice's Pixel 8").
    pub name: String,
    /// The platform.
    pub platform: Platform,
    /// How to reach the device.
    pub push: PushRegistration,
}

/// Settings of an [`crate::AssentClient`]. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClientConfig {
    /// Use this server base URL instead of the `server` of enrollment URIs (tests, or a phone
    /// that reaches the server under another name). The `https` rule applies to it too.
    #[uniffi(default = None)]
    pub server_url_override: Option<String>,
    /// Timeout of one HTTP request, in seconds.
    #[uniffi(default = 30)]
    pub request_timeout_seconds: u32,
    /// PEM certificates trusted as roots in addition to the built-in Mozilla set (a
    /// self-hosted server behind a private CA). Certificate checks are always on.
    #[uniffi(default = [])]
    pub extra_root_certificates_pem: Vec<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { server_url_override: None, request_timeout_seconds: 30, extra_root_certificates_pem: Vec::new() }
    }
}

/// The enrolled device, as the app may show it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Enrollment {
    /// The device id (`dev_...`).
    pub device_id: String,
    /// The user the device belongs to.
    pub user_id: String,
    /// The user's display name.
    pub user_display_name: String,
    /// The server's base URL, without a trailing `/` (`https://assent.example.com`).
    pub server_url: String,
    /// Thumbprint of the pinned server signing key.
    pub server_key_id: String,
    /// The push registration last sent.
    pub push: PushRegistration,
    /// Whether the key store reported the device key hardware-backed.
    pub hardware_backed: bool,
}

/// One line of transaction details ("Amount" / "EUR 250.00").
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChallengeDetail {
    /// What the line is.
    pub label: String,
    /// Its value.
    pub value: String,
}

/// Where the request came from, as the relying party saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct ChallengeContext {
    /// Client IP address.
    pub ip: Option<String>,
    /// Approximate location.
    pub location: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
}

/// A verified challenge: every field comes from a JWS that was checked against the pinned
/// server key, addressed to this device and not expired when fetched.
///
/// Pass the record back unchanged to `approve`, `deny` or `report_fraud`: the SDK verifies
/// `jws` again and signs its hash, which binds the answer to exactly what was shown.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Challenge {
    /// The challenge id (`chl_...`).
    pub id: String,
    /// The user it is for.
    pub user_id: String,
    /// What the user is asked to confirm.
    pub title: String,
    /// Transaction details (may be empty).
    pub details: Vec<ChallengeDetail>,
    /// Request context.
    pub context: ChallengeContext,
    /// With number matching: the numbers to offer; the user picks the one shown on the sign-in
    /// page. `None` when number matching is off.
    pub number_choices: Option<Vec<u32>>,
    /// When the server issued it.
    pub issued_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
    /// The server-signed challenge JWS it was read from.
    pub jws: String,
}

/// Where a challenge stands on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ChallengeStatus {
    /// Not answered yet.
    Pending,
    /// Approved.
    Approved,
    /// Denied (by the user, or because the picked number was wrong).
    Denied,
    /// The user reported fraud; push is locked for the user.
    FraudReported,
    /// Expired.
    Expired,
    /// Cancelled by the relying party.
    Cancelled,
    /// Failed.
    Failed,
    /// A status this SDK version does not know (a newer server).
    Other,
}

impl From<&str> for ChallengeStatus {
    fn from(s: &str) -> Self {
        match s {
            "pending" => ChallengeStatus::Pending,
            "approved" => ChallengeStatus::Approved,
            "denied" => ChallengeStatus::Denied,
            "fraud_reported" => ChallengeStatus::FraudReported,
            "expired" => ChallengeStatus::Expired,
            "cancelled" => ChallengeStatus::Cancelled,
            "failed" => ChallengeStatus::Failed,
            _ => ChallengeStatus::Other,
        }
    }
}

/// The server's answer to a response: the challenge and where it now stands. A wrong number
/// gives [`ChallengeStatus::Denied`].
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ResponseOutcome {
    /// The challenge id.
    pub challenge_id: String,
    /// Its status after the answer.
    pub status: ChallengeStatus,
}

/// NumericDate seconds as a [`SystemTime`] (clamped at the epoch).
pub(crate) fn system_time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

impl Challenge {
    /// The app-facing record of a verified challenge.
    pub(crate) fn from_claims(claims: protocol::ChallengeClaims, jws: String) -> Self {
        Challenge {
            id: claims.jti,
            user_id: claims.sub,
            title: claims.title,
            details: claims.details.into_iter().map(|d| ChallengeDetail { label: d.label, value: d.value }).collect(),
            context: ChallengeContext {
                ip: claims.context.ip,
                location: claims.context.location,
                user_agent: claims.context.user_agent,
            },
            number_choices: claims.number_choices.map(|n| n.into_iter().map(u32::from).collect()),
            issued_at: system_time(claims.iat),
            expires_at: system_time(claims.exp),
            jws,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_registration_rules() {
        assert!(PushRegistration::poll_only().validate().is_ok());
        let fcm =
            |token: Option<&str>| PushRegistration { provider: PushProvider::Fcm, token: token.map(str::to_owned) };
        assert!(fcm(Some("tok")).validate().is_ok());
        assert!(fcm(None).validate().is_err());
        assert!(fcm(Some("  ")).validate().is_err());
        let poll_with_token = PushRegistration { provider: PushProvider::PollOnly, token: Some("x".into()) };
        assert!(poll_with_token.validate().is_err());
    }

    #[test]
    fn statuses_parse() {
        assert_eq!(ChallengeStatus::from("approved"), ChallengeStatus::Approved);
        assert_eq!(ChallengeStatus::from("fraud_reported"), ChallengeStatus::FraudReported);
        assert_eq!(ChallengeStatus::from("weird"), ChallengeStatus::Other);
        assert_eq!(system_time(-5), UNIX_EPOCH);
        assert_eq!(system_time(10), UNIX_EPOCH + Duration::from_secs(10));
    }
}
