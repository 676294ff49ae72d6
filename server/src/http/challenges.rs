//! `/v1/challenges`: create, read (with long-poll), cancel, and for SMS and email codes
//! verify and resend.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::{Json, Path, Query};
use super::problem::Problem;
use super::{AppState, RpCaller};
use crate::api_keys::ApiKeyClaim;
use crate::challenges::{self, ChallengeCreated, ChallengeView, NewChallenge};
use crate::error::{Error, Result};
use crate::fallback::{self, VerifyCode};

/// Creates a challenge and sends it to the user's devices, or a code by SMS or email.
///
/// With `channel: auto`, push is used when the user has an active device; otherwise a
/// six-digit code goes by SMS when a phone is on file, else by email (answer: `factor` and the
/// masked `destination`). An `Idempotency-Key` header makes retries safe: the same key with
/// the same body returns the same challenge.
#[utoipa::path(post, path = "/v1/challenges", tag = "challenges", security(("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    request_body = NewChallenge,
    responses(
        (status = 201, body = ChallengeCreated),
        (status = 404, description = "not_found: no such user", body = Problem),
        (status = 409, description = "device_exists, push_locked, idempotency_conflict", body = Problem),
        (status = 422, description = "no_factor, no_device, factor_not_configured, country_not_allowed, number_not_allowed, invalid_phone, invalid_title, invalid_details, invalid_context, invalid_ttl, invalid_user_id", body = Problem),
        (status = 429, description = "rate_limited: too many push challenges for this user, or too many codes to this number, country code or address (Retry-After)", body = Problem),
        (status = 502, description = "delivery_failed: no SMS or email provider accepted the code; the challenge (`challenge_id`) is failed", body = Problem),
    ))]
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<ApiKeyClaim>,
    headers: HeaderMap,
    body: Result<Json<NewChallenge>, Problem>,
) -> Result<(StatusCode, Json<ChallengeCreated>), Response> {
    let (body, key) = match (body, headers.get("idempotency-key").map(|v| v.to_str()).transpose()) {
        (Ok(Json(body)), Ok(key)) => (body, key),
        (Err(problem), _) => return Err(refused_after_key_check(&state, &caller, problem).await),
        (Ok(_), Err(_)) => {
            let problem = Error::bad_request("invalid_idempotency_key", "Idempotency-Key must be visible ASCII");
            return Err(refused_after_key_check(&state, &caller, problem.into()).await);
        }
    };
    let created = challenges::create(&state, &caller, key, body).await.map_err(IntoResponse::into_response)?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The answer to a request refused before its handler read anything: `problem`, once the
/// caller's key holds, since nothing is answered to a caller whose key does not.
async fn refused_after_key_check(state: &AppState, caller: &ApiKeyClaim, problem: Problem) -> Response {
    match caller.authenticate(&state.store).await {
        Ok(()) => problem.into_response(),
        Err(e) => e.into_response(),
    }
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
    Extension(caller): Extension<ApiKeyClaim>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, Problem>,
) -> Result<Json<ChallengeView>, Response> {
    let Query(q) = match query {
        Ok(query) => query,
        Err(problem) => return Err(refused_after_key_check(&state, &caller, problem).await),
    };
    challenges::get(&state, &caller, &id, q.wait).await.map(Json).map_err(IntoResponse::into_response)
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

/// Checks the code the user typed for an SMS or email challenge.
///
/// The right code approves the challenge (once: a used code is refused) and marks the phone
/// or email it went to as verified. A wrong one is `400 invalid_code` with
/// `attempts_remaining`; the fifth wrong code fails the challenge.
#[utoipa::path(post, path = "/v1/challenges/{challenge_id}/verify", tag = "challenges", security(("api_key" = [])),
    params(("challenge_id" = String, Path)),
    request_body = VerifyCode,
    responses((status = 200, description = "Approved", body = ChallengeView),
              (status = 400, description = "invalid_code (with `attempts_remaining`)", body = Problem),
              (status = 404, description = "not_found", body = Problem),
              (status = 409, description = "already_decided (approved, failed, cancelled...), wrong_factor (a push challenge)", body = Problem),
              (status = 410, description = "challenge_expired", body = Problem)))]
pub(super) async fn verify(
    State(state): State<AppState>,
    Extension(caller): Extension<RpCaller>,
    Path(id): Path<String>,
    Json(body): Json<VerifyCode>,
) -> Result<Json<ChallengeView>> {
    Ok(Json(fallback::verify(&state, &id, &body.code, &caller.actor()).await?))
}

/// Sends a new code for a pending SMS or email challenge; the previous code stops working.
///
/// At most 3 resends per challenge, 30 seconds apart, within the destination's send limits.
#[utoipa::path(post, path = "/v1/challenges/{challenge_id}/resend", tag = "challenges", security(("api_key" = [])),
    params(("challenge_id" = String, Path)),
    responses((status = 200, description = "Sent", body = ChallengeView),
              (status = 404, description = "not_found", body = Problem),
              (status = 409, description = "already_decided, wrong_factor", body = Problem),
              (status = 410, description = "challenge_expired", body = Problem),
              (status = 422, description = "country_not_allowed, number_not_allowed", body = Problem),
              (status = 429, description = "rate_limited (cooldown or send limits, Retry-After), resend_limit (no more resends)", body = Problem),
              (status = 502, description = "delivery_failed: no provider accepted the code; the challenge stays pending", body = Problem)))]
pub(super) async fn resend(
    State(state): State<AppState>,
    Extension(caller): Extension<RpCaller>,
    Path(id): Path<String>,
) -> Result<Json<ChallengeView>> {
    Ok(Json(fallback::resend(&state, &id, &caller.actor()).await?))
}
