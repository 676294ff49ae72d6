//! The server's error type. Each variant knows nothing of HTTP; `http::problem` maps them
//! to RFC 9457 responses in one place.

/// Everything that can go wrong while serving a request or running a task.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing named does not exist (or is not visible to the caller).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Missing, unknown or revoked credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A device request whose proof of possession failed; `code` says which check.
    #[error("{detail}")]
    DeviceUnauthorized {
        /// Stable machine code, e.g. `proof_replayed`.
        code: &'static str,
        /// Human explanation.
        detail: String,
    },
    /// A request that cannot be parsed (a malformed JWS, a bad header).
    #[error("{detail}")]
    BadRequest {
        /// Stable machine code.
        code: &'static str,
        /// Human explanation.
        detail: String,
    },
    /// The thing exists but is no longer usable (an expired challenge).
    #[error("{detail}")]
    Gone {
        /// Stable machine code.
        code: &'static str,
        /// Human explanation.
        detail: String,
    },
    /// Input that is well-formed JSON but not acceptable; `code` is the stable problem code.
    #[error("{detail}")]
    Invalid {
        /// Stable machine code, e.g. `invalid_phone`.
        code: &'static str,
        /// Human explanation.
        detail: String,
    },
    /// The request conflicts with current state; `code` is the stable problem code.
    #[error("{detail}")]
    Conflict {
        /// Stable machine code.
        code: &'static str,
        /// Human explanation.
        detail: String,
    },
    /// Too many requests; try again after the given number of seconds.
    #[error("{detail}")]
    RateLimited {
        /// Seconds until a retry may succeed.
        retry_after: u64,
        /// Human explanation.
        detail: String,
    },
    /// A wrong one-time code; the challenge takes `attempts_remaining` more tries.
    #[error("the code is not correct")]
    InvalidCode {
        /// Tries left before the challenge fails (0: it just failed).
        attempts_remaining: u32,
    },
    /// A limit that waiting does not lift (e.g. resends of one challenge).
    #[error("{detail}")]
    LimitReached {
        /// Stable machine code, e.g. `resend_limit`.
        code: &'static str,
        /// Human explanation.
        detail: String,
    },
    /// No provider could deliver a message (SMS or email).
    #[error("{detail}")]
    DeliveryFailed {
        /// Human explanation (never the providers' raw answers, which are logged).
        detail: String,
        /// The challenge the message was for (a new challenge that no provider reached is
        /// `failed`; after a failed resend it stays `pending`).
        challenge_id: Option<String>,
    },
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] crate::store::db::DbError),
    /// A bug or an environment failure; logged, never shown to callers.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid { code, detail: detail.into() }
    }

    /// Shorthand for [`Error::Conflict`].
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Error::Conflict { code, detail: detail.into() }
    }

    /// Shorthand for [`Error::DeviceUnauthorized`].
    pub fn device_unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Error::DeviceUnauthorized { code, detail: detail.into() }
    }

    /// Shorthand for [`Error::BadRequest`].
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Error::BadRequest { code, detail: detail.into() }
    }

    /// Shorthand for [`Error::Gone`].
    pub fn gone(code: &'static str, detail: impl Into<String>) -> Self {
        Error::Gone { code, detail: detail.into() }
    }

    /// Shorthand for [`Error::Internal`].
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Error::Internal(detail.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("json: {e}"))
    }
}

/// The server's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
