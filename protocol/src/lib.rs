//! Assent's wire protocol: every type and signature format the server and the phone exchange.
//!
//! Both `assent-server` and the mobile SDK depend on this crate and nothing else is shared, so
//! the two sides cannot drift apart.
//!
//! # Formats
//!
//! - **Signatures** are compact JWS (RFC 7515) with `alg` `ES256` only: ECDSA P-256 over
//!   SHA-256 of `BASE64URL(header) "." BASE64URL(payload)`, the signature being raw `r || s`
//!   (64 bytes, RFC 7518 §3.4). Platform key stores produce DER; [`jws::der_to_raw`] converts.
//! - **Four message kinds**, told apart by the header `typ` ([`JwsType`]):
//!   `assent-enroll+jwt` (device proves possession of its new key, which it embeds as `jwk`),
//!   `assent-proof+jwt` (authenticates one device HTTP request, `kid` = device id),
//!   `assent-challenge+jwt` (server-signed approval request, `kid` = server key thumbprint) and
//!   `assent-response+jwt` (device-signed decision, `kid` = device id). Their payloads are
//!   [`EnrollClaims`], [`ProofClaims`], [`ChallengeClaims`] and [`ResponseClaims`].
//! - **Decoding is strict** ([`jws::decode`]): tokens over 16 KiB, anything but three
//!   non-empty base64url segments, padding, an `alg` other than `ES256` (`none`, `HS256`,
//!   `ES384`, ...), a `crit` member, a wrong or missing `typ`, the wrong key reference for the
//!   kind, a non-object header or payload, and signatures not exactly 64 bytes are all refused
//!   with a typed [`Error`] before any signature work. Claims are only readable after
//!   [`jws::UnverifiedJws::verify`].
//! - **Keys** are P-256 public JWKs ([`EcPublicJwk`], always validated to be on the curve);
//!   the server key's `kid` is its RFC 7638 thumbprint and is published in a [`Jwks`].
//! - **Binary in JSON** is unpadded base64url ([`b64`]); hashes such as `chash` (over the exact
//!   challenge JWS) and `bh` (over a request body) are [`sha256_b64`].
//! - **Enrollment** starts from an [`EnrollUri`]
//!   (`assent://enroll?server=..&token=..&kid=..&user=..`), shown as a QR code.
//!
//! # Example
//!
//! The server signs a challenge; the phone verifies it with the pinned key and answers.
//!
//! ```
//! use assent_protocol::jws::{self, JwsType, KeyRef};
//! use assent_protocol::{ChallengeClaims, Context, Decision, Detail, EcPublicJwk, ResponseClaims};
//!
//! # fn main() -> assent_protocol::Result<()> {
//! let server_key = jws::generate_signing_key()?;
//! let server_kid = EcPublicJwk::from_verifying_key(server_key.verifying_key()).thumbprint();
//!
//! let challenge = ChallengeClaims {
//!     jti: "chl_123".into(),
//!     sub: "alice".into(),
//!     aud: vec!["dev_1".into()],
//!     iat: 1_700_000_000,
//!     exp: 1_700_000_120,
//!     title: "Pay EUR 250.00 to ACME".into(),
//!     details: vec![Detail { label: "IBAN".into(), value: "DE89 3704 0044 0532 0130 00".into() }],
//!     context: Context::default(),
//!     number_choices: None,
//! };
//! let token = jws::sign(JwsType::Challenge, KeyRef::Kid(&server_kid), &challenge, &server_key)?;
//!
//! // Phone: decode under the header rules, check the key, verify, read the claims.
//! let unverified = jws::decode(&token, JwsType::Challenge)?;
//! assert_eq!(unverified.header().kid(), Some(server_kid.as_str()));
//! let verified = unverified.verify(server_key.verifying_key())?;
//! let shown: ChallengeClaims = verified.claims()?;
//! assert_eq!(shown, challenge);
//!
//! // The response binds the decision to the exact challenge token through `chash`.
//! let device_key = jws::generate_signing_key()?;
//! let response = ResponseClaims {
//!     jti: shown.jti,
//!     decision: Decision::Approve,
//!     chash: verified.sha256(),
//!     number: None,
//!     uv: true,
//!     iat: 1_700_000_010,
//! };
//! let answer = jws::sign(JwsType::Response, KeyRef::Kid("dev_1"), &response, &device_key)?;
//!
//! // A token of one kind is never accepted as another.
//! assert!(jws::decode(&answer, JwsType::Challenge).is_err());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod b64;
pub mod enroll_uri;
pub mod error;
pub mod jwk;
pub mod jws;
pub mod messages;

/// The `p256` crate this protocol is built on, re-exported so callers use the same version
/// for [`p256::ecdsa::SigningKey`] and [`p256::ecdsa::VerifyingKey`].
pub use p256;

pub use b64::sha256_b64;
pub use enroll_uri::EnrollUri;
pub use error::{Error, Malformed, Result};
pub use jwk::{EcPublicJwk, Jwks};
pub use jws::{JwsType, KeyRef, UnverifiedJws, VerifiedJws};
pub use messages::{
    ChallengeClaims, ChallengeResponseRequest, Context, Decision, Detail, DeviceChallenge, DeviceChallengeList,
    EnrollClaims, EnrollResponse, MAX_CLOCK_SKEW_SECS, PROOF_HEADER_SCHEME, Platform, ProofClaims, PushPayload,
    PushProvider, PushRegistration, PushTokenUpdate, ResponseClaims,
};
