//! The server's challenge-signing key: P-256, created on first start in the data directory
//! (PEM, mode 0600) or loaded from `server_key_file`. Its `kid` is its RFC 7638 thumbprint.

use std::path::Path;
use std::sync::Arc;

use assent_protocol::jwk::{EcPublicJwk, Jwks};
use assent_protocol::jws::{self, JwsType, KeyRef};
use assent_protocol::p256::SecretKey;
use assent_protocol::p256::ecdsa::SigningKey;
use assent_protocol::p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};

use crate::config::Config;
use crate::error::{Error, Result};

/// File name of the generated key in the data directory.
pub const SERVER_KEY_FILE: &str = "server-key.pem";

/// The challenge-signing key and its published form.
///
/// Challenges are signed through `ring` (about three times faster than `p256`, and the
/// signature is made inside the challenge's write transaction); the key itself stays a `p256`
/// type for PEM, JWK and thumbprint handling.
#[derive(Clone)]
pub struct ServerKey {
    signing: SigningKey,
    ring: Arc<ring::signature::EcdsaKeyPair>,
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
        Self::from_secret(&secret)
    }

    fn from_pem_file(path: &Path) -> Result<Self> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| Error::internal(format!("reading the server key {}: {e}", path.display())))?;
        let secret = SecretKey::from_pkcs8_pem(&pem)
            .map_err(|e| Error::internal(format!("{} is not a PKCS#8 P-256 private key: {e}", path.display())))?;
        Self::from_secret(&secret)
    }

    /// Wraps an existing key.
    pub fn from_secret(secret: &SecretKey) -> Result<Self> {
        let signing = SigningKey::from(secret);
        let public = EcPublicJwk::from_verifying_key(signing.verifying_key());
        let kid = public.thumbprint();
        let jwks = Jwks::from_verifying_keys([signing.verifying_key()]);
        let pkcs8 = secret.to_pkcs8_der().map_err(|e| Error::internal(format!("encoding the server key: {e}")))?;
        let ring = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_bytes(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| Error::internal(format!("loading the server key: {e}")))?;
        Ok(ServerKey { signing, ring: Arc::new(ring), kid, jwks })
    }

    /// Signs `claims` as a JWS of kind `typ`, with this key's `kid`.
    pub fn sign<P: serde::Serialize + ?Sized>(&self, typ: JwsType, claims: &P) -> Result<String> {
        let input = jws::signing_input(typ, KeyRef::Kid(&self.kid), claims)
            .map_err(|e| Error::internal(format!("encoding a {typ:?}: {e}")))?;
        let signature = self
            .ring
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .map_err(|e| Error::internal(format!("signing a {typ:?}: {e}")))?;
        let raw = <[u8; jws::SIGNATURE_LEN]>::try_from(signature.as_ref())
            .map_err(|_| Error::internal("ring returned a signature of the wrong length"))?;
        Ok(jws::assemble(&input, raw))
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

#[cfg(test)]
mod tests {
    use assent_protocol::jws::{self, JwsType};
    use serde_json::json;

    use super::*;

    #[test]
    fn challenges_signed_through_ring_verify_under_the_published_key() {
        let key = ServerKey::from_secret(&SecretKey::random(&mut rand_core::OsRng)).unwrap();
        let claims = json!({"jti": "chl_1", "sub": "alice", "aud": ["dev_1"], "iat": 1, "exp": 2, "title": "Sign in"});
        let token = key.sign(JwsType::Challenge, &claims).unwrap();
        let verified = jws::decode_and_verify(&token, JwsType::Challenge, key.signing_key().verifying_key()).unwrap();
        assert_eq!(verified.header().kid(), Some(key.kid()));
        assert_eq!(verified.claims::<serde_json::Value>().unwrap(), claims);
        // ECDSA with a random nonce: the same claims never give the same signature twice.
        assert_ne!(key.sign(JwsType::Challenge, &claims).unwrap(), token);
    }
}
