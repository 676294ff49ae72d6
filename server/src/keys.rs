//! The server's challenge-signing key: P-256, created on first start in the data directory
//! (PEM, mode 0600) or loaded from `server_key_file`. Its `kid` is its RFC 7638 thumbprint.

use std::path::Path;

use assent_protocol::jwk::{EcPublicJwk, Jwks};
use assent_protocol::p256::SecretKey;
use assent_protocol::p256::ecdsa::SigningKey;
use assent_protocol::p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};

use crate::config::Config;
use crate::error::{Error, Result};

/// File name of the generated key in the data directory.
pub const SERVER_KEY_FILE: &str = "server-key.pem";

/// The challenge-signing key and its published form.
#[derive(Clone)]
pub struct ServerKey {
    signing: SigningKey,
    kid: String,
    jwks: Jwks,
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl ServerKey {
    /// Loads the configured key, or the data directory's, creating the latter if absent.
    pub fn load_or_create(config: &Config) -> Result<Self> {
        if let Some(path) = &config.server_key_file {
            return Self::from_pem_file(path);
        }
        let path = config.data_dir.join(SERVER_KEY_FILE);
        if path.exists() {
            return Self::from_pem_file(&path);
        }
        let secret = SecretKey::random(&mut rand_core::OsRng);
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| Error::internal(format!("encoding the server key: {e}")))?;
        crate::app::write_secret_file(&path, pem.trim_end())
            .map_err(|e| Error::internal(format!("writing {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), "created the server signing key");
        Ok(Self::from_secret(&secret))
    }

    fn from_pem_file(path: &Path) -> Result<Self> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| Error::internal(format!("reading the server key {}: {e}", path.display())))?;
        let secret = SecretKey::from_pkcs8_pem(&pem)
            .map_err(|e| Error::internal(format!("{} is not a PKCS#8 P-256 private key: {e}", path.display())))?;
        Ok(Self::from_secret(&secret))
    }

    /// Wraps an existing key.
    pub fn from_secret(secret: &SecretKey) -> Self {
        let signing = SigningKey::from(secret);
        let public = EcPublicJwk::from_verifying_key(signing.verifying_key());
        let kid = public.thumbprint();
        let jwks = Jwks::from_verifying_keys([signing.verifying_key()]);
        ServerKey { signing, kid, jwks }
    }

    /// The RFC 7638 thumbprint, used as `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public keys, as served at `GET /v1/server-keys`.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// The private key, for signing challenges.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}
