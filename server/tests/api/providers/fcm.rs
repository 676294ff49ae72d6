//! FCM client against the fake OAuth token endpoint and `messages:send`.

use std::sync::Arc;
use std::time::Duration;

use assent_server::clock::{Clock as _, ManualClock};
use assent_server::config::{Mode, Secret};
use assent_server::push::{FcmClient, FcmConfig, PushMessage, PushOutcome, PushSender};
use assent_tests::fakes::JWT_BEARER_GRANT;
use axum::http::Method;
use serde_json::json;

use assent_tests::fakes::{FakeFcm, Reply, at, fcm_error};

pub use assent_tests::fakes::fcm_service_account as service_account_json;
use assent_tests::fakes::{
    FCM_CLIENT_EMAIL as CLIENT_EMAIL, FCM_KEY_ID as KEY_ID, FCM_PROJECT as PROJECT, fcm_test_public_key as public_key,
};
const DEVICE: &str = "fcm-registration-token:APA91bH-example";
const CHALLENGE: &str = "chl_0123456789abcdef0123456789abcdef";

pub fn config() -> FcmConfig {
    FcmConfig { credentials_file: None, credentials: None, project_id: None, base_url: None, timeout_seconds: 5 }
}

struct Setup {
    fake: FakeFcm,
    client: FcmClient,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let fake = FakeFcm::start(CLIENT_EMAIL, KEY_ID, public_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("service-account.json");
    std::fs::write(&file, service_account_json(&fake.token_uri)).unwrap();
    let config = FcmConfig { credentials_file: Some(file), base_url: Some(fake.base_url.clone()), ..config() };
    let clock = ManualClock::new(at("2025-03-01T12:00:00Z"));
    let client = FcmClient::from_config(&config, Mode::Dev, Arc::new(clock.clone())).unwrap();
    Setup { fake, client, clock, _dir: dir }
}

fn message(s: &Setup) -> PushMessage {
    PushMessage {
        device_token: DEVICE.into(),
        challenge_id: CHALLENGE.into(),
        expires_at: s.clock.now() + Duration::from_secs(120),
    }
}

#[tokio::test]
async fn sends_a_data_message_with_an_exchanged_access_token() {
    let s = setup().await;

    let outcome = s.client.send(&message(&s)).await;

    assert_eq!(
        outcome,
        PushOutcome::Delivered { provider_message_id: Some(format!("projects/{PROJECT}/messages/0:1")) }
    );
    // The fake's token endpoint verified the grant: RS256 by the service account key,
    // {iss: client_email, scope, aud: token_uri, iat, exp: iat + 3600}.
    let grants = s.fake.token_requests();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["grant_type"], JWT_BEARER_GRANT);
    let (_, claims, _, _) = assent_tests::fakes::split_jwt(&grants[0]["assertion"]);
    assert_eq!(claims["iat"], 1740830400);
    assert_eq!(claims["aud"], s.fake.token_uri.as_str());

    let sends = s.fake.sends();
    assert_eq!(sends.len(), 1);
    let r = &sends[0];
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, format!("/v1/projects/{PROJECT}/messages:send"));
    assert_eq!(r.header("authorization"), "Bearer ya29.fake-1");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.json(),
        json!({
            "message": {
                "token": DEVICE,
                "data": {"challenge_id": CHALLENGE},
                "android": {"priority": "HIGH", "ttl": "120s"}
            }
        })
    );
}

#[tokio::test]
async fn the_access_token_is_cached_until_shortly_before_expiry() {
    let s = setup().await;

    s.client.send(&message(&s)).await;
    s.client.send(&message(&s)).await;
    s.clock.advance(time::Duration::minutes(50)); // expires_in 3599 s: still good
    s.client.send(&message(&s)).await;
    assert_eq!(s.fake.issued().len(), 1, "one exchange for three sends");

    s.clock.advance(time::Duration::minutes(5)); // 55 min: within the 5-minute margin
    assert!(matches!(s.client.send(&message(&s)).await, PushOutcome::Delivered { .. }));
    assert_eq!(s.fake.issued(), vec!["ya29.fake-1", "ya29.fake-2"]);
    let (_, claims, _, _) = assent_tests::fakes::split_jwt(&s.fake.token_requests()[1]["assertion"]);
    assert_eq!(claims["iat"], 1740830400 + 55 * 60);
    let auth: Vec<String> = s.fake.sends().iter().map(|r| r.header("authorization").to_owned()).collect();
    assert_eq!(auth, ["Bearer ya29.fake-1", "Bearer ya29.fake-1", "Bearer ya29.fake-1", "Bearer ya29.fake-2"]);
}

#[tokio::test]
async fn unregistered_tokens_are_gone() {
    let s = setup().await;
    s.fake.reply(Reply::new(404, fcm_error(404, "NOT_FOUND", Some("UNREGISTERED"))));
    s.fake.reply(Reply::new(404, fcm_error(404, "NOT_FOUND", None)));

    assert_eq!(s.client.send(&message(&s)).await, PushOutcome::TokenGone { reason: "UNREGISTERED".into() });
    assert_eq!(s.client.send(&message(&s)).await, PushOutcome::TokenGone { reason: "NOT_FOUND".into() });
}

#[tokio::test]
async fn an_outage_is_retried_by_the_caller_then_delivered() {
    let s = setup().await;
    s.fake.reply(Reply::new(503, fcm_error(503, "UNAVAILABLE", Some("UNAVAILABLE"))).header("retry-after", "10"));
    s.fake.reply(Reply::new(429, fcm_error(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED"))));
    let msg = message(&s);

    assert_eq!(
        s.client.send(&msg).await,
        PushOutcome::Retry { after: Some(Duration::from_secs(10)), reason: "UNAVAILABLE".into() }
    );
    assert_eq!(s.client.send(&msg).await, PushOutcome::Retry { after: None, reason: "QUOTA_EXCEEDED".into() });
    s.clock.advance(time::Duration::seconds(10));
    assert_eq!(
        s.client.send(&msg).await,
        PushOutcome::Delivered { provider_message_id: Some(format!("projects/{PROJECT}/messages/0:3")) }
    );
    assert_eq!(s.fake.sends()[2].json()["message"]["android"]["ttl"], "110s", "the TTL shrinks with the challenge");
    assert_eq!(s.fake.issued().len(), 1);
}

#[tokio::test]
async fn a_refused_access_token_is_exchanged_again_once() {
    let s = setup().await;
    s.client.send(&message(&s)).await;
    s.fake.revoke_tokens();

    assert!(matches!(s.client.send(&message(&s)).await, PushOutcome::Delivered { .. }));

    assert_eq!(s.fake.issued(), vec!["ya29.fake-1", "ya29.fake-2"]);
    let auth: Vec<String> = s.fake.sends().iter().map(|r| r.header("authorization").to_owned()).collect();
    assert_eq!(auth, ["Bearer ya29.fake-1", "Bearer ya29.fake-1", "Bearer ya29.fake-2"]);
}

#[tokio::test]
async fn a_second_refusal_fails_instead_of_looping() {
    let s = setup().await;
    let unauthenticated = Reply::new(401, fcm_error(401, "UNAUTHENTICATED", None));
    s.fake.reply(unauthenticated.clone());
    s.fake.reply(unauthenticated);

    assert_eq!(s.client.send(&message(&s)).await, PushOutcome::Failed { reason: "UNAUTHENTICATED".into() });
    assert_eq!(s.fake.sends().len(), 2);
    assert_eq!(s.fake.issued().len(), 2);
}

#[tokio::test]
async fn request_and_credential_errors_fail_with_the_providers_reason() {
    let s = setup().await;
    s.fake.reply(Reply::new(400, fcm_error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"))));
    s.fake.reply(Reply::new(403, fcm_error(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"))));
    s.fake.reply(Reply::new(401, fcm_error(401, "UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR"))));

    assert_eq!(s.client.send(&message(&s)).await, PushOutcome::Failed { reason: "INVALID_ARGUMENT".into() });
    assert_eq!(s.client.send(&message(&s)).await, PushOutcome::Failed { reason: "SENDER_ID_MISMATCH".into() });
    assert_eq!(s.client.send(&message(&s)).await, PushOutcome::Failed { reason: "THIRD_PARTY_AUTH_ERROR".into() });
    assert_eq!(s.fake.issued().len(), 1, "THIRD_PARTY_AUTH_ERROR is about APNs credentials, not ours");
}

#[tokio::test]
async fn token_endpoint_errors() {
    let s = setup().await;
    s.fake
        .token_reply(Reply::new(400, json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})));
    s.fake.token_reply(Reply::new(503, json!({"error": "temporarily_unavailable"})).header("retry-after", "7"));

    assert_eq!(
        s.client.send(&message(&s)).await,
        PushOutcome::Failed { reason: "oauth invalid_grant: Invalid JWT Signature.".into() }
    );
    assert_eq!(
        s.client.send(&message(&s)).await,
        PushOutcome::Retry { after: Some(Duration::from_secs(7)), reason: "oauth temporarily_unavailable".into() }
    );
    assert!(s.fake.sends().is_empty());
    assert!(matches!(s.client.send(&message(&s)).await, PushOutcome::Delivered { .. }));
}

#[tokio::test]
async fn credentials_can_come_inline_and_debug_hides_them() {
    let fake = FakeFcm::start(CLIENT_EMAIL, KEY_ID, public_key()).await;
    let config = FcmConfig {
        credentials: Some(Secret::new(service_account_json(&fake.token_uri))),
        project_id: Some("other-project".into()),
        base_url: Some(fake.base_url.clone()),
        ..config()
    };
    let clock = ManualClock::new(at("2025-03-01T12:00:00Z"));
    let client = FcmClient::from_config(&config, Mode::Dev, Arc::new(clock.clone())).unwrap();
    let msg = PushMessage {
        device_token: DEVICE.into(),
        challenge_id: CHALLENGE.into(),
        expires_at: clock.now() + Duration::from_secs(60),
    };

    assert!(matches!(client.send(&msg).await, PushOutcome::Delivered { .. }));
    assert_eq!(fake.sends()[0].path, "/v1/projects/other-project/messages:send");

    for debug in [format!("{config:?}"), format!("{client:?}")] {
        assert!(!debug.contains("PRIVATE KEY") && !debug.contains("ya29."), "{debug}");
    }
}
