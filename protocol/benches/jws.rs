//! ES256 JWS costs: signing, verifying, a whole device-proof check, JWK parsing.
//! `cargo bench -p assent-protocol` (p256) and `cargo bench -p assent-protocol --features ring`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use assent_protocol::EcPublicJwk;
use assent_protocol::jws::{self, JwsType, KeyRef};
use assent_protocol::messages::ProofClaims;
use assent_protocol::p256::ecdsa::SigningKey;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    let key = SigningKey::random(&mut rand_core::OsRng);
    let body = br#"{"response":"eyJhbGciOiJFUzI1NiJ9.e30.sig"}"#;
    let claims = ProofClaims::new("POST", "/v1/device/challenges/chl_0123/response", body, 1_700_000_000).unwrap();
    let token = jws::sign(JwsType::Proof, KeyRef::Kid("dev_0123"), &claims, &key).unwrap();
    let jwk_json = serde_json::to_string(&EcPublicJwk::from_verifying_key(key.verifying_key())).unwrap();

    c.bench_function("jws_sign_es256", |b| {
        b.iter(|| jws::sign(JwsType::Proof, KeyRef::Kid("dev_0123"), black_box(&claims), &key).unwrap())
    });
    c.bench_function("jws_verify_es256", |b| {
        b.iter(|| jws::decode_and_verify(black_box(&token), JwsType::Proof, key.verifying_key()).unwrap())
    });
    c.bench_function("device_proof_check", |b| {
        b.iter(|| {
            let verified = jws::decode_and_verify(black_box(&token), JwsType::Proof, key.verifying_key()).unwrap();
            let claims: ProofClaims = verified.claims().unwrap();
            claims.check_request("POST", "/v1/device/challenges/chl_0123/response", body).unwrap();
        })
    });
    c.bench_function("jwk_parse_validate", |b| b.iter(|| EcPublicJwk::from_json(black_box(&jwk_json)).unwrap()));
}

criterion_group!(group, benches);
criterion_main!(group);
