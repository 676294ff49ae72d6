//! A software WebAuthn authenticator and client for the passkey tests: P-256 keys,
//! `none` attestation, authenticator data and client data built byte by byte, so each test
//! can bend exactly one thing (origin, RP id, counter, client data) and see it refused.

use assent_protocol::p256::ecdsa::signature::Signer;
use assent_protocol::p256::ecdsa::{DerSignature, SigningKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value as Cbor;
use rand_core::{OsRng, RngCore};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const UP: u8 = 0x01;
const UV: u8 = 0x04;
const BE: u8 = 0x08;
const BS: u8 = 0x10;
const AT: u8 = 0x40;

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

/// One discoverable credential on a software authenticator.
pub struct SoftKey {
    pub key: SigningKey,
    pub credential_id: Vec<u8>,
    pub user_handle: Vec<u8>,
    pub counter: u32,
    /// The origin the client puts in client data.
    pub origin: String,
    /// The RP id the authenticator hashes into authenticator data.
    pub rp_id: String,
    /// Whether the user was verified (PIN or biometrics).
    pub verified: bool,
    /// Backup eligible (a synced, multi-device passkey).
    pub backup_eligible: bool,
    /// Backed up now.
    pub backed_up: bool,
}

impl SoftKey {
    pub fn new(origin: &str) -> Self {
        let mut credential_id = [0u8; 32];
        OsRng.fill_bytes(&mut credential_id);
        SoftKey {
            key: SigningKey::random(&mut OsRng),
            credential_id: credential_id.to_vec(),
            user_handle: Vec::new(),
            counter: 0,
            origin: origin.to_owned(),
            rp_id: "localhost".to_owned(),
            verified: true,
            backup_eligible: true,
            backed_up: false,
        }
    }

    fn flags(&self) -> u8 {
        let mut flags = UP;
        if self.verified {
            flags |= UV;
        }
        if self.backup_eligible {
            flags |= BE;
        }
        if self.backed_up {
            flags |= BS;
        }
        flags
    }

    fn cose_key(&self) -> Vec<u8> {
        let point = self.key.verifying_key().to_encoded_point(false);
        let map = Cbor::Map(vec![
            (Cbor::Integer(1.into()), Cbor::Integer(2.into())),
            (Cbor::Integer(3.into()), Cbor::Integer((-7).into())),
            (Cbor::Integer((-1).into()), Cbor::Integer(1.into())),
            (Cbor::Integer((-2).into()), Cbor::Bytes(point.x().unwrap().to_vec())),
            (Cbor::Integer((-3).into()), Cbor::Bytes(point.y().unwrap().to_vec())),
        ]);
        let mut out = Vec::new();
        ciborium::into_writer(&map, &mut out).unwrap();
        out
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": false,
        }))
        .unwrap()
    }

    /// `navigator.credentials.create()` then `credential.toJSON()`, for `options` as the
    /// server returned them (`{publicKey: {...}}`).
    pub fn create(&mut self, options: &Value) -> Value {
        let pk = &options["publicKey"];
        self.user_handle = unb64(pk["user"]["id"].as_str().unwrap());
        let client_data = self.client_data("webauthn.create", pk["challenge"].as_str().unwrap());
        let mut auth_data = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        auth_data.push(self.flags() | AT);
        auth_data.extend_from_slice(&self.counter.to_be_bytes());
        auth_data.extend_from_slice(&[0u8; 16]); // AAGUID: none
        auth_data.extend_from_slice(&(self.credential_id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&self.credential_id);
        auth_data.extend_from_slice(&self.cose_key());
        let attestation = Cbor::Map(vec![
            (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
            (Cbor::Text("attStmt".into()), Cbor::Map(vec![])),
            (Cbor::Text("authData".into()), Cbor::Bytes(auth_data)),
        ]);
        let mut attestation_object = Vec::new();
        ciborium::into_writer(&attestation, &mut attestation_object).unwrap();
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client_data),
                "attestationObject": b64(&attestation_object),
                "transports": ["internal"],
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        })
    }

    /// `navigator.credentials.get()` then `credential.toJSON()`; the counter goes up by one.
    pub fn get(&mut self, options: &Value) -> Value {
        self.counter += 1;
        let challenge = options["publicKey"]["challenge"].as_str().unwrap().to_owned();
        self.assert_with(&self.client_data("webauthn.get", &challenge))
    }

    /// An assertion over exactly these client data bytes.
    pub fn assert_with(&self, client_data: &[u8]) -> Value {
        let mut auth_data = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        auth_data.push(self.flags());
        auth_data.extend_from_slice(&self.counter.to_be_bytes());
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(client_data));
        let signature: DerSignature = self.key.sign(&signed);
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(client_data),
                "authenticatorData": b64(&auth_data),
                "signature": b64(signature.as_bytes()),
                "userHandle": b64(&self.user_handle),
            },
            "authenticatorAttachment": "platform",
            "clientExtensionResults": {},
        })
    }
}
