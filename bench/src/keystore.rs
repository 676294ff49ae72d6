//! The simulated phones' key store: the SDK's [`KeyStore`] with keys held and used by `ring`.
//!
//! A real phone signs in its secure hardware, so its signing cost is not the server machine's.
//! Here the phones share the machine with the server; signing with `ring` (about three times
//! faster than the SDK's pure-Rust software key store) keeps the load tool's own share of the
//! CPU small, so the measurement is of the server. The SDK's code path is the same: it calls
//! the key store through the trait, as it calls the Secure Enclave or Android Keystore.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use assent_sdk::{KeyInfo, KeyStore, KeyStoreError};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

#[derive(Debug)]
struct RingKeyStore {
    keys: Mutex<HashMap<String, Arc<EcdsaKeyPair>>>,
    rng: SystemRandom,
}

fn failed(detail: impl ToString) -> KeyStoreError {
    KeyStoreError::Failed { detail: detail.to_string() }
}

impl RingKeyStore {
    fn key(&self, alias: &str) -> Result<Arc<EcdsaKeyPair>, KeyStoreError> {
        self.keys.lock().map_err(failed)?.get(alias).cloned().ok_or(KeyStoreError::KeyInvalidated)
    }
}

impl KeyStore for RingKeyStore {
    fn create_key(&self, alias: String) -> Result<(), KeyStoreError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.rng).map_err(failed)?;
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &self.rng).map_err(failed)?;
        self.keys.lock().map_err(failed)?.insert(alias, Arc::new(key));
        Ok(())
    }

    fn sign(&self, alias: String, message: Vec<u8>) -> Result<Vec<u8>, KeyStoreError> {
        Ok(self.key(&alias)?.sign(&self.rng, &message).map_err(failed)?.as_ref().to_vec())
    }

    fn public_key(&self, alias: String) -> Result<Vec<u8>, KeyStoreError> {
        Ok(self.key(&alias)?.public_key().as_ref().to_vec())
    }

    fn delete_key(&self, alias: String) -> Result<(), KeyStoreError> {
        self.keys.lock().map_err(failed)?.remove(&alias);
        Ok(())
    }

    fn key_info(&self, alias: String) -> Result<KeyInfo, KeyStoreError> {
        self.key(&alias)?;
        // Like a phone whose key is biometric-gated: the server sees uv = true.
        Ok(KeyInfo { hardware_backed: false, user_verification: true })
    }
}

/// A new, empty key store for one simulated phone.
pub fn ring_key_store() -> Arc<dyn KeyStore> {
    Arc::new(RingKeyStore { keys: Mutex::default(), rng: SystemRandom::new() })
}

#[cfg(test)]
mod tests {
    use assent_sdk::{SignatureFormat, check_key_store};

    #[test]
    fn passes_the_sdks_key_store_check() {
        let report = check_key_store(super::ring_key_store()).unwrap();
        assert_eq!(report.signature_format, SignatureFormat::Raw);
    }
}
