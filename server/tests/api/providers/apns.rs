//! APNs client against the HTTP/2 fake.

use std::sync::Arc;
use std::time::Duration;

use assent_protocol::p256::ecdsa::{SigningKey, VerifyingKey};
use assent_protocol::p256::pkcs8::{EncodePrivateKey as _, LineEnding};
use assent_server::clock::{Clock as _, ManualClock};
use assent_server::config::Mode;
use assent_server::push::{ApnsClient, ApnsConfig, ApnsEnvironment, PushMessage, PushOutcome, PushSender};
use axum::http::{Method, Version};
use serde_json::json;

use assent_tests::fakes::{FakeApns, Reply, at, split_jwt};

const TOPIC: &str = "com.example.bank";
const KEY_ID: &str = "ABC123DEFG";
const TEAM_ID: &str = "TEAM123456";
const DEVICE: &str = "5f3ad4c0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c";
const CHALLENGE: &str = "chl_0123456789abcdef0123456789abcdef";

struct Setup {
    fake: FakeApns,
    client: ApnsClient,
    clock: ManualClock,
    public_key: VerifyingKey,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let fake = FakeApns::start().await;
    let key: SigningKey = assent_protocol::jws::generate_signing_key().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join(format!("AuthKey_{KEY_ID}.p8"));
    std::fs::write(&key_file, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let config = ApnsConfig { key_file: Some(key_file), base_url: Some(fake.base_url.clone()), ..config() };
    let clock = ManualClock::new(at("2025-03-01T12:00:00Z"));
    let client = ApnsClient::from_config(&config, Mode::Dev, Arc::new(clock.clone())).unwrap();
    Setup { fake, client, clock, public_key: *key.verifying_key(), dir }
}

/// A configuration with every required key and no credential.
pub fn config() -> ApnsConfig {
    ApnsConfig {
        environment: ApnsEnvironment::Sandbox,
        topic: TOPIC.into(),
        key_id: KEY_ID.into(),
        team_id: TEAM_ID.into(),
        key_file: None,
        key: None,
        base_url: None,
        title: "Sign-in request".into(),
        body: "Tap to review".into(),
        timeout_seconds: 5,
    }
}

fn message(s: &Setup) -> PushMessage {
    PushMessage {
        device_token: DEVICE.into(),
        challenge_id: CHALLENGE.into(),
        expires_at: s.clock.now() + Duration::from_secs(120),
    }
}

fn bearer(request: &assent_tests::fakes::Recorded) -> String {
    request.header("authorization").strip_prefix("bearer ").expect("bearer scheme").to_owned()
}

#[tokio::test]
async fn sends_an_alert_over_http2_with_a_signed_provider_token() {
    let s = setup().await;
    let msg = message(&s);

    let outcome = s.client.send(&msg).await;

    assert_eq!(outcome, PushOutcome::Delivered { provider_message_id: Some("apns-id-1".into()) });
    let requests = s.fake.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.version, Version::HTTP_2, "APNs speaks only HTTP/2");
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, format!("/3/device/{DEVICE}"));
    assert_eq!(r.header("apns-topic"), TOPIC);
    assert_eq!(r.header("apns-push-type"), "alert");
    assert_eq!(r.header("apns-priority"), "10");
    assert_eq!(r.header("apns-expiration"), msg.expires_at.unix_timestamp().to_string());
    assert_eq!(r.header("apns-expiration"), "1740830520");
    assert_eq!(r.header("apns-collapse-id"), CHALLENGE);
    assert_eq!(r.header("content-type"), "application/json");

    // The provider token: ES256 by the team's key, {alg, kid} / {iss, iat}, nothing else.
    let token = bearer(r);
    let (header, claims, _, _) = split_jwt(&token);
    assert_eq!(header, json!({"alg": "ES256", "kid": KEY_ID}));
    assert_eq!(claims, json!({"iss": TEAM_ID, "iat": 1740830400}));
    assent_protocol::jws::verify_compact_es256(&token, &s.public_key).expect("signed by the .p8 key");

    // The payload: the challenge id and a generic alert, no transaction details.
    assert_eq!(
        r.json(),
        json!({
            "aps": {
                "alert": {"title": "Sign-in request", "body": "Tap to review"},
                "mutable-content": 1,
                "sound": "default"
            },
            "challenge_id": CHALLENGE
        })
    );
}

#[tokio::test]
async fn provider_token_is_reused_then_refreshed_after_thirty_minutes() {
    let s = setup().await;

    s.client.send(&message(&s)).await;
    s.client.send(&message(&s)).await;
    s.clock.advance(time::Duration::minutes(29));
    s.client.send(&message(&s)).await;
    s.clock.advance(time::Duration::minutes(2));
    s.client.send(&message(&s)).await;
    s.client.send(&message(&s)).await;

    let tokens: Vec<String> = s.fake.requests().iter().map(bearer).collect();
    assert_eq!(tokens.len(), 5);
    assert_eq!(tokens[0], tokens[1], "reused across sends");
    assert_eq!(tokens[0], tokens[2], "still reused at 29 minutes (Apple refuses refreshes under 20)");
    assert_ne!(tokens[2], tokens[3], "replaced at 31 minutes (Apple refuses tokens over 60)");
    assert_eq!(tokens[3], tokens[4]);
    let (_, claims, _, _) = split_jwt(&tokens[3]);
    assert_eq!(claims, json!({"iss": TEAM_ID, "iat": 1740830400 + 31 * 60}));
    assent_protocol::jws::verify_compact_es256(&tokens[3], &s.public_key).unwrap();
}

#[tokio::test]
async fn unregistered_and_bad_device_tokens_are_gone() {
    let s = setup().await;
    s.fake.reply(Reply::new(410, json!({"reason": "Unregistered", "timestamp": 1740830000000_i64})));
    s.fake.reply(Reply::new(400, json!({"reason": "BadDeviceToken"})));

    assert_eq!(s.client.send(&message(&s)).await, PushOutcome::TokenGone { reason: "Unregistered".into() });
    assert_eq!(s.client.send(&message(&s)).await, PushOutcome::TokenGone { reason: "BadDeviceToken".into() });
}

#[tokio::test]
async fn throttling_and_outages_are_retried_as_told() {
    let s = setup().await;
    s.fake.reply(Reply::new(429, json!({"reason": "TooManyRequests"})).header("retry-after", "30"));
    s.fake.reply(Reply::new(503, json!({"reason": "ServiceUnavailable"})));
    s.fake.reply(
        Reply::new(500, json!({"reason": "InternalServerError"}))
            .header("retry-after", "Sat, 01 Mar 2025 12:02:00 GMT"),
    );

    assert_eq!(
        s.client.send(&message(&s)).await,
        PushOutcome::Retry { after: Some(Duration::from_secs(30)), reason: "TooManyRequests".into() }
    );
    assert_eq!(
        s.client.send(&message(&s)).await,
        PushOutcome::Retry { after: None, reason: "ServiceUnavailable".into() }
    );
    assert_eq!(
        s.client.send(&message(&s)).await,
        PushOutcome::Retry { after: Some(Duration::from_secs(120)), reason: "InternalServerError".into() }
    );
    // After the outage the same client delivers.
    assert!(matches!(s.client.send(&message(&s)).await, PushOutcome::Delivered { .. }));
}

#[tokio::test]
async fn configuration_errors_fail_without_touching_the_token() {
    let s = setup().await;
    s.fake.reply(Reply::new(400, json!({"reason": "BadTopic"})));
    s.fake.reply(Reply::new(400, json!({"reason": "DeviceTokenNotForTopic"})));
    s.fake.reply(Reply::new(413, json!({"reason": "PayloadTooLarge"})));
    s.fake.reply(Reply::new(404, json!({})));

    assert_eq!(s.client.send(&message(&s)).await, PushOutcome::Failed { reason: "BadTopic".into() });
    assert_eq!(s.client.send(&message(&s)).await, PushOutcome::Failed { reason: "DeviceTokenNotForTopic".into() });
    assert_eq!(s.client.send(&message(&s)).await, PushOutcome::Failed { reason: "PayloadTooLarge".into() });
    assert_eq!(s.client.send(&message(&s)).await, PushOutcome::Failed { reason: "HTTP 404".into() });
}

#[tokio::test]
async fn a_refused_provider_token_is_replaced_on_the_next_send() {
    let s = setup().await;
    s.fake.reply(Reply::new(403, json!({"reason": "ExpiredProviderToken"})));
    s.fake.reply(Reply::new(403, json!({"reason": "InvalidProviderToken"})));

    assert_eq!(
        s.client.send(&message(&s)).await,
        PushOutcome::Retry { after: None, reason: "ExpiredProviderToken".into() }
    );
    s.clock.advance(time::Duration::seconds(1));
    assert_eq!(s.client.send(&message(&s)).await, PushOutcome::Failed { reason: "InvalidProviderToken".into() });
    s.clock.advance(time::Duration::seconds(1));
    assert!(matches!(s.client.send(&message(&s)).await, PushOutcome::Delivered { .. }));

    let tokens: Vec<String> = s.fake.requests().iter().map(bearer).collect();
    assert_ne!(tokens[0], tokens[1]);
    assert_ne!(tokens[1], tokens[2]);
}

#[tokio::test]
async fn nothing_is_sent_for_a_malformed_token_or_an_expired_challenge() {
    let s = setup().await;
    let bad = PushMessage { device_token: "../../../x".into(), ..message(&s) };
    assert!(matches!(s.client.send(&bad).await, PushOutcome::TokenGone { .. }));
    let expired = PushMessage { expires_at: s.clock.now(), ..message(&s) };
    assert!(matches!(s.client.send(&expired).await, PushOutcome::Failed { .. }));
    assert!(s.fake.requests().is_empty());
}

#[tokio::test]
async fn an_unreachable_apns_is_retried() {
    let s = setup().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let key_file = s.dir.path().join(format!("AuthKey_{KEY_ID}.p8"));
    let config = ApnsConfig { key_file: Some(key_file), base_url: Some(format!("http://{closed}")), ..config() };
    let client = ApnsClient::from_config(&config, Mode::Dev, Arc::new(s.clock.clone())).unwrap();

    let outcome = client.send(&message(&s)).await;

    let PushOutcome::Retry { after: None, reason } = outcome else { panic!("{outcome:?}") };
    assert!(reason.starts_with("transport"), "{reason}");
    assert!(!reason.contains(DEVICE), "the device token stays out of the reason: {reason}");
}

#[tokio::test]
async fn debug_output_has_no_key_or_token() {
    let s = setup().await;
    s.client.send(&message(&s)).await;
    let token = bearer(&s.fake.requests()[0]);
    let debug = format!("{:?}", s.client);
    assert!(debug.contains(KEY_ID) && debug.contains(TOPIC), "{debug}");
    assert!(!debug.contains(&token) && !debug.contains("PRIVATE"), "{debug}");
}
