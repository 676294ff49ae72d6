//! `/demo`: the demo page and its small backend (`/demo/api/...`), a relying party that signs
//! people in with passkeys and asks for push approvals. Thin handlers: the work is in
//! `crate::passkeys`, `crate::challenges` and `crate::demo`; sessions are signed cookies.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Json, Path, Query};
use crate::audit::Actor;
use crate::challenges::{self, ChallengeView, ContextInput, DetailInput, NewChallenge};
use crate::demo::{self, DemoKey};
use crate::error::{Error, Result};
use crate::passkeys::{self, FinishAuthentication, FinishRegistration, StartAuthentication, StartRegistration};
use crate::users::{self, Patch, UserId, UserUpsert};

/// The demo's routes (served only when `demo` is on).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/demo", get(page))
        .route("/demo/", get(page))
        .route("/demo/app.js", get(script))
        .route("/demo/style.css", get(style))
        .route("/demo/api/session", get(session))
        .route("/demo/api/signup", post(signup_start))
        .route("/demo/api/signup/{ceremony_id}", post(signup_finish))
        .route("/demo/api/signin", post(signin_start))
        .route("/demo/api/signin/{ceremony_id}", post(signin_finish))
        .route("/demo/api/signout", post(signout))
        .route("/demo/api/phone", post(add_phone))
        .route("/demo/api/approvals", post(approval_start))
        .route("/demo/api/approvals/{challenge_id}", get(approval_get))
        .route("/demo/api/approvals/{challenge_id}/verify", post(approval_verify))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                     frame-ancestors 'none'",
                ),
            ),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", demo::INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", demo::APP_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", demo::STYLE_CSS)
}

fn key(state: &AppState) -> Result<&DemoKey> {
    state.demo.as_ref().ok_or(Error::NotFound("demo"))
}

/// The signed-in demo user, from the session cookie.
fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<UserId> {
    let key = key(state)?;
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(demo::COOKIE)?.strip_prefix('='))
        .find_map(|value| key.verify(value, state.now()))
        .ok_or(Error::Unauthorized("sign in first"))
}

fn cookie(state: &AppState, value: &str, max_age: i64) -> Result<HeaderValue> {
    let secure = if state.config.public_url().starts_with("https:") { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/demo; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        demo::COOKIE
    ))
    .map_err(Error::internal)
}

/// Answers with the signed-in user's account and sets the session cookie.
async fn start_session(state: &AppState, user_id: &UserId) -> Result<Response> {
    let value = key(state)?.issue(user_id, state.now())?;
    let set = cookie(state, &value, demo::SESSION_SECS)?;
    let account = account(state, user_id).await?;
    Ok(([(header::SET_COOKIE, set)], Json(account)).into_response())
}

async fn account(state: &AppState, user_id: &UserId) -> Result<Value> {
    let user = users::get(&state.store, user_id).await?;
    Ok(json!({
        "username": demo::username(&user.id),
        "display_name": user.display_name,
        "email": user.email,
        "devices": crate::devices::list(state, user_id).await?,
        "passkeys": passkeys::list(state, user_id).await?,
    }))
}

async fn session(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>> {
    let user_id = signed_in(&state, &headers)?;
    Ok(Json(account(&state, &user_id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Signup {
    username: String,
    display_name: Option<String>,
    email: Option<String>,
}

async fn signup_start(State(state): State<AppState>, Json(body): Json<Signup>) -> Result<(StatusCode, Json<Value>)> {
    let user_id = demo::user_id(&body.username)?;
    // A name is taken once it has a passkey; an account whose sign-up was abandoned before
    // that can be started again.
    if users::get(&state.store, &user_id).await.is_ok() && !passkeys::list(&state, &user_id).await?.is_empty() {
        return Err(Error::conflict("username_taken", "that username is taken: pick another, or sign in"));
    }
    let text = |v: Option<String>| match v.map(|s| s.trim().to_owned()) {
        Some(s) if !s.is_empty() => Patch::Set(s),
        _ => Patch::Clear,
    };
    let upsert = UserUpsert { display_name: text(body.display_name), phone: Patch::Keep, email: text(body.email) };
    users::upsert(&state.store, &user_id, upsert, state.now(), &Actor::Demo).await?;
    let started = passkeys::start_registration(&state, StartRegistration { user_id: user_id.to_string() }).await?;
    Ok((StatusCode::CREATED, Json(serde_json::to_value(started)?)))
}

async fn signup_finish(
    State(state): State<AppState>,
    Path(ceremony_id): Path<String>,
    Json(body): Json<FinishRegistration>,
) -> Result<Response> {
    let registered = passkeys::finish_registration(&state, &ceremony_id, body, &Actor::Demo).await?;
    let user_id: UserId = registered.passkey.user_id.parse()?;
    if !user_id.as_str().starts_with(demo::USER_PREFIX) {
        return Err(Error::invalid("not_a_demo_account", "that ceremony was not started by the demo"));
    }
    start_session(&state, &user_id).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Signin {
    username: Option<String>,
}

async fn signin_start(State(state): State<AppState>, Json(body): Json<Signin>) -> Result<(StatusCode, Json<Value>)> {
    let user_id = match body.username.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        Some(name) => Some(demo::user_id(name)?.to_string()),
        None => None,
    };
    let started = passkeys::start_authentication(&state, StartAuthentication { user_id }).await?;
    Ok((StatusCode::CREATED, Json(serde_json::to_value(started)?)))
}

async fn signin_finish(
    State(state): State<AppState>,
    Path(ceremony_id): Path<String>,
    Json(body): Json<FinishAuthentication>,
) -> Result<Response> {
    let done = passkeys::finish_authentication(&state, &ceremony_id, body, &Actor::Demo).await?;
    let user_id: UserId = done.user_id.parse()?;
    // A passkey of this site that belongs to one of the RP's own users is not a demo account.
    if !user_id.as_str().starts_with(demo::USER_PREFIX) {
        return Err(Error::invalid("not_a_demo_account", "this passkey belongs to an account outside the demo"));
    }
    start_session(&state, &user_id).await
}

async fn signout(State(state): State<AppState>) -> Result<Response> {
    let clear = cookie(&state, "", 0)?;
    Ok(([(header::SET_COOKIE, clear)], StatusCode::NO_CONTENT).into_response())
}

async fn add_phone(State(state): State<AppState>, headers: HeaderMap) -> Result<(StatusCode, Json<Value>)> {
    let user_id = signed_in(&state, &headers)?;
    let created = crate::devices::create_enrollment(&state, &user_id, &Actor::Demo).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "uri": created.uri, "qr_svg": created.qr_svg, "expires_at": created.expires_at.unix_timestamp() }),
        ),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Transfer {
    amount: String,
    payee: String,
}

async fn approval_start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Transfer>,
) -> Result<(StatusCode, Json<Value>)> {
    let user_id = signed_in(&state, &headers)?;
    let amount = body.amount.trim();
    let payee = body.payee.trim();
    if amount.is_empty() || payee.is_empty() {
        return Err(Error::invalid("invalid_transfer", "enter an amount and a payee"));
    }
    let details = vec![
        DetailInput { label: "Amount".to_owned(), value: amount.to_owned() },
        DetailInput { label: "To".to_owned(), value: payee.to_owned() },
    ];
    let user_agent =
        headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(200).collect());
    let new = NewChallenge {
        user_id: user_id.to_string(),
        title: Some("Approve a transfer".to_owned()),
        details: details.clone(),
        context: Some(ContextInput { ip: None, location: None, user_agent }),
        number_matching: true,
        ttl_seconds: Some(120),
        channel: challenges::Channel::Auto,
    };
    let created = challenges::create_unkeyed(&state, "demo", new).await?;
    let mut answer = serde_json::to_value(&created)?;
    answer["details"] = serde_json::to_value(&details)?;
    Ok((StatusCode::CREATED, Json(answer)))
}

#[derive(Debug, Deserialize)]
struct Wait {
    wait: Option<u64>,
}

/// The challenge, when it is the signed-in user's.
async fn own_challenge(state: &AppState, headers: &HeaderMap, id: &str, wait: Option<u64>) -> Result<ChallengeView> {
    let user_id = signed_in(state, headers)?;
    let view = challenges::get_unkeyed(state, id, wait).await?;
    if view.user_id != user_id.as_str() {
        return Err(Error::NotFound("challenge"));
    }
    Ok(view)
}

async fn approval_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Wait>,
) -> Result<Json<ChallengeView>> {
    own_challenge(&state, &headers, &id, None).await?;
    Ok(Json(challenges::get_unkeyed(&state, &id, q.wait).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    code: String,
}

async fn approval_verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Code>,
) -> Result<Json<ChallengeView>> {
    own_challenge(&state, &headers, &id, None).await?;
    Ok(Json(crate::fallback::verify(&state, &id, &body.code, &Actor::Demo).await?))
}
