//! The push delivery outbox end to end: challenge created, the worker sends it to a fake FCM,
//! the RP sees per-device delivery state; gone tokens are cleared; transient errors retried.

use std::time::{Duration, Instant};

use assent_protocol::messages::{Decision, PushProvider, PushRegistration};
use assent_server::config::Secret;
use assent_server::push::FcmConfig;
use assent_tests::fakes::{FakeFcm, Reply, fcm_error};
use assent_tests::phone::{Phone, Rp};
use serde_json::{Value, json};

use crate::both_databases;
use crate::support::{Db, TestApp};

both_databases!(
    fcm_delivery_is_sent_and_visible,
    unregistered_token_is_cleared_and_device_keeps_polling,
    unavailable_is_retried_then_delivered,
    unconfigured_provider_fails_clearly,
);

async fn app_with_fcm(db: Db) -> (TestApp, FakeFcm) {
    let (fake, account) = FakeFcm::start_for_test_account().await;
    let base_url = fake.base_url.clone();
    let app = TestApp::with_config(db, move |c| {
        c.push.fcm = Some(FcmConfig {
            credentials_file: None,
            credentials: Some(Secret::new(account)),
            project_id: None,
            base_url: Some(base_url),
            timeout_seconds: 5,
        });
    })
    .await;
    (app, fake)
}

async fn fcm_phone(rp: &Rp, user: &str, token: &str) -> Phone {
    rp.user(user, user).await;
    let push = PushRegistration { provider: PushProvider::Fcm, token: Some(token.to_owned()) };
    Phone::enroll_with(&rp.enrollment_uri(user).await, push).await.unwrap()
}

/// Polls the challenge until its first delivery leaves `pending`.
async fn settled_delivery(rp: &Rp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = rp.get(&format!("/v1/challenges/{id}")).await;
        let d = c.body["deliveries"][0].clone();
        if d["status"] != "pending" {
            return d;
        }
        assert!(Instant::now() < deadline, "delivery still pending: {}", c.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fcm_delivery_is_sent_and_visible(db: Db) {
    let (app, fake) = app_with_fcm(db).await;
    let rp = app.rp();
    let phone = fcm_phone(&rp, "ana", "fcm-token-ana").await;
    let created = rp
        .challenge(
            json!({"user_id": "ana", "title": "Pay EUR 9,999", "details": [{"label": "IBAN", "value": "DE89 3704"}]}),
        )
        .await;
    let id = created.expect(201)["id"].as_str().unwrap().to_owned();
    let d = settled_delivery(&rp, &id).await;
    assert_eq!(d, json!({"device_id": phone.device_id, "provider": "fcm", "status": "sent"}));
    let sends = fake.sends();
    assert_eq!(sends.len(), 1);
    let message = &sends[0].json()["message"];
    assert_eq!(message["token"], "fcm-token-ana");
    assert_eq!(message["data"], json!({"challenge_id": id}));
    // Nothing of the transaction travels through Google.
    let raw = sends[0].json().to_string();
    assert!(!raw.contains("9,999") && !raw.contains("DE89"), "{raw}");
    phone.answer(&id, Decision::Approve, None).await.expect(200);
    let metrics = reqwest::get(format!("{}/metrics", app.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"assent_push_deliveries_total{provider="fcm",outcome="delivered"} 1"#), "{metrics}");
}

async fn unregistered_token_is_cleared_and_device_keeps_polling(db: Db) {
    let (app, fake) = app_with_fcm(db).await;
    let rp = app.rp();
    let phone = fcm_phone(&rp, "ben", "fcm-token-stale").await;
    fake.reply(Reply::new(404, fcm_error(404, "NOT_FOUND", Some("UNREGISTERED"))));
    let id = rp.challenge(json!({"user_id": "ben"})).await.expect(201)["id"].as_str().unwrap().to_owned();
    let d = settled_delivery(&rp, &id).await;
    assert_eq!(d["status"], "failed");
    assert!(d["error"].as_str().unwrap().contains("UNREGISTERED"), "{d}");
    let devices = rp.get("/v1/users/ben/devices").await;
    assert_eq!(devices.body[0]["push_enabled"], false);
    let events = rp.get("/v1/events?user_id=ben").await;
    assert!(events.body["events"].as_array().unwrap().iter().any(|e| e["kind"] == "device.push_token_cleared"));
    // Still usable by polling.
    assert_eq!(phone.pending().await.len(), 1);
    phone.answer(&id, Decision::Approve, None).await.expect(200);
    // The next challenge is not sent anywhere: the device has no token now.
    let id = rp.challenge(json!({"user_id": "ben"})).await.expect(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(settled_delivery(&rp, &id).await["status"], "not_sent");
    assert_eq!(fake.sends().len(), 1);
}

async fn unavailable_is_retried_then_delivered(db: Db) {
    let (app, fake) = app_with_fcm(db).await;
    let rp = app.rp();
    fcm_phone(&rp, "cleo", "fcm-token-cleo").await;
    fake.reply(Reply::new(503, fcm_error(503, "UNAVAILABLE", None)));
    let id = rp.challenge(json!({"user_id": "cleo"})).await.expect(201)["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.sends().is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past the retry delay on the server's clock.
    app.advance(5);
    let d = settled_delivery(&rp, &id).await;
    assert_eq!(d["status"], "sent", "{d}");
    assert_eq!(fake.sends().len(), 2);
}

async fn unconfigured_provider_fails_clearly(db: Db) {
    let app = TestApp::new(db).await;
    let rp = app.rp();
    rp.user("dora", "Dora").await;
    let push = PushRegistration { provider: PushProvider::Apns, token: Some("a1b2c3".into()) };
    let phone = Phone::enroll_with(&rp.enrollment_uri("dora").await, push).await.unwrap();
    let id = rp.challenge(json!({"user_id": "dora"})).await.expect(201)["id"].as_str().unwrap().to_owned();
    let d = settled_delivery(&rp, &id).await;
    assert_eq!(d["status"], "failed");
    assert_eq!(d["error"], "APNs is not configured on this server");
    assert_eq!(phone.pending().await.len(), 1, "the phone can still poll");
}
