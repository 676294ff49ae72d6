//! The device key: the [`KeyStore`] interface apps implement over Secure Enclave / Android
//! Keystore, the [`SoftwareKeyStore`] for tests and the reference app, and the checks that turn
//! whatever a key store returns (DER or raw signatures, SEC1 or SPKI public keys) into what the
//! protocol needs.
//!
//! The private key never enters Rust for platform stores: the SDK hands the key store the exact
//! bytes to sign (a JWS signing input) and verifies the signature it gets back against the
//! device public key before using it, so a misbehaving key store fails loudly and locally.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use assent_protocol::jws::{self, SIGNATURE_LEN};
use assent_protocol::p256::ecdsa::signature::Signer as _;
use assent_protocol::p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use assent_protocol::p256::pkcs8::DecodePublicKey as _;
use assent_protocol::{b64, messages};

use crate::error::{AssentError, Error, KeyStoreError, Result};

/// What a key store says about one of its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct KeyInfo {
    /// The private key lives in secure hardware (Secure Enclave, StrongBox, TEE) and cannot be
    /// exported.
    pub hardware_backed: bool,
    /// The platform refuses to sign with this key unless the user was verified (biometrics or
    /// device PIN) for the signature, or within a short validity window before it. Sent to the
    /// server as the response's `uv` claim, so only report `true` when the platform enforces it.
    pub user_verification: bool,
}

/// Platform key storage for the device key, implemented by the app (Kotlin: Android Keystore;
/// Swift: Secure Enclave; Python: anything) or by [`SoftwareKeyStore`].
///
/// Every method may be called from a background thread and may block (a biometric prompt
/// included); none is called on the app's main thread by the SDK itself. Keys are P-256
/// (secp256r1) ECDSA keys; the SDK chooses the aliases.
#[uniffi::export(rust, foreign)]
pub trait KeyStore: Send + Sync {
    /// Creates a new P-256 signing key under `alias`, replacing any key already there.
    fn create_key(&self, alias: String) -> Result<(), KeyStoreError>;

    /// Signs `message` with ECDSA P-256 / SHA-256: the key store hashes `message` itself
    /// (`SHA256withECDSA`, `.ecdsaSignatureMessageX962SHA256`); it is not a digest. Returns
    /// the signature either DER-encoded (what Android and Apple produce) or as raw `r || s`
    /// (64 bytes); the SDK accepts both.
    fn sign(&self, alias: String, message: Vec<u8>) -> Result<Vec<u8>, KeyStoreError>;

    /// The public key of `alias`: SEC1 (65-byte uncompressed `04 || x || y`, as
    /// `SecKeyCopyExternalRepresentation` returns, or 33-byte compressed) or DER
    /// SubjectPublicKeyInfo (as Android's `PublicKey.getEncoded()` returns).
    fn public_key(&self, alias: String) -> Result<Vec<u8>, KeyStoreError>;

    /// Deletes the key under `alias`. Deleting a missing key is not an error.
    fn delete_key(&self, alias: String) -> Result<(), KeyStoreError>;

    /// Whether the key is hardware-backed and gated by user verification.
    fn key_info(&self, alias: String) -> Result<KeyInfo, KeyStoreError>;
}

/// Signature encodings a key store may return (and [`SoftwareKeyStore`] can produce).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SignatureFormat {
    /// ASN.1 DER `SEQUENCE { r INTEGER, s INTEGER }`.
    Der,
    /// Raw `r || s`, 32 bytes each.
    Raw,
}

/// Parses a key store's public key: SEC1 (compressed or uncompressed) or DER SPKI.
pub(crate) fn parse_public_key(bytes: &[u8]) -> Result<VerifyingKey> {
    if let Ok(key) = VerifyingKey::from_sec1_bytes(bytes) {
        return Ok(key);
    }
    VerifyingKey::from_public_key_der(bytes).map_err(|_| {
        Error::BadPublicKey(format!("{} bytes, neither SEC1 nor DER SubjectPublicKeyInfo of a P-256 key", bytes.len()))
    })
}

/// Turns a key store's signature over `message` into JWS's raw `r || s`, accepting DER or raw,
/// and only if it verifies under `key`. Trying both readings and keeping the one that verifies
/// also settles the (rare) DER signature that happens to be 64 bytes long.
pub(crate) fn normalize_signature(
    signature: &[u8],
    message: &[u8],
    key: &VerifyingKey,
) -> Result<([u8; SIGNATURE_LEN], SignatureFormat)> {
    let raw = <[u8; SIGNATURE_LEN]>::try_from(signature).ok().map(|raw| (raw, SignatureFormat::Raw));
    let der = jws::der_to_raw(signature).ok().map(|raw| (raw, SignatureFormat::Der));
    [raw, der]
        .into_iter()
        .flatten()
        .find(|(raw, _)| jws::verify_raw(message, raw, key).is_ok())
        .ok_or(Error::BadKeyStoreSignature)
}

/// A key store keeping P-256 keys in process memory, for tests, the `assent-device` reference
/// app and desktop tools. Keys are not protected by any hardware: never use it in a shipping
/// phone app.
pub struct SoftwareKeyStore {
    keys: Mutex<BTreeMap<String, SigningKey>>,
    format: SignatureFormat,
    user_verification: bool,
}

impl fmt::Debug for SoftwareKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Aliases only: the keys themselves never go to logs.
        f.debug_struct("SoftwareKeyStore")
            .field("aliases", &self.locked().keys().collect::<Vec<_>>())
            .field("format", &self.format)
            .field("user_verification", &self.user_verification)
            .finish()
    }
}

impl Default for SoftwareKeyStore {
    fn default() -> Self {
        Self::new(SignatureFormat::Raw)
    }
}

impl SoftwareKeyStore {
    /// An empty store whose signatures come in `format`.
    pub fn new(format: SignatureFormat) -> Self {
        SoftwareKeyStore { keys: Mutex::new(BTreeMap::new()), format, user_verification: false }
    }

    /// Makes [`KeyInfo::user_verification`] report `value` (tests only: this store verifies
    /// nobody).
    #[must_use]
    pub fn with_user_verification(mut self, value: bool) -> Self {
        self.user_verification = value;
        self
    }

    /// Every key as alias -> base64url private scalar, for an app that persists this store
    /// itself (the reference app writes them into its state file).
    pub fn export_keys(&self) -> BTreeMap<String, String> {
        self.locked().iter().map(|(alias, key)| (alias.clone(), b64::encode(key.to_bytes()))).collect()
    }

    /// Loads a key written by [`Self::export_keys`].
    pub fn import_key(&self, alias: &str, scalar_b64: &str) -> Result<(), KeyStoreError> {
        let bytes =
            b64::decode(scalar_b64).map_err(|e| KeyStoreError::Failed { detail: format!("key {alias}: {e}") })?;
        let key = SigningKey::from_slice(&bytes)
            .map_err(|_| KeyStoreError::Failed { detail: format!("key {alias}: not a P-256 private scalar") })?;
        self.locked().insert(alias.to_owned(), key);
        Ok(())
    }

    fn locked(&self) -> MutexGuard<'_, BTreeMap<String, SigningKey>> {
        // A panic while holding the lock cannot leave the map half-updated: recover it.
        self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn key(&self, alias: &str) -> Result<SigningKey, KeyStoreError> {
        self.locked().get(alias).cloned().ok_or(KeyStoreError::KeyInvalidated)
    }
}

impl KeyStore for SoftwareKeyStore {
    fn create_key(&self, alias: String) -> Result<(), KeyStoreError> {
        let key = jws::generate_signing_key().map_err(|e| KeyStoreError::Failed { detail: e.to_string() })?;
        self.locked().insert(alias, key);
        Ok(())
    }

    fn sign(&self, alias: String, message: Vec<u8>) -> Result<Vec<u8>, KeyStoreError> {
        let signature: Signature = self.key(&alias)?.sign(&message);
        Ok(match self.format {
            SignatureFormat::Der => signature.to_der().as_bytes().to_vec(),
            SignatureFormat::Raw => signature.to_bytes().to_vec(),
        })
    }

    fn public_key(&self, alias: String) -> Result<Vec<u8>, KeyStoreError> {
        let key = self.key(&alias)?;
        Ok(key.verifying_key().to_encoded_point(false).as_bytes().to_vec())
    }

    fn delete_key(&self, alias: String) -> Result<(), KeyStoreError> {
        self.locked().remove(&alias);
        Ok(())
    }

    fn key_info(&self, alias: String) -> Result<KeyInfo, KeyStoreError> {
        self.key(&alias)?;
        Ok(KeyInfo { hardware_backed: false, user_verification: self.user_verification })
    }
}

/// A new in-memory [`SoftwareKeyStore`] (tests and tools only: no hardware protection).
#[uniffi::export]
pub fn software_key_store(signature_format: SignatureFormat) -> Arc<dyn KeyStore> {
    Arc::new(SoftwareKeyStore::new(signature_format))
}

/// What [`check_key_store`] found out about a key store implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct KeyStoreReport {
    /// The encoding its signatures came in.
    pub signature_format: SignatureFormat,
    /// Its [`KeyInfo`] for a fresh key.
    pub key_info: KeyInfo,
}

/// Exercises a [`KeyStore`] implementation end to end: creates a throw-away key, exports its
/// public key, signs a test message, verifies the signature (DER or raw), reads the key info
/// and deletes the key. For an app's debug screen or its integration tests; with a
/// biometry-gated store it prompts the user. Call it off the main thread.
#[uniffi::export]
pub fn check_key_store(key_store: Arc<dyn KeyStore>) -> Result<KeyStoreReport, AssentError> {
    let alias = format!("assent-check-{}", messages::new_jti().map_err(Error::from)?);
    key_store.create_key(alias.clone()).map_err(|source| Error::KeyStore { op: "create_key", source })?;
    let result = exercise_key(key_store.as_ref(), &alias);
    let deleted = key_store.delete_key(alias).map_err(|source| Error::KeyStore { op: "delete_key", source });
    let report = result?;
    deleted?;
    Ok(report)
}

fn exercise_key(key_store: &dyn KeyStore, alias: &str) -> Result<KeyStoreReport> {
    let public =
        key_store.public_key(alias.to_owned()).map_err(|source| Error::KeyStore { op: "public_key", source })?;
    let key = parse_public_key(&public)?;
    let message = b"assent key store self-check".to_vec();
    let signature =
        key_store.sign(alias.to_owned(), message.clone()).map_err(|source| Error::KeyStore { op: "sign", source })?;
    let (_, signature_format) = normalize_signature(&signature, &message, &key)?;
    let key_info = key_store.key_info(alias.to_owned()).map_err(|source| Error::KeyStore { op: "key_info", source })?;
    Ok(KeyStoreReport { signature_format, key_info })
}

#[cfg(test)]
mod tests {
    use super::*;
    use assent_protocol::p256::ecdsa::signature::Verifier as _;
    use assent_protocol::p256::pkcs8::EncodePublicKey as _;

    #[test]
    fn der_and_raw_signatures_both_normalize() {
        for format in [SignatureFormat::Der, SignatureFormat::Raw] {
            let store = SoftwareKeyStore::new(format);
            store.create_key("k".into()).unwrap();
            let key = parse_public_key(&store.public_key("k".into()).unwrap()).unwrap();
            let signature = store.sign("k".into(), b"hello".to_vec()).unwrap();
            let (raw, found) = normalize_signature(&signature, b"hello", &key).unwrap();
            assert_eq!(found, format);
            let sig = Signature::from_slice(&raw).unwrap();
            assert!(key.verify(b"hello", &sig).is_ok());
            // Over another message, or under another key, neither reading verifies.
            assert!(matches!(normalize_signature(&signature, b"other", &key), Err(Error::BadKeyStoreSignature)));
            let other = jws::generate_signing_key().unwrap();
            assert!(matches!(
                normalize_signature(&signature, b"hello", other.verifying_key()),
                Err(Error::BadKeyStoreSignature)
            ));
        }
        let key = jws::generate_signing_key().unwrap();
        assert!(matches!(normalize_signature(&[0u8; 10], b"x", key.verifying_key()), Err(Error::BadKeyStoreSignature)));
    }

    #[test]
    fn public_keys_in_sec1_and_spki() {
        let key = jws::generate_signing_key().unwrap();
        let vk = *key.verifying_key();
        let uncompressed = vk.to_encoded_point(false);
        let compressed = vk.to_encoded_point(true);
        let spki = vk.to_public_key_der().unwrap();
        assert_eq!(parse_public_key(uncompressed.as_bytes()).unwrap(), vk);
        assert_eq!(parse_public_key(compressed.as_bytes()).unwrap(), vk);
        assert_eq!(parse_public_key(spki.as_bytes()).unwrap(), vk);
        assert!(matches!(parse_public_key(&[4u8; 65]), Err(Error::BadPublicKey(_))));
    }

    #[test]
    fn software_store_export_import_and_missing_keys() {
        let store = SoftwareKeyStore::default();
        store.create_key("a".into()).unwrap();
        let exported = store.export_keys();
        let copy = SoftwareKeyStore::new(SignatureFormat::Der);
        copy.import_key("a", &exported["a"]).unwrap();
        assert_eq!(copy.public_key("a".into()).unwrap(), store.public_key("a".into()).unwrap());
        assert!(!format!("{store:?}").contains(&exported["a"]));
        store.delete_key("a".into()).unwrap();
        store.delete_key("a".into()).unwrap();
        assert_eq!(store.sign("a".into(), vec![1]), Err(KeyStoreError::KeyInvalidated));
        assert!(copy.import_key("b", "not base64!").is_err());
    }

    #[test]
    fn check_key_store_reports_format_and_cleans_up() {
        let store = Arc::new(SoftwareKeyStore::new(SignatureFormat::Der).with_user_verification(true));
        let report = check_key_store(store.clone()).unwrap();
        assert_eq!(report.signature_format, SignatureFormat::Der);
        assert_eq!(report.key_info, KeyInfo { hardware_backed: false, user_verification: true });
        assert!(store.export_keys().is_empty());
    }

    /// A store that signs with one key but reports another: caught before anything is sent.
    #[derive(Debug)]
    struct LyingStore(SoftwareKeyStore, SoftwareKeyStore);

    impl KeyStore for LyingStore {
        fn create_key(&self, alias: String) -> Result<(), KeyStoreError> {
            self.0.create_key(alias.clone())?;
            self.1.create_key(alias)
        }
        fn sign(&self, alias: String, message: Vec<u8>) -> Result<Vec<u8>, KeyStoreError> {
            self.0.sign(alias, message)
        }
        fn public_key(&self, alias: String) -> Result<Vec<u8>, KeyStoreError> {
            self.1.public_key(alias)
        }
        fn delete_key(&self, alias: String) -> Result<(), KeyStoreError> {
            self.0.delete_key(alias)
        }
        fn key_info(&self, alias: String) -> Result<KeyInfo, KeyStoreError> {
            self.0.key_info(alias)
        }
    }

    #[test]
    fn check_key_store_catches_a_wrong_key() {
        let store = Arc::new(LyingStore(SoftwareKeyStore::default(), SoftwareKeyStore::default()));
        assert!(matches!(check_key_store(store), Err(AssentError::KeyStore { .. })));
    }
}
