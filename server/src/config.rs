//! Typed configuration, layered: defaults, `assent.toml`, `ASSENT_*` environment, command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::push::PushConfig;

/// How strict the server is about development conveniences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Human-readable logs, development providers allowed.
    #[default]
    Dev,
    /// JSON logs; development-only providers are refused.
    Production,
}

/// The whole server configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Where the SQLite database, the bootstrap API key and generated secrets live.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; defaults to `sqlite://<data_dir>/assent.db`.
    pub database_url: Option<String>,
    /// `dev` or `production`.
    pub mode: Mode,
    /// The URL phones and browsers use to reach this server (goes into enrollment URIs).
    /// Defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Connections in the database pool.
    pub max_db_connections: u32,
    /// PEM (PKCS#8) file with the challenge-signing P-256 key. Without it the key is created in
    /// the data directory on first start. Replicas sharing one database must share this key.
    pub server_key_file: Option<PathBuf>,
    /// Endpoints that receive signed webhooks.
    pub webhooks: Vec<WebhookEndpoint>,
    /// Push providers (`[push.apns]`, `[push.fcm]`); none by default (poll-only devices).
    pub push: PushConfig,
    /// Anti-fatigue limits on push challenges.
    pub challenges: ChallengeLimits,
    /// Okta telephony inline hook.
    pub okta: crate::okta::OktaConfig,
    /// The application's name as users know it; goes into SMS and email messages.
    pub app_name: String,
    /// One-time-code fallback for users without a device.
    pub fallback: FallbackConfig,
    /// SMS delivery: the provider chain, message text and toll-fraud limits.
    pub sms: SmsConfig,
    /// Email delivery.
    pub email: EmailConfig,
    /// The relying party passkeys belong to: RP id, name and allowed origins.
    pub passkeys: PasskeyConfig,
    /// Serve the demo sign-in page at `/demo`. Default: on in dev mode, off in production.
    pub demo: Option<bool>,
}

/// `[passkeys]`: who passkeys are registered for and which web pages may use them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasskeyConfig {
    /// The WebAuthn RP id: the domain passkeys are bound to, e.g. `example.com`; each origin
    /// must be on it or a subdomain of it. Default: the host of `public_url`, or `localhost`
    /// when that host is a loopback address (development).
    pub rp_id: Option<String>,
    /// The name authenticators show next to the passkey. Default: `app_name`.
    pub rp_name: Option<String>,
    /// The exact origins (`https://app.example.com`, port included when not the default) of the
    /// pages that call `navigator.credentials`. Default: `public_url` (with `localhost` for a
    /// loopback address).
    pub origins: Vec<String>,
}

/// `[fallback]`: when codes are used and how they are kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// Allow an explicit `channel: sms|email` for a user who has an active device. Off by
    /// default: a lost phone is revoked, after which fallback applies.
    pub allow_with_device: bool,
    /// The HMAC key codes are stored under. Without it, one is generated into
    /// `<data_dir>/otp-pepper` on first start; replicas sharing a database must share it.
    pub pepper: Option<Secret>,
}

/// `[sms]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// Tried in order until one accepts the message. Empty: the `log` provider in dev mode,
    /// no SMS at all in production.
    pub providers: Vec<SmsProviderConfig>,
    /// Message text; `{code}` is required, `{app_name}` and `{minutes}` are filled in.
    pub template: String,
    /// Adds the WebOTP / iOS domain-bound line `@<domain> #<code>` as the last line, so
    /// browsers and iOS offer the code only on that site. A host name, e.g. `example.com`.
    pub webotp_domain: Option<String>,
    /// ISO 3166-1 alpha-2 regions numbers may belong to (e.g. `["US", "CA", "GB"]`). Empty:
    /// every region. Set it: toll fraud targets expensive destinations.
    pub allowed_countries: Vec<String>,
    /// Seconds each provider gets before the next one is tried.
    pub timeout_seconds: u64,
    /// Send limits per number and per country calling code.
    pub limits: SmsLimits,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            providers: Vec::new(),
            template: "Your {app_name} code is {code}. Don't share it with anyone.".to_owned(),
            webotp_domain: None,
            allowed_countries: Vec::new(),
            timeout_seconds: 5,
            limits: SmsLimits::default(),
        }
    }
}

/// `[sms.limits]`: messages allowed per fixed window; 0 turns a limit off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsLimits {
    /// To one number, per 10 minutes.
    pub per_number_10min: u32,
    /// To one number, per day.
    pub per_number_day: u32,
    /// To one country calling code (`+1`, `+44`, ...), per 10 minutes.
    pub per_country_10min: u32,
    /// To one country calling code, per day.
    pub per_country_day: u32,
}

impl Default for SmsLimits {
    fn default() -> Self {
        SmsLimits { per_number_10min: 5, per_number_day: 10, per_country_10min: 100, per_country_day: 1000 }
    }
}

/// One SMS provider in the chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SmsProviderConfig {
    /// Twilio Programmable Messaging.
    Twilio(TwilioConfig),
    /// Vonage (Nexmo) SMS API.
    Vonage(VonageConfig),
    /// Your own HTTP endpoint receiving `{to, text}` as JSON.
    Webhook(SmsWebhookConfig),
    /// Development only: writes the message, code included, to the server log.
    Log(LogProviderConfig),
}

/// `{kind = "twilio", ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// Name in logs and on challenges (default `twilio`).
    pub name: Option<String>,
    /// `AC...`: the account messages are sent from.
    pub account_sid: String,
    /// The account's auth token (or use an API key).
    pub auth_token: Option<Secret>,
    /// `SK...`: an API key, used with `api_key_secret` instead of the auth token.
    pub api_key_sid: Option<String>,
    /// The API key's secret.
    pub api_key_secret: Option<Secret>,
    /// Sender number (E.164) or alphanumeric sender id.
    pub from: Option<String>,
    /// `MG...`: send through a Messaging Service instead of `from`.
    pub messaging_service_sid: Option<String>,
    /// Default `https://api.twilio.com`.
    pub base_url: Option<String>,
}

/// `{kind = "vonage", ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VonageConfig {
    /// Name in logs and on challenges (default `vonage`).
    pub name: Option<String>,
    /// The account's API key.
    pub api_key: String,
    /// The account's API secret.
    pub api_secret: Secret,
    /// Sender number or alphanumeric sender id.
    pub from: String,
    /// Default `https://rest.nexmo.com`.
    pub base_url: Option<String>,
}

/// `{kind = "webhook", ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsWebhookConfig {
    /// Name in logs and on challenges (default `webhook`).
    pub name: Option<String>,
    /// Receives `POST {"to": "+1...", "text": "..."}`; any 2xx is success, and a JSON
    /// answer's `message_id` (or `id`) is recorded.
    pub url: String,
    /// Sent as the `Authorization` header, e.g. `Bearer ...`.
    pub authorization: Option<Secret>,
    /// `whsec_<base64>`: sign each request per Standard Webhooks (`webhook-signature`).
    pub secret: Option<Secret>,
}

/// `{kind = "log"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogProviderConfig {
    /// Name in logs and on challenges (default `log`).
    pub name: Option<String>,
}

/// `[email]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// How email leaves. Absent: `log` in dev mode, no email at all in production.
    pub provider: Option<EmailProviderConfig>,
    /// Subject line; `{app_name}`, `{code}` and `{minutes}` are filled in.
    pub subject: String,
    /// Plain-text body; `{code}` is required.
    pub template: String,
    /// Send limits per address.
    pub limits: EmailLimits,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            provider: None,
            subject: "Your {app_name} sign-in code".to_owned(),
            template: "Your {app_name} sign-in code is {code}.\n\nIt expires in {minutes} minutes. If you did not \
                       try to sign in, ignore this email, and never share the code with anyone.\n"
                .to_owned(),
            limits: EmailLimits::default(),
        }
    }
}

/// `[email.limits]`: messages allowed per fixed window; 0 turns a limit off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailLimits {
    /// To one address, per 10 minutes.
    pub per_address_10min: u32,
    /// To one address, per day.
    pub per_address_day: u32,
}

impl Default for EmailLimits {
    fn default() -> Self {
        EmailLimits { per_address_10min: 5, per_address_day: 20 }
    }
}

/// `[email.provider]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EmailProviderConfig {
    /// An SMTP submission server.
    Smtp(SmtpConfig),
    /// Development only: writes the message, code included, to the server log.
    Log(LogProviderConfig),
}

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS at all: only for a relay on the same host (refused elsewhere in production).
    None,
}

/// `{kind = "smtp", ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server host name (also the name its certificate must carry).
    pub host: String,
    /// Default 587 (`starttls`), 465 (`implicit`) or 25 (`none`).
    pub port: Option<u16>,
    /// `starttls` (default), `implicit` or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// Login name, when the server wants one.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<Secret>,
    /// Sender, e.g. `Example <no-reply@example.com>`.
    pub from: String,
    /// Seconds to wait for the server (default 10).
    pub timeout_seconds: Option<u64>,
}

/// Anti-fatigue limits (DESIGN section 4).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChallengeLimits {
    /// Push challenges a user may receive per 10 minutes (default 5). Raise it only for load
    /// tests: it is what stops push bombing.
    pub push_per_user_per_10_minutes: u32,
}

impl Default for ChallengeLimits {
    fn default() -> Self {
        ChallengeLimits { push_per_user_per_10_minutes: 5 }
    }
}

/// A webhook receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Where events are POSTed.
    pub url: String,
    /// The Standard Webhooks signing secret, `whsec_<base64>`.
    pub secret: Secret,
    /// Only these event types (all when absent).
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

impl WebhookEndpoint {
    /// Whether this endpoint wants events of `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.as_ref().is_none_or(|list| list.iter().any(|k| k == kind))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./assent-data"),
            database_url: None,
            mode: Mode::Dev,
            public_url: None,
            max_body_bytes: 64 * 1024,
            max_db_connections: 16,
            server_key_file: None,
            webhooks: Vec::new(),
            push: PushConfig::default(),
            challenges: ChallengeLimits::default(),
            okta: crate::okta::OktaConfig::default(),
            app_name: "Assent".to_owned(),
            fallback: FallbackConfig::default(),
            sms: SmsConfig::default(),
            email: EmailConfig::default(),
            passkeys: PasskeyConfig::default(),
            demo: None,
        }
    }
}

/// Values given on the command line; each one that is set wins over every other layer.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    /// `--listen`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--database-url`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// `--mode`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// Top-level keys that `ASSENT_*` variables may set. Anything else with the prefix (test
/// settings, `ASSENT_LOG`) is not configuration and is left alone.
const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "mode",
    "public_url",
    "max_body_bytes",
    "max_db_connections",
    "server_key_file",
    "webhooks",
    "push",
    "challenges",
    "okta",
    "app_name",
    "fallback",
    "sms",
    "email",
    "passkeys",
    "demo",
];

/// A secret configuration value (a private key, an API secret). `Debug` and `Serialize` print
/// `[redacted]`, so the value never reaches a log line or a configuration dump; only
/// [`Secret::expose`] gives it out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

/// A configuration error, with the offending key and source in its message.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

impl Config {
    /// Builds the configuration from every layer. `file` is `--config`; without it,
    /// `assent.toml` in the working directory is read when present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::figment(file, overrides).extract().map_err(|e| ConfigError(Box::new(e)))
    }

    fn figment(file: Option<&Path>, overrides: &Overrides) -> Figment {
        let toml = match file {
            Some(path) => Toml::file_exact(path),
            None => Toml::file("assent.toml"),
        };
        Figment::from(Serialized::defaults(Config::default()))
            .merge(toml)
            .merge(
                Env::prefixed("ASSENT_")
                    .filter(|key| {
                        let top = key.as_str().split("__").next().unwrap_or_default();
                        ENV_KEYS.iter().any(|k| top.eq_ignore_ascii_case(k))
                    })
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides))
    }

    /// The database URL actually used.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("assent.db").display()),
        }
    }

    /// Whether the demo page is served: `demo` when set, otherwise only in dev mode.
    pub fn demo_enabled(&self) -> bool {
        self.demo.unwrap_or(self.mode == Mode::Dev)
    }

    /// The externally reachable base URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("assent.toml", "listen = \"127.0.0.1:9000\"\nmode = \"production\"\n")?;
            jail.set_env("ASSENT_LISTEN", "127.0.0.1:9100");
            jail.set_env("ASSENT_LOG", "debug"); // not configuration: ignored
            let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.listen, "127.0.0.1:9100".parse().map_err(|_| "addr")?);
            assert_eq!(config.mode, Mode::Production);

            let flags = Overrides { listen: Some(([127, 0, 0, 1], 9200).into()), ..Default::default() };
            let config = Config::load(None, &flags).map_err(|e| e.to_string())?;
            assert_eq!(config.listen.port(), 9200);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("assent.toml", "lisen = \"127.0.0.1:9000\"\n")?;
            let err = Config::load(None, &Overrides::default()).expect_err("typo must be refused");
            assert!(err.to_string().contains("lisen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn fallback_settings_layer_and_typos_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "assent.toml",
                r#"
app_name = "Acme"
[fallback]
allow_with_device = true
[sms]
allowed_countries = ["US", "CA"]
webotp_domain = "example.com"
providers = [
    { kind = "twilio", account_sid = "AC1", auth_token = "tok-secret", from = "+15005550006" },
    { kind = "vonage", api_key = "k", api_secret = "vonage-secret", from = "Acme" },
]
[sms.limits]
per_number_10min = 2
[email.provider]
kind = "smtp"
host = "smtp.example.com"
tls = "implicit"
from = "Acme <no-reply@example.com>"
"#,
            )?;
            jail.set_env("ASSENT_SMS__TIMEOUT_SECONDS", "3");
            jail.set_env("ASSENT_EMAIL__PROVIDER__PASSWORD", "smtp-secret");
            jail.set_env("ASSENT_EMAIL__PROVIDER__USERNAME", "acme");
            let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.app_name, "Acme");
            assert!(config.fallback.allow_with_device);
            assert_eq!(config.sms.timeout_seconds, 3);
            assert_eq!(config.sms.limits.per_number_10min, 2);
            assert_eq!(config.sms.limits.per_number_day, SmsLimits::default().per_number_day);
            assert!(matches!(&config.sms.providers[..], [SmsProviderConfig::Twilio(_), SmsProviderConfig::Vonage(_)]));
            match &config.email.provider {
                Some(EmailProviderConfig::Smtp(smtp)) => {
                    assert_eq!(smtp.tls, SmtpTls::Implicit);
                    assert_eq!(smtp.password.as_ref().map(Secret::expose), Some("smtp-secret"));
                }
                other => panic!("{other:?}"),
            }
            let debug = format!("{config:?}");
            for secret in ["tok-secret", "vonage-secret", "smtp-secret"] {
                assert!(!debug.contains(secret), "{secret} in {debug}");
            }
            jail.clear_env();

            jail.create_file(
                "assent.toml",
                "[sms]\nproviders = [{ kind = \"twilio\", acount_sid = \"AC1\", auth_token = \"t\" }]\n",
            )?;
            let err = Config::load(None, &Overrides::default()).expect_err("typo must be refused");
            assert!(err.to_string().contains("acount_sid"), "{err}");
            jail.create_file("assent.toml", "[sms]\nproviders = [{ kind = \"carrier-pigeon\" }]\n")?;
            assert!(Config::load(None, &Overrides::default()).is_err());
            Ok(())
        });
    }

    #[test]
    fn defaults_need_no_setup() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(config.database_url().starts_with("sqlite://"));
        assert_eq!(config.mode, Mode::Dev);
        assert!(config.demo_enabled());
        let production = Config { mode: Mode::Production, ..Config::default() };
        assert!(!production.demo_enabled());
    }

    #[test]
    fn passkey_settings_layer() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "assent.toml",
                "demo = true\nmode = \"production\"\n[passkeys]\nrp_id = \"example.com\"\norigins = [\"https://app.example.com\"]\n",
            )?;
            jail.set_env("ASSENT_PASSKEYS__RP_NAME", "Example Bank");
            let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.passkeys.rp_id.as_deref(), Some("example.com"));
            assert_eq!(config.passkeys.rp_name.as_deref(), Some("Example Bank"));
            assert_eq!(config.passkeys.origins, ["https://app.example.com"]);
            assert!(config.demo_enabled());
            jail.create_file("assent.toml", "[passkeys]\nrp_ids = \"example.com\"\n")?;
            let err = Config::load(None, &Overrides::default()).expect_err("typo must be refused");
            assert!(err.to_string().contains("rp_ids"), "{err}");
            Ok(())
        });
    }
}
