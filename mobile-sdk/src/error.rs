//! Errors in two tiers: the rich internal [`Error`] (for logs, tests and Rust callers who want
//! the detail) and the public [`AssentError`] that bindings raise as exceptions, carrying only
//! what an app acts on. [`From<Error> for AssentError`] is the one place that maps one to the
//! other.

use assent_protocol as protocol;

/// What an app can act on. Bindings expose it as an exception (`AssentException` in Kotlin,
/// `AssentError` in Swift and Python) with one subclass or case per variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum AssentError {
    /// The server could not be reached, or the connection failed (DNS, TCP, TLS, certificate,
    /// timeout). Retry later; tell the user to check the connection.
    #[error("network error: {detail}")]
    Network {
        /// What failed, for logs.
        detail: String,
    },
    /// The server refused the device's proof (`401`, e.g. code `invalid_proof`). A wrong phone
    /// clock (more than 60 s off) is the usual cause.
    #[error("unauthorized ({code:?})")]
    Unauthorized {
        /// The problem `code` the server sent, if any.
        code: Option<String>,
    },
    /// The device was revoked on the server (`401 device_revoked`), or the server does not know
    /// it at all (`401 unknown_device`: its database was reset, or it is another server). Call
    /// `reset()` and offer to enroll again.
    #[error("this device was revoked")]
    DeviceRevoked,
    /// The challenge does not exist (any more) for this device (`404`).
    #[error("not found")]
    NotFound,
    /// The challenge expired, locally checked or answered `410 challenge_expired`; at
    /// enrollment, the token was already used or has expired (`410 enrollment_invalid`): show a
    /// new QR code.
    #[error("the request has expired")]
    Expired,
    /// The challenge was already answered (`409 already_decided`), perhaps from another device.
    #[error("the request was already answered")]
    AlreadyDecided,
    /// A server message failed verification: bad signature, malformed token, or an answer that
    /// does not match what was asked. Never show its content; report it.
    #[error("server message failed verification: {detail}")]
    Tampered {
        /// Why it was refused, for logs.
        detail: String,
    },
    /// A challenge is not addressed to this device or its user.
    #[error("the request is not addressed to this device")]
    NotAddressedToDevice,
    /// The server's signing key is not the one pinned from the enrollment QR code (at
    /// enrollment), or a challenge names another key. Re-enroll with a fresh QR code.
    #[error("the server key does not match the pinned key")]
    ServerKeyMismatch,
    /// The device key is gone or permanently invalidated (for example a new fingerprint was
    /// added with a biometry-bound key). Call `reset()` and enroll again.
    #[error("the device key is no longer usable")]
    KeyInvalidated,
    /// The user dismissed the biometric / PIN prompt. Nothing was sent.
    #[error("user verification was cancelled")]
    UserCancelled,
    /// The device key needs a fresh biometric / PIN verification (Android: the key's
    /// authentication window is over). Verify the user, then call again. Nothing was sent.
    #[error("user verification is required")]
    UserVerificationRequired,
    /// The key store failed in another way.
    #[error("key store error: {detail}")]
    KeyStore {
        /// What failed, for logs.
        detail: String,
    },
    /// The state store failed, or holds state this SDK cannot read.
    #[error("state storage error: {detail}")]
    Storage {
        /// What failed, for logs.
        detail: String,
    },
    /// The operation needs an enrolled device and there is none.
    #[error("this device is not enrolled")]
    NotEnrolled,
    /// `enroll` was called while a device is already enrolled; `unenroll()` or `reset()` first.
    #[error("this device is already enrolled")]
    AlreadyEnrolled,
    /// An argument was refused before anything was sent (bad URI, plain-http server, bad id,
    /// a number that is not one of the choices, ...).
    #[error("invalid input: {detail}")]
    InvalidInput {
        /// What was wrong, suitable for a developer, not an end user.
        detail: String,
    },
    /// Any other server answer: an unexpected status, or a body the SDK could not understand.
    #[error("server error {status} ({code:?}): {detail}")]
    Server {
        /// HTTP status (0 when the status was fine but the body was not).
        status: u16,
        /// The problem `code`, if any (e.g. `rate_limited`).
        code: Option<String>,
        /// The problem `detail` or a description, for logs.
        detail: String,
    },
    /// A bug or an environment failure that fits nowhere else (e.g. no random numbers).
    #[error("internal error: {detail}")]
    Internal {
        /// What failed, for logs.
        detail: String,
    },
}

/// Error a [`crate::KeyStore`] implementation returns. Foreign code throws it; any other
/// exception thrown by a foreign implementation arrives as [`KeyStoreError::Failed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum KeyStoreError {
    /// No key under this alias, or the platform invalidated it (Android
    /// `KeyPermanentlyInvalidatedException`, iOS biometry set changed).
    #[error("key missing or invalidated")]
    KeyInvalidated,
    /// The user dismissed the biometric / PIN prompt.
    #[error("user cancelled")]
    UserCancelled,
    /// The key can only sign after a fresh user verification (Android
    /// `UserNotAuthenticatedException`): the app should prompt, then retry.
    #[error("user verification required")]
    UserVerificationRequired,
    /// Anything else.
    #[error("{detail}")]
    Failed {
        /// What failed, for logs.
        detail: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for KeyStoreError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        KeyStoreError::Failed { detail: e.reason }
    }
}

/// Error a [`crate::StateStore`] implementation returns. Any other exception thrown by a foreign
/// implementation arrives as [`StorageError::Failed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum StorageError {
    /// Reading, writing or deleting the state failed.
    #[error("{detail}")]
    Failed {
        /// What failed, for logs.
        detail: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for StorageError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        StorageError::Failed { detail: e.reason }
    }
}

/// A problem+json body (RFC 9457) as the server sends it; only what the SDK reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Problem {
    /// Stable machine code (`invalid_proof`, `already_decided`, ...).
    #[serde(default)]
    pub code: Option<String>,
    /// Short summary.
    #[serde(default)]
    pub title: Option<String>,
    /// Human-readable explanation.
    #[serde(default)]
    pub detail: Option<String>,
}

/// Everything that can go wrong inside the SDK, with the detail needed to debug it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL is unusable or not allowed (plain `http` to a non-loopback host).
    #[error("server url {url:?} refused: {reason}")]
    ServerUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The `assent://enroll` URI did not parse.
    #[error("enrollment uri: {0}")]
    EnrollUri(#[source] protocol::Error),
    /// An id is not of the expected kind or contains characters unsafe in a URL path.
    #[error("invalid {kind} id {value:?}")]
    InvalidId {
        /// Which kind of id (`challenge`, `device`).
        kind: &'static str,
        /// The refused value.
        value: String,
    },
    /// Another argument was refused.
    #[error("{0}")]
    InvalidInput(String),
    /// No device is enrolled.
    #[error("not enrolled")]
    NotEnrolled,
    /// A device is already enrolled.
    #[error("already enrolled as {device_id}")]
    AlreadyEnrolled {
        /// The enrolled device.
        device_id: String,
    },
    /// The enrollment answer's JWKS has no key with the thumbprint from the QR code.
    #[error("server keys do not contain the pinned key {kid}")]
    PinnedKeyMissing {
        /// The thumbprint from the enrollment URI.
        kid: String,
    },
    /// A challenge names a key other than the pinned one.
    #[error("challenge signed with key {found:?}, pinned key is {pinned:?}")]
    UnknownChallengeKey {
        /// The challenge's `kid`.
        found: String,
        /// The pinned thumbprint.
        pinned: String,
    },
    /// A challenge JWS failed decoding or verification under the pinned key.
    #[error("challenge refused: {0}")]
    ChallengeInvalid(#[source] protocol::Error),
    /// The server answered with another challenge than the one asked for.
    #[error("asked for challenge {requested:?}, got {found:?}")]
    ChallengeIdMismatch {
        /// The id requested.
        requested: String,
        /// The id (item `id` or claims `jti`) received.
        found: String,
    },
    /// The challenge's `aud` does not contain this device.
    #[error("challenge not addressed to device {device_id}")]
    NotAddressed {
        /// This device.
        device_id: String,
    },
    /// The challenge's `sub` is not this device's user.
    #[error("challenge is for user {found:?}, this device belongs to {expected:?}")]
    WrongUser {
        /// The device's user.
        expected: String,
        /// The challenge's `sub`.
        found: String,
    },
    /// The challenge expired.
    #[error("challenge expired at {exp}, now {now}")]
    Expired {
        /// Its `exp`.
        exp: i64,
        /// The local clock.
        now: i64,
    },
    /// A key store call failed.
    #[error("key store {op}: {source}")]
    KeyStore {
        /// The operation (`create_key`, `sign`, ...).
        op: &'static str,
        /// The key store's error.
        source: KeyStoreError,
    },
    /// The key store's public key is not a P-256 key in a supported encoding.
    #[error("key store public key unusable: {0}")]
    BadPublicKey(String),
    /// The key store's signature did not verify under the device public key, as DER or raw.
    #[error("key store signature does not verify under the device key")]
    BadKeyStoreSignature,
    /// A state store call failed.
    #[error("state store: {0}")]
    Storage(#[source] StorageError),
    /// The stored state could not be read.
    #[error("stored state unreadable: {0}")]
    CorruptState(String),
    /// Building or signing a message failed in the protocol layer.
    #[error("protocol: {0}")]
    Protocol(#[from] protocol::Error),
    /// The HTTP exchange failed below HTTP (connect, TLS, timeout, reading the body).
    #[error("http: {0}")]
    Http(#[source] reqwest::Error),
    /// The server answered with a non-success status.
    #[error("server answered {status}: {problem:?}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Its problem+json body, when it had one.
        problem: Option<Problem>,
    },
    /// The server answered with success but a body the SDK does not understand.
    #[error("unexpected server response ({status}): {reason}")]
    UnexpectedResponse {
        /// The HTTP status.
        status: u16,
        /// What was wrong.
        reason: String,
    },
    /// A push payload without a usable challenge id.
    #[error("push payload: {0}")]
    PushPayload(String),
    /// A blocking task (key store call) could not be run or panicked.
    #[error("background task failed: {0}")]
    Task(String),
}

/// Result type of this crate, defaulting to the internal [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The `code` of the server's problem body, if this is a status error that had one.
    pub fn problem_code(&self) -> Option<&str> {
        match self {
            Error::Status { problem: Some(problem), .. } => problem.code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } | Error::UnexpectedResponse { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<Error> for AssentError {
    fn from(e: Error) -> Self {
        let detail = e.to_string();
        match e {
            Error::ServerUrl { .. }
            | Error::EnrollUri(_)
            | Error::InvalidId { .. }
            | Error::InvalidInput(_)
            | Error::PushPayload(_) => AssentError::InvalidInput { detail },
            Error::NotEnrolled => AssentError::NotEnrolled,
            Error::AlreadyEnrolled { .. } => AssentError::AlreadyEnrolled,
            Error::PinnedKeyMissing { .. } | Error::UnknownChallengeKey { .. } => AssentError::ServerKeyMismatch,
            Error::ChallengeInvalid(_) | Error::ChallengeIdMismatch { .. } => AssentError::Tampered { detail },
            Error::NotAddressed { .. } | Error::WrongUser { .. } => AssentError::NotAddressedToDevice,
            Error::Expired { .. } => AssentError::Expired,
            Error::KeyStore { source, .. } => match source {
                KeyStoreError::KeyInvalidated => AssentError::KeyInvalidated,
                KeyStoreError::UserCancelled => AssentError::UserCancelled,
                KeyStoreError::UserVerificationRequired => AssentError::UserVerificationRequired,
                KeyStoreError::Failed { .. } => AssentError::KeyStore { detail },
            },
            Error::BadPublicKey(_) | Error::BadKeyStoreSignature => AssentError::KeyStore { detail },
            Error::Storage(_) | Error::CorruptState(_) => AssentError::Storage { detail },
            Error::Protocol(_) | Error::Task(_) => AssentError::Internal { detail },
            Error::Http(e) => AssentError::Network { detail: with_sources(&e) },
            Error::UnexpectedResponse { status, reason } => AssentError::Server { status, code: None, detail: reason },
            Error::Status { status, problem } => from_status(status, problem.unwrap_or_default()),
        }
    }
}

/// `e` and its sources, `: `-separated (reqwest's own message hides the cause: DNS, refused
/// connection, certificate).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The public error for a non-success HTTP status, from its status and problem `code`.
fn from_status(status: u16, problem: Problem) -> AssentError {
    match (status, problem.code.as_deref()) {
        (401, Some("device_revoked" | "unknown_device")) => AssentError::DeviceRevoked,
        (401, _) => AssentError::Unauthorized { code: problem.code },
        (404, _) => AssentError::NotFound,
        (409, Some("already_decided")) => AssentError::AlreadyDecided,
        (410, _) => AssentError::Expired,
        _ => AssentError::Server {
            status,
            detail: problem.detail.or(problem.title).unwrap_or_else(|| format!("HTTP {status}")),
            code: problem.code,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: Option<&str>) -> AssentError {
        Error::Status {
            status,
            problem: Some(Problem { code: code.map(str::to_owned), title: Some("Title".into()), detail: None }),
        }
        .into()
    }

    #[test]
    fn statuses_map_to_what_apps_act_on() {
        assert_eq!(status(401, Some("device_revoked")), AssentError::DeviceRevoked);
        assert_eq!(status(401, Some("unknown_device")), AssentError::DeviceRevoked);
        assert_eq!(
            status(401, Some("invalid_proof")),
            AssentError::Unauthorized { code: Some("invalid_proof".into()) }
        );
        assert_eq!(status(404, Some("not_found")), AssentError::NotFound);
        assert_eq!(status(409, Some("already_decided")), AssentError::AlreadyDecided);
        assert_eq!(status(410, Some("challenge_expired")), AssentError::Expired);
        assert_eq!(status(410, Some("enrollment_invalid")), AssentError::Expired);
        assert_eq!(
            status(429, Some("rate_limited")),
            AssentError::Server { status: 429, code: Some("rate_limited".into()), detail: "Title".into() }
        );
        let bare: AssentError = Error::Status { status: 502, problem: None }.into();
        assert_eq!(bare, AssentError::Server { status: 502, code: None, detail: "HTTP 502".into() });
    }

    #[test]
    fn key_store_errors_keep_cancel_and_invalidation() {
        let cancelled: AssentError = Error::KeyStore { op: "sign", source: KeyStoreError::UserCancelled }.into();
        assert_eq!(cancelled, AssentError::UserCancelled);
        let gone: AssentError = Error::KeyStore { op: "sign", source: KeyStoreError::KeyInvalidated }.into();
        assert_eq!(gone, AssentError::KeyInvalidated);
        let other: AssentError =
            Error::KeyStore { op: "sign", source: KeyStoreError::Failed { detail: "boom".into() } }.into();
        assert!(matches!(other, AssentError::KeyStore { detail } if detail.contains("boom")));
    }
}
