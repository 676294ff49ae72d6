//! The typed JWS payloads and HTTP bodies of the device protocol (DESIGN §4), with the small
//! rules both ends must apply identically (body hashes, `chash`, the proof header, clock skew).
//!
//! Times inside JWS payloads are NumericDate seconds (`i64`). Optional members are omitted
//! when `None`; required members are required on input.

use std::fmt;
use std::str::FromStr;

use rand_core::{OsRng, RngCore as _};
use serde::{Deserialize, Serialize};

use crate::b64;
use crate::error::{Error, Result};
use crate::jwk::Jwks;

/// Authorization scheme of device requests: `Authorization: Assent-Proof <proof JWS>`.
pub const PROOF_HEADER_SCHEME: &str = "Assent-Proof";

/// Largest accepted difference, in seconds, between a proof's or response's `iat` and the
/// verifier's clock, in either direction.
pub const MAX_CLOCK_SKEW_SECS: i64 = 60;

/// Whether `iat` is within [`MAX_CLOCK_SKEW_SECS`] of `now` (both NumericDate seconds).
pub fn within_clock_skew(iat: i64, now: i64) -> bool {
    iat.abs_diff(now) <= MAX_CLOCK_SKEW_SECS.unsigned_abs()
}

/// Random bytes in a fresh `jti`.
const JTI_BYTES: usize = 16;

/// A fresh random `jti` (128 bits from the OS generator, base64url).
pub fn new_jti() -> Result<String> {
    let mut bytes = [0u8; JTI_BYTES];
    OsRng.try_fill_bytes(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    Ok(b64::encode(bytes))
}

/// A proof's `bh` for a request body: base64url SHA-256 of the body, or `None` when the
/// request has no body (an empty body counts as none).
pub fn body_hash(body: &[u8]) -> Option<String> {
    (!body.is_empty()).then(|| b64::sha256_b64(body))
}

/// A response's `chash`: base64url SHA-256 of the exact challenge JWS string the phone verified.
pub fn challenge_hash(challenge_jws: &str) -> String {
    b64::sha256_b64(challenge_jws)
}

/// The `Authorization` header value carrying a proof JWS.
pub fn proof_authorization(proof_jws: &str) -> String {
    format!("{PROOF_HEADER_SCHEME} {proof_jws}")
}

/// The proof JWS from an `Authorization` header value, if it uses the `Assent-Proof` scheme
/// (matched case-insensitively, as HTTP auth schemes are) followed by a single token.
pub fn parse_proof_authorization(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim_start();
    (scheme.eq_ignore_ascii_case(PROOF_HEADER_SCHEME) && !token.is_empty() && !token.contains(char::is_whitespace))
        .then_some(token)
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// The wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            /// Parses the exact wire spelling.
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(Error::UnknownValue { kind: $kind, value: other.to_owned() }),
                }
            }
        }
    };
}

wire_enum!(
    /// The phone's operating system, as reported at enrollment.
    Platform, "platform" {
        /// `ios`
        Ios => "ios",
        /// `android`
        Android => "android",
        /// `other` (desktop, test harness, ...).
        Other => "other",
    }
);

wire_enum!(
    /// How the server reaches a device.
    PushProvider, "push provider" {
        /// `apns`: Apple Push Notification service.
        Apns => "apns",
        /// `fcm`: Firebase Cloud Messaging (HTTP v1).
        Fcm => "fcm",
        /// `none`: poll-only; the device fetches `GET /v1/device/challenges` itself.
        None => "none",
    }
);

wire_enum!(
    /// The user's answer to a challenge.
    Decision, "decision" {
        /// `approve`: the user confirms the sign-in or transaction.
        Approve => "approve",
        /// `deny`: the user declines.
        Deny => "deny",
        /// `fraud`: the user did not start this; push is locked for the user.
        Fraud => "fraud",
    }
);

/// Push registration inside [`EnrollClaims`]: `{provider, token?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRegistration {
    /// Push service to use.
    pub provider: PushProvider,
    /// The APNs device token or FCM registration token; absent for `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Payload of the enrollment JWS (`typ` `assent-enroll+jwt`, header `jwk` = the new device
/// key), sent as the body of `POST /v1/device/enroll`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollClaims {
    /// The enrollment token from the QR / [`crate::EnrollUri`].
    pub token: String,
    /// Device name shown to the user and the RP (e.g. "Alice's iPhone").
    pub name: String,
    /// The phone's platform.
    pub platform: Platform,
    /// How to reach the device.
    pub push: PushRegistration,
    /// Issue time, NumericDate seconds.
    pub iat: i64,
}

/// Payload of the per-request proof JWS (`typ` `assent-proof+jwt`, header `kid` = device id),
/// sent as `Authorization: Assent-Proof <JWS>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofClaims {
    /// HTTP method, upper case as sent (`GET`, `POST`, ...).
    pub htm: String,
    /// Request path with query, as sent (`/v1/device/challenges?x=1`); no scheme or host.
    pub htu: String,
    /// Issue time, NumericDate seconds; must be within [`MAX_CLOCK_SKEW_SECS`] of the server.
    pub iat: i64,
    /// A fresh random id; the server refuses one it has seen before.
    pub jti: String,
    /// [`body_hash`] of the request body; absent when there is no body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bh: Option<String>,
}

impl ProofClaims {
    /// Claims binding one request, with a fresh random `jti`.
    pub fn new(method: &str, path_and_query: &str, body: &[u8], iat: i64) -> Result<Self> {
        Ok(ProofClaims {
            htm: method.to_owned(),
            htu: path_and_query.to_owned(),
            iat,
            jti: new_jti()?,
            bh: body_hash(body),
        })
    }

    /// Checks that these claims bind exactly this request: method, path with query, and body
    /// hash (a body-less request must have no `bh`). Freshness (`iat`, `jti` reuse) is the
    /// verifier's job; see [`within_clock_skew`].
    pub fn check_request(&self, method: &str, path_and_query: &str, body: &[u8]) -> Result<()> {
        if self.htm != method {
            return Err(Error::ProofMismatch("htm"));
        }
        if self.htu != path_and_query {
            return Err(Error::ProofMismatch("htu"));
        }
        if self.bh != body_hash(body) {
            return Err(Error::ProofMismatch("bh"));
        }
        Ok(())
    }
}

/// One labelled line of transaction details ("Amount" / "EUR 250.00").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// What the line is.
    pub label: String,
    /// Its value.
    pub value: String,
}

/// Where the request came from, as the RP saw it; every member optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Client IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Approximate location ("Berlin, DE").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Client user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// Payload of the challenge JWS (`typ` `assent-challenge+jwt`, header `kid` = server kid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeClaims {
    /// The challenge id (`chl_...`).
    pub jti: String,
    /// The user id.
    pub sub: String,
    /// Ids of the devices allowed to answer.
    pub aud: Vec<String>,
    /// Issue time, NumericDate seconds.
    pub iat: i64,
    /// Expiry, NumericDate seconds.
    pub exp: i64,
    /// What the user is asked to confirm.
    pub title: String,
    /// Transaction details to show (may be empty).
    pub details: Vec<Detail>,
    /// Request context to show.
    pub context: Context,
    /// With number matching: three distinct two-digit numbers, one of them shown by the RP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_choices: Option<Vec<u8>>,
}

impl ChallengeClaims {
    /// Whether `device_id` is in `aud`.
    pub fn is_addressed_to(&self, device_id: &str) -> bool {
        self.aud.iter().any(|d| d == device_id)
    }

    /// Whether the challenge has expired at `now` (NumericDate seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.exp
    }
}

/// Payload of the response JWS (`typ` `assent-response+jwt`, header `kid` = device id), sent
/// in [`ChallengeResponseRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseClaims {
    /// The challenge id being answered.
    pub jti: String,
    /// The user's decision.
    pub decision: Decision,
    /// [`challenge_hash`] of the challenge JWS shown: links the approval to what was displayed.
    pub chash: String,
    /// The number the user picked, when the challenge had `number_choices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u8>,
    /// Whether the user was verified (biometrics or device PIN) before signing.
    pub uv: bool,
    /// Issue time, NumericDate seconds.
    pub iat: i64,
}

/// `201` body of `POST /v1/device/enroll`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The new device's id (`dev_...`): the `kid` of its later proofs and responses.
    pub device_id: String,
    /// The user the device now belongs to.
    pub user_id: String,
    /// The user's display name, to show in the app.
    pub user_display_name: String,
    /// The server's signing keys; one must have the thumbprint pinned from the QR.
    pub server_keys: Jwks,
}

/// One pending challenge for a device: item of `GET /v1/device/challenges`, body of
/// `GET /v1/device/challenges/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceChallenge {
    /// The challenge id.
    pub id: String,
    /// The server-signed challenge JWS; verify it against the pinned server key.
    pub jws: String,
}

/// Body of `GET /v1/device/challenges`: every challenge pending for the calling device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceChallengeList {
    /// Pending challenges, oldest first.
    pub challenges: Vec<DeviceChallenge>,
}

/// Body of `POST /v1/device/challenges/{id}/response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeResponseRequest {
    /// The device-signed response JWS.
    pub response: String,
}

/// Body of a device's push-token update (the phone's push token rotated or it switched
/// provider).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTokenUpdate {
    /// Push service to use from now on.
    pub provider: PushProvider,
    /// The new token; absent for `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl From<PushTokenUpdate> for PushRegistration {
    fn from(u: PushTokenUpdate) -> Self {
        PushRegistration { provider: u.provider, token: u.token }
    }
}

/// Custom data of a push notification (APNs payload / FCM `data`).
///
/// It carries the challenge id and nothing else, on purpose: push messages travel through
/// Apple and Google, so transaction details never go in them. The visible notification text is
/// a generic title; the phone fetches the signed challenge with `GET /v1/device/challenges/{id}`
/// and shows the details only after verifying it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPayload {
    /// The challenge to fetch.
    pub challenge_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enroll_claims_wire_form() {
        let claims = EnrollClaims {
            token: "tok".into(),
            name: "Pixel".into(),
            platform: Platform::Android,
            push: PushRegistration { provider: PushProvider::Fcm, token: Some("fcm-token".into()) },
            iat: 1_700_000_000,
        };
        let value = serde_json::to_value(&claims).unwrap();
        assert_eq!(
            value,
            json!({"token":"tok","name":"Pixel","platform":"android",
                   "push":{"provider":"fcm","token":"fcm-token"},"iat":1_700_000_000})
        );
        assert_eq!(serde_json::from_value::<EnrollClaims>(value).unwrap(), claims);

        let poll_only = json!({"token":"t","name":"n","platform":"other","push":{"provider":"none"},"iat":1});
        let parsed: EnrollClaims = serde_json::from_value(poll_only.clone()).unwrap();
        assert_eq!(parsed.push.provider, PushProvider::None);
        assert_eq!(parsed.push.token, None);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), poll_only);
    }

    #[test]
    fn required_fields_are_required_and_enums_strict() {
        let missing_iat = json!({"token":"t","name":"n","platform":"ios","push":{"provider":"apns"}});
        assert!(serde_json::from_value::<EnrollClaims>(missing_iat).is_err());
        let bad_platform = json!({"token":"t","name":"n","platform":"IOS","push":{"provider":"apns"},"iat":1});
        assert!(serde_json::from_value::<EnrollClaims>(bad_platform).is_err());
        let missing_uv = json!({"jti":"chl_1","decision":"approve","chash":"x","iat":1});
        assert!(serde_json::from_value::<ResponseClaims>(missing_uv).is_err());
        let bad_decision = json!({"jti":"chl_1","decision":"maybe","chash":"x","uv":true,"iat":1});
        assert!(serde_json::from_value::<ResponseClaims>(bad_decision).is_err());
    }

    #[test]
    fn wire_enums_parse_and_print() {
        for d in [Decision::Approve, Decision::Deny, Decision::Fraud] {
            assert_eq!(d.as_str().parse::<Decision>().unwrap(), d);
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{d}\""));
        }
        assert_eq!("apns".parse::<PushProvider>().unwrap(), PushProvider::Apns);
        assert_eq!(
            "APNS".parse::<PushProvider>(),
            Err(Error::UnknownValue { kind: "push provider", value: "APNS".into() })
        );
        assert_eq!("ios".parse::<Platform>().unwrap(), Platform::Ios);
    }

    #[test]
    fn challenge_claims_omit_absent_optionals() {
        let claims = ChallengeClaims {
            jti: "chl_1".into(),
            sub: "alice".into(),
            aud: vec!["dev_1".into()],
            iat: 10,
            exp: 130,
            title: "Sign in".into(),
            details: vec![],
            context: Context::default(),
            number_choices: None,
        };
        assert_eq!(
            serde_json::to_value(&claims).unwrap(),
            json!({"jti":"chl_1","sub":"alice","aud":["dev_1"],"iat":10,"exp":130,
                   "title":"Sign in","details":[],"context":{}})
        );
        let full = ChallengeClaims {
            details: vec![Detail { label: "Amount".into(), value: "EUR 250.00".into() }],
            context: Context { ip: Some("203.0.113.7".into()), location: None, user_agent: Some("Firefox".into()) },
            number_choices: Some(vec![17, 42, 93]),
            ..claims.clone()
        };
        let value = serde_json::to_value(&full).unwrap();
        assert_eq!(value["context"], json!({"ip":"203.0.113.7","user_agent":"Firefox"}));
        assert_eq!(value["number_choices"], json!([17, 42, 93]));
        assert_eq!(serde_json::from_value::<ChallengeClaims>(value).unwrap(), full);
        assert!(full.is_addressed_to("dev_1"));
        assert!(!full.is_addressed_to("dev_2"));
        assert!(!full.is_expired(129));
        assert!(full.is_expired(130));
    }

    #[test]
    fn response_claims_wire_form() {
        let claims = ResponseClaims {
            jti: "chl_1".into(),
            decision: Decision::Fraud,
            chash: challenge_hash("a.b.c"),
            number: None,
            uv: true,
            iat: 5,
        };
        let value = serde_json::to_value(&claims).unwrap();
        assert_eq!(value, json!({"jti":"chl_1","decision":"fraud","chash":b64::sha256_b64("a.b.c"),"uv":true,"iat":5}));
        let with_number = ResponseClaims { number: Some(42), ..claims };
        assert_eq!(serde_json::to_value(&with_number).unwrap()["number"], json!(42));
    }

    #[test]
    fn proof_claims_bind_the_request() {
        let body = br#"{"response":"x"}"#;
        let proof = ProofClaims::new("POST", "/v1/device/challenges/chl_1/response", body, 100).unwrap();
        assert_eq!(proof.bh, Some(b64::sha256_b64(body)));
        assert_eq!(proof.jti.len(), 22);
        assert_eq!(proof.check_request("POST", "/v1/device/challenges/chl_1/response", body), Ok(()));
        assert_eq!(
            proof.check_request("GET", "/v1/device/challenges/chl_1/response", body),
            Err(Error::ProofMismatch("htm"))
        );
        assert_eq!(
            proof.check_request("POST", "/v1/device/challenges/chl_2/response", body),
            Err(Error::ProofMismatch("htu"))
        );
        assert_eq!(
            proof.check_request("POST", "/v1/device/challenges/chl_1/response", b"{}"),
            Err(Error::ProofMismatch("bh"))
        );
        let get = ProofClaims::new("GET", "/v1/device/challenges", b"", 100).unwrap();
        assert_eq!(get.bh, None);
        assert_eq!(get.check_request("GET", "/v1/device/challenges", b""), Ok(()));
        assert_eq!(get.check_request("GET", "/v1/device/challenges", b"x"), Err(Error::ProofMismatch("bh")));
        assert!(!serde_json::to_string(&get).unwrap().contains("bh"));
        assert_ne!(get.jti, ProofClaims::new("GET", "/", b"", 1).unwrap().jti);
    }

    #[test]
    fn clock_skew_window() {
        assert!(within_clock_skew(1000, 1060));
        assert!(within_clock_skew(1060, 1000));
        assert!(!within_clock_skew(1000, 1061));
        assert!(!within_clock_skew(1061, 1000));
        assert!(!within_clock_skew(i64::MIN, i64::MAX));
    }

    #[test]
    fn proof_authorization_header() {
        let value = proof_authorization("a.b.c");
        assert_eq!(value, "Assent-Proof a.b.c");
        assert_eq!(parse_proof_authorization(&value), Some("a.b.c"));
        assert_eq!(parse_proof_authorization("assent-proof  a.b.c "), Some("a.b.c"));
        assert_eq!(parse_proof_authorization("Bearer a.b.c"), None);
        assert_eq!(parse_proof_authorization("Assent-Proof"), None);
        assert_eq!(parse_proof_authorization("Assent-Proof a b"), None);
    }

    #[test]
    fn http_bodies_wire_form() {
        let list =
            DeviceChallengeList { challenges: vec![DeviceChallenge { id: "chl_1".into(), jws: "a.b.c".into() }] };
        assert_eq!(serde_json::to_value(&list).unwrap(), json!({"challenges":[{"id":"chl_1","jws":"a.b.c"}]}));
        assert_eq!(
            serde_json::to_value(ChallengeResponseRequest { response: "a.b.c".into() }).unwrap(),
            json!({"response":"a.b.c"})
        );
        assert_eq!(
            serde_json::to_value(PushPayload { challenge_id: "chl_1".into() }).unwrap(),
            json!({"challenge_id":"chl_1"})
        );
        let update: PushTokenUpdate = serde_json::from_value(json!({"provider":"apns","token":"t"})).unwrap();
        assert_eq!(
            PushRegistration::from(update),
            PushRegistration { provider: PushProvider::Apns, token: Some("t".into()) }
        );
        let resp = EnrollResponse {
            device_id: "dev_1".into(),
            user_id: "alice".into(),
            user_display_name: "Alice".into(),
            server_keys: Jwks::default(),
        };
        assert_eq!(
            serde_json::to_value(&resp).unwrap(),
            json!({"device_id":"dev_1","user_id":"alice","user_display_name":"Alice","server_keys":{"keys":[]}})
        );
    }
}
