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
    fn defaults_need_no_setup() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(config.database_url().starts_with("sqlite://"));
        assert_eq!(config.mode, Mode::Dev);
    }
}
