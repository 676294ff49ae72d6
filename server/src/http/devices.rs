//! Device routes: enrollment, and everything a phone does with a signed proof.

use assent_protocol::messages::{
    ChallengeResponseRequest, DeviceChallenge, DeviceChallengeList, EnrollResponse, PushTokenUpdate,
};
use axum::Extension;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::extract::{Json, Path};
use super::problem::Problem;
use crate::audit::Actor;
use crate::challenges::{self, ResponseOutcome};
use crate::devices::{self, AuthenticatedDevice, VerifiedProof};
use crate::error::{Error, Result};

/// Verifies `Authorization: Assent-Proof` over the method, path, query and body, records
/// the proof, then hands the device to the handler.
pub(super) async fn require_device_proof(State(state): State<AppState>, request: Request, next: Next) -> Response {
    with_verified_proof(state, request, next, async |state, proof| proof.record(&state).await).await
}

/// Verifies `Authorization: Assent-Proof` like [`require_device_proof`], and hands the proof
/// to the handler unrecorded: the handler records it in the commit of its effect.
pub(super) async fn require_device_signature(State(state): State<AppState>, request: Request, next: Next) -> Response {
    with_verified_proof(state, request, next, async |_, proof| Ok(proof)).await
}

/// Reads the body, verifies the request's proof, and runs the handler with what `accept`
/// makes of the proof as an extension.
async fn with_verified_proof<T: Clone + Send + Sync + 'static>(
    state: AppState,
    request: Request,
    next: Next,
    accept: impl AsyncFnOnce(AppState, VerifiedProof) -> Result<T>,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let body = match to_bytes(body, state.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
                .into_response();
        }
    };
    let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let accepted =
        match devices::verify_proof(&state, authorization, parts.method.as_str(), path_and_query, &body).await {
            Ok(proof) => accept(state, proof).await,
            Err(e) => Err(e),
        };
    match accepted {
        Ok(value) => {
            parts.extensions.insert(value);
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(e) => e.into_response(),
    }
}

/// Enrolls a phone: the body is the compact JWS (`assent-enroll+jwt`) signed by the new
/// device key, carrying that key in its header.
#[utoipa::path(post, path = "/v1/device/enroll", tag = "device",
    request_body(content = String, content_type = "application/jose", description = "Compact JWS, typ assent-enroll+jwt"),
    responses(
        (status = 201, description = "Enrolled; pin the server key whose thumbprint the QR code carried", body = Object),
        (status = 400, description = "invalid_enrollment, stale_enrollment", body = Problem),
        (status = 409, description = "key_in_use", body = Problem),
        (status = 410, description = "enrollment_invalid: unknown, used or expired token", body = Problem),
        (status = 422, description = "invalid_device_name, invalid_push", body = Problem),
    ))]
pub(super) async fn enroll(State(state): State<AppState>, body: Bytes) -> Result<(StatusCode, Json<EnrollResponse>)> {
    let text =
        std::str::from_utf8(&body).map_err(|_| Error::bad_request("invalid_enrollment", "the body is not text"))?;
    Ok((StatusCode::CREATED, Json(devices::enroll(&state, text).await?)))
}

/// Pending challenges for this device.
#[utoipa::path(get, path = "/v1/device/challenges", tag = "device", security(("device_proof" = [])),
    responses((status = 200, description = "`{challenges: [{id, jws}]}`", body = Object),
              (status = 401, description = "missing_proof, invalid_proof, proof_mismatch, stale_proof, proof_replayed, unknown_device, device_revoked", body = Problem)))]
pub(super) async fn list_challenges(
    State(state): State<AppState>,
    Extension(device): Extension<AuthenticatedDevice>,
) -> Result<Json<DeviceChallengeList>> {
    Ok(Json(DeviceChallengeList { challenges: challenges::pending_for_device(&state, &device).await? }))
}

/// One challenge for this device, while it can be answered.
#[utoipa::path(get, path = "/v1/device/challenges/{challenge_id}", tag = "device", security(("device_proof" = [])),
    params(("challenge_id" = String, Path)),
    responses((status = 200, description = "`{id, jws}`", body = Object),
              (status = 404, description = "not_found (or not addressed to this device)", body = Problem),
              (status = 409, description = "already_decided", body = Problem),
              (status = 410, description = "challenge_expired", body = Problem)))]
pub(super) async fn get_challenge(
    State(state): State<AppState>,
    Extension(proof): Extension<VerifiedProof>,
    Path(id): Path<String>,
) -> Result<Json<DeviceChallenge>> {
    Ok(Json(challenges::one_for_device(&state, &proof, &id).await?))
}

/// The phone's signed answer.
#[utoipa::path(post, path = "/v1/device/challenges/{challenge_id}/response", tag = "device", security(("device_proof" = [])),
    params(("challenge_id" = String, Path)),
    request_body(content = Object, description = "`{response: <compact JWS, typ assent-response+jwt>}`"),
    responses((status = 200, body = ResponseOutcome),
              (status = 400, description = "invalid_response, stale_response", body = Problem),
              (status = 404, description = "not_found", body = Problem),
              (status = 409, description = "already_decided", body = Problem),
              (status = 410, description = "challenge_expired", body = Problem),
              (status = 422, description = "chash_mismatch", body = Problem)))]
pub(super) async fn respond(
    State(state): State<AppState>,
    Extension(proof): Extension<VerifiedProof>,
    Path(id): Path<String>,
    body: Result<Json<ChallengeResponseRequest>, Problem>,
) -> Result<Json<ResponseOutcome>, Response> {
    let body = match body {
        Ok(Json(body)) => body,
        Err(problem) => {
            // Refused before any decision: the request's proof is spent all the same.
            proof.record(&state).await.map_err(IntoResponse::into_response)?;
            return Err(problem.into_response());
        }
    };
    challenges::respond(&state, &proof, &id, &body.response).await.map(Json).map_err(IntoResponse::into_response)
}

/// Replaces this device's push registration.
#[utoipa::path(put, path = "/v1/device/push-token", tag = "device", security(("device_proof" = [])),
    request_body(content = Object, description = "`{provider: apns|fcm|none, token?}`"),
    responses((status = 204, description = "Updated"), (status = 422, description = "invalid_push", body = Problem)))]
pub(super) async fn put_push_token(
    State(state): State<AppState>,
    Extension(device): Extension<AuthenticatedDevice>,
    Json(update): Json<PushTokenUpdate>,
) -> Result<StatusCode> {
    devices::set_push_token(&state, &device, &update).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unenrolls this device (it revokes itself).
#[utoipa::path(delete, path = "/v1/device", tag = "device", security(("device_proof" = [])),
    responses((status = 204, description = "Revoked")))]
pub(super) async fn unenroll(
    State(state): State<AppState>,
    Extension(device): Extension<AuthenticatedDevice>,
) -> Result<StatusCode> {
    devices::revoke(&state, &device.row.user_id, &device.row.id, &Actor::Device(device.row.id.clone())).await?;
    Ok(StatusCode::NO_CONTENT)
}
