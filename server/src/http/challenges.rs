//! `/v1/challenges`: create, read (with long-poll), cancel.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::{Json, Path, Query};
use super::problem::Problem;
use super::{AppState, RpCaller};
use crate::challenges::{self, ChallengeCreated, ChallengeView, NewChallenge};
use crate::error::{Error, Result};

/// Creates a challenge and sends it to the user's devices.
///
/// With `channel: auto`, push is used when the user has an active device. An
/// `Idempotency-Key` header makes retries safe: the same key with the same body returns the
/// same challenge.
#[utoipa::path(post, path = "/v1/challenges", tag = "challenges", security(("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    request_body = NewChallenge,
    responses(
        (status = 201, body = ChallengeCreated),
        (status = 404, description = "not_found: no such user", body = Problem),
        (status = 409, description = "device_exists, push_locked, idempotency_conflict", body = Problem),
        (status = 422, description = "no_factor, no_device, invalid_title, invalid_details, invalid_context, invalid_ttl, invalid_user_id", body = Problem),
        (status = 429, description = "rate_limited: too many push challenges for this user (Retry-After)", body = Problem),
    ))]
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<RpCaller>,
    headers: HeaderMap,
    Json(body): Json<NewChallenge>,
) -> Result<(StatusCode, Json<ChallengeCreated>)> {
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Error::bad_request("invalid_idempotency_key", "Idempotency-Key must be visible ASCII"))?,
        ),
        None => None,
    };
    let created = challenges::create(&state, &caller.key_id, key, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Long-poll control.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct WaitQuery {
    /// Hold the request up to this many seconds (at most 30) while the challenge is pending.
    wait: Option<u64>,
}

/// Reads a challenge's status, evidence and deliveries.
#[utoipa::path(get, path = "/v1/challenges/{challenge_id}", tag = "challenges", security(("api_key" = [])),
    params(("challenge_id" = String, Path), WaitQuery),
    responses((status = 200, body = ChallengeView), (status = 404, description = "not_found", body = Problem)))]
pub(super) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Json<ChallengeView>> {
    Ok(Json(challenges::get(&state, &id, q.wait).await?))
}

/// Cancels a pending challenge.
#[utoipa::path(post, path = "/v1/challenges/{challenge_id}/cancel", tag = "challenges", security(("api_key" = [])),
    params(("challenge_id" = String, Path)),
    responses((status = 200, body = ChallengeView),
              (status = 404, description = "not_found", body = Problem),
              (status = 409, description = "already_decided", body = Problem)))]
pub(super) async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<RpCaller>,
    Path(id): Path<String>,
) -> Result<Json<ChallengeView>> {
    Ok(Json(challenges::cancel(&state, &id, &caller.actor()).await?))
}
