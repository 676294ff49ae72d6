//! `/v1/passkeys/...` and `/v1/users/{user_id}/passkeys`: WebAuthn ceremonies for the RP's
//! web frontend, and the passkeys they registered.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;

use super::extract::{Json, Path};
use super::problem::Problem;
use super::{AppState, RpCaller};
use crate::error::Result;
use crate::passkeys::{
    self, Authenticated, CeremonyStarted, FinishAuthentication, FinishRegistration, PasskeyView, Registered,
    StartAuthentication, StartRegistration,
};
use crate::users::UserId;

/// Starts registering a passkey: pass `options.publicKey` to `navigator.credentials.create()`.
///
/// User verification is required and the credential must be discoverable, so the passkey
/// also serves usernameless sign-in. The user's existing passkeys are excluded.
#[utoipa::path(post, path = "/v1/passkeys/registrations", tag = "passkeys", security(("api_key" = [])),
    request_body = StartRegistration,
    responses(
        (status = 201, body = CeremonyStarted),
        (status = 404, description = "not_found: no such user", body = Problem),
        (status = 409, description = "passkeys_not_configured", body = Problem),
        (status = 422, description = "invalid_user_id", body = Problem),
    ))]
pub(super) async fn start_registration(
    State(state): State<AppState>,
    Json(body): Json<StartRegistration>,
) -> Result<(StatusCode, Json<CeremonyStarted>)> {
    Ok((StatusCode::CREATED, Json(passkeys::start_registration(&state, body).await?)))
}

/// Finishes a registration with the browser's new credential (`credential.toJSON()`).
#[utoipa::path(post, path = "/v1/passkeys/registrations/{ceremony_id}", tag = "passkeys", security(("api_key" = [])),
    params(("ceremony_id" = String, Path)),
    request_body = FinishRegistration,
    responses(
        (status = 201, body = Registered),
        (status = 400, description = "malformed_credential", body = Problem),
        (status = 404, description = "not_found: no such ceremony", body = Problem),
        (status = 409, description = "ceremony_used, passkey_exists, passkeys_not_configured", body = Problem),
        (status = 410, description = "ceremony_expired", body = Problem),
        (status = 422, description = "origin_not_allowed, rp_id_mismatch, challenge_mismatch, invalid_client_data, cross_origin, user_not_verified, user_not_present, invalid_credential, invalid_name", body = Problem),
    ))]
pub(super) async fn finish_registration(
    State(state): State<AppState>,
    Extension(caller): Extension<RpCaller>,
    Path(ceremony_id): Path<String>,
    Json(body): Json<FinishRegistration>,
) -> Result<(StatusCode, Json<Registered>)> {
    let registered = passkeys::finish_registration(&state, &ceremony_id, body, &caller.actor()).await?;
    Ok((StatusCode::CREATED, Json(registered)))
}

/// Starts a sign-in: pass `options.publicKey` to `navigator.credentials.get()`.
///
/// With a `user_id`, that user's passkeys are allowed; without one (`{}`), the browser offers
/// any passkey it has for this site (usernameless, and with `mediation: "conditional"`, in
/// the username field's autofill).
#[utoipa::path(post, path = "/v1/passkeys/authentications", tag = "passkeys", security(("api_key" = [])),
    request_body = StartAuthentication,
    responses(
        (status = 201, body = CeremonyStarted),
        (status = 404, description = "not_found: no such user", body = Problem),
        (status = 409, description = "passkeys_not_configured", body = Problem),
        (status = 422, description = "no_passkey, invalid_user_id", body = Problem),
    ))]
pub(super) async fn start_authentication(
    State(state): State<AppState>,
    Json(body): Json<StartAuthentication>,
) -> Result<(StatusCode, Json<CeremonyStarted>)> {
    Ok((StatusCode::CREATED, Json(passkeys::start_authentication(&state, body).await?)))
}

/// Finishes a sign-in with the browser's assertion (`credential.toJSON()`): says whose passkey
/// it was. The passkey's signature counter and backup state are updated.
#[utoipa::path(post, path = "/v1/passkeys/authentications/{ceremony_id}", tag = "passkeys", security(("api_key" = [])),
    params(("ceremony_id" = String, Path)),
    request_body = FinishAuthentication,
    responses(
        (status = 200, body = Authenticated),
        (status = 400, description = "malformed_credential", body = Problem),
        (status = 404, description = "not_found: no such ceremony", body = Problem),
        (status = 409, description = "ceremony_used, passkeys_not_configured", body = Problem),
        (status = 410, description = "ceremony_expired", body = Problem),
        (status = 422, description = "origin_not_allowed, rp_id_mismatch, challenge_mismatch, invalid_client_data, cross_origin, user_not_verified, user_not_present, invalid_signature, unknown_credential, credential_not_allowed, sign_count_regressed, backup_state_inconsistent, invalid_credential", body = Problem),
    ))]
pub(super) async fn finish_authentication(
    State(state): State<AppState>,
    Extension(caller): Extension<RpCaller>,
    Path(ceremony_id): Path<String>,
    Json(body): Json<FinishAuthentication>,
) -> Result<Json<Authenticated>> {
    Ok(Json(passkeys::finish_authentication(&state, &ceremony_id, body, &caller.actor()).await?))
}

/// The user's passkeys.
#[utoipa::path(get, path = "/v1/users/{user_id}/passkeys", tag = "passkeys", security(("api_key" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = Vec<PasskeyView>), (status = 404, description = "not_found", body = Problem)))]
pub(super) async fn list(State(state): State<AppState>, Path(user_id): Path<String>) -> Result<Json<Vec<PasskeyView>>> {
    Ok(Json(passkeys::list(&state, &user_id.parse()?).await?))
}

/// Deletes all of the user's passkeys.
#[utoipa::path(delete, path = "/v1/users/{user_id}/passkeys", tag = "passkeys", security(("api_key" = [])),
    params(("user_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, description = "not_found", body = Problem)))]
pub(super) async fn delete_all(
    State(state): State<AppState>,
    Extension(caller): Extension<RpCaller>,
    Path(user_id): Path<String>,
) -> Result<StatusCode> {
    passkeys::delete_all(&state, &user_id.parse()?, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One of the user's passkeys.
#[utoipa::path(get, path = "/v1/users/{user_id}/passkeys/{passkey_id}", tag = "passkeys", security(("api_key" = [])),
    params(("user_id" = String, Path), ("passkey_id" = String, Path)),
    responses((status = 200, body = PasskeyView), (status = 404, description = "not_found", body = Problem)))]
pub(super) async fn get(
    State(state): State<AppState>,
    Path((user_id, passkey_id)): Path<(String, String)>,
) -> Result<Json<PasskeyView>> {
    let id: UserId = user_id.parse()?;
    Ok(Json(passkeys::get(&state, &id, &passkey_id).await?))
}

/// Deletes one of the user's passkeys: it can no longer sign in.
#[utoipa::path(delete, path = "/v1/users/{user_id}/passkeys/{passkey_id}", tag = "passkeys", security(("api_key" = [])),
    params(("user_id" = String, Path), ("passkey_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, description = "not_found", body = Problem)))]
pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<RpCaller>,
    Path((user_id, passkey_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let id: UserId = user_id.parse()?;
    passkeys::delete(&state, &id, &passkey_id, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
