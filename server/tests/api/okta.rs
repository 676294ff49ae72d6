//! The Okta telephony inline hook: Okta's documented sample requests, answered in Okta's
//! response format, through the SMS provider chain and its toll-fraud guard.

use std::time::{Duration, Instant};

use assent_server::config::{Config, Secret};
use assent_tests::fakes::{Behaviour, FakeSms};
use serde_json::{Value, json};

use crate::both_databases;
use crate::fallback::{twilio_provider, vonage_provider};
use crate::support::{Db, TestApp};

both_databases!(
    okta_sample_sms_is_sent_and_answered_in_okta_format,
    voice_without_a_voice_provider_fails_clearly,
    wrong_or_missing_secret_is_refused_and_nothing_sent,
    provider_failure_falls_over,
    slow_provider_fails_before_okta_gives_up,
    refused_numbers_fail_and_are_not_sent,
    malformed_requests_get_okta_errors,
);

const SECRET: &str = "Basic b2t0YTpzM2NyZXQ=";

/// Okta's sample request (telephony inline hook reference), with the code and number given.
fn okta_request(channel: &str, phone: &str) -> Value {
    json!({
        "eventId": "uSQbVcBZTSWwMx9eF8ASSw", "eventTime": "2022-01-28T21:34:19.000Z",
        "eventType": "com.okta.telephony.provider", "eventTypeVersion": "1.0", "contentType": "application/json",
        "cloudEventVersion": "0.1", "source": "https://example.okta.com/api/v1/inlineHooks/cal2xd5phv9fsPLcF0g7/execute",
        "requestType": "com.okta.user.telephony.pre-enrollment",
        "data": {
            "context": {"request": {"id": "reqRgSk8IBBRhuo0YdlEDTmUw", "method": "POST",
                "url": {"value": "/api/internal/v1/inlineHooks/com.okta.user.telephony.pre-enrollment/generatePreview"},
                "ipAddress": "127.0.0.1"}},
            "userProfile": {"firstName": "test", "lastName": "user", "login": "test.user@okta.com", "userId": "00uyxxSknGtK8022w0g3"},
            "messageProfile": {"msgTemplate": "Your Okta code is 38829", "phoneNumber": phone,
                "otpExpires": "2022-01-28T21:39:19.233Z", "deliveryChannel": channel, "otpCode": "38829", "locale": "EN-US"}
        }
    })
}

async fn okta_app(db: Db, tweak: impl FnOnce(&mut Config)) -> (TestApp, FakeSms, FakeSms) {
    let (twilio, vonage) = (FakeSms::twilio().await, FakeSms::vonage().await);
    let chain = vec![twilio_provider(&twilio), vonage_provider(&vonage)];
    let app = TestApp::with_config(db, |c| {
        c.sms.providers = chain;
        c.okta.auth_secret = Some(Secret::new(SECRET));
        c.okta.default_region = Some("IN".into());
        tweak(c);
    })
    .await;
    (app, twilio, vonage)
}

async fn call(app: &TestApp, secret: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/hooks/okta/telephony", app.url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(secret) = secret {
        req = req.header("authorization", secret);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn action(answer: &Value) -> &Value {
    assert_eq!(answer["commands"][0]["type"], "com.okta.telephony.action", "{answer}");
    &answer["commands"][0]["value"][0]
}

async fn okta_sample_sms_is_sent_and_answered_in_okta_format(db: Db) {
    let (app, twilio, vonage) = okta_app(db, |_| {}).await;
    let (status, answer) = call(&app, Some(SECRET), okta_request("SMS", "9876543210").to_string()).await;
    assert_eq!(status, 200);
    let value = action(&answer);
    assert_eq!(value["status"], "SUCCESSFUL");
    assert_eq!(value["provider"], "twilio");
    let sent = twilio.received();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].field("To"), Some("+919876543210"));
    assert_eq!(sent[0].field("Body"), Some("Your Okta code is 38829"));
    assert!(value["transactionId"].as_str().unwrap().starts_with("SM"), "{value}");
    assert!(value["transactionMetadata"].as_str().unwrap().starts_with("Duration="));
    assert!(vonage.received().is_empty());
    // Audited with the phone masked and never the code.
    let events = app.rp().get("/v1/events").await;
    let hook =
        events.body["events"].as_array().unwrap().iter().find(|e| e["kind"] == "okta.telephony").cloned().unwrap();
    assert_eq!(hook["data"]["status"], "SUCCESSFUL");
    assert_eq!(hook["data"]["okta_user_id"], "00uyxxSknGtK8022w0g3");
    assert!(!hook.to_string().contains("38829") && !hook.to_string().contains("9876543210"), "{hook}");
    let metrics = reqwest::get(format!("{}/metrics", app.url)).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"assent_okta_telephony_hook_total{provider="twilio",outcome="SUCCESSFUL"} 1"#),
        "{metrics}"
    );
}

async fn voice_without_a_voice_provider_fails_clearly(db: Db) {
    let (app, twilio, _) = okta_app(db, |_| {}).await;
    let (status, answer) = call(&app, Some(SECRET), okta_request("Voice call", "+16502530000").to_string()).await;
    assert_eq!(status, 200);
    let value = action(&answer);
    assert_eq!(value["status"], "FAILED");
    assert!(value["transactionMetadata"].as_str().unwrap().contains("voice"), "{value}");
    assert!(twilio.received().is_empty());
}

async fn wrong_or_missing_secret_is_refused_and_nothing_sent(db: Db) {
    let (app, twilio, _) = okta_app(db, |_| {}).await;
    for secret in [None, Some("Basic wrong"), Some("")] {
        let (status, answer) = call(&app, secret, okta_request("SMS", "9876543210").to_string()).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["code"], "unauthorized");
    }
    assert!(twilio.received().is_empty());
    // Not configured at all: the route is off.
    let plain = TestApp::new(db).await;
    let (status, _) = call(&plain, Some(SECRET), okta_request("SMS", "9876543210").to_string()).await;
    assert_eq!(status, 404);
}

async fn provider_failure_falls_over(db: Db) {
    let (app, twilio, vonage) = okta_app(db, |_| {}).await;
    twilio.behave(Behaviour::Fail);
    let (_, answer) = call(&app, Some(SECRET), okta_request("SMS", "9876543210").to_string()).await;
    let value = action(&answer);
    assert_eq!(value["status"], "SUCCESSFUL", "{answer}");
    assert_eq!(value["provider"], "vonage");
    assert_eq!(twilio.received().len(), 1);
    assert_eq!(vonage.received().len(), 1);
}

async fn slow_provider_fails_before_okta_gives_up(db: Db) {
    let (app, twilio, _) = okta_app(db, |c| c.okta.deadline_ms = 1000).await;
    twilio.behave(Behaviour::Hang);
    let started = Instant::now();
    let (status, answer) = call(&app, Some(SECRET), okta_request("SMS", "9876543210").to_string()).await;
    // Okta waits 3 s; the answer must come before (a deadline check, not a benchmark).
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(status, 200);
    assert_eq!(action(&answer)["status"], "FAILED");
}

async fn refused_numbers_fail_and_are_not_sent(db: Db) {
    let (app, twilio, _) = okta_app(db, |c| c.sms.allowed_countries = vec!["US".into()]).await;
    let (_, answer) = call(&app, Some(SECRET), okta_request("SMS", "9876543210").to_string()).await;
    let value = action(&answer);
    assert_eq!(value["status"], "FAILED");
    assert!(value["transactionMetadata"].as_str().unwrap().starts_with("country_not_allowed"), "{value}");
    // Without a default region a national number is never guessed.
    let (app2, twilio2, _) = okta_app(db, |c| c.okta.default_region = None).await;
    let (_, answer) = call(&app2, Some(SECRET), okta_request("SMS", "9876543210").to_string()).await;
    assert_eq!(action(&answer)["status"], "FAILED");
    assert!(twilio.received().is_empty() && twilio2.received().is_empty());
    // Per-number limits apply as for fallback codes.
    let (app3, twilio3, _) = okta_app(db, |c| c.sms.limits.per_number_10min = 1).await;
    call(&app3, Some(SECRET), okta_request("SMS", "9876543210").to_string()).await;
    let (_, answer) = call(&app3, Some(SECRET), okta_request("SMS", "9876543210").to_string()).await;
    let value = action(&answer);
    assert_eq!(value["status"], "FAILED");
    assert!(value["transactionMetadata"].as_str().unwrap().starts_with("rate_limited"), "{value}");
    assert_eq!(twilio3.received().len(), 1);
}

async fn malformed_requests_get_okta_errors(db: Db) {
    let (app, twilio, _) = okta_app(db, |_| {}).await;
    let cases = [
        "".to_owned(),
        "not json".to_owned(),
        "[]".to_owned(),
        json!({"data": {}}).to_string(),
        json!({"data": {"messageProfile": {"phoneNumber": 5}}}).to_string(),
        "x".repeat(70_000),
    ];
    for body in cases {
        let (status, answer) = call(&app, Some(SECRET), body.clone()).await;
        assert!(status == 200 || status == 413, "{status} for {body:.40}");
        if status == 200 {
            assert!(answer["error"]["errorSummary"].is_string(), "{answer}");
        }
    }
    assert!(twilio.received().is_empty());
}
