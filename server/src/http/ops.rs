//! Operations endpoints: liveness, readiness, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::problem::Problem;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "ok")))]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready"), (status = 503, description = "database_unavailable", body = Problem)))]
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", "the database does not answer")
                .into_response()
        }
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text")))]
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        Err(_) => crate::error::Error::internal("encoding metrics").into_response(),
    }
}

/// This API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI document")))]
pub(super) async fn openapi_json(State(state): State<AppState>) -> Response {
    axum::Json(state.openapi.clone()).into_response()
}

/// The server's public signing keys (JWKS). Phones pin the one whose thumbprint their
/// enrollment QR code carried.
#[utoipa::path(get, path = "/v1/server-keys", tag = "device", responses((status = 200, description = "JWKS", body = Object)))]
pub(super) async fn server_keys(State(state): State<AppState>) -> axum::Json<assent_protocol::Jwks> {
    axum::Json(state.server_key.jwks().clone())
}
