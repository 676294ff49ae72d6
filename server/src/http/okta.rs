//! `POST /v1/hooks/okta/telephony`: Okta's telephony inline hook.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::problem::Problem;
use crate::error::Error;

/// Okta's telephony inline hook: sends the one-time code Okta generated through the SMS
/// provider chain and answers with Okta's `com.okta.telephony.action` command (status
/// `SUCCESSFUL` or `FAILED`) or Okta's `error` object. Authenticated with the header secret
/// configured for the hook in Okta.
#[utoipa::path(post, path = "/v1/hooks/okta/telephony", tag = "okta",
    request_body(content = Object, description = "Okta's telephony inline hook request"),
    responses(
        (status = 200, description = "Okta's command or error object", body = Object),
        (status = 401, description = "unauthorized: missing or wrong hook secret; nothing is sent", body = Problem),
        (status = 404, description = "not_found: the hook is not configured", body = Problem),
    ))]
pub(super) async fn telephony(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let config = &state.config.okta;
    let presented = headers.get(config.auth_header.as_str()).map(|v| v.as_bytes());
    match crate::okta::authorized(config, presented) {
        Ok(true) => axum::Json(crate::okta::handle(&state, &body).await).into_response(),
        Ok(false) => Error::Unauthorized("wrong or missing hook secret").into_response(),
        Err(e) => e.into_response(),
    }
}
