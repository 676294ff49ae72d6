use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde_json::json;

use super::*;
use crate::messages::{
    ChallengeClaims, Context, Decision, Detail, EnrollClaims, Platform, ProofClaims, PushProvider, PushRegistration,
    ResponseClaims,
};

/// RFC 7515 appendix A.3.1, figure 27 (line breaks removed).
const A3_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
const A3_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
const A3_PAYLOAD: &[u8] = b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";

fn a3_key() -> VerifyingKey {
    *EcPublicJwk::from_json(A3_JWK).unwrap().verifying_key()
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).unwrap()
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

/// A correctly signed token with an arbitrary header, so a refusal can only come from the
/// header rules.
fn forge(header: &serde_json::Value, payload: &serde_json::Value, signer: &SigningKey) -> String {
    forge_raw(header.to_string().as_bytes(), payload.to_string().as_bytes(), signer)
}

fn forge_raw(header: &[u8], payload: &[u8], signer: &SigningKey) -> String {
    let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
    let sig: Signature = signer.sign(input.as_bytes());
    assemble(&input, sig.to_bytes().into())
}

fn proof_claims() -> ProofClaims {
    ProofClaims {
        htm: "GET".into(),
        htu: "/v1/device/challenges".into(),
        iat: 1_700_000_000,
        jti: "j1".into(),
        bh: None,
    }
}

fn proof_token(signer: &SigningKey) -> String {
    sign(JwsType::Proof, KeyRef::Kid("dev_1"), &proof_claims(), signer).unwrap()
}

fn decode_err(token: &str, expected: JwsType) -> Error {
    decode(token, expected).unwrap_err()
}

#[test]
fn typ_strings_are_exact() {
    assert_eq!(JwsType::Enroll.as_str(), "assent-enroll+jwt");
    assert_eq!(JwsType::Proof.as_str(), "assent-proof+jwt");
    assert_eq!(JwsType::Challenge.as_str(), "assent-challenge+jwt");
    assert_eq!(JwsType::Response.as_str(), "assent-response+jwt");
    for t in JwsType::ALL {
        assert_eq!(JwsType::from_typ(t.as_str()), Some(t));
        assert_eq!(t.to_string(), t.as_str());
    }
    assert_eq!(JwsType::from_typ("ASSENT-PROOF+JWT"), None);
}

#[test]
fn rfc7515_a3_verifies() {
    let payload = verify_compact_es256(A3_TOKEN, &a3_key()).unwrap();
    assert_eq!(payload, A3_PAYLOAD);
}

#[test]
fn rfc7515_a3_fails_after_one_byte_payload_change() {
    let mut payload = A3_PAYLOAD.to_vec();
    payload[8] = b'J'; // "joe" -> "Joe"
    let parts = segments(A3_TOKEN);
    let tampered = format!("{}.{}.{}", parts[0], b64::encode(&payload), parts[2]);
    assert_eq!(verify_compact_es256(&tampered, &a3_key()), Err(Error::BadSignature));
}

#[test]
fn rfc7515_a3_lacks_typ_so_protocol_decode_refuses_it() {
    assert_eq!(decode_err(A3_TOKEN, JwsType::Challenge), Error::MissingType);
}

#[test]
fn verify_compact_applies_alg_rules() {
    let sk = key(3);
    let hs = forge(&json!({"alg":"HS256"}), &json!({}), &sk);
    assert_eq!(verify_compact_es256(&hs, sk.verifying_key()), Err(Error::UnsupportedAlg("HS256".into())));
    let crit = forge(&json!({"alg":"ES256","crit":["b64"],"b64":false}), &json!({}), &sk);
    assert_eq!(verify_compact_es256(&crit, sk.verifying_key()), Err(Error::CritNotAllowed));
    let ok = forge(&json!({"alg":"ES256"}), &json!({"a":1}), &sk);
    assert_eq!(verify_compact_es256(&ok, sk.verifying_key()).unwrap(), br#"{"a":1}"#);
    assert_eq!(verify_compact_es256(&ok, key(4).verifying_key()), Err(Error::BadSignature));
}

#[test]
fn round_trip_every_kind() {
    let device = key(1);
    let device_jwk = EcPublicJwk::from_verifying_key(device.verifying_key());
    let server = key(2);
    let server_kid = device_jwk.thumbprint();

    let enroll = EnrollClaims {
        token: "enrollment-token".into(),
        name: "Alice's phone".into(),
        platform: Platform::Ios,
        push: PushRegistration { provider: PushProvider::Apns, token: Some("apns".into()) },
        iat: 1_700_000_000,
    };
    let token = sign(JwsType::Enroll, KeyRef::Jwk(&device_jwk), &enroll, &device).unwrap();
    let unverified = decode(&token, JwsType::Enroll).unwrap();
    assert_eq!(unverified.header().typ(), JwsType::Enroll);
    assert_eq!(unverified.header().jwk(), Some(&device_jwk));
    assert_eq!(unverified.header().kid(), None);
    let verified = unverified.verify_with_embedded_jwk().unwrap();
    assert_eq!(verified.claims::<EnrollClaims>().unwrap(), enroll);
    assert_eq!(verified.token(), token);

    let proof = proof_claims();
    let token = sign(JwsType::Proof, KeyRef::Kid("dev_1"), &proof, &device).unwrap();
    let unverified = decode(&token, JwsType::Proof).unwrap();
    assert_eq!(unverified.header().kid(), Some("dev_1"));
    assert_eq!(unverified.header().jwk(), None);
    assert_eq!(unverified.clone().verify_with_embedded_jwk(), Err(Error::MissingJwk));
    let verified = unverified.verify(device.verifying_key()).unwrap();
    assert_eq!(verified.claims::<ProofClaims>().unwrap(), proof);

    let challenge = ChallengeClaims {
        jti: "chl_1".into(),
        sub: "alice".into(),
        aud: vec!["dev_1".into(), "dev_2".into()],
        iat: 1_700_000_000,
        exp: 1_700_000_120,
        title: "Sign in".into(),
        details: vec![Detail { label: "Amount".into(), value: "EUR 1 000,00 — ünïcode".into() }],
        context: Context { ip: Some("2001:db8::1".into()), location: None, user_agent: None },
        number_choices: Some(vec![12, 47, 88]),
    };
    let token = sign(JwsType::Challenge, KeyRef::Kid(&server_kid), &challenge, &server).unwrap();
    let verified = decode_and_verify(&token, JwsType::Challenge, server.verifying_key()).unwrap();
    assert_eq!(verified.header().kid(), Some(server_kid.as_str()));
    assert_eq!(verified.claims::<ChallengeClaims>().unwrap(), challenge);
    assert_eq!(verified.sha256(), b64::sha256_b64(&token));
    assert_eq!(verified.payload(), serde_json::to_vec(&challenge).unwrap().as_slice());

    let response = ResponseClaims {
        jti: "chl_1".into(),
        decision: Decision::Approve,
        chash: verified.sha256(),
        number: Some(47),
        uv: true,
        iat: 1_700_000_005,
    };
    let token = sign(JwsType::Response, KeyRef::Kid("dev_1"), &response, &device).unwrap();
    let verified = decode_and_verify(&token, JwsType::Response, device.verifying_key()).unwrap();
    assert_eq!(verified.claims::<ResponseClaims>().unwrap(), response);
}

#[test]
fn header_is_exactly_what_the_contract_says() {
    let sk = key(1);
    let token = proof_token(&sk);
    let header = b64::decode(&segments(&token)[0]).unwrap();
    assert_eq!(header, br#"{"alg":"ES256","typ":"assent-proof+jwt","kid":"dev_1"}"#);
    let jwk = EcPublicJwk::from_verifying_key(sk.verifying_key());
    let token = sign(JwsType::Enroll, KeyRef::Jwk(&jwk), &json!({"a":1}), &sk).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&b64::decode(&segments(&token)[0]).unwrap()).unwrap();
    assert_eq!(
        header,
        json!({"alg":"ES256","typ":"assent-enroll+jwt",
               "jwk":{"kty":"EC","crv":"P-256","x":jwk.x(),"y":jwk.y()}})
    );
}

#[test]
fn wrong_key_fails() {
    let token = proof_token(&key(1));
    let unverified = decode(&token, JwsType::Proof).unwrap();
    assert_eq!(unverified.verify(key(2).verifying_key()), Err(Error::BadSignature));
}

#[test]
fn every_kind_refuses_the_other_kinds() {
    let sk = key(1);
    let jwk = EcPublicJwk::from_verifying_key(sk.verifying_key());
    for made in JwsType::ALL {
        let key_ref = if made.embeds_jwk() { KeyRef::Jwk(&jwk) } else { KeyRef::Kid("k") };
        let token = sign(made, key_ref, &json!({}), &sk).unwrap();
        for expected in JwsType::ALL.into_iter().filter(|t| *t != made) {
            assert_eq!(decode_err(&token, expected), Error::WrongType { expected, found: made.as_str().into() });
        }
    }
}

#[test]
fn tampered_payload_fails() {
    let sk = key(1);
    let token = proof_token(&sk);
    let parts = segments(&token);
    let mut claims = proof_claims();
    claims.htu = "/v1/device/challenges/chl_other".into();
    let payload = b64::encode(serde_json::to_vec(&claims).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
    let unverified = decode(&tampered, JwsType::Proof).unwrap();
    assert_eq!(unverified.verify(sk.verifying_key()), Err(Error::BadSignature));
}

#[test]
fn tampered_header_fails() {
    let sk = key(1);
    let token = proof_token(&sk);
    let parts = segments(&token);
    let header = b64::encode(br#"{"alg":"ES256","typ":"assent-proof+jwt","kid":"dev_2"}"#);
    let tampered = format!("{}.{}.{}", header, parts[1], parts[2]);
    let unverified = decode(&tampered, JwsType::Proof).unwrap();
    assert_eq!(unverified.header().kid(), Some("dev_2"));
    assert_eq!(unverified.verify(sk.verifying_key()), Err(Error::BadSignature));
}

#[test]
fn tampered_signature_fails() {
    let sk = key(1);
    let token = proof_token(&sk);
    let parts = segments(&token);
    let mut sig = b64::decode(&parts[2]).unwrap();
    sig[10] ^= 0x01;
    let tampered = format!("{}.{}.{}", parts[0], parts[1], b64::encode(&sig));
    assert_eq!(decode(&tampered, JwsType::Proof).unwrap().verify(sk.verifying_key()), Err(Error::BadSignature));
}

#[test]
fn alg_none_is_refused() {
    let sk = key(1);
    let header = json!({"alg":"none","typ":"assent-proof+jwt","kid":"dev_1"});
    let payload = serde_json::to_value(proof_claims()).unwrap();
    // The classic unsecured form, with an empty signature.
    let unsecured = format!("{}.{}.", b64::encode(header.to_string()), b64::encode(payload.to_string()));
    assert_eq!(decode_err(&unsecured, JwsType::Proof), Error::Malformed(Malformed::EmptySegment));
    // And with a signature attached, so only the alg rule can refuse it.
    let signed = forge(&header, &payload, &sk);
    assert_eq!(decode_err(&signed, JwsType::Proof), Error::UnsupportedAlg("none".into()));
}

#[test]
fn other_algs_are_refused() {
    let sk = key(1);
    let payload = json!({});
    for alg in ["HS256", "ES384", "ES512", "RS256", "PS256", "EdDSA", "es256", "ES256 ", ""] {
        let token = forge(&json!({"alg":alg,"typ":"assent-proof+jwt","kid":"dev_1"}), &payload, &sk);
        assert_eq!(decode_err(&token, JwsType::Proof), Error::UnsupportedAlg(alg.into()), "{alg}");
    }
    let no_alg = forge(&json!({"typ":"assent-proof+jwt","kid":"dev_1"}), &payload, &sk);
    assert_eq!(decode_err(&no_alg, JwsType::Proof), Error::MissingAlg);
    let numeric = forge(&json!({"alg":256,"typ":"assent-proof+jwt","kid":"d"}), &payload, &sk);
    assert!(matches!(decode_err(&numeric, JwsType::Proof), Error::Json(_)));
}

#[test]
fn duplicated_header_members_are_refused() {
    let sk = key(1);
    let token = forge_raw(br#"{"alg":"none","alg":"ES256","typ":"assent-proof+jwt","kid":"dev_1"}"#, b"{}", &sk);
    assert!(matches!(decode_err(&token, JwsType::Proof), Error::Json(m) if m.contains("duplicate")));
}

#[test]
fn wrong_or_missing_typ_is_refused() {
    let sk = key(1);
    let payload = json!({});
    for typ in ["JWT", "assent-proof+JWT", "application/assent-proof+jwt", "dpop+jwt"] {
        let token = forge(&json!({"alg":"ES256","typ":typ,"kid":"dev_1"}), &payload, &sk);
        assert_eq!(
            decode_err(&token, JwsType::Proof),
            Error::WrongType { expected: JwsType::Proof, found: typ.into() }
        );
    }
    let missing = forge(&json!({"alg":"ES256","kid":"dev_1"}), &payload, &sk);
    assert_eq!(decode_err(&missing, JwsType::Proof), Error::MissingType);
    let null = forge(&json!({"alg":"ES256","typ":null,"kid":"dev_1"}), &payload, &sk);
    assert_eq!(decode_err(&null, JwsType::Proof), Error::MissingType);
}

#[test]
fn crit_is_refused() {
    let sk = key(1);
    for crit in [json!(["exp"]), json!([]), json!(null)] {
        let token = forge(&json!({"alg":"ES256","typ":"assent-proof+jwt","kid":"dev_1","crit":crit}), &json!({}), &sk);
        assert_eq!(decode_err(&token, JwsType::Proof), Error::CritNotAllowed);
    }
}

#[test]
fn key_reference_rules() {
    let sk = key(1);
    let jwk = serde_json::to_value(EcPublicJwk::from_verifying_key(sk.verifying_key())).unwrap();
    let p = json!({});
    let cases = [
        (json!({"typ":"assent-proof+jwt"}), JwsType::Proof, Error::MissingKid),
        (json!({"typ":"assent-proof+jwt","kid":""}), JwsType::Proof, Error::MissingKid),
        (json!({"typ":"assent-challenge+jwt","jwk":jwk}), JwsType::Challenge, Error::MissingKid),
        (json!({"typ":"assent-response+jwt","kid":"dev_1","jwk":jwk}), JwsType::Response, Error::UnexpectedJwk),
        (json!({"typ":"assent-enroll+jwt"}), JwsType::Enroll, Error::MissingJwk),
        (json!({"typ":"assent-enroll+jwt","kid":"dev_1"}), JwsType::Enroll, Error::MissingJwk),
        (json!({"typ":"assent-enroll+jwt","kid":"dev_1","jwk":jwk}), JwsType::Enroll, Error::UnexpectedKid),
    ];
    for (mut header, expected, err) in cases {
        header["alg"] = json!("ES256");
        let token = forge(&header, &p, &sk);
        assert_eq!(decode_err(&token, expected), err, "{header}");
    }
}

#[test]
fn enroll_header_jwk_is_validated() {
    let sk = key(1);
    let good = EcPublicJwk::from_verifying_key(sk.verifying_key());
    let mut y = b64::decode(good.y()).unwrap();
    y[31] = y[31].wrapping_add(1);
    let off_curve = json!({"kty":"EC","crv":"P-256","x":good.x(),"y":b64::encode(&y)});
    let token = forge(&json!({"alg":"ES256","typ":"assent-enroll+jwt","jwk":off_curve}), &json!({}), &sk);
    assert_eq!(decode_err(&token, JwsType::Enroll), Error::OffCurve);

    let wrong_crv = json!({"kty":"EC","crv":"secp256k1","x":good.x(),"y":good.y()});
    let token = forge(&json!({"alg":"ES256","typ":"assent-enroll+jwt","jwk":wrong_crv}), &json!({}), &sk);
    assert_eq!(decode_err(&token, JwsType::Enroll), Error::UnsupportedCurve("secp256k1".into()));
}

#[test]
fn segment_count_and_empty_segments() {
    let token = proof_token(&key(1));
    let parts = segments(&token);
    let two = format!("{}.{}", parts[0], parts[1]);
    assert_eq!(decode_err(&two, JwsType::Proof), Error::Malformed(Malformed::SegmentCount(2)));
    let four = format!("{token}.{}", parts[2]);
    assert_eq!(decode_err(&four, JwsType::Proof), Error::Malformed(Malformed::SegmentCount(4)));
    // JWE compact serialization has five segments.
    assert_eq!(decode_err(&format!("{token}.a.b"), JwsType::Proof), Error::Malformed(Malformed::SegmentCount(5)));
    assert_eq!(decode_err("", JwsType::Proof), Error::Malformed(Malformed::SegmentCount(1)));
    let detached = format!("{}..{}", parts[0], parts[2]);
    assert_eq!(decode_err(&detached, JwsType::Proof), Error::Malformed(Malformed::EmptySegment));
    let no_header = format!(".{}.{}", parts[1], parts[2]);
    assert_eq!(decode_err(&no_header, JwsType::Proof), Error::Malformed(Malformed::EmptySegment));
    assert_eq!(verify_compact_es256(&two, key(1).verifying_key()), Err(Error::Malformed(Malformed::SegmentCount(2))));
}

#[test]
fn oversized_token_is_refused_before_parsing() {
    let junk = "!".repeat(MAX_JWS_LEN + 1);
    assert_eq!(decode_err(&junk, JwsType::Proof), Error::TooLarge { size: MAX_JWS_LEN + 1, limit: MAX_JWS_LEN });
    let sk = key(1);
    let big = json!({"title": "x".repeat(MAX_JWS_LEN)});
    let token = sign(JwsType::Challenge, KeyRef::Kid("k"), &big, &sk).unwrap();
    assert!(matches!(
        decode_err(&token, JwsType::Challenge),
        Error::TooLarge { size, limit: MAX_JWS_LEN } if size == token.len()
    ));
    assert!(matches!(verify_compact_es256(&token, sk.verifying_key()), Err(Error::TooLarge { .. })));
    // Just under the limit is fine.
    let fits = json!({"t": "x".repeat(MAX_JWS_LEN / 2)});
    let token = sign(JwsType::Challenge, KeyRef::Kid("k"), &fits, &sk).unwrap();
    assert!(decode_and_verify(&token, JwsType::Challenge, sk.verifying_key()).is_ok());
}

#[test]
fn padding_and_wrong_alphabet_are_refused() {
    let token = proof_token(&key(1));
    let parts = segments(&token);
    // 64 bytes encode to 86 characters; the padded form ends in "==".
    let padded_sig = format!("{}.{}.{}==", parts[0], parts[1], parts[2]);
    assert_eq!(decode_err(&padded_sig, JwsType::Proof), Error::BadEncoding);
    let padded_header = format!("{}=.{}.{}", parts[0], parts[1], parts[2]);
    assert_eq!(decode_err(&padded_header, JwsType::Proof), Error::BadEncoding);
    let std_alphabet = format!("{}.{}.{}", parts[0], parts[1], parts[2].replace('-', "+").replace('_', "/"));
    if std_alphabet != token {
        assert_eq!(decode_err(&std_alphabet, JwsType::Proof), Error::BadEncoding);
    }
    let payload_with_plus = format!("{}.{}+.{}", parts[0], parts[1], parts[2]);
    assert_eq!(decode_err(&payload_with_plus, JwsType::Proof), Error::BadEncoding);
    let whitespace = format!("{}.{}.{} ", parts[0], parts[1], parts[2]);
    assert_eq!(decode_err(&whitespace, JwsType::Proof), Error::BadEncoding);
}

#[test]
fn signature_must_be_exactly_64_bytes() {
    let sk = key(1);
    let token = proof_token(&sk);
    let parts = segments(&token);
    let sig = b64::decode(&parts[2]).unwrap();
    for len in [63usize, 65, 0x48, 1, 128] {
        let mut s = sig.clone();
        s.resize(len, 0x01);
        let t = format!("{}.{}.{}", parts[0], parts[1], b64::encode(&s));
        assert_eq!(decode_err(&t, JwsType::Proof), Error::BadSignatureLength(len), "{len}");
    }
    // A DER signature where raw r||s belongs is refused by length, not misread.
    let der = raw_to_der(<[u8; 64]>::try_from(sig.as_slice()).unwrap()).unwrap();
    if der.len() != 64 {
        let t = format!("{}.{}.{}", parts[0], parts[1], b64::encode(&der));
        assert_eq!(decode_err(&t, JwsType::Proof), Error::BadSignatureLength(der.len()));
    }
}

#[test]
fn invalid_scalars_fail_without_panicking() {
    let sk = key(1);
    let token = proof_token(&sk);
    let parts = segments(&token);
    for raw in [[0u8; 64], [0xff; 64]] {
        let t = format!("{}.{}.{}", parts[0], parts[1], b64::encode(raw));
        let unverified = decode(&t, JwsType::Proof).unwrap();
        assert_eq!(unverified.verify(sk.verifying_key()), Err(Error::BadSignature));
    }
}

#[test]
fn high_s_signatures_are_accepted() {
    let sk = key(5);
    let input = signing_input(JwsType::Proof, KeyRef::Kid("dev_1"), &proof_claims()).unwrap();
    let sig: Signature = sk.sign(input.as_bytes());
    let (r, s) = sig.split_scalars();
    let flipped = Signature::from_scalars(r, -*s).unwrap();
    assert_ne!(flipped, sig);
    for sig in [sig, flipped] {
        let token = assemble(&input, sig.to_bytes().into());
        assert!(decode_and_verify(&token, JwsType::Proof, sk.verifying_key()).is_ok());
    }
}

#[test]
fn header_and_payload_must_be_objects() {
    let sk = key(1);
    let proof_header = json!({"alg":"ES256","typ":"assent-proof+jwt","kid":"dev_1"});
    for header in [&b"[\"ES256\",\"assent-proof+jwt\",\"dev_1\",null]"[..], b"null", b"\"ES256\""] {
        let token = forge_raw(header, b"{}", &sk);
        assert_eq!(decode_err(&token, JwsType::Proof), Error::Malformed(Malformed::HeaderNotObject));
    }
    let not_json = forge_raw(b"{alg:ES256}", b"{}", &sk);
    assert!(matches!(decode_err(&not_json, JwsType::Proof), Error::Json(_)));
    for payload in [&b"[1,2]"[..], b"\"text\"", b"42", b"null"] {
        let token = forge_raw(proof_header.to_string().as_bytes(), payload, &sk);
        assert_eq!(decode_err(&token, JwsType::Proof), Error::Malformed(Malformed::PayloadNotObject));
    }
    let not_json = forge_raw(proof_header.to_string().as_bytes(), b"hello", &sk);
    assert!(matches!(decode_err(&not_json, JwsType::Proof), Error::Json(_)));
}

#[test]
fn claims_of_the_wrong_shape_are_a_json_error() {
    let sk = key(1);
    let token = proof_token(&sk);
    let verified = decode_and_verify(&token, JwsType::Proof, sk.verifying_key()).unwrap();
    assert!(matches!(verified.claims::<ChallengeClaims>(), Err(Error::Json(_))));
}

#[test]
fn sign_refuses_inconsistent_requests() {
    let sk = key(1);
    let jwk = EcPublicJwk::from_verifying_key(sk.verifying_key());
    let other = EcPublicJwk::from_verifying_key(key(2).verifying_key());
    let p = json!({});
    assert_eq!(sign(JwsType::Enroll, KeyRef::Kid("k"), &p, &sk), Err(Error::MissingJwk));
    assert_eq!(sign(JwsType::Proof, KeyRef::Jwk(&jwk), &p, &sk), Err(Error::MissingKid));
    assert_eq!(sign(JwsType::Response, KeyRef::Kid(""), &p, &sk), Err(Error::MissingKid));
    assert!(matches!(sign(JwsType::Enroll, KeyRef::Jwk(&other), &p, &sk), Err(Error::InvalidKey(_))));
    for not_object in [json!([1]), json!("s"), json!(null)] {
        assert_eq!(
            sign(JwsType::Proof, KeyRef::Kid("k"), &not_object, &sk),
            Err(Error::Malformed(Malformed::PayloadNotObject))
        );
    }
}

#[test]
fn external_der_signer_flow() {
    // What the SDK does with a platform key store that returns DER.
    let sk = key(9);
    let jwk = EcPublicJwk::from_verifying_key(sk.verifying_key());
    let input = signing_input(JwsType::Enroll, KeyRef::Jwk(&jwk), &json!({"token":"t"})).unwrap();
    let der_sig: Signature = sk.sign(input.as_bytes());
    let der = der_sig.to_der().as_bytes().to_vec();
    let token = assemble(&input, der_to_raw(&der).unwrap());
    let verified = decode(&token, JwsType::Enroll).unwrap().verify_with_embedded_jwk().unwrap();
    assert_eq!(verified.payload(), br#"{"token":"t"}"#);
}

#[test]
fn der_conversions() {
    let sk = key(7);
    for msg in [&b"a"[..], b"hello", b"another message", b""] {
        let sig: Signature = sk.sign(msg);
        let raw: [u8; 64] = sig.to_bytes().into();
        let der_from_p256 = sig.to_der().as_bytes().to_vec();
        assert_eq!(der_to_raw(&der_from_p256).unwrap(), raw);
        let der = raw_to_der(raw).unwrap();
        assert_eq!(der, der_from_p256);
        assert_eq!(der[0], 0x30, "DER SEQUENCE");
        assert_eq!(usize::from(der[1]), der.len() - 2);
        assert_eq!(der_to_raw(&der).unwrap(), raw);
    }
    // r and s with the top bit set need a 0x00 pad in DER, small ones are shortened.
    let mut raw = [0u8; 64];
    raw[0] = 0x80;
    raw[31] = 1;
    raw[63] = 0x05;
    let der = raw_to_der(raw).unwrap();
    let mut expected = vec![0x30, 0x26, 0x02, 0x21, 0x00, 0x80];
    expected.extend_from_slice(&[0u8; 30]);
    expected.extend_from_slice(&[0x01, 0x02, 0x01, 0x05]);
    assert_eq!(der, expected);
    assert_eq!(der_to_raw(&der).unwrap(), raw);

    assert_eq!(raw_to_der([0u8; 64]), Err(Error::BadDerSignature));
    assert_eq!(raw_to_der([0xff; 64]), Err(Error::BadDerSignature));
    assert_eq!(der_to_raw(b""), Err(Error::BadDerSignature));
    assert_eq!(der_to_raw(&[0x30, 0x00]), Err(Error::BadDerSignature));
    assert_eq!(der_to_raw(&raw), Err(Error::BadDerSignature));
    let mut trailing = expected.clone();
    trailing.push(0);
    assert_eq!(der_to_raw(&trailing), Err(Error::BadDerSignature));
}

#[test]
fn generated_keys_differ_and_sign() {
    let a = generate_signing_key().unwrap();
    let b = generate_signing_key().unwrap();
    assert_ne!(a.to_bytes(), b.to_bytes());
    let token = sign(JwsType::Proof, KeyRef::Kid("k"), &json!({}), &a).unwrap();
    assert!(decode_and_verify(&token, JwsType::Proof, a.verifying_key()).is_ok());
}
