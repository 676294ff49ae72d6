//! `/v1/users/{user_id}`: upsert, read, delete, factors.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{Json, Path};
use super::problem::Problem;
use super::{AppState, RpCaller};
use crate::devices::{self, Device, EnrollmentCreated};
use crate::error::Result;
use crate::passkeys::PasskeyView;
use crate::users::{self, User, UserId, UserUpsert};

/// A phone or email on file, with whether a code sent there was ever entered correctly.
#[derive(Debug, Serialize, ToSchema)]
pub struct Destination {
    /// E.164 number or email address.
    pub value: String,
    /// Proven to reach the user.
    pub verified: bool,
}

/// `GET /v1/users/{user_id}/factors`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Factors {
    /// Registered phones (push).
    pub devices: Vec<Device>,
    /// Registered passkeys.
    pub passkeys: Vec<PasskeyView>,
    /// Phone for SMS fallback.
    pub phone: Option<Destination>,
    /// Email for email fallback.
    pub email: Option<Destination>,
}

/// Creates or updates a user.
///
/// Fields left out keep their current value; `null` removes a field. A changed phone or
/// email is no longer verified.
#[utoipa::path(put, path = "/v1/users/{user_id}", tag = "users", security(("api_key" = [])),
    params(("user_id" = String, Path, description = "The RP's user id: 1-128 of [A-Za-z0-9._@+-]")),
    request_body = UserUpsert,
    responses(
        (status = 201, description = "Created", body = User),
        (status = 200, description = "Updated", body = User),
        (status = 422, description = "invalid_user_id, invalid_phone, invalid_email, invalid_display_name", body = Problem),
        (status = 401, description = "unauthorized", body = Problem),
    ))]
pub(super) async fn put_user(
    State(state): State<AppState>,
    Extension(caller): Extension<RpCaller>,
    Path(user_id): Path<String>,
    Json(body): Json<UserUpsert>,
) -> Result<(StatusCode, Json<User>)> {
    let id: UserId = user_id.parse()?;
    let (user, created) = users::upsert(&state.store, &id, body, state.clock.now(), &caller.actor()).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(user)))
}

/// Reads a user.
#[utoipa::path(get, path = "/v1/users/{user_id}", tag = "users", security(("api_key" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = User), (status = 404, description = "not_found", body = Problem)))]
pub(super) async fn get_user(State(state): State<AppState>, Path(user_id): Path<String>) -> Result<Json<User>> {
    Ok(Json(users::get(&state.store, &user_id.parse()?).await?))
}

/// Deletes a user and everything registered for them.
#[utoipa::path(delete, path = "/v1/users/{user_id}", tag = "users", security(("api_key" = [])),
    params(("user_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, description = "not_found", body = Problem)))]
pub(super) async fn delete_user(
    State(state): State<AppState>,
    Extension(caller): Extension<RpCaller>,
    Path(user_id): Path<String>,
) -> Result<StatusCode> {
    users::delete(&state.store, &user_id.parse()?, state.clock.now(), &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists every factor the user can sign in with.
#[utoipa::path(get, path = "/v1/users/{user_id}/factors", tag = "users", security(("api_key" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = Factors), (status = 404, description = "not_found", body = Problem)))]
pub(super) async fn get_factors(State(state): State<AppState>, Path(user_id): Path<String>) -> Result<Json<Factors>> {
    let id: UserId = user_id.parse()?;
    let user = users::get(&state.store, &id).await?;
    Ok(Json(Factors {
        devices: devices::list(&state, &id).await?,
        passkeys: crate::passkeys::list(&state, &id).await?,
        phone: user.phone.map(|value| Destination { value, verified: user.phone_verified }),
        email: user.email.map(|value| Destination { value, verified: user.email_verified }),
    }))
}

/// Starts enrolling a phone: returns the single-use token as an `assent://enroll` URI and a
/// QR code to show in the user's signed-in session.
#[utoipa::path(post, path = "/v1/users/{user_id}/enrollments", tag = "devices", security(("api_key" = [])),
    params(("user_id" = String, Path)),
    responses((status = 201, body = EnrollmentCreated), (status = 404, description = "not_found", body = Problem)))]
pub(super) async fn create_enrollment(
    State(state): State<AppState>,
    Extension(caller): Extension<RpCaller>,
    Path(user_id): Path<String>,
) -> Result<(StatusCode, Json<EnrollmentCreated>)> {
    let created = devices::create_enrollment(&state, &user_id.parse()?, &caller.actor()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The user's active devices.
#[utoipa::path(get, path = "/v1/users/{user_id}/devices", tag = "devices", security(("api_key" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = Vec<Device>), (status = 404, description = "not_found", body = Problem)))]
pub(super) async fn list_devices(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Json<Vec<Device>>> {
    Ok(Json(devices::list(&state, &user_id.parse()?).await?))
}

/// Revokes a device (a lost or replaced phone). Its pending challenges can no longer be answered by it.
#[utoipa::path(delete, path = "/v1/users/{user_id}/devices/{device_id}", tag = "devices", security(("api_key" = [])),
    params(("user_id" = String, Path), ("device_id" = String, Path)),
    responses((status = 204, description = "Revoked"), (status = 404, description = "not_found", body = Problem)))]
pub(super) async fn revoke_device(
    State(state): State<AppState>,
    Extension(caller): Extension<RpCaller>,
    Path((user_id, device_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let id: UserId = user_id.parse()?;
    devices::revoke(&state, id.as_str(), &device_id, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lifts the push lock a fraud report put on the user.
#[utoipa::path(post, path = "/v1/users/{user_id}/unlock", tag = "users", security(("api_key" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, description = "`{unlocked: bool}`: false when the user was not locked", body = Object),
              (status = 404, description = "not_found", body = Problem)))]
pub(super) async fn unlock(
    State(state): State<AppState>,
    Extension(caller): Extension<RpCaller>,
    Path(user_id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    let unlocked = crate::challenges::unlock(&state, &user_id.parse()?, &caller.actor()).await?;
    Ok(Json(serde_json::json!({ "unlocked": unlocked })))
}
