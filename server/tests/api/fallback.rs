//! The fallback end to end over HTTP: factor choice, codes by SMS (fake Twilio and Vonage)
//! and email (a real SMTP server), verify, resend, failover, toll-fraud limits.

use assent_server::config::{
    Config, EmailProviderConfig, Mode, Secret, SmsProviderConfig, SmtpConfig, SmtpTls, TwilioConfig, VonageConfig,
};
use assent_tests::fakes::{Behaviour, FakeSms, SmtpSink, code_in};
use assent_tests::phone::{Phone, Resp, Rp};
use base64::Engine;
use serde_json::{Value, json};

use crate::both_databases;
use crate::support::{Db, TestApp};

both_databases!(
    sms_code_through_twilio,
    twilio_api_key_and_failover_to_vonage,
    no_provider_delivers,
    email_code_through_smtp,
    five_wrong_codes_fail_the_challenge,
    expired_and_used_codes_are_refused,
    resend_cooldown_and_limit,
    factor_choice,
    toll_fraud_guard,
    changed_destination_is_unverified,
);

const SID: &str = "AC00000000000000000000000000000001";
const PHONE: &str = "+16502530000";

pub(crate) fn twilio_provider(fake: &FakeSms) -> SmsProviderConfig {
    SmsProviderConfig::Twilio(TwilioConfig {
        name: None,
        account_sid: SID.into(),
        auth_token: Some(Secret::new("twilio-auth-token")),
        api_key_sid: None,
        api_key_secret: None,
        from: Some("+15005550006".into()),
        messaging_service_sid: None,
        base_url: Some(fake.url.clone()),
    })
}

pub(crate) fn vonage_provider(fake: &FakeSms) -> SmsProviderConfig {
    SmsProviderConfig::Vonage(VonageConfig {
        name: None,
        api_key: "vonage-key".into(),
        api_secret: Secret::new("vonage-secret"),
        from: "Acme".into(),
        base_url: Some(fake.url.clone()),
    })
}

/// An app sending SMS through a fake Twilio.
async fn app_with_twilio(db: Db, tweak: impl FnOnce(&mut Config)) -> (TestApp, FakeSms) {
    let fake = FakeSms::twilio().await;
    let provider = twilio_provider(&fake);
    let app = TestApp::with_config(db, |c| {
        c.sms.providers = vec![provider];
        tweak(c);
    })
    .await;
    (app, fake)
}

async fn put_user(rp: &Rp, id: &str, body: Value) {
    let r = rp.call(reqwest::Method::PUT, &format!("/v1/users/{id}"), Some(body)).await;
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
}

async fn code_challenge(rp: &Rp, user: &str) -> String {
    let r = rp.challenge(json!({ "user_id": user })).await;
    r.expect(201)["id"].as_str().unwrap().to_owned()
}

async fn verify(rp: &Rp, id: &str, code: &str) -> Resp {
    rp.post(&format!("/v1/challenges/{id}/verify"), json!({ "code": code })).await
}

async fn status(rp: &Rp, id: &str) -> Value {
    rp.get(&format!("/v1/challenges/{id}")).await.expect(200).clone()
}

async fn event_kinds(rp: &Rp, user: &str) -> Vec<String> {
    let events = rp.get(&format!("/v1/events?user_id={user}")).await;
    events.body["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
}

/// A code other than `code`.
fn wrong(code: &str) -> String {
    format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000)
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

async fn sms_code_through_twilio(db: Db) {
    let (app, twilio) = app_with_twilio(db, |c| {
        c.app_name = "Acme Bank".into();
        c.sms.webotp_domain = Some("bank.example.com".into());
    })
    .await;
    let rp = app.rp();
    put_user(&rp, "jane", json!({ "phone": "+1 (650) 253-0000", "email": "jane@example.com" })).await;

    let created = rp.challenge(json!({ "user_id": "jane", "title": "Sign in" })).await;
    let c = created.expect(201);
    assert_eq!(c["factor"], "sms");
    assert_eq!(c["destination"], "+1 *** *** 0000");
    assert_eq!(c["status"], "pending");
    assert!(c.get("number").is_none());
    let id = c["id"].as_str().unwrap();

    // Exactly what Twilio documents: form fields, basic auth with the account SID and token.
    let sent = twilio.received();
    assert_eq!(sent.len(), 1);
    let request = &sent[0];
    assert_eq!(request.path, format!("/2010-04-01/Accounts/{SID}/Messages.json"));
    assert_eq!(request.headers["authorization"], basic(SID, "twilio-auth-token").as_str());
    assert_eq!(request.headers["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(request.field_names(), ["Body", "From", "To"]);
    assert_eq!(request.field("To"), Some(PHONE));
    assert_eq!(request.field("From"), Some("+15005550006"));
    let text = request.field("Body").unwrap();
    let code = code_in(text);
    assert!(text.contains("Acme Bank"), "{text}");
    assert_eq!(text.lines().last(), Some(format!("@bank.example.com #{code}").as_str()), "{text}");

    let pending = status(&rp, id).await;
    assert_eq!(pending["factor"], "sms");
    assert_eq!(pending["otp"]["channel"], "sms");
    assert_eq!(pending["otp"]["destination"], "+1 *** *** 0000");
    assert_eq!(pending["otp"]["delivery"], "sent");
    assert_eq!(pending["otp"]["provider"], "twilio");
    assert_eq!(pending["otp"]["message_id"], format!("SM{:032x}", 1));
    assert_eq!(pending["otp"]["attempts_remaining"], 5);
    assert_eq!(pending["otp"]["resends_remaining"], 3);
    assert_eq!(pending["deliveries"], json!([]));

    let bad = verify(&rp, id, &wrong(&code)).await;
    bad.problem(400, "invalid_code");
    assert_eq!(bad.body["attempts_remaining"], 4);

    // Spaces, as people type them, are fine.
    let ok = verify(&rp, id, &format!("{} {}", &code[..3], &code[3..])).await;
    let approved = ok.expect(200);
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["id"], id);
    assert!(approved["decided_at"].is_string());

    let factors = rp.get("/v1/users/jane/factors").await;
    assert_eq!(factors.expect(200)["phone"], json!({ "value": PHONE, "verified": true }));
    assert_eq!(factors.body["email"], json!({ "value": "jane@example.com", "verified": false }));
    assert_eq!(
        event_kinds(&rp, "jane").await,
        ["user.created", "challenge.created", "challenge.approved", "user.phone_verified"]
    );
    let events = rp.get("/v1/events?user_id=jane").await;
    let created = &events.body["events"][1]["data"];
    assert_eq!(*created, json!({ "challenge_id": id, "factor": "sms", "to": "+1 *** *** 0000" }));
    assert!(!events.body.to_string().contains(&code), "no code in the audit log");
}

async fn twilio_api_key_and_failover_to_vonage(db: Db) {
    let twilio = FakeSms::twilio().await;
    let vonage_fake = FakeSms::vonage().await;
    twilio.behave(Behaviour::Fail);
    let mut with_key = twilio_provider(&twilio);
    if let SmsProviderConfig::Twilio(t) = &mut with_key {
        t.auth_token = None;
        t.api_key_sid = Some("SK00000000000000000000000000000002".into());
        t.api_key_secret = Some(Secret::new("api-key-secret"));
        t.from = None;
        t.messaging_service_sid = Some("MG00000000000000000000000000000003".into());
    }
    let chain = vec![with_key, vonage_provider(&vonage_fake)];
    let app = TestApp::with_config(db, |c| c.sms.providers = chain).await;
    let rp = app.rp();
    put_user(&rp, "jane", json!({ "phone": PHONE })).await;

    let id = code_challenge(&rp, "jane").await;
    let tried = twilio.received();
    assert_eq!(tried.len(), 1);
    assert_eq!(
        tried[0].headers["authorization"],
        basic("SK00000000000000000000000000000002", "api-key-secret").as_str()
    );
    assert_eq!(tried[0].field_names(), ["Body", "MessagingServiceSid", "To"]);
    assert_eq!(tried[0].field("MessagingServiceSid"), Some("MG00000000000000000000000000000003"));

    let sent = vonage_fake.received();
    assert_eq!(sent.len(), 1, "Twilio's 500 moves on to Vonage");
    let request = &sent[0];
    assert_eq!(request.path, "/sms/json");
    assert_eq!(request.headers["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(request.field_names(), ["api_key", "api_secret", "from", "text", "to"]);
    assert_eq!(request.field("api_key"), Some("vonage-key"));
    assert_eq!(request.field("api_secret"), Some("vonage-secret"));
    assert_eq!(request.field("from"), Some("Acme"));
    assert_eq!(request.field("to"), Some("16502530000"));
    assert_eq!(request.field("text"), Some(twilio.last_text().as_str()), "the same message to both");
    let code = vonage_fake.last_code();

    let view = status(&rp, &id).await;
    assert_eq!(view["otp"]["provider"], "vonage");
    assert_eq!(view["otp"]["message_id"], "0A00000000000001");
    assert_eq!(verify(&rp, &id, &code).await.expect(200)["status"], "approved");
}

async fn no_provider_delivers(db: Db) {
    let twilio = FakeSms::twilio().await;
    let vonage_fake = FakeSms::vonage().await;
    twilio.behave(Behaviour::Hang);
    vonage_fake.behave(Behaviour::Fail);
    let chain = vec![twilio_provider(&twilio), vonage_provider(&vonage_fake)];
    let app = TestApp::with_config(db, |c| {
        c.sms.providers = chain;
        c.sms.timeout_seconds = 1;
    })
    .await;
    let rp = app.rp();
    put_user(&rp, "jane", json!({ "phone": PHONE })).await;

    let r = rp.challenge(json!({ "user_id": "jane" })).await;
    r.problem(502, "delivery_failed");
    assert_eq!((twilio.received().len(), vonage_fake.received().len()), (1, 1), "a timeout moves on too");
    let id = r.body["challenge_id"].as_str().unwrap();
    let view = status(&rp, id).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["reason"], "delivery_failed");
    assert_eq!(view["otp"]["delivery"], "failed");
    assert_eq!(event_kinds(&rp, "jane").await, ["user.created", "challenge.created", "challenge.failed"]);

    // Each attempt is counted by provider and outcome.
    let metrics = reqwest::get(format!("{}/metrics", app.url)).await.unwrap().text().await.unwrap();
    for line in [
        r#"assent_messages_total{channel="sms",provider="twilio",outcome="timeout"} 1"#,
        r#"assent_messages_total{channel="sms",provider="vonage",outcome="failed"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing from:\n{metrics}");
    }

    // A retry with the same Idempotency-Key gets the same answer, and sends nothing.
    let body = json!({ "user_id": "jane" });
    let first = app
        .req(axum::http::Method::POST, "/v1/challenges")
        .header("idempotency-key", "k1")
        .json(body.clone())
        .send()
        .await;
    first.assert_problem(axum::http::StatusCode::BAD_GATEWAY, "delivery_failed");
    vonage_fake.behave(Behaviour::Accept);
    let retried =
        app.req(axum::http::Method::POST, "/v1/challenges").header("idempotency-key", "k1").json(body).send().await;
    retried.assert_problem(axum::http::StatusCode::BAD_GATEWAY, "delivery_failed");
    assert_eq!(retried.body["challenge_id"], first.body["challenge_id"]);
    assert_eq!(vonage_fake.received().len(), 2, "the retry sent nothing");
}

async fn email_code_through_smtp(db: Db) {
    let smtp = SmtpSink::start();
    let provider = EmailProviderConfig::Smtp(SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(smtp.port),
        tls: SmtpTls::None,
        username: None,
        password: None,
        from: "Acme Bank <no-reply@bank.example.com>".into(),
        timeout_seconds: Some(5),
    });
    let app = TestApp::with_config(db, |c| {
        c.app_name = "Acme Bank".into();
        c.email.provider = Some(provider);
    })
    .await;
    let rp = app.rp();
    put_user(&rp, "jane", json!({ "email": "jane@example.com" })).await;

    let created = rp.challenge(json!({ "user_id": "jane" })).await;
    let c = created.expect(201);
    assert_eq!(c["factor"], "email");
    assert_eq!(c["destination"], "j***@example.com");
    let id = c["id"].as_str().unwrap();

    let mail = smtp.wait_for(1).await.remove(0);
    assert!(mail.contains("X-Envelope-From: no-reply@bank.example.com"), "{mail}");
    assert!(mail.contains("X-Envelope-To: jane@example.com"), "{mail}");
    assert!(mail.contains("Subject: Your Acme Bank sign-in code"), "{mail}");
    assert!(mail.contains("To: jane@example.com"), "{mail}");
    let (headers, body) = mail.split_once("\r\n\r\n").unwrap();
    let message_id = headers.lines().find_map(|l| l.strip_prefix("Message-ID: ")).unwrap().trim().to_owned();
    let code = code_in(body);

    let view = status(&rp, id).await;
    assert_eq!(view["otp"]["provider"], "smtp");
    assert_eq!(view["otp"]["message_id"], message_id);
    assert_eq!(verify(&rp, id, &code).await.expect(200)["status"], "approved");
    let factors = rp.get("/v1/users/jane/factors").await;
    assert_eq!(factors.expect(200)["email"], json!({ "value": "jane@example.com", "verified": true }));
}

async fn five_wrong_codes_fail_the_challenge(db: Db) {
    let (app, twilio) = app_with_twilio(db, |_| {}).await;
    let rp = app.rp();
    put_user(&rp, "jane", json!({ "phone": PHONE })).await;
    let id = code_challenge(&rp, "jane").await;
    let code = twilio.last_code();

    for remaining in [4, 3, 2, 1, 0] {
        let r = verify(&rp, &id, &wrong(&code)).await;
        r.problem(400, "invalid_code");
        assert_eq!(r.body["attempts_remaining"], remaining);
    }
    let view = status(&rp, &id).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["reason"], "too_many_attempts");
    assert_eq!(view["otp"]["attempts_remaining"], 0);
    // Now not even the right code helps, and nothing more can be sent.
    verify(&rp, &id, &code).await.problem(409, "already_decided");
    rp.post(&format!("/v1/challenges/{id}/resend"), json!({})).await.problem(409, "already_decided");
    // Malformed codes count as wrong ones.
    let other = code_challenge(&rp, "jane").await;
    let r = verify(&rp, &other, "12ab").await;
    r.problem(400, "invalid_code");
    assert_eq!(r.body["attempts_remaining"], 4);

    let events = rp.get("/v1/events?user_id=jane").await;
    let failed: Vec<_> =
        events.body["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "challenge.failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["data"]["reason"], "too_many_attempts");
    assert_eq!(failed[0]["data"]["challenge_id"], id.as_str());
    let factors = rp.get("/v1/users/jane/factors").await;
    assert_eq!(factors.expect(200)["phone"]["verified"], false);
}

async fn expired_and_used_codes_are_refused(db: Db) {
    let (app, twilio) = app_with_twilio(db, |_| {}).await;
    let rp = app.rp();
    put_user(&rp, "jane", json!({ "phone": PHONE })).await;
    // Push challenges take no code (the phone is enrolled before the clock moves).
    put_user(&rp, "pushy", json!({ "phone": "+16502530001" })).await;
    let _phone = Phone::enroll(&rp.enrollment_uri("pushy").await).await;
    let r = rp.challenge(json!({ "user_id": "pushy", "ttl_seconds": 600 })).await;
    assert_eq!(r.expect(201)["factor"], "push");
    let push = r.body["id"].as_str().unwrap().to_owned();

    // A code lives five minutes.
    let created = rp.challenge(json!({ "user_id": "jane" })).await;
    let c = created.expect(201).clone();
    let id = c["id"].as_str().unwrap();
    let created_at = status(&rp, id).await["created_at"].as_str().unwrap().to_owned();
    let lifetime =
        time::OffsetDateTime::parse(c["expires_at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap()
            - time::OffsetDateTime::parse(&created_at, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(lifetime.whole_seconds(), 300);
    let code = twilio.last_code();
    app.advance(301);
    verify(&rp, id, &code).await.problem(410, "challenge_expired");
    assert_eq!(status(&rp, id).await["status"], "expired");

    // A used code is spent.
    let id = code_challenge(&rp, "jane").await;
    let code = twilio.last_code();
    verify(&rp, &id, &code).await.expect(200);
    verify(&rp, &id, &code).await.problem(409, "already_decided");

    // A shorter ttl_seconds shortens the code's life.
    let r = rp.challenge(json!({ "user_id": "jane", "ttl_seconds": 60 })).await;
    let id = r.expect(201)["id"].as_str().unwrap().to_owned();
    let code = twilio.last_code();
    app.advance(61);
    verify(&rp, &id, &code).await.problem(410, "challenge_expired");

    verify(&rp, &push, "123456").await.problem(409, "wrong_factor");
    rp.post(&format!("/v1/challenges/{push}/resend"), json!({})).await.problem(409, "wrong_factor");
    rp.post("/v1/challenges/chl_nope/verify", json!({ "code": "123456" })).await.problem(404, "not_found");
}

async fn resend_cooldown_and_limit(db: Db) {
    let (app, twilio) = app_with_twilio(db, |_| {}).await;
    let rp = app.rp();
    put_user(&rp, "jane", json!({ "phone": PHONE })).await;
    let id = code_challenge(&rp, "jane").await;
    let first = twilio.last_code();
    let resend = format!("/v1/challenges/{id}/resend");

    let early = rp.post(&resend, json!({})).await;
    early.problem(429, "rate_limited");
    let retry_after = |r: &Resp| r.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap();
    // 30 s after the send (less the moments this test took since).
    assert!((28..=30).contains(&retry_after(&early)), "{:?}", early.headers);
    app.advance(20);
    let later = rp.post(&resend, json!({})).await;
    later.problem(429, "rate_limited");
    assert!((8..=10).contains(&retry_after(&later)), "{:?}", later.headers);

    let mut codes = vec![first.clone()];
    for remaining in [2, 1, 0] {
        app.advance(30);
        let r = rp.post(&resend, json!({})).await;
        let view = r.expect(200);
        assert_eq!(view["status"], "pending");
        assert_eq!(view["otp"]["resends_remaining"], remaining);
        codes.push(twilio.last_code());
    }
    assert_eq!(twilio.received().len(), 4);
    app.advance(30);
    rp.post(&resend, json!({})).await.problem(429, "resend_limit");
    assert_eq!(twilio.received().len(), 4);

    // Each resend replaces the code and gives it five fresh minutes.
    app.advance(200);
    let latest = codes.last().unwrap().clone();
    for old in &codes[..3] {
        if *old != latest {
            verify(&rp, &id, old).await.problem(400, "invalid_code");
        }
    }
    assert_eq!(verify(&rp, &id, &latest).await.expect(200)["status"], "approved");
    let kinds = event_kinds(&rp, "jane").await;
    assert_eq!(kinds.iter().filter(|k| *k == "challenge.resent").count(), 3);
}

async fn factor_choice(db: Db) {
    let (app, twilio) = app_with_twilio(db, |_| {}).await;
    let rp = app.rp();
    put_user(&rp, "nobody", json!({})).await;
    rp.challenge(json!({ "user_id": "nobody" })).await.problem(422, "no_factor");
    rp.challenge(json!({ "user_id": "nobody", "channel": "push" })).await.problem(422, "no_device");

    put_user(&rp, "mailonly", json!({ "email": "mail@example.com" })).await;
    rp.challenge(json!({ "user_id": "mailonly", "channel": "sms" })).await.problem(422, "no_factor");
    let r = rp.challenge(json!({ "user_id": "mailonly" })).await;
    assert_eq!(r.expect(201)["factor"], "email", "dev mode logs email with nothing configured");

    put_user(&rp, "both", json!({ "phone": PHONE, "email": "both@example.com" })).await;
    let r = rp.challenge(json!({ "user_id": "both" })).await;
    assert_eq!(r.expect(201)["factor"], "sms", "SMS before email");
    let r = rp.challenge(json!({ "user_id": "both", "channel": "email" })).await;
    assert_eq!(r.expect(201)["factor"], "email");
    assert_eq!(r.body["destination"], "b***@example.com");

    // A user with a device gets push; codes only when configuration allows it.
    let _phone = Phone::enroll(&rp.enrollment_uri("both").await).await;
    let r = rp.challenge(json!({ "user_id": "both" })).await;
    assert_eq!(r.expect(201)["factor"], "push");
    rp.challenge(json!({ "user_id": "both", "channel": "sms" })).await.problem(409, "device_exists");
    rp.challenge(json!({ "user_id": "both", "channel": "email" })).await.problem(409, "device_exists");
    let sent = twilio.received().len();

    let allowing = FakeSms::twilio().await;
    let provider = twilio_provider(&allowing);
    let app = TestApp::with_config(db, |c| {
        c.sms.providers = vec![provider];
        c.fallback.allow_with_device = true;
    })
    .await;
    let rp2 = app.rp();
    put_user(&rp2, "both", json!({ "phone": PHONE })).await;
    let _phone = Phone::enroll(&rp2.enrollment_uri("both").await).await;
    assert_eq!(rp2.challenge(json!({ "user_id": "both" })).await.expect(201)["factor"], "push");
    assert_eq!(rp2.challenge(json!({ "user_id": "both", "channel": "sms" })).await.expect(201)["factor"], "sms");
    assert_eq!(allowing.received().len(), 1);
    assert_eq!(twilio.received().len(), sent);

    // Production with no provider configured: no codes at all.
    let app = TestApp::with_config(db, |c| c.mode = Mode::Production).await;
    let rp3 = app.rp();
    put_user(&rp3, "both", json!({ "phone": PHONE, "email": "both@example.com" })).await;
    rp3.challenge(json!({ "user_id": "both" })).await.problem(422, "no_factor");
    rp3.challenge(json!({ "user_id": "both", "channel": "sms" })).await.problem(422, "factor_not_configured");
    rp3.challenge(json!({ "user_id": "both", "channel": "email" })).await.problem(422, "factor_not_configured");
}

async fn toll_fraud_guard(db: Db) {
    let (app, twilio) = app_with_twilio(db, |c| {
        c.sms.allowed_countries = vec!["US".into(), "GB".into()];
        c.sms.limits.per_number_10min = 2;
        c.sms.limits.per_number_day = 3;
        c.sms.limits.per_country_10min = 3;
        c.sms.limits.per_country_day = 0;
    })
    .await;
    // Windows are fixed (aligned to the epoch): start at 01:00 UTC so none ends mid-test.
    let now = app.state.now();
    let next_day = (now + time::Duration::days(1)).replace_time(time::macros::time!(01:00));
    app.clock.advance(next_day - now);
    let rp = app.rp();

    put_user(&rp, "fr", json!({ "phone": "+33 6 12 34 56 78" })).await;
    rp.challenge(json!({ "user_id": "fr" })).await.problem(422, "country_not_allowed");
    put_user(&rp, "premium", json!({ "phone": "+44 909 879 0000" })).await;
    rp.challenge(json!({ "user_id": "premium" })).await.problem(422, "number_not_allowed");
    put_user(&rp, "landline", json!({ "phone": "+44 20 7946 0958" })).await;
    rp.challenge(json!({ "user_id": "landline" })).await.problem(422, "number_not_allowed");
    assert!(twilio.received().is_empty());

    // Per number: 2 per 10 minutes, 3 per day.
    put_user(&rp, "jane", json!({ "phone": PHONE })).await;
    code_challenge(&rp, "jane").await;
    code_challenge(&rp, "jane").await;
    let limited = rp.challenge(json!({ "user_id": "jane" })).await;
    limited.problem(429, "rate_limited");
    let wait: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((590..=600).contains(&wait), "until the 10-minute window ends: {wait}");
    app.advance(600);
    let id = code_challenge(&rp, "jane").await;
    let daily = rp.challenge(json!({ "user_id": "jane" })).await;
    daily.problem(429, "rate_limited");
    let wait: u64 = daily.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((23 * 3600 - 610..=23 * 3600 - 600).contains(&wait), "until the day's window ends: {wait}");
    // Resends count too.
    app.advance(30);
    rp.post(&format!("/v1/challenges/{id}/resend"), json!({})).await.problem(429, "rate_limited");
    assert_eq!(twilio.received().len(), 3, "refused sends were not sent, nor counted");

    // Per country calling code: 3 per 10 minutes across numbers (jane's third send counts).
    for (user, number) in [("a", "+16502530001"), ("b", "+16502530002"), ("c", "+16502530003")] {
        put_user(&rp, user, json!({ "phone": number })).await;
        let r = rp.challenge(json!({ "user_id": user })).await;
        if user == "c" {
            r.problem(429, "rate_limited");
        } else {
            r.expect(201);
        }
    }
    // An email is not an SMS: other limits.
    put_user(&rp, "mail", json!({ "email": "mail@example.com" })).await;
    rp.challenge(json!({ "user_id": "mail" })).await.expect(201);
}

async fn changed_destination_is_unverified(db: Db) {
    let (app, twilio) = app_with_twilio(db, |_| {}).await;
    let rp = app.rp();
    put_user(&rp, "jane", json!({ "phone": PHONE })).await;
    let id = code_challenge(&rp, "jane").await;
    verify(&rp, &id, &twilio.last_code()).await.expect(200);
    assert_eq!(rp.get("/v1/users/jane").await.expect(200)["phone_verified"], true);

    // The phone changes while a code to the old one is pending: approving it verifies nothing.
    app.advance(30);
    let pending = code_challenge(&rp, "jane").await;
    let old_code = twilio.last_code();
    put_user(&rp, "jane", json!({ "phone": "+16502530009" })).await;
    let user = rp.get("/v1/users/jane").await;
    assert_eq!(user.expect(200)["phone_verified"], false);
    verify(&rp, &pending, &old_code).await.expect(200);
    let factors = rp.get("/v1/users/jane/factors").await;
    assert_eq!(factors.expect(200)["phone"], json!({ "value": "+16502530009", "verified": false }));

    let events = rp.get("/v1/events?user_id=jane").await;
    let updated: Vec<_> =
        events.body["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "user.updated").collect();
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0]["data"], json!({ "fields": ["phone"], "unverified": ["phone"] }));
}
