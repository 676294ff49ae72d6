//! RFC 9457 problem details: the one place that chooses HTTP statuses and problem codes.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

/// An `application/problem+json` body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:assent:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// Stable machine-readable code, e.g. `invalid_phone`.
    pub code: String,
    /// Extra members for some codes (e.g. `attempts_remaining`).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    retry_after: Option<u64>,
    #[serde(skip)]
    www_authenticate: Option<&'static str>,
}

impl Problem {
    /// A problem with this status, code and detail.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Problem {
            type_uri: format!("urn:assent:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            extensions: serde_json::Map::new(),
            retry_after: None,
            www_authenticate: None,
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a `Retry-After` header.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Adds a `WWW-Authenticate` challenge.
    pub fn www_authenticate(mut self, scheme: &'static str) -> Self {
        self.www_authenticate = Some(scheme);
        self
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after;
        let www_authenticate = self.www_authenticate;
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(scheme) = www_authenticate {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
        }
        response
    }
}

impl From<Error> for Problem {
    fn from(err: Error) -> Self {
        match err {
            Error::NotFound(what) => Problem::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found")),
            Error::Unauthorized(why) => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", why).www_authenticate("Bearer")
            }
            Error::DeviceUnauthorized { code, detail } => {
                Problem::new(StatusCode::UNAUTHORIZED, code, detail).www_authenticate("Assent-Proof")
            }
            Error::BadRequest { code, detail } => Problem::new(StatusCode::BAD_REQUEST, code, detail),
            Error::Gone { code, detail } => Problem::new(StatusCode::GONE, code, detail),
            Error::Invalid { code, detail } => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail),
            Error::Conflict { code, detail } => Problem::new(StatusCode::CONFLICT, code, detail),
            Error::RateLimited { retry_after, detail } => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
                    .with("retry_after", retry_after)
                    .retry_after(retry_after)
            }
            Error::InvalidCode { attempts_remaining } => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid_code", "the code is not correct")
                    .with("attempts_remaining", attempts_remaining)
            }
            Error::LimitReached { code, detail } => Problem::new(StatusCode::TOO_MANY_REQUESTS, code, detail),
            Error::DeliveryFailed { detail, challenge_id } => {
                let problem = Problem::new(StatusCode::BAD_GATEWAY, "delivery_failed", detail);
                match challenge_id {
                    Some(id) => problem.with("challenge_id", id),
                    None => problem,
                }
            }
            Error::Database(e) => internal(&format!("database: {e}")),
            Error::Internal(e) => internal(&e),
        }
    }
}

fn internal(detail: &str) -> Problem {
    // Logged with its cause; the caller sees nothing of it.
    tracing::error!(error = %detail, "internal error");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the server failed; the error was logged")
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ),
            _ => Problem::new(StatusCode::BAD_REQUEST, "malformed_json", rejection.body_text()),
        }
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "invalid_path", rejection.body_text())
    }
}
