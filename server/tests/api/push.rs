//! The push protocol end to end over HTTP: enrollment, device proofs, challenges, responses,
//! anti-fatigue, fraud lock, idempotency, long-poll, webhooks.

use assent_protocol::jws::{self, JwsType, KeyRef};
use assent_protocol::messages::{Decision, PushProvider, PushRegistration, ResponseClaims, challenge_hash};
use assent_protocol::{EnrollUri, Jwks};
use assent_tests::phone::{Phone, Rp, enroll_jws, unix_now};
use serde_json::{Value, json};

use crate::both_databases;
use crate::support::{Db, TestApp};

both_databases!(
    enroll_challenge_approve_with_evidence,
    deny_and_number_mismatch,
    fraud_locks_push_until_unlocked,
    replays_are_refused,
    answer_proofs_are_spent_whatever_the_outcome,
    fetch_proofs_are_spent_whatever_the_outcome,
    challenge_reads_check_the_key_first,
    challenge_creation_checks_the_key_first,
    one_answer_proof_decides_once_under_concurrency,
    revoked_after_fetch_cannot_answer,
    other_devices_cannot_answer,
    changed_chash_is_refused_and_challenge_stays_pending,
    expired_challenges,
    proof_rules,
    malformed_jws_are_problems_never_500,
    enrollment_tokens_are_single_use,
    exactly_one_decision_under_concurrency,
    anti_fatigue_supersedes_and_limits,
    idempotency_key,
    revoked_device_and_unenroll,
    long_poll_wakes_on_decision,
    webhook_retried_until_accepted_once,
    cancel_challenge,
    deleted_user_leaves_nothing_behind,
);

async fn setup(app: &TestApp, user: &str) -> (Rp, Phone) {
    let rp = app.rp();
    rp.user(user, &format!("{user} display")).await;
    let phone = Phone::enroll(&rp.enrollment_uri(user).await).await;
    (rp, phone)
}

async fn new_challenge(rp: &Rp, body: Value) -> (String, Option<u8>) {
    let r = rp.challenge(body).await;
    let b = r.expect(201);
    assert_eq!(b["status"], "pending");
    (b["id"].as_str().unwrap().to_owned(), b["number"].as_u64().map(|n| n as u8))
}

async fn enroll_challenge_approve_with_evidence(db: Db) {
    let app = TestApp::new(db).await;
    let rp = app.rp();
    rp.user("alice", "Alice").await;
    let enrollment = rp.post("/v1/users/alice/enrollments", json!({})).await;
    let e = enrollment.expect(201).clone();
    assert!(e["id"].as_str().unwrap().starts_with("enr_"));
    assert!(e["qr_svg"].as_str().unwrap().contains("<svg"));
    let uri = EnrollUri::parse(e["uri"].as_str().unwrap()).unwrap();
    assert_eq!(uri.user, "Alice");
    assert_eq!(uri.token, e["token"]);
    let jwks: Jwks = serde_json::from_value(
        reqwest::get(format!("{}/v1/server-keys", app.url)).await.unwrap().json().await.unwrap(),
    )
    .unwrap();
    assert!(jwks.by_thumbprint(&uri.kid).is_some(), "the QR kid is the server key's thumbprint");

    let phone = Phone::enroll(e["uri"].as_str().unwrap()).await;
    assert!(phone.device_id.starts_with("dev_"));
    let factors = rp.get("/v1/users/alice/factors").await;
    assert_eq!(factors.expect(200)["devices"][0]["id"], phone.device_id.as_str());

    let (id, number) = new_challenge(
        &rp,
        json!({
            "user_id": "alice", "title": "Pay EUR 1,250.00 to ACME GmbH",
            "details": [{"label": "Amount", "value": "EUR 1,250.00"}, {"label": "Payee", "value": "ACME GmbH"}],
            "context": {"ip": "203.0.113.9", "location": "Berlin, DE"}, "number_matching": true, "ttl_seconds": 60,
        }),
    )
    .await;
    let number = number.expect("number matching gives a number");
    assert!((10..=99).contains(&number));

    assert_eq!(phone.pending().await.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>(), std::slice::from_ref(&id));
    let (_, claims) = phone.fetch(&id).await;
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.aud, std::slice::from_ref(&phone.device_id));
    assert_eq!(claims.title, "Pay EUR 1,250.00 to ACME GmbH");
    assert_eq!(claims.details[1].value, "ACME GmbH");
    assert_eq!(claims.context.location.as_deref(), Some("Berlin, DE"));
    assert_eq!(claims.exp - claims.iat, 60);
    let choices = claims.number_choices.clone().unwrap();
    assert_eq!(choices.len(), 3);

    let answered = phone.answer(&id, Decision::Approve, Some(number)).await;
    assert_eq!(*answered.expect(200), json!({"id": id, "status": "approved"}));

    let result = rp.get(&format!("/v1/challenges/{id}")).await;
    let r = result.expect(200);
    assert_eq!(r["status"], "approved");
    assert_eq!(r["factor"], "push");
    assert_eq!(r["device_id"], phone.device_id.as_str());
    assert!(r["decided_at"].is_string());
    assert_eq!(r["deliveries"], json!([{"device_id": phone.device_id, "provider": "none", "status": "not_sent"}]));
    // The evidence verifies with the device key and binds to the exact challenge.
    let evidence = jws::decode_and_verify(
        r["evidence"]["response"].as_str().unwrap(),
        JwsType::Response,
        phone.key.verifying_key(),
    )
    .unwrap();
    let claims: ResponseClaims = evidence.claims().unwrap();
    assert_eq!(claims.chash, challenge_hash(r["evidence"]["challenge"].as_str().unwrap()));
    assert_eq!(r["evidence"]["user_verified"], true);
    assert!(phone.pending().await.is_empty());

    let events = rp.get("/v1/events?user_id=alice").await;
    let kinds: Vec<_> =
        events.body["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        kinds,
        ["user.created", "enrollment.created", "device.enrolled", "challenge.created", "challenge.approved"]
    );
}

async fn deny_and_number_mismatch(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "bob").await;
    let (id, _) = new_challenge(&rp, json!({"user_id": "bob"})).await;
    phone.answer(&id, Decision::Deny, None).await.expect(200);
    assert_eq!(rp.get(&format!("/v1/challenges/{id}")).await.body["status"], "denied");

    let (id, number) = new_challenge(&rp, json!({"user_id": "bob", "number_matching": true})).await;
    let (jws, claims) = phone.fetch(&id).await;
    let wrong = claims.number_choices.unwrap().into_iter().find(|n| Some(*n) != number).unwrap();
    let r = phone.post_response(&id, &phone.response_jws(&id, &jws, Decision::Approve, Some(wrong))).await;
    assert_eq!(r.expect(200)["status"], "denied");
    let c = rp.get(&format!("/v1/challenges/{id}")).await;
    assert_eq!(c.body["status"], "denied");
    assert_eq!(c.body["reason"], "number_mismatch");

    // Approving a number-matching challenge without a number is a mismatch too.
    let (id, _) = new_challenge(&rp, json!({"user_id": "bob", "number_matching": true})).await;
    let (jws, _) = phone.fetch(&id).await;
    let r = phone.post_response(&id, &phone.response_jws(&id, &jws, Decision::Approve, None)).await;
    assert_eq!(r.expect(200)["status"], "denied");
}

async fn fraud_locks_push_until_unlocked(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "carol").await;
    let (id, _) = new_challenge(&rp, json!({"user_id": "carol"})).await;
    phone.answer(&id, Decision::Fraud, None).await.expect(200);
    assert_eq!(rp.get(&format!("/v1/challenges/{id}")).await.body["status"], "fraud_reported");
    rp.challenge(json!({"user_id": "carol"})).await.problem(409, "push_locked");
    let events = rp.get("/v1/events?user_id=carol").await;
    assert!(events.body["events"].as_array().unwrap().iter().any(|e| e["kind"] == "user.locked"));

    assert_eq!(rp.post("/v1/users/carol/unlock", json!({})).await.expect(200)["unlocked"], true);
    assert_eq!(rp.post("/v1/users/carol/unlock", json!({})).await.expect(200)["unlocked"], false);
    let (id, _) = new_challenge(&rp, json!({"user_id": "carol"})).await;
    phone.answer(&id, Decision::Approve, None).await.expect(200);
}

async fn replays_are_refused(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "dave").await;
    let (id, _) = new_challenge(&rp, json!({"user_id": "dave"})).await;
    let (jws, _) = phone.fetch(&id).await;
    let response = phone.response_jws(&id, &jws, Decision::Approve, None);
    let body = serde_json::to_vec(&json!({"response": response})).unwrap();
    let path = format!("/v1/device/challenges/{id}/response");
    let proof = phone.proof("POST", &path, &body);
    phone.send_with_proof("POST", &path, Some(body.clone()), &proof).await.expect(200);
    // The same request again: its proof is spent.
    phone.send_with_proof("POST", &path, Some(body.clone()), &proof).await.problem(401, "proof_replayed");
    // The same response with a fresh proof: the challenge is no longer pending.
    phone.post_response(&id, &response).await.problem(409, "already_decided");
    assert_eq!(rp.get(&format!("/v1/challenges/{id}")).await.body["status"], "approved");
    // A response for one challenge cannot answer another.
    let (other, _) = new_challenge(&rp, json!({"user_id": "dave"})).await;
    phone.post_response(&other, &response).await.problem(400, "invalid_response");
}

/// Sends `body` to `path` twice with one proof: the first time it gets `status` and `code`,
/// the second `proof_replayed`.
async fn spends_its_proof(phone: &Phone, path: &str, body: &[u8], status: u16, code: &str) {
    let proof = phone.proof("POST", path, body);
    phone.send_with_proof("POST", path, Some(body.to_vec()), &proof).await.problem(status, code);
    phone.send_with_proof("POST", path, Some(body.to_vec()), &proof).await.problem(401, "proof_replayed");
}

/// Fetches one challenge with a new proof, expecting `status` (and `code`, unless 200), then
/// sends the same proof again: a replay.
async fn fetch_spends_its_proof(phone: &Phone, id: &str, status: u16, code: &str) {
    let path = format!("/v1/device/challenges/{id}");
    let proof = phone.proof("GET", &path, b"");
    let first = phone.send_with_proof("GET", &path, None, &proof).await;
    if status == 200 {
        assert_eq!(first.expect(200)["id"], id);
    } else {
        first.problem(status, code);
    }
    phone.send_with_proof("GET", &path, None, &proof).await.problem(401, "proof_replayed");
}

/// A fetch's proof is recorded in the statement that reads the challenge; a fetch refused
/// for the challenge spends its proof all the same, and a refused proof reads nothing.
async fn fetch_proofs_are_spent_whatever_the_outcome(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "ursula").await;
    let (id, _) = new_challenge(&rp, json!({"user_id": "ursula"})).await;
    fetch_spends_its_proof(&phone, &id, 200, "").await;
    fetch_spends_its_proof(&phone, "chl_0000000000000000000000000000000a", 404, "not_found").await;
    // Addressed to the user's devices of the moment: a device enrolled later cannot fetch it.
    let later = Phone::enroll(&rp.enrollment_uri("ursula").await).await;
    fetch_spends_its_proof(&later, &id, 404, "not_found").await;

    let (jws, _) = phone.fetch(&id).await;
    phone.post_response(&id, &phone.response_jws(&id, &jws, Decision::Approve, None)).await.expect(200);
    fetch_spends_its_proof(&phone, &id, 409, "already_decided").await;

    let (id, _) = new_challenge(&rp, json!({"user_id": "ursula", "ttl_seconds": 15})).await;
    app.advance(16);
    let mut late = phone.clone();
    late.skew = 16;
    fetch_spends_its_proof(&late, &id, 410, "challenge_expired").await;

    // A revoked device reads nothing.
    let (id, _) = new_challenge(&rp, json!({"user_id": "ursula"})).await;
    let r = rp.call(reqwest::Method::DELETE, &format!("/v1/users/ursula/devices/{}", later.device_id), None).await;
    assert_eq!(r.status, 204);
    later.send("GET", &format!("/v1/device/challenges/{id}"), None).await.problem(401, "device_revoked");
}

/// An answer's proof is recorded with its decision; an answer refused before or at the
/// decision spends its proof all the same.
async fn answer_proofs_are_spent_whatever_the_outcome(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "olga").await;
    let (id, _) = new_challenge(&rp, json!({"user_id": "olga"})).await;
    let (jws, _) = phone.fetch(&id).await;
    let path = format!("/v1/device/challenges/{id}/response");
    let body = |response: &str| serde_json::to_vec(&json!({ "response": response })).unwrap();

    spends_its_proof(&phone, &path, b"{", 400, "malformed_json").await;
    spends_its_proof(&phone, &path, &body("not.a.jws"), 400, "invalid_response").await;
    let other = phone.response_jws(&id, "another challenge", Decision::Approve, None);
    spends_its_proof(&phone, &path, &body(&other), 422, "chash_mismatch").await;
    let unknown = "chl_0000000000000000000000000000000a";
    let to_unknown = phone.response_jws(unknown, &jws, Decision::Approve, None);
    let unknown_path = format!("/v1/device/challenges/{unknown}/response");
    spends_its_proof(&phone, &unknown_path, &body(&to_unknown), 404, "not_found").await;
    assert_eq!(rp.get(&format!("/v1/challenges/{id}")).await.body["status"], "pending");

    // The decision and its proof, committed together.
    let approve = body(&phone.response_jws(&id, &jws, Decision::Approve, None));
    let proof = phone.proof("POST", &path, &approve);
    phone.send_with_proof("POST", &path, Some(approve.clone()), &proof).await.expect(200);
    phone.send_with_proof("POST", &path, Some(approve.clone()), &proof).await.problem(401, "proof_replayed");
    // Too late: the answer is refused and its proof spent.
    spends_its_proof(&phone, &path, &approve, 409, "already_decided").await;
    assert_eq!(rp.get(&format!("/v1/challenges/{id}")).await.body["status"], "approved");

    // The same through the transaction a fraud report takes.
    let (id, _) = new_challenge(&rp, json!({"user_id": "olga"})).await;
    let (jws, _) = phone.fetch(&id).await;
    rp.post(&format!("/v1/challenges/{id}/cancel"), json!({})).await.expect(200);
    let path = format!("/v1/device/challenges/{id}/response");
    let fraud = body(&phone.response_jws(&id, &jws, Decision::Fraud, None));
    spends_its_proof(&phone, &path, &fraud, 409, "already_decided").await;
    assert_eq!(rp.get(&format!("/v1/challenges/{id}")).await.body["status"], "cancelled");
    // Nothing followed from the refused report: push is not locked.
    new_challenge(&rp, json!({"user_id": "olga"})).await;
}

/// The RP's read of a challenge checks its API key in the statement that reads the
/// challenge: a missing, wrong or revoked key is refused whatever the challenge and the query.
async fn challenge_reads_check_the_key_first(db: Db) {
    use assent_server::api_keys;
    use assent_server::audit::Actor;
    use assent_server::clock::Clock as _;
    use axum::http::{Method, StatusCode};
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "vera").await;
    let (id, _) = new_challenge(&rp, json!({"user_id": "vera"})).await;
    let key = api_keys::create(&app.state.store, "reader", app.clock.now(), &Actor::Cli).await.unwrap();
    let good = format!("Bearer {}", key.token);
    let path = format!("/v1/challenges/{id}");
    let unknown = "/v1/challenges/chl_0000000000000000000000000000000a".to_owned();
    let bad_query = format!("{path}?wait=soon");

    let read = app.anon(Method::GET, &path).auth(&good).send().await;
    assert_eq!(read.assert_status(StatusCode::OK)["status"], "pending");
    app.anon(Method::GET, &unknown).auth(&good).send().await.assert_problem(StatusCode::NOT_FOUND, "not_found");
    let r = app.anon(Method::GET, &bad_query).auth(&good).send().await;
    r.assert_problem(StatusCode::BAD_REQUEST, "invalid_query");

    let refused = |bearer: Option<String>| {
        let app = &app;
        let paths = [path.clone(), unknown.clone(), bad_query.clone()];
        async move {
            for p in paths {
                let call = app.anon(Method::GET, &p);
                let call = match &bearer {
                    Some(b) => call.auth(b),
                    None => call,
                };
                call.send().await.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
            }
        }
    };
    refused(None).await;
    refused(Some(format!("Bearer {}.wrongsecret", key.id))).await;
    refused(Some("Bearer key_00000000000000000000000000000000.x".to_owned())).await;
    refused(Some("Bearer nonsense".to_owned())).await;

    // A long-poll with the key sees the answer.
    let poll = app.anon(Method::GET, &format!("{path}?wait=10")).auth(&good).send();
    let answer = async {
        let (jws, _) = phone.fetch(&id).await;
        phone.post_response(&id, &phone.response_jws(&id, &jws, Decision::Approve, None)).await.expect(200);
    };
    let (polled, ()) = tokio::join!(poll, answer);
    assert_eq!(polled.assert_status(StatusCode::OK)["status"], "approved");

    api_keys::revoke(&app.state.store, &key.id, app.clock.now(), &Actor::Cli).await.unwrap();
    refused(Some(good.clone())).await;
}

/// A new challenge's API key is checked in the statement that reads the user's devices, or
/// on its own before anything else is answered or written: a wrong or revoked key creates
/// nothing and learns nothing, whatever the body, the user or the idempotency key.
async fn challenge_creation_checks_the_key_first(db: Db) {
    use assent_server::api_keys;
    use assent_server::audit::Actor;
    use assent_server::clock::Clock as _;
    use axum::http::{Method, StatusCode};
    let app = TestApp::new(db).await;
    let (rp, _phone) = setup(&app, "wanda").await;
    rp.user("xavier", "no device").await;
    let key = api_keys::create(&app.state.store, "creator", app.clock.now(), &Actor::Cli).await.unwrap();
    let good = format!("Bearer {}", key.token);
    let create = |bearer: String, body: Value, idempotency: Option<&'static str>| {
        let app = &app;
        async move {
            let mut call = app.anon(Method::POST, "/v1/challenges").auth(&bearer).json(body);
            if let Some(k) = idempotency {
                call = call.header("idempotency-key", k);
            }
            call.send().await
        }
    };
    let push = json!({"user_id": "wanda", "title": "Pay EUR 42.00"});
    let first = create(good.clone(), push.clone(), Some("once")).await;
    let id = first.assert_status(StatusCode::CREATED)["id"].clone();

    let bodies = [
        (push.clone(), None),                                  // the snapshot's path
        (push.clone(), Some("once")),                          // an idempotent replay
        (json!({"user_id": "xavier"}), None),                  // no device: the locked path
        (json!({"user_id": "nobody"}), None),                  // no such user
        (json!({"user_id": "wanda", "ttl_seconds": 1}), None), // invalid
        (json!({"title": 42}), None),                          // malformed
    ];
    for bearer in [format!("Bearer {}.wrongsecret", key.id), "Bearer key_00000000000000000000000000000000.x".to_owned()]
    {
        for (body, idempotency) in bodies.clone() {
            let r = create(bearer.clone(), body.clone(), idempotency).await;
            r.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    api_keys::revoke(&app.state.store, &key.id, app.clock.now(), &Actor::Cli).await.unwrap();
    for (body, idempotency) in bodies {
        create(good.clone(), body, idempotency).await.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // Nothing was created: the first challenge is still the user's one pending push.
    let pending = rp.get(&format!("/v1/challenges/{}", id.as_str().unwrap())).await;
    assert_eq!(pending.body["status"], "pending");
    let events = rp.get("/v1/events?user_id=wanda").await;
    let created = events.body["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "challenge.created").count();
    assert_eq!(created, 1);
}

/// The same answer sent many times at once, with one proof: one decision, one event, and
/// every other copy refused as a replay. Through the single statement (approve) and the
/// transaction (fraud report).
async fn one_answer_proof_decides_once_under_concurrency(db: Db) {
    let app = TestApp::new(db).await;
    for (user, decision, kind) in
        [("pia", Decision::Approve, "challenge.approved"), ("quentin", Decision::Fraud, "challenge.fraud_reported")]
    {
        let (rp, phone) = setup(&app, user).await;
        let (id, _) = new_challenge(&rp, json!({"user_id": user})).await;
        let (jws, _) = phone.fetch(&id).await;
        let path = format!("/v1/device/challenges/{id}/response");
        let body = serde_json::to_vec(&json!({ "response": phone.response_jws(&id, &jws, decision, None) })).unwrap();
        let proof = phone.proof("POST", &path, &body);
        let mut copies = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (phone, path, body, proof) = (phone.clone(), path.clone(), body.clone(), proof.clone());
            copies.spawn(async move { phone.send_with_proof("POST", &path, Some(body), &proof).await });
        }
        let mut decided = 0;
        for answer in copies.join_all().await {
            if answer.status == 200 {
                decided += 1;
            } else {
                answer.problem(401, "proof_replayed");
            }
        }
        assert_eq!(decided, 1, "{user}");
        let events = rp.get(&format!("/v1/events?user_id={user}")).await;
        let logged = events.body["events"].as_array().unwrap().iter().filter(|e| e["kind"] == kind).count();
        assert_eq!(logged, 1, "{user}");
    }
}

/// A device revoked between fetching a challenge and answering it cannot decide it, whether
/// the answer takes the single statement (approve) or the transaction (fraud report).
async fn revoked_after_fetch_cannot_answer(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, _) = setup(&app, "rita").await;
    for decision in [Decision::Approve, Decision::Fraud] {
        let phone = Phone::enroll(&rp.enrollment_uri("rita").await).await;
        let (id, _) = new_challenge(&rp, json!({"user_id": "rita"})).await;
        let (jws, _) = phone.fetch(&id).await;
        let r = rp.call(reqwest::Method::DELETE, &format!("/v1/users/rita/devices/{}", phone.device_id), None).await;
        assert_eq!(r.status, 204);
        let answer = phone.response_jws(&id, &jws, decision, None);
        phone.post_response(&id, &answer).await.problem(401, "device_revoked");
        let challenge = rp.get(&format!("/v1/challenges/{id}")).await;
        assert_ne!(challenge.body["status"], "approved");
        assert_ne!(challenge.body["status"], "fraud_reported");
    }
    // Nothing followed from the refused fraud report: push is not locked.
    rp.post("/v1/users/rita/unlock", json!({})).await.expect(200);
    let events = rp.get("/v1/events?user_id=rita").await;
    assert!(!events.body["events"].as_array().unwrap().iter().any(|e| e["kind"] == "user.locked"));
}

async fn other_devices_cannot_answer(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, alice_phone) = setup(&app, "erin").await;
    let (_, mallory_phone) = setup(&app, "mallory").await;
    let (id, _) = new_challenge(&rp, json!({"user_id": "erin"})).await;
    let (jws, _) = alice_phone.fetch(&id).await;

    // Another user's device: the challenge was not addressed to it.
    mallory_phone.send("GET", &format!("/v1/device/challenges/{id}"), None).await.problem(404, "not_found");
    let forged = mallory_phone.response_jws(&id, &jws, Decision::Approve, None);
    mallory_phone.post_response(&id, &forged).await.problem(404, "not_found");
    // Its response carried by the right device's request: the kid is not that device.
    alice_phone.post_response(&id, &forged).await.problem(400, "invalid_response");
    // Signed by another key under the right kid: the signature fails.
    let claims = ResponseClaims {
        jti: id.clone(),
        decision: Decision::Approve,
        chash: challenge_hash(&jws),
        number: None,
        uv: true,
        iat: unix_now(),
    };
    let wrong_key =
        jws::sign(JwsType::Response, KeyRef::Kid(&alice_phone.device_id), &claims, &mallory_phone.key).unwrap();
    alice_phone.post_response(&id, &wrong_key).await.problem(400, "invalid_response");
    // A proof signed by another key under this device's kid.
    let mut impostor = alice_phone.clone();
    impostor.key = mallory_phone.key.clone();
    impostor.send("GET", "/v1/device/challenges", None).await.problem(401, "invalid_proof");
    assert_eq!(rp.get(&format!("/v1/challenges/{id}")).await.body["status"], "pending");
    alice_phone.answer(&id, Decision::Approve, None).await.expect(200);
}

async fn changed_chash_is_refused_and_challenge_stays_pending(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "frank").await;
    let (id, _) =
        new_challenge(&rp, json!({"user_id": "frank", "details": [{"label": "Amount", "value": "EUR 10.00"}]})).await;
    let (jws, _) = phone.fetch(&id).await;
    // The phone was shown something else than the server signed (a tampered copy).
    let tampered = jws.replacen('.', ".x", 1);
    phone
        .post_response(&id, &phone.response_jws(&id, &tampered, Decision::Approve, None))
        .await
        .problem(422, "chash_mismatch");
    assert_eq!(rp.get(&format!("/v1/challenges/{id}")).await.body["status"], "pending");
}

async fn expired_challenges(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "gina").await;
    let (id, _) = new_challenge(&rp, json!({"user_id": "gina", "ttl_seconds": 15})).await;
    let (jws, _) = phone.fetch(&id).await;
    app.advance(16);
    let mut late = phone.clone();
    late.skew = 16; // the phone's clock moved too
    let c = rp.get(&format!("/v1/challenges/{id}")).await;
    assert_eq!(c.expect(200)["status"], "expired");
    late.send("GET", &format!("/v1/device/challenges/{id}"), None).await.problem(410, "challenge_expired");
    late.post_response(&id, &late.response_jws(&id, &jws, Decision::Approve, None))
        .await
        .problem(410, "challenge_expired");
    assert!(late.pending().await.is_empty());
    let events = rp.get("/v1/events?user_id=gina").await;
    assert!(events.body["events"].as_array().unwrap().iter().any(|e| e["kind"] == "challenge.expired"));
    rp.challenge(json!({"user_id": "gina", "ttl_seconds": 14})).await.problem(422, "invalid_ttl");
    rp.challenge(json!({"user_id": "gina", "ttl_seconds": 601})).await.problem(422, "invalid_ttl");
}

async fn proof_rules(db: Db) {
    let app = TestApp::new(db).await;
    let (_rp, phone) = setup(&app, "hank").await;
    let path = "/v1/device/challenges";
    // Stale iat, both ways.
    for skew in [-62, 62] {
        let mut p = phone.clone();
        p.skew = skew;
        p.send("GET", path, None).await.problem(401, "stale_proof");
    }
    // Method, path, query and body are bound.
    let proof = phone.proof("GET", "/v1/device/challenges?x=1", b"");
    phone.send_with_proof("GET", path, None, &proof).await.problem(401, "proof_mismatch");
    let proof = phone.proof("POST", path, b"");
    phone.send_with_proof("GET", path, None, &proof).await.problem(401, "proof_mismatch");
    let body = serde_json::to_vec(&json!({"provider": "none"})).unwrap();
    let proof = phone.proof("PUT", "/v1/device/push-token", b"{\"provider\":\"fcm\",\"token\":\"x\"}");
    phone
        .send_with_proof("PUT", "/v1/device/push-token", Some(body.clone()), &proof)
        .await
        .problem(401, "proof_mismatch");
    let proof = phone.proof("PUT", "/v1/device/push-token", &body);
    let ok = phone.send_with_proof("PUT", "/v1/device/push-token", Some(body), &proof).await;
    assert_eq!(ok.status, 204, "{}", ok.body);
    // No proof, or another scheme.
    let http = reqwest::Client::new();
    let r = http.get(format!("{}{path}", app.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Assent-Proof");
    let r = http.get(format!("{}{path}", app.url)).bearer_auth(&app.admin_key).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

async fn malformed_jws_are_problems_never_500(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "ivy").await;
    let http = reqwest::Client::new();
    let enroll = |body: String| {
        let http = http.clone();
        let url = format!("{}/v1/device/enroll", app.url);
        async move { assent_tests::phone::Resp::from_response(http.post(url).body(body).send().await.unwrap()).await }
    };
    let uri = EnrollUri::parse(&rp.enrollment_uri("ivy").await).unwrap();
    let key = assent_protocol::p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let good = enroll_jws(&key, &uri.token, PushRegistration { provider: PushProvider::None, token: None }, unix_now());
    let (h, rest) = good.split_once('.').unwrap();
    let b64 = |v: Value| assent_protocol::b64::encode(serde_json::to_string(&v).unwrap().as_bytes());
    let cases = [
        String::new(),
        "not a jws".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        format!("{}.{rest}", b64(json!({"alg": "none", "typ": "assent-enroll+jwt"}))),
        format!("{}.{rest}", b64(json!({"alg": "HS256", "typ": "assent-enroll+jwt"}))),
        format!("{}.{rest}", b64(json!({"alg": "ES256", "typ": "assent-proof+jwt", "kid": "dev_x"}))),
        format!("{h}.{}", rest.replacen('.', ".AAAA", 1)),
        format!("{h}=.{rest}"),
        "x".repeat(20_000),
        format!("{h}.{rest}").replace(&rest[..4], "////"),
    ];
    for body in cases {
        let r = enroll(body.clone()).await;
        assert!(r.status == 400, "enroll body {body:.60}: {} {}", r.status, r.body);
        assert_eq!(r.headers["content-type"], "application/problem+json");
    }
    // The untouched enrollment still works: nothing above consumed the token.
    assert_eq!(enroll(good).await.status, 201);

    let (id, _) = new_challenge(&rp, json!({"user_id": "ivy"})).await;
    for response in ["", "x.y.z", "e30.e30.AAAA", &phone.proof("GET", "/", b"")] {
        let r = phone.post_response(&id, response).await;
        assert_eq!(r.status, 400, "{response}: {}", r.body);
    }
    phone
        .send("POST", &format!("/v1/device/challenges/{id}/response"), Some(json!({"nope": 1})))
        .await
        .problem(400, "malformed_json");
    for auth in ["Assent-Proof", "Assent-Proof x", "Assent-Proof a.b.c", "Bearer x"] {
        let r =
            http.get(format!("{}/v1/device/challenges", app.url)).header("authorization", auth).send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth}");
    }
    assert_eq!(rp.get(&format!("/v1/challenges/{id}")).await.body["status"], "pending");
}

async fn enrollment_tokens_are_single_use(db: Db) {
    let app = TestApp::new(db).await;
    let rp = app.rp();
    rp.user("jack", "Jack").await;
    let uri = rp.enrollment_uri("jack").await;
    // Two phones race for one token: exactly one wins.
    let none = || PushRegistration { provider: PushProvider::None, token: None };
    let (a, b) = tokio::join!(Phone::enroll_with(&uri, none()), Phone::enroll_with(&uri, none()));
    let (ok, err) = match (a, b) {
        (Ok(p), Err(e)) | (Err(e), Ok(p)) => (p, e),
        (a, b) => panic!("exactly one enrollment must win: {:?} / {:?}", a.is_ok(), b.is_ok()),
    };
    err.problem(410, "enrollment_invalid");
    assert!(ok.device_id.starts_with("dev_"));
    // Expired after 10 minutes.
    let uri = rp.enrollment_uri("jack").await;
    app.advance(601);
    let key = assent_protocol::p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let token = EnrollUri::parse(&uri).unwrap().token;
    let body = enroll_jws(&key, &token, none(), unix_now() + 601);
    let r = reqwest::Client::new().post(format!("{}/v1/device/enroll", app.url)).body(body).send().await.unwrap();
    assert_eq!(r.status(), 410);
    app.advance(-601);
    // Push registrations are checked.
    let uri = rp.enrollment_uri("jack").await;
    let bad =
        Phone::enroll_with(&uri, PushRegistration { provider: PushProvider::Fcm, token: None }).await.unwrap_err();
    bad.problem(422, "invalid_push");
    rp.post("/v1/users/nobody/enrollments", json!({})).await.problem(404, "not_found");
}

async fn exactly_one_decision_under_concurrency(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone_a) = setup(&app, "kate").await;
    let phone_b = Phone::enroll(&rp.enrollment_uri("kate").await).await;
    for round in 0..3 {
        let (id, _) = new_challenge(&rp, json!({"user_id": "kate"})).await;
        let (jws_a, _) = phone_a.fetch(&id).await;
        let (jws_b, _) = phone_b.fetch(&id).await;
        let approve = phone_a.response_jws(&id, &jws_a, Decision::Approve, None);
        let deny = phone_b.response_jws(&id, &jws_b, Decision::Deny, None);
        let (a, b) = tokio::join!(phone_a.post_response(&id, &approve), phone_b.post_response(&id, &deny));
        let statuses = [a.status, b.status];
        assert!(
            statuses.contains(&200) && statuses.contains(&409),
            "round {round}: {statuses:?} {} {}",
            a.body,
            b.body
        );
        let winner = if a.status == 200 { "approved" } else { "denied" };
        assert_eq!(rp.get(&format!("/v1/challenges/{id}")).await.body["status"], winner);
    }
}

async fn anti_fatigue_supersedes_and_limits(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "liam").await;
    let (first, _) = new_challenge(&rp, json!({"user_id": "liam"})).await;
    let (second, _) = new_challenge(&rp, json!({"user_id": "liam"})).await;
    let old = rp.get(&format!("/v1/challenges/{first}")).await;
    assert_eq!(old.body["status"], "cancelled");
    assert_eq!(old.body["reason"], "superseded");
    assert_eq!(phone.pending().await.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>(), [second]);
    for _ in 0..3 {
        new_challenge(&rp, json!({"user_id": "liam"})).await;
    }
    let limited = rp.challenge(json!({"user_id": "liam"})).await;
    limited.problem(429, "rate_limited");
    let retry: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry), "{retry}");
    app.advance(601);
    new_challenge(&rp, json!({"user_id": "liam"})).await;
}

async fn idempotency_key(db: Db) {
    let app = TestApp::new(db).await;
    let (_rp, _phone) = setup(&app, "mia").await;
    let http = reqwest::Client::new();
    let send = |body: Value, key: &'static str| {
        http.post(format!("{}/v1/challenges", app.url))
            .bearer_auth(&app.admin_key)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let body = json!({"user_id": "mia", "title": "Sign in"});
    let a: Value = send(body.clone(), "k1").await.unwrap().json().await.unwrap();
    let b = send(body.clone(), "k1").await.unwrap();
    assert_eq!(b.status(), 201);
    let b: Value = b.json().await.unwrap();
    assert_eq!(a["id"], b["id"]);
    let c = send(json!({"user_id": "mia", "title": "Other"}), "k1").await.unwrap();
    assert_eq!(c.status(), 409);
    let c: Value = c.json().await.unwrap();
    assert_eq!(c["code"], "idempotency_conflict");
}

async fn revoked_device_and_unenroll(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "noah").await;
    let second = Phone::enroll(&rp.enrollment_uri("noah").await).await;
    let devices = rp.get("/v1/users/noah/devices").await;
    assert_eq!(devices.expect(200).as_array().unwrap().len(), 2);
    let (id, _) = new_challenge(&rp, json!({"user_id": "noah"})).await;
    let r = rp.call(reqwest::Method::DELETE, &format!("/v1/users/noah/devices/{}", phone.device_id), None).await;
    assert_eq!(r.status, 204);
    phone.send("GET", "/v1/device/challenges", None).await.problem(401, "device_revoked");
    let r = rp.call(reqwest::Method::DELETE, &format!("/v1/users/noah/devices/{}", phone.device_id), None).await;
    r.problem(404, "not_found");
    // The device itself unenrolls.
    let r = second.send("DELETE", "/v1/device", None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    second.send("GET", "/v1/device/challenges", None).await.problem(401, "device_revoked");
    assert_eq!(rp.get("/v1/users/noah/factors").await.body["devices"], json!([]));
    // With no device left, push is impossible and there is no fallback factor on file.
    rp.challenge(json!({"user_id": "noah"})).await.problem(422, "no_factor");
    rp.challenge(json!({"user_id": "noah", "channel": "push"})).await.problem(422, "no_device");
    let _ = id;
    let events = rp.get("/v1/events?user_id=noah").await;
    let revoked = events.body["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "device.revoked").count();
    assert_eq!(revoked, 2);
}

async fn long_poll_wakes_on_decision(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "olga").await;
    let (id, _) = new_challenge(&rp, json!({"user_id": "olga"})).await;
    let path = format!("/v1/challenges/{id}?wait=25");
    let poll = rp.get(&path);
    let approve = async {
        // Answer only once the long-poll is waiting, as the server's own gauge reports.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let metrics = reqwest::get(format!("{}/metrics", app.url)).await.unwrap().text().await.unwrap();
            if metrics.lines().any(|l| l == "assent_challenge_long_polls 1") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the long-poll never started waiting");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        phone.answer(&id, Decision::Approve, None).await
    };
    let (polled, answered) = tokio::join!(poll, approve);
    answered.expect(200);
    let polled = polled.expect(200);
    assert_eq!(polled["status"], "approved");
    // What the waiter was told is what a read tells afterwards.
    assert_eq!(polled, rp.get(&format!("/v1/challenges/{id}")).await.expect(200));
    // wait=0 answers at once with pending.
    let (id, _) = new_challenge(&rp, json!({"user_id": "olga"})).await;
    assert_eq!(rp.get(&format!("/v1/challenges/{id}?wait=0")).await.body["status"], "pending");
    rp.get("/v1/challenges/chl_nope").await.problem(404, "not_found");
}

async fn webhook_retried_until_accepted_once(db: Db) {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<(axum::http::HeaderMap, String, u16)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = received.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                // Fail the very first delivery, accept the rest.
                let status = if seen.is_empty() { 503 } else { 204 };
                seen.push((headers, body, status));
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let app = TestApp::with_config(db, |c| {
        c.webhooks = vec![assent_server::config::WebhookEndpoint {
            url: hook_url.clone(),
            secret: assent_server::config::Secret::new(secret),
            events: Some(vec!["challenge.approved".into()]),
        }];
    })
    .await;
    let (rp, phone) = setup(&app, "pia").await;
    let (id, _) = new_challenge(&rp, json!({"user_id": "pia"})).await;
    phone.answer(&id, Decision::Approve, None).await.expect(200);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut advanced = false;
    loop {
        let n = received.lock().unwrap().len();
        if n >= 2 {
            break;
        }
        if n == 1 && !advanced {
            // Past the first backoff (5 s) on the server's clock.
            app.advance(6);
            advanced = true;
        }
        assert!(std::time::Instant::now() < deadline, "webhook not redelivered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Give a wrongly repeated delivery the chance to show up before counting.
    app.advance(3600);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let received = received.lock().unwrap();
    let accepted: Vec<_> = received.iter().filter(|(_, _, s)| *s == 204).collect();
    assert_eq!(accepted.len(), 1, "exactly one accepted delivery");
    let (headers, body, _) = accepted[0];
    let msg_id = headers["webhook-id"].to_str().unwrap();
    assert_eq!(msg_id, received[0].0["webhook-id"].to_str().unwrap(), "the retry keeps the message id");
    let ts: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let expected = assent_server::webhooks::sign(secret, msg_id, ts, body).unwrap();
    assert_eq!(headers["webhook-signature"].to_str().unwrap(), expected);
    let payload: Value = serde_json::from_str(body).unwrap();
    assert_eq!(payload["type"], "challenge.approved");
    assert_eq!(payload["data"]["challenge_id"], id.as_str());
    assert_eq!(payload["data"]["user_id"], "pia");
}

async fn cancel_challenge(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "quinn").await;
    let (id, _) = new_challenge(&rp, json!({"user_id": "quinn"})).await;
    assert_eq!(rp.post(&format!("/v1/challenges/{id}/cancel"), json!({})).await.expect(200)["status"], "cancelled");
    rp.post(&format!("/v1/challenges/{id}/cancel"), json!({})).await.problem(409, "already_decided");
    phone.send("GET", &format!("/v1/device/challenges/{id}"), None).await.problem(409, "already_decided");
    rp.challenge(json!({"user_id": "quinn", "channel": "sms"})).await.problem(409, "device_exists");
    rp.challenge(json!({"user_id": "nobody"})).await.problem(404, "not_found");
    rp.challenge(json!({"user_id": "quinn", "details": [{"label": "", "value": "x"}]}))
        .await
        .problem(422, "invalid_details");

    // Fetched by the phone, then cancelled: the answer that follows is refused.
    let (id, _) = new_challenge(&rp, json!({"user_id": "quinn"})).await;
    let (jws, _) = phone.fetch(&id).await;
    rp.post(&format!("/v1/challenges/{id}/cancel"), json!({})).await.expect(200);
    phone
        .post_response(&id, &phone.response_jws(&id, &jws, Decision::Approve, None))
        .await
        .problem(409, "already_decided");
    assert_eq!(rp.get(&format!("/v1/challenges/{id}")).await.body["status"], "cancelled");
}

async fn deleted_user_leaves_nothing_behind(db: Db) {
    let app = TestApp::new(db).await;
    let (rp, phone) = setup(&app, "rose").await;
    let (id, _) = new_challenge(&rp, json!({"user_id": "rose"})).await;
    let r = rp.call(reqwest::Method::DELETE, "/v1/users/rose", None).await;
    assert_eq!(r.status, 204);
    phone.send("GET", "/v1/device/challenges", None).await.problem(401, "device_revoked");
    assert_eq!(rp.get(&format!("/v1/challenges/{id}")).await.body["status"], "cancelled");
    // A new user with the same id starts with no device.
    rp.user("rose", "Another Rose").await;
    assert_eq!(rp.get("/v1/users/rose/devices").await.body, json!([]));
    rp.challenge(json!({"user_id": "rose"})).await.problem(422, "no_factor");
}
