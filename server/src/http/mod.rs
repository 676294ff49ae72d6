//! The HTTP surface: routing, authentication, metrics and problem responses. Handlers are
//! thin adapters; the work happens in the domain modules.

pub mod extract;
pub mod problem;

mod challenges;
mod demo;
mod devices;
mod events;
mod okta;
mod ops;
mod passkeys;
mod users;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api_keys::ApiKeyClaim;
use crate::audit::Actor;
use crate::metrics::RequestLabels;
pub use crate::state::AppState;
use problem::Problem;

/// The caller of an RP route, as proven by its API key.
#[derive(Debug, Clone)]
pub struct RpCaller {
    /// The API key's id.
    pub key_id: String,
}

impl RpCaller {
    /// The caller as an audit actor.
    pub fn actor(&self) -> Actor {
        Actor::ApiKey(self.key_id.clone())
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Assent", description = "Push-first authentication backend: the RP, device and operations API."),
    modifiers(&SecurityAddon),
    tags(
        (name = "users", description = "Users and their factors"),
        (name = "events", description = "The audit log"),
        (name = "challenges", description = "Approval requests and their results"),
        (name = "devices", description = "Enrolling and managing phones"),
        (name = "passkeys", description = "WebAuthn registration and sign-in for the RP's web frontend"),
        (name = "device", description = "Called by phones, with Assent-Proof"),
        (name = "okta", description = "Okta telephony inline hook"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
struct ApiDoc;

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("An Assent API key")).build(),
            ),
        );
        components.add_security_scheme(
            "device_proof",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "Authorization",
                    "Assent-Proof <compact JWS, typ assent-proof+jwt, signed by the device key>",
                ),
            )),
        );
    }
}

/// Routes for RP backends, all behind an API key.
fn rp_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(users::put_user, users::get_user, users::delete_user))
        .routes(routes!(users::get_factors))
        .routes(routes!(events::list_events))
        .routes(routes!(users::create_enrollment))
        .routes(routes!(users::list_devices))
        .routes(routes!(users::revoke_device))
        .routes(routes!(users::unlock))
        .routes(routes!(challenges::cancel))
        .routes(routes!(challenges::verify))
        .routes(routes!(challenges::resend))
        .routes(routes!(passkeys::start_registration))
        .routes(routes!(passkeys::finish_registration))
        .routes(routes!(passkeys::start_authentication))
        .routes(routes!(passkeys::finish_authentication))
        .routes(routes!(passkeys::list, passkeys::delete_all))
        .routes(routes!(passkeys::get, passkeys::delete))
}

/// RP routes whose handler checks the API key itself, in the statement of its first read: the
/// two RP requests of every push approval, a new challenge (see `challenges::create`) and the
/// long-poll of its result (see `challenges::get`).
fn rp_claimed_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(challenges::create)).routes(routes!(challenges::get))
}

/// Routes for phones, all behind a device proof.
fn device_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(devices::list_challenges))
        .routes(routes!(devices::put_push_token))
        .routes(routes!(devices::unenroll))
}

/// Device routes whose handler records the request's proof itself, in the statement or
/// commit of its own effect, not ahead of the handler: the fetch of one challenge (see
/// `challenges::one_for_device`) and the answer (see `challenges::respond`).
fn device_signed_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(devices::get_challenge)).routes(routes!(devices::respond))
}

/// Routes anyone may call.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json))
        .routes(routes!(ops::server_keys))
        .routes(routes!(devices::enroll))
        .routes(routes!(okta::telephony))
}

/// The OpenAPI document for every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, rp) = rp_routes().split_for_parts();
    let (_, rp_claimed) = rp_claimed_routes().split_for_parts();
    let (_, public) = public_routes().split_for_parts();
    let (_, device) = device_routes().split_for_parts();
    let (_, device_signed) = device_signed_routes().split_for_parts();
    let mut doc = ApiDoc::openapi();
    doc.merge(rp);
    doc.merge(rp_claimed);
    doc.merge(device);
    doc.merge(device_signed);
    doc.merge(public);
    doc
}

/// Builds the whole router around `state`.
pub fn router(state: AppState) -> Router {
    let (rp, _) = rp_routes().split_for_parts();
    let rp = rp.route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));
    let (rp_claimed, _) = rp_claimed_routes().split_for_parts();
    let rp_claimed = rp_claimed.route_layer(middleware::from_fn(claim_api_key));
    let (public, _) = public_routes().split_for_parts();
    let (device, _) = device_routes().split_for_parts();
    let device = device.route_layer(middleware::from_fn_with_state(state.clone(), devices::require_device_proof));
    let (device_signed, _) = device_signed_routes().split_for_parts();
    let device_signed =
        device_signed.route_layer(middleware::from_fn_with_state(state.clone(), devices::require_device_signature));

    let demo = if state.demo.is_some() { demo::routes() } else { Router::new() };
    Router::new()
        .merge(demo)
        .merge(rp)
        .merge(rp_claimed)
        .merge(device)
        .merge(device_signed)
        .merge(public)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not accept that method")
}

/// The API key a request claims in `Authorization: Bearer <api key>`, unchecked.
fn claimed_api_key(request: &Request) -> crate::error::Result<ApiKeyClaim> {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(crate::error::Error::Unauthorized("send Authorization: Bearer <api key>"))?;
    ApiKeyClaim::parse(token)
}

/// Requires `Authorization: Bearer <api key>` and hands the caller to the handler.
async fn require_api_key(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let checked = match claimed_api_key(&request) {
        Ok(claim) => claim.authenticate(&state.store).await.map(|()| claim),
        Err(e) => Err(e),
    };
    match checked {
        Ok(claim) => {
            request.extensions_mut().insert(RpCaller { key_id: claim.id });
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// Requires `Authorization: Bearer` with a well-formed API key and hands the claim, unchecked,
/// to the handler, which checks it in the statement of its first read.
async fn claim_api_key(mut request: Request, next: Next) -> Response {
    match claimed_api_key(&request) {
        Ok(claim) => {
            request.extensions_mut().insert(claim);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

/// Counts requests and their latency by route template and status.
async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = RequestLabels { method, route, status: response.status().as_u16() };
    state.metrics.requests.get_or_create(&labels).inc();
    state.metrics.request_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    /// docs/openapi.json is the generated document; keep them equal.
    #[test]
    fn openapi_document_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let generated = serde_json::to_string_pretty(&super::openapi()).unwrap() + "\n";
        if std::env::var_os("ASSENT_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is out of date: run `ASSENT_UPDATE_OPENAPI=1 cargo test -p assent-server openapi`"
        );
    }
}
