//! `[push.apns]` and `[push.fcm]`: which providers to use and where their credentials are.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Secret;

/// The push providers. A provider left out is not used; devices that registered with it get no
/// push and fetch their challenges by polling.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Apple Push Notification service, for iOS apps.
    pub apns: Option<ApnsConfig>,
    /// Firebase Cloud Messaging (HTTP v1 API), for Android apps.
    pub fcm: Option<FcmConfig>,
}

/// Which APNs environment the app's device tokens belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    /// `api.sandbox.push.apple.com`: apps signed for development.
    Sandbox,
    /// `api.push.apple.com`: App Store, TestFlight and ad-hoc builds.
    Production,
}

/// APNs with token-based authentication (a `.p8` signing key from the Apple developer account).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// `sandbox` or `production`. Required: a token from one environment is a `BadDeviceToken`
    /// in the other, and that disables the device's push token.
    pub environment: ApnsEnvironment,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// The 10-character id of the signing key.
    #[serde(deserialize_with = "alphanumeric_id")]
    pub key_id: String,
    /// The 10-character Apple developer team id.
    #[serde(deserialize_with = "alphanumeric_id")]
    pub team_id: String,
    /// Path of the `.p8` key (PKCS#8 PEM). Either this or `key`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The `.p8` key's PEM text itself, usually from `ASSENT_PUSH__APNS__KEY`. Either this or
    /// `key_file`.
    #[serde(default)]
    pub key: Option<Secret>,
    /// Overrides the environment's URL (a test server). `http://` URLs are spoken as HTTP/2
    /// without TLS, and refused in production mode.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The notification's title: generic, since it passes through Apple.
    #[serde(default = "default_title")]
    pub title: String,
    /// The notification's body: generic, for the same reason.
    #[serde(default = "default_body")]
    pub body: String,
    /// Connect and request timeout, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

/// FCM through the HTTP v1 API with a service account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// Path of the service account's JSON key. Either this or `credentials`.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// The JSON key itself, usually from `ASSENT_PUSH__FCM__CREDENTIALS`. Either this or
    /// `credentials_file`.
    #[serde(default)]
    pub credentials: Option<Secret>,
    /// The Firebase project id; defaults to the key's `project_id`.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Overrides `https://fcm.googleapis.com` (a test server); `http://` is refused in
    /// production mode. The OAuth token endpoint is the key's own `token_uri`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Connect and request timeout, in seconds, for both the token endpoint and FCM.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

/// A string, also when an environment variable made it look like a number: figment reads
/// `ASSENT_PUSH__APNS__TEAM_ID=1234567890` as an integer, and an all-digit team id is valid.
fn alphanumeric_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(match Id::deserialize(deserializer)? {
        Id::Text(text) => text,
        Id::Number(number) => number.to_string(),
    })
}

fn default_title() -> String {
    "Sign-in request".to_owned()
}

fn default_body() -> String {
    "Tap to review".to_owned()
}

fn default_timeout() -> u64 {
    10
}
