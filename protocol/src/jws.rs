//! Strict compact JWS with ES256 (RFC 7515, RFC 7518 §3.4): signing, decoding under Assent's
//! header rules, verification, and DER <-> raw `r || s` signature conversion.
//!
//! A token is `BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(r || s)`; the signature is
//! ECDSA P-256 over SHA-256 of the ASCII signing input (the first two segments and their dot).
//!
//! [`decode`] applies every header rule before any signature work, and only hands out the
//! payload once [`UnverifiedJws::verify`] succeeded, so claims cannot be read unverified.

use std::fmt;

use p256::ecdsa::signature::Signer as _;
#[cfg(not(feature = "ring"))]
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore as _};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::b64;
use crate::error::{Error, Malformed, Result};
use crate::jwk::{EcPublicJwk, JwkFields};

/// The only `alg` Assent signs with or accepts.
pub const ALG_ES256: &str = "ES256";

/// Largest compact JWS accepted, in bytes; longer input is refused before it is even split.
pub const MAX_JWS_LEN: usize = 16 * 1024;

/// Length of a raw ES256 signature: 32-byte `r` then 32-byte `s`, big-endian.
pub const SIGNATURE_LEN: usize = 64;

/// The four kinds of signed message, told apart by the header's `typ`, so a token made for one
/// purpose can never be accepted for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsType {
    /// `assent-enroll+jwt`: a new device proves possession of its key; header carries `jwk`.
    Enroll,
    /// `assent-proof+jwt`: a device authenticates one HTTP request; header `kid` = device id.
    Proof,
    /// `assent-challenge+jwt`: the server's signed approval request; header `kid` = server kid.
    Challenge,
    /// `assent-response+jwt`: the device's signed decision; header `kid` = device id.
    Response,
}

impl JwsType {
    /// All four kinds.
    pub const ALL: [JwsType; 4] = [JwsType::Enroll, JwsType::Proof, JwsType::Challenge, JwsType::Response];

    /// The exact `typ` header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            JwsType::Enroll => "assent-enroll+jwt",
            JwsType::Proof => "assent-proof+jwt",
            JwsType::Challenge => "assent-challenge+jwt",
            JwsType::Response => "assent-response+jwt",
        }
    }

    /// The kind whose `typ` is exactly `typ` (case-sensitive, no `application/` prefix).
    pub fn from_typ(typ: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == typ)
    }

    /// Whether this kind names its key by an embedded `jwk` (only enrollment) rather than `kid`.
    pub const fn embeds_jwk(self) -> bool {
        matches!(self, JwsType::Enroll)
    }
}

impl fmt::Display for JwsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a token being signed names its key: by id, or (enrollment only) by embedding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef<'a> {
    /// Header `kid`: a device id, or the server key's thumbprint.
    Kid(&'a str),
    /// Header `jwk`: the signer's own public key (enrollment's proof of possession).
    Jwk(&'a EcPublicJwk),
}

/// How a decoded token names its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderKey {
    /// Header `kid` (non-empty).
    Kid(String),
    /// Header `jwk`, already validated as a P-256 point.
    Jwk(EcPublicJwk),
}

/// The protected header of a token that passed every header rule; `alg` is always `ES256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwsHeader {
    typ: JwsType,
    key: HeaderKey,
}

impl JwsHeader {
    /// The message kind (`typ`).
    pub fn typ(&self) -> JwsType {
        self.typ
    }

    /// The key reference, `kid` or `jwk` as the kind requires.
    pub fn key(&self) -> &HeaderKey {
        &self.key
    }

    /// The `kid`, for every kind but enrollment.
    pub fn kid(&self) -> Option<&str> {
        match &self.key {
            HeaderKey::Kid(kid) => Some(kid),
            HeaderKey::Jwk(_) => None,
        }
    }

    /// The embedded `jwk`, for enrollment.
    pub fn jwk(&self) -> Option<&EcPublicJwk> {
        match &self.key {
            HeaderKey::Jwk(jwk) => Some(jwk),
            HeaderKey::Kid(_) => None,
        }
    }
}

/// A token whose structure and header passed [`decode`], signature not yet checked.
///
/// The payload is deliberately not readable here: look the key up with [`Self::header`],
/// then [`Self::verify`].
#[derive(Debug, Clone)]
pub struct UnverifiedJws {
    token: String,
    /// Byte length of `header "." payload`, the signing input.
    signing_input_len: usize,
    header: JwsHeader,
    payload: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

impl UnverifiedJws {
    /// The header (typ and key reference) the signature must be checked against.
    pub fn header(&self) -> &JwsHeader {
        &self.header
    }

    /// The exact compact token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Checks the ES256 signature with `key`.
    pub fn verify(self, key: &VerifyingKey) -> Result<VerifiedJws> {
        let input = self.token.get(..self.signing_input_len).ok_or(Error::Malformed(Malformed::EmptySegment))?;
        verify_signature(input, &self.signature, key)?;
        Ok(VerifiedJws { token: self.token, header: self.header, payload: self.payload })
    }

    /// Checks the signature with the key embedded in the header (enrollment proof of
    /// possession). [`Error::MissingJwk`] when the header names its key by `kid`.
    pub fn verify_with_embedded_jwk(self) -> Result<VerifiedJws> {
        let key = *self.header.jwk().ok_or(Error::MissingJwk)?.verifying_key();
        self.verify(&key)
    }
}

/// A token whose header rules and signature both checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJws {
    token: String,
    header: JwsHeader,
    payload: Vec<u8>,
}

impl VerifiedJws {
    /// The validated header.
    pub fn header(&self) -> &JwsHeader {
        &self.header
    }

    /// The exact compact token (store it as evidence; hash it for `chash`).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The payload bytes exactly as signed (a JSON object).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Deserialises the payload into a claims type such as
    /// [`crate::messages::ChallengeClaims`].
    pub fn claims<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.payload)?)
    }

    /// Base64url SHA-256 of the token: what a response's `chash` must equal for this challenge.
    pub fn sha256(&self) -> String {
        b64::sha256_b64(&self.token)
    }
}

#[derive(Serialize)]
struct HeaderOut<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwk: Option<&'a EcPublicJwk>,
}

/// The header members Assent reads; others are ignored (RFC 7515 §4), except `crit`.
/// A typed struct (rather than a map) makes serde refuse duplicated members.
#[derive(Deserialize)]
struct HeaderIn {
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    jwk: Option<JwkFields>,
}

/// Builds `BASE64URL(header) "." BASE64URL(payload)`, the bytes an ES256 signature covers.
///
/// For signers outside this process (a platform key store): sign the returned string's bytes
/// with ECDSA P-256/SHA-256, convert a DER result with [`der_to_raw`], then [`assemble`].
/// `key_ref` must suit `typ` ([`Error::MissingJwk`] / [`Error::MissingKid`] otherwise) and the
/// payload must serialise to a JSON object.
pub fn signing_input<P: Serialize + ?Sized>(typ: JwsType, key_ref: KeyRef<'_>, payload: &P) -> Result<String> {
    let (kid, jwk) = match (typ.embeds_jwk(), key_ref) {
        (true, KeyRef::Jwk(jwk)) => (None, Some(jwk)),
        (true, KeyRef::Kid(_)) => return Err(Error::MissingJwk),
        (false, KeyRef::Kid(kid)) if !kid.is_empty() => (Some(kid), None),
        (false, _) => return Err(Error::MissingKid),
    };
    let header = serde_json::to_vec(&HeaderOut { alg: ALG_ES256, typ: typ.as_str(), kid, jwk })?;
    let payload = serde_json::to_vec(payload)?;
    if payload.first() != Some(&b'{') {
        return Err(Malformed::PayloadNotObject.into());
    }
    Ok(format!("{}.{}", b64::encode(header), b64::encode(payload)))
}

/// Appends a raw `r || s` signature to a signing input, giving the compact token.
pub fn assemble(signing_input: &str, raw_sig: [u8; SIGNATURE_LEN]) -> String {
    format!("{signing_input}.{}", b64::encode(raw_sig))
}

/// Signs `payload` as a compact ES256 JWS of kind `typ`.
///
/// For enrollment, the embedded `jwk` must be `signer`'s own public key
/// ([`Error::InvalidKey`] otherwise), since it is what the server will verify with.
pub fn sign<P: Serialize + ?Sized>(
    typ: JwsType,
    key_ref: KeyRef<'_>,
    payload: &P,
    signer: &SigningKey,
) -> Result<String> {
    if let KeyRef::Jwk(jwk) = key_ref
        && jwk.verifying_key() != signer.verifying_key()
    {
        return Err(Error::InvalidKey("embedded jwk is not the signing key's public key".into()));
    }
    let input = signing_input(typ, key_ref, payload)?;
    let signature: Signature = signer.sign(input.as_bytes());
    Ok(assemble(&input, raw_signature(&signature)?))
}

/// Decodes `token` as a JWS of kind `expected` and applies every header rule:
///
/// - at most [`MAX_JWS_LEN`] bytes, checked first ([`Error::TooLarge`]);
/// - exactly three non-empty segments of strict base64url ([`Error::Malformed`],
///   [`Error::BadEncoding`]); header and payload JSON objects;
/// - `alg` exactly `ES256` ([`Error::MissingAlg`], [`Error::UnsupportedAlg`]);
/// - no `crit` ([`Error::CritNotAllowed`]);
/// - `typ` equal to `expected` ([`Error::MissingType`], [`Error::WrongType`]);
/// - enrollment: a valid P-256 `jwk` and no `kid`; other kinds: a non-empty `kid` and no `jwk`;
/// - a signature of exactly 64 bytes ([`Error::BadSignatureLength`]).
pub fn decode(token: &str, expected: JwsType) -> Result<UnverifiedJws> {
    let parts = split(token)?;
    let header_in = parse_header(parts.header)?;
    let typ = match header_in.typ.as_deref() {
        None => return Err(Error::MissingType),
        Some(t) if t == expected.as_str() => expected,
        Some(t) => {
            return Err(Error::WrongType { expected, found: t.to_owned() });
        }
    };
    let key = if typ.embeds_jwk() {
        let jwk = header_in.jwk.ok_or(Error::MissingJwk)?;
        if header_in.kid.is_some() {
            return Err(Error::UnexpectedKid);
        }
        HeaderKey::Jwk(EcPublicJwk::try_from(jwk)?)
    } else {
        let kid = header_in.kid.filter(|k| !k.is_empty()).ok_or(Error::MissingKid)?;
        if header_in.jwk.is_some() {
            return Err(Error::UnexpectedJwk);
        }
        HeaderKey::Kid(kid)
    };
    let payload = b64::decode(parts.payload)?;
    let payload_json: serde_json::Value = serde_json::from_slice(&payload)?;
    if !payload_json.is_object() {
        return Err(Malformed::PayloadNotObject.into());
    }
    let signature = decode_signature(parts.signature)?;
    Ok(UnverifiedJws {
        token: token.to_owned(),
        signing_input_len: parts.signing_input.len(),
        header: JwsHeader { typ, key },
        payload,
        signature,
    })
}

/// [`decode`] then [`UnverifiedJws::verify`], for callers that know the key in advance (the
/// phone with its pinned server key).
pub fn decode_and_verify(token: &str, expected: JwsType, key: &VerifyingKey) -> Result<VerifiedJws> {
    decode(token, expected)?.verify(key)
}

/// Low-level check of any compact ES256 JWS: structure, size, `alg` = `ES256`, no `crit`, and
/// the signature under `key`, without Assent's `typ`/`kid`/`jwk` rules. Returns the payload
/// bytes. Exists for interoperability tests such as RFC 7515 appendix A.3; protocol code uses
/// [`decode`].
pub fn verify_compact_es256(token: &str, key: &VerifyingKey) -> Result<Vec<u8>> {
    let parts = split(token)?;
    parse_header(parts.header)?;
    let payload = b64::decode(parts.payload)?;
    let signature = decode_signature(parts.signature)?;
    verify_signature(parts.signing_input, &signature, key)?;
    Ok(payload)
}

/// Converts a DER (ASN.1 `SEQUENCE { r INTEGER, s INTEGER }`) ECDSA signature, as Android
/// Keystore and Apple's Security framework return, to JWS's raw `r || s`.
pub fn der_to_raw(der: &[u8]) -> Result<[u8; SIGNATURE_LEN]> {
    let signature = Signature::from_der(der).map_err(|_| Error::BadDerSignature)?;
    raw_signature(&signature)
}

/// Converts a raw `r || s` signature to DER. Fails if `r` or `s` is zero or not below the
/// group order.
pub fn raw_to_der(raw: [u8; SIGNATURE_LEN]) -> Result<Vec<u8>> {
    let signature = Signature::from_slice(&raw).map_err(|_| Error::BadDerSignature)?;
    Ok(signature.to_der().as_bytes().to_vec())
}

/// Generates a fresh P-256 signing key from the operating system's random number generator,
/// reporting a generator failure as [`Error::Random`] instead of panicking.
pub fn generate_signing_key() -> Result<SigningKey> {
    // A random 32-byte string is a valid scalar except with probability ~2^-32; retry then.
    for _ in 0..16 {
        let mut bytes = [0u8; 32];
        OsRng.try_fill_bytes(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
        if let Ok(key) = SigningKey::from_slice(&bytes) {
            return Ok(key);
        }
    }
    Err(Error::Random("could not draw a valid P-256 scalar".into()))
}

struct Parts<'a> {
    signing_input: &'a str,
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>> {
    if token.len() > MAX_JWS_LEN {
        return Err(Error::TooLarge { size: token.len(), limit: MAX_JWS_LEN });
    }
    let segments: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = segments.as_slice() else {
        return Err(Malformed::SegmentCount(segments.len()).into());
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(Malformed::EmptySegment.into());
    }
    let signing_input_len = header.len() + 1 + payload.len();
    Ok(Parts { signing_input: token.get(..signing_input_len).unwrap_or_default(), header, payload, signature })
}

/// Decodes the header and applies the algorithm-level rules shared by every JWS: a JSON
/// object, no duplicated members, `alg` = `ES256`, no `crit`.
fn parse_header(segment: &str) -> Result<HeaderIn> {
    let bytes = b64::decode(segment)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)?;
    let object = value.as_object().ok_or(Malformed::HeaderNotObject)?;
    let header: HeaderIn = serde_json::from_slice(&bytes)?;
    match header.alg.as_deref() {
        Some(ALG_ES256) => {}
        Some(other) => return Err(Error::UnsupportedAlg(other.to_owned())),
        None => return Err(Error::MissingAlg),
    }
    if object.contains_key("crit") {
        return Err(Error::CritNotAllowed);
    }
    Ok(header)
}

fn decode_signature(segment: &str) -> Result<[u8; SIGNATURE_LEN]> {
    let bytes = b64::decode(segment)?;
    <[u8; SIGNATURE_LEN]>::try_from(bytes.as_slice()).map_err(|_| Error::BadSignatureLength(bytes.len()))
}

fn verify_signature(input: &str, raw: &[u8; SIGNATURE_LEN], key: &VerifyingKey) -> Result<()> {
    verify_raw(input.as_bytes(), raw, key)
}

/// Checks a raw `r || s` ES256 signature over `message` (the JWS signing input, or any bytes).
#[cfg(not(feature = "ring"))]
pub fn verify_raw(message: &[u8], raw: &[u8; SIGNATURE_LEN], key: &VerifyingKey) -> Result<()> {
    // from_slice refuses r or s of zero or not below the group order: no panic, just invalid.
    let signature = Signature::from_slice(raw).map_err(|_| Error::BadSignature)?;
    key.verify(message, &signature).map_err(|_| Error::BadSignature)
}

/// The same check through `ring`, about three times faster than `p256` (see
/// docs/performance.md). Keys stay `p256` types; only the arithmetic moves. `ring` refuses r or
/// s of zero or not below the group order just the same.
#[cfg(feature = "ring")]
pub fn verify_raw(message: &[u8], raw: &[u8; SIGNATURE_LEN], key: &VerifyingKey) -> Result<()> {
    let point = key.to_encoded_point(false);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point.as_bytes())
        .verify(message, raw)
        .map_err(|_| Error::BadSignature)
}

fn raw_signature(signature: &Signature) -> Result<[u8; SIGNATURE_LEN]> {
    let bytes = signature.to_bytes();
    <[u8; SIGNATURE_LEN]>::try_from(&bytes[..]).map_err(|_| Error::BadDerSignature)
}

#[cfg(test)]
mod tests;
