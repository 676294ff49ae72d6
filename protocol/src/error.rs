//! The one error type of this crate: every way a wire message can be refused, as a typed variant.

use crate::jws::JwsType;

/// Everything that can go wrong while encoding, decoding, signing or verifying Assent messages.
///
/// Variants are deliberately fine-grained so callers (and tests) can tell exactly why a token
/// was refused; the server still answers all of them with the same opaque 401, so this detail
/// never reaches an attacker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The compact JWS is longer than [`crate::jws::MAX_JWS_LEN`]; nothing was decoded.
    #[error("token is {size} bytes, above the limit of {limit}")]
    TooLarge {
        /// Length of the refused input in bytes.
        size: usize,
        /// The limit it exceeded.
        limit: usize,
    },
    /// The token's structure is wrong (segment count, empty segment, non-object JSON, ...).
    #[error("malformed token: {0}")]
    Malformed(Malformed),
    /// A value is not valid unpadded base64url (padding, `+`/`/`, stray bits, bad length).
    #[error("invalid base64url encoding")]
    BadEncoding,
    /// The JWS signature segment did not decode to exactly 64 bytes (raw `r || s`).
    #[error("signature is {0} bytes, expected 64 (raw r||s)")]
    BadSignatureLength(usize),
    /// The header has no `alg` member.
    #[error("missing alg header")]
    MissingAlg,
    /// The header's `alg` is anything but `ES256` (this includes `none` and every HMAC alg).
    #[error("unsupported alg {0:?}, only ES256 is accepted")]
    UnsupportedAlg(String),
    /// The header has no `typ` member.
    #[error("missing typ header")]
    MissingType,
    /// The header's `typ` is not the message kind the caller expected.
    #[error("wrong typ: expected {expected:?}, found {found:?}")]
    WrongType {
        /// The kind the caller asked for.
        expected: JwsType,
        /// The `typ` string the token carried.
        found: String,
    },
    /// The header carries a `crit` member; no critical extension is supported.
    #[error("crit header is not allowed")]
    CritNotAllowed,
    /// A message kind identified by key id has no (or an empty) `kid`.
    #[error("missing kid header")]
    MissingKid,
    /// An enrollment JWS has no embedded `jwk`.
    #[error("missing jwk header")]
    MissingJwk,
    /// A message kind identified by key id also embeds a `jwk`.
    #[error("unexpected jwk header")]
    UnexpectedJwk,
    /// An enrollment JWS (identified by its embedded key) also carries a `kid`.
    #[error("unexpected kid header")]
    UnexpectedKid,
    /// The signature does not verify under the given key (or is not a valid ECDSA signature).
    #[error("signature verification failed")]
    BadSignature,
    /// A DER-encoded ECDSA signature could not be parsed or produced.
    #[error("invalid DER signature")]
    BadDerSignature,
    /// A JWK's `kty` is not `EC`.
    #[error("unsupported key type {0:?}, expected \"EC\"")]
    UnsupportedKeyType(String),
    /// A JWK's `crv` is not `P-256`.
    #[error("unsupported curve {0:?}, expected \"P-256\"")]
    UnsupportedCurve(String),
    /// A key is unusable for another reason (coordinate length, private member present, ...).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The JWK's coordinates are not a point on P-256.
    #[error("point is not on the P-256 curve")]
    OffCurve,
    /// JSON could not be parsed or produced, or did not match the expected type.
    #[error("json: {0}")]
    Json(String),
    /// An `assent://enroll` URI could not be parsed.
    #[error("invalid enrollment uri: {0}")]
    InvalidUri(String),
    /// A proof JWS does not match the request it was attached to.
    #[error("proof does not match the request: {0}")]
    ProofMismatch(&'static str),
    /// A string is not one of the spellings of a wire enum (platform, push provider, decision).
    #[error("unknown {kind} {value:?}")]
    UnknownValue {
        /// Which enum was being parsed.
        kind: &'static str,
        /// The refused text.
        value: String,
    },
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
}

/// The structural problem behind [`Error::Malformed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// A compact JWS must have exactly three `.`-separated segments; this is how many it had.
    #[error("expected 3 segments, found {0}")]
    SegmentCount(usize),
    /// One of the three segments is empty (this includes detached-payload JWS).
    #[error("empty segment")]
    EmptySegment,
    /// The protected header is valid JSON but not a JSON object.
    #[error("header is not a JSON object")]
    HeaderNotObject,
    /// The payload is valid JSON but not a JSON object.
    #[error("payload is not a JSON object")]
    PayloadNotObject,
}

impl From<Malformed> for Error {
    fn from(m: Malformed) -> Self {
        Error::Malformed(m)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(e.to_string())
    }
}

/// Result type of this crate, defaulting to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
