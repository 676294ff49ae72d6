//! Passkeys over the RP API: registration and sign-in (named and usernameless) with a
//! software authenticator, the stored state they leave, and every refusal: a ceremony
//! finished twice or too late, another user's credential, a wrong origin or RP id, tampered
//! client data, a counter that goes backwards.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::authenticator::{SoftKey, b64, unb64};
use crate::both_databases;
use crate::support::{Db, Resp, TestApp};

both_databases!(
    register_and_sign_in,
    ceremony_finished_twice,
    expired_ceremony,
    expired_ceremonies_are_forgotten_in_the_background,
    credential_of_another_users_ceremony,
    origin_and_rp_id_must_match,
    tampered_client_data,
    user_verification_is_required,
    sign_count_must_increase,
    bad_input_is_a_problem,
    one_account_per_credential,
    deleting_the_user_deletes_passkeys,
    demo_signs_up_signs_in_and_asks_for_approval,
);

/// The origin a browser on this test server has: development passkeys live on `localhost`.
fn origin(app: &TestApp) -> String {
    app.url.replace("127.0.0.1", "localhost")
}

async fn user(app: &TestApp, id: &str) {
    let r = app
        .req(Method::PUT, &format!("/v1/users/{id}"))
        .json(json!({ "display_name": format!("{id} display") }))
        .send()
        .await;
    assert!(r.status.is_success(), "{}", r.body);
}

async fn start_registration(app: &TestApp, user_id: &str) -> Value {
    let r = app.req(Method::POST, "/v1/passkeys/registrations").json(json!({ "user_id": user_id })).send().await;
    r.assert_status(StatusCode::CREATED).clone()
}

async fn finish_registration(app: &TestApp, ceremony: &str, credential: Value) -> Resp {
    app.req(Method::POST, &format!("/v1/passkeys/registrations/{ceremony}"))
        .json(json!({ "credential": credential, "name": "Laptop" }))
        .send()
        .await
}

/// Registers `key` for the user; returns the passkey id.
async fn register(app: &TestApp, user_id: &str, key: &mut SoftKey) -> String {
    let started = start_registration(app, user_id).await;
    let credential = key.create(&started["options"]);
    let r = finish_registration(app, started["ceremony_id"].as_str().unwrap(), credential).await;
    r.assert_status(StatusCode::CREATED)["passkey_id"].as_str().unwrap().to_owned()
}

async fn start_authentication(app: &TestApp, user_id: Option<&str>) -> Value {
    let body = match user_id {
        Some(u) => json!({ "user_id": u }),
        None => json!({}),
    };
    let r = app.req(Method::POST, "/v1/passkeys/authentications").json(body).send().await;
    r.assert_status(StatusCode::CREATED).clone()
}

async fn finish_authentication(app: &TestApp, ceremony: &Value, credential: Value) -> Resp {
    let id = ceremony["ceremony_id"].as_str().unwrap();
    app.req(Method::POST, &format!("/v1/passkeys/authentications/{id}"))
        .json(json!({ "credential": credential }))
        .send()
        .await
}

async fn events(app: &TestApp, user_id: &str) -> Vec<String> {
    let r = app.req(Method::GET, &format!("/v1/events?user_id={user_id}&limit=100")).send().await;
    r.assert_status(StatusCode::OK)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

async fn register_and_sign_in(db: Db) {
    let app = TestApp::new(db).await;
    user(&app, "alice").await;
    let mut key = SoftKey::new(&origin(&app));

    // Registration asks for a discoverable credential and user verification.
    let started = start_registration(&app, "alice").await;
    let pk = &started["options"]["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost");
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(pk["authenticatorSelection"]["requireResidentKey"], true);
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    assert!(pk.get("excludeCredentials").is_none());
    assert!(started["expires_at"].is_string());
    let credential = key.create(&started["options"]);
    let r = finish_registration(&app, started["ceremony_id"].as_str().unwrap(), credential).await;
    let body = r.assert_status(StatusCode::CREATED);
    let passkey_id = body["passkey_id"].as_str().unwrap().to_owned();
    assert!(passkey_id.starts_with("pk_"));
    assert_eq!(body["passkey"]["credential_id"], b64(&key.credential_id));
    assert_eq!(body["passkey"]["backup_eligible"], true);
    assert_eq!(body["passkey"]["backed_up"], false);

    // Listed, on its own and among the user's factors.
    let list = app.req(Method::GET, "/v1/users/alice/passkeys").send().await;
    let list = list.assert_status(StatusCode::OK).as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], passkey_id);
    assert_eq!(list[0]["name"], "Laptop");
    assert!(list[0]["last_used_at"].is_null());
    let factors = app.req(Method::GET, "/v1/users/alice/factors").send().await;
    assert_eq!(factors.assert_status(StatusCode::OK)["passkeys"][0]["id"], passkey_id);

    // A second registration excludes the passkey the user has.
    let again = start_registration(&app, "alice").await;
    let excluded = &again["options"]["publicKey"]["excludeCredentials"];
    assert_eq!(excluded[0]["id"], b64(&key.credential_id), "{excluded}");

    // Sign-in for a named user allows that user's passkeys.
    let ceremony = start_authentication(&app, Some("alice")).await;
    let allowed = &ceremony["options"]["publicKey"]["allowCredentials"];
    assert_eq!(allowed[0]["id"], b64(&key.credential_id));
    assert_eq!(ceremony["options"]["publicKey"]["userVerification"], "required");
    let r = finish_authentication(&app, &ceremony, key.get(&ceremony["options"])).await;
    let body = r.assert_status(StatusCode::OK);
    assert_eq!(
        body,
        &json!({ "user_id": "alice", "passkey_id": passkey_id, "user_verified": true, "backed_up": false })
    );

    // Usernameless: nothing allowed up front, the user handle says whose passkey it is; the
    // counter and the new backup state are recorded.
    let ceremony = start_authentication(&app, None).await;
    let options = &ceremony["options"];
    assert!(options["publicKey"]["allowCredentials"].as_array().is_none_or(Vec::is_empty), "{options}");
    assert_eq!(options["mediation"], "conditional");
    key.backed_up = true;
    let r = finish_authentication(&app, &ceremony, key.get(options)).await;
    let body = r.assert_status(StatusCode::OK);
    assert_eq!(body["user_id"], "alice");
    assert_eq!(body["backed_up"], true);
    let stored = app.req(Method::GET, &format!("/v1/users/alice/passkeys/{passkey_id}")).send().await;
    let stored = stored.assert_status(StatusCode::OK);
    assert_eq!(stored["sign_count"], 2);
    assert_eq!(stored["backed_up"], true);
    assert!(stored["last_used_at"].is_string());

    // Deleted: gone from the list, and it signs in no more.
    let r = app.req(Method::DELETE, &format!("/v1/users/alice/passkeys/{passkey_id}")).send().await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    app.req(Method::DELETE, &format!("/v1/users/alice/passkeys/{passkey_id}"))
        .send()
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    app.req(Method::GET, &format!("/v1/users/alice/passkeys/{passkey_id}"))
        .send()
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    let r = app.req(Method::POST, "/v1/passkeys/authentications").json(json!({ "user_id": "alice" })).send().await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "no_passkey");
    let ceremony = start_authentication(&app, None).await;
    let r = finish_authentication(&app, &ceremony, key.get(&ceremony["options"])).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown_credential");

    let kinds = events(&app, "alice").await;
    for kind in ["passkey.registered", "passkey.used", "passkey.deleted"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| *k == "passkey.used").count(), 2);

    // DELETE on the collection removes them all.
    register(&app, "alice", &mut SoftKey::new(&origin(&app))).await;
    register(&app, "alice", &mut SoftKey::new(&origin(&app))).await;
    let r = app.req(Method::DELETE, "/v1/users/alice/passkeys").send().await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let list = app.req(Method::GET, "/v1/users/alice/passkeys").send().await;
    assert_eq!(list.assert_status(StatusCode::OK), &json!([]));
}

async fn ceremony_finished_twice(db: Db) {
    let app = TestApp::new(db).await;
    user(&app, "alice").await;
    let mut key = SoftKey::new(&origin(&app));

    let started = start_registration(&app, "alice").await;
    let id = started["ceremony_id"].as_str().unwrap();
    let credential = key.create(&started["options"]);
    finish_registration(&app, id, credential.clone()).await.assert_status(StatusCode::CREATED);
    finish_registration(&app, id, credential).await.assert_problem(StatusCode::CONFLICT, "ceremony_used");

    let ceremony = start_authentication(&app, Some("alice")).await;
    let assertion = key.get(&ceremony["options"]);
    finish_authentication(&app, &ceremony, assertion.clone()).await.assert_status(StatusCode::OK);
    finish_authentication(&app, &ceremony, assertion).await.assert_problem(StatusCode::CONFLICT, "ceremony_used");

    // A failed attempt uses the ceremony up too: the same challenge is never tried twice.
    let ceremony = start_authentication(&app, Some("alice")).await;
    let good = key.get(&ceremony["options"]);
    let mut bad = good.clone();
    bad["response"]["signature"] = json!(b64(&[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]));
    finish_authentication(&app, &ceremony, bad)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_signature");
    finish_authentication(&app, &ceremony, good).await.assert_problem(StatusCode::CONFLICT, "ceremony_used");

    // A registration ceremony is not an authentication one.
    let started = start_registration(&app, "alice").await;
    let r = finish_authentication(&app, &started, key.get(&started["options"])).await;
    r.assert_problem(StatusCode::NOT_FOUND, "not_found");
}

async fn expired_ceremony(db: Db) {
    let app = TestApp::new(db).await;
    user(&app, "alice").await;
    let mut key = SoftKey::new(&origin(&app));

    let started = start_registration(&app, "alice").await;
    app.advance(5 * 60 + 1);
    let credential = key.create(&started["options"]);
    let r = finish_registration(&app, started["ceremony_id"].as_str().unwrap(), credential).await;
    r.assert_problem(StatusCode::GONE, "ceremony_expired");

    register(&app, "alice", &mut key).await;
    let ceremony = start_authentication(&app, Some("alice")).await;
    app.advance(4 * 60);
    let fresh = start_authentication(&app, None).await;
    app.advance(61);
    let r = finish_authentication(&app, &ceremony, key.get(&ceremony["options"])).await;
    r.assert_problem(StatusCode::GONE, "ceremony_expired");
    // One started later is still good.
    finish_authentication(&app, &fresh, key.get(&fresh["options"])).await.assert_status(StatusCode::OK);
}

async fn expired_ceremonies_are_forgotten_in_the_background(db: Db) {
    let app = TestApp::new(db).await;
    user(&app, "alice").await;
    let mut key = SoftKey::new(&origin(&app));
    let started = start_registration(&app, "alice").await;
    let id = started["ceremony_id"].as_str().unwrap();

    // Within the hour after expiry the clean-up keeps it, for a clear answer.
    app.advance(30 * 60);
    assent_server::workers::clean_up(&app.state).await.unwrap();
    let r = finish_registration(&app, id, key.create(&started["options"])).await;
    r.assert_problem(StatusCode::GONE, "ceremony_expired");

    app.advance(60 * 60);
    assent_server::workers::clean_up(&app.state).await.unwrap();
    let r = finish_registration(&app, id, key.create(&started["options"])).await;
    r.assert_problem(StatusCode::NOT_FOUND, "not_found");
}

async fn credential_of_another_users_ceremony(db: Db) {
    let app = TestApp::new(db).await;
    user(&app, "alice").await;
    user(&app, "bob").await;
    let mut alice = SoftKey::new(&origin(&app));
    let mut bob = SoftKey::new(&origin(&app));
    register(&app, "alice", &mut alice).await;
    register(&app, "bob", &mut bob).await;

    // Bob's passkey answering a sign-in started for Alice.
    let ceremony = start_authentication(&app, Some("alice")).await;
    let r = finish_authentication(&app, &ceremony, bob.get(&ceremony["options"])).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "credential_not_allowed");

    // Bob's passkey claiming Alice's user handle in a usernameless sign-in.
    let ceremony = start_authentication(&app, None).await;
    bob.user_handle = alice.user_handle.clone();
    let r = finish_authentication(&app, &ceremony, bob.get(&ceremony["options"])).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown_credential");

    // Nothing was recorded as a use.
    assert!(!events(&app, "alice").await.iter().any(|k| k == "passkey.used"));
    assert!(!events(&app, "bob").await.iter().any(|k| k == "passkey.used"));
}

async fn origin_and_rp_id_must_match(db: Db) {
    let app = TestApp::new(db).await;
    user(&app, "alice").await;

    // Registration on a page of another origin.
    let mut phished = SoftKey::new("https://assent.example.net");
    let started = start_registration(&app, "alice").await;
    let r =
        finish_registration(&app, started["ceremony_id"].as_str().unwrap(), phished.create(&started["options"])).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "origin_not_allowed");
    // The same port on another host is another origin too.
    let mut other_host = SoftKey::new(&app.url);
    let started = start_registration(&app, "alice").await;
    let r = finish_registration(&app, started["ceremony_id"].as_str().unwrap(), other_host.create(&started["options"]))
        .await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "origin_not_allowed");

    // An assertion made on another origin.
    let mut key = SoftKey::new(&origin(&app));
    register(&app, "alice", &mut key).await;
    key.origin = "https://assent.example.net".to_owned();
    let ceremony = start_authentication(&app, Some("alice")).await;
    let r = finish_authentication(&app, &ceremony, key.get(&ceremony["options"])).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "origin_not_allowed");
    assert!(r.body["detail"].as_str().unwrap().contains("passkeys.origins"));

    // An authenticator scoping the credential to another RP id.
    key.origin = origin(&app);
    key.rp_id = "example.net".to_owned();
    let ceremony = start_authentication(&app, Some("alice")).await;
    let r = finish_authentication(&app, &ceremony, key.get(&ceremony["options"])).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "rp_id_mismatch");
    let mut elsewhere = SoftKey::new(&origin(&app));
    elsewhere.rp_id = "example.net".to_owned();
    let started = start_registration(&app, "alice").await;
    let r = finish_registration(&app, started["ceremony_id"].as_str().unwrap(), elsewhere.create(&started["options"]))
        .await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "rp_id_mismatch");

    // Configured origins and RP id replace the defaults.
    let app = TestApp::with_config(db, |c| {
        c.passkeys.rp_id = Some("example.com".into());
        c.passkeys.origins = vec!["https://login.example.com".into(), "https://app.example.com".into()];
    })
    .await;
    user(&app, "alice").await;
    let mut key = SoftKey::new("https://app.example.com");
    key.rp_id = "example.com".to_owned();
    let started = start_registration(&app, "alice").await;
    assert_eq!(started["options"]["publicKey"]["rp"]["id"], "example.com");
    let r = finish_registration(&app, started["ceremony_id"].as_str().unwrap(), key.create(&started["options"])).await;
    r.assert_status(StatusCode::CREATED);
    key.origin = "https://login.example.com".to_owned();
    let ceremony = start_authentication(&app, None).await;
    finish_authentication(&app, &ceremony, key.get(&ceremony["options"])).await.assert_status(StatusCode::OK);
    key.origin = origin(&app);
    let ceremony = start_authentication(&app, None).await;
    let r = finish_authentication(&app, &ceremony, key.get(&ceremony["options"])).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "origin_not_allowed");
}

async fn tampered_client_data(db: Db) {
    let app = TestApp::new(db).await;
    user(&app, "alice").await;
    let mut key = SoftKey::new(&origin(&app));
    register(&app, "alice", &mut key).await;

    // Signed, then changed on the way: the signature no longer covers it.
    let ceremony = start_authentication(&app, Some("alice")).await;
    let mut assertion = key.get(&ceremony["options"]);
    let client_data = unb64(assertion["response"]["clientDataJSON"].as_str().unwrap());
    let mut changed: Value = serde_json::from_slice(&client_data).unwrap();
    changed["tokenBinding"] = json!({ "status": "present", "id": "AAAA" });
    assertion["response"]["clientDataJSON"] = json!(b64(&serde_json::to_vec(&changed).unwrap()));
    let r = finish_authentication(&app, &ceremony, assertion).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_signature");

    // Client data (correctly signed) answering another ceremony's challenge.
    let first = start_authentication(&app, Some("alice")).await;
    let second = start_authentication(&app, Some("alice")).await;
    let r = finish_authentication(&app, &second, key.get(&first["options"])).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "challenge_mismatch");

    // Client data for a registration presented as a sign-in.
    let ceremony = start_authentication(&app, Some("alice")).await;
    key.counter += 1;
    let challenge = ceremony["options"]["publicKey"]["challenge"].as_str().unwrap();
    let client_data =
        serde_json::to_vec(&json!({ "type": "webauthn.create", "challenge": challenge, "origin": origin(&app) }))
            .unwrap();
    let r = finish_authentication(&app, &ceremony, key.assert_with(&client_data)).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_client_data");

    // Client data that is not JSON at all.
    let ceremony = start_authentication(&app, Some("alice")).await;
    let mut assertion = key.get(&ceremony["options"]);
    assertion["response"]["clientDataJSON"] = json!(b64(b"not json"));
    let r = finish_authentication(&app, &ceremony, assertion).await;
    assert!(r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_ne!(r.body["code"], "internal");
}

async fn user_verification_is_required(db: Db) {
    let app = TestApp::new(db).await;
    user(&app, "alice").await;
    let mut key = SoftKey::new(&origin(&app));
    key.verified = false;
    let started = start_registration(&app, "alice").await;
    let r = finish_registration(&app, started["ceremony_id"].as_str().unwrap(), key.create(&started["options"])).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "user_not_verified");

    key.verified = true;
    register(&app, "alice", &mut key).await;
    key.verified = false;
    let ceremony = start_authentication(&app, None).await;
    let r = finish_authentication(&app, &ceremony, key.get(&ceremony["options"])).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "user_not_verified");
}

async fn sign_count_must_increase(db: Db) {
    let app = TestApp::new(db).await;
    user(&app, "alice").await;
    let mut key = SoftKey::new(&origin(&app));
    key.counter = 10;
    let passkey_id = register(&app, "alice", &mut key).await;
    let ceremony = start_authentication(&app, Some("alice")).await;
    finish_authentication(&app, &ceremony, key.get(&ceremony["options"])).await.assert_status(StatusCode::OK);

    // A clone of the key answers with a counter the server has already seen.
    key.counter -= 1;
    let ceremony = start_authentication(&app, Some("alice")).await;
    let r = finish_authentication(&app, &ceremony, key.get(&ceremony["options"])).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "sign_count_regressed");
    let stored = app.req(Method::GET, &format!("/v1/users/alice/passkeys/{passkey_id}")).send().await;
    assert_eq!(stored.assert_status(StatusCode::OK)["sign_count"], 11);

    // Two sign-ins racing, both verified against counter 11: whichever commits second with the
    // lower counter writes nothing, so the stored counter never moves back.
    use assent_server::store::passkeys;
    let rows = passkeys::list_for_user(app.state.store.reader(), "alice").await.unwrap();
    let credential = rows.iter().find(|p| p.id == passkey_id).unwrap().credential.clone();
    let mut tx = app.state.store.begin().await.unwrap();
    assert!(passkeys::record_use(&mut tx, &passkey_id, &credential, 13, false, false, 1).await.unwrap());
    assert!(!passkeys::record_use(&mut tx, &passkey_id, &credential, 12, false, false, 1).await.unwrap());
    tx.commit().await.unwrap();
    let stored = app.req(Method::GET, &format!("/v1/users/alice/passkeys/{passkey_id}")).send().await;
    assert_eq!(stored.assert_status(StatusCode::OK)["sign_count"], 13);
}

async fn bad_input_is_a_problem(db: Db) {
    let app = TestApp::new(db).await;
    let post = |path: &str, body: Value| app.req(Method::POST, path).json(body).send();
    post("/v1/passkeys/registrations", json!({ "user_id": "nobody" }))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    post("/v1/passkeys/registrations", json!({ "user_id": "bad id" }))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_id");
    post("/v1/passkeys/registrations", json!({})).await.assert_problem(StatusCode::BAD_REQUEST, "malformed_json");
    post("/v1/passkeys/authentications", json!({ "user_id": "nobody" }))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    post("/v1/passkeys/authentications", json!({ "username": "x" }))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "malformed_json");

    user(&app, "alice").await;
    post("/v1/passkeys/authentications", json!({ "user_id": "alice" }))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "no_passkey");
    let started = start_registration(&app, "alice").await;
    let id = started["ceremony_id"].as_str().unwrap();
    let path = format!("/v1/passkeys/registrations/{id}");
    post(&path, json!({ "credential": { "id": "x" } }))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "malformed_credential");
    post(&path, json!({ "credential": {}, "name": "" }))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_name");
    // A credential whose attestation object is not CBOR.
    let mut key = SoftKey::new(&origin(&app));
    let mut credential = key.create(&started["options"]);
    credential["response"]["attestationObject"] = json!(b64(b"\xff\x00garbage"));
    let r = post(&path, json!({ "credential": credential })).await;
    assert!(r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_ne!(r.body["code"], "internal");
    post("/v1/passkeys/registrations/cer_nope", json!({ "credential": credential }))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    post("/v1/passkeys/authentications/cer_nope", json!({ "credential": key.assert_with(b"{}") }))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    app.req(Method::GET, "/v1/users/nobody/passkeys").send().await.assert_problem(StatusCode::NOT_FOUND, "not_found");
    app.anon(Method::POST, "/v1/passkeys/authentications")
        .json(json!({}))
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
}

async fn one_account_per_credential(db: Db) {
    let app = TestApp::new(db).await;
    user(&app, "alice").await;
    user(&app, "bob").await;
    let mut key = SoftKey::new(&origin(&app));
    register(&app, "alice", &mut key).await;
    // The same credential registered again, to someone else.
    let started = start_registration(&app, "bob").await;
    let r = finish_registration(&app, started["ceremony_id"].as_str().unwrap(), key.create(&started["options"])).await;
    r.assert_problem(StatusCode::CONFLICT, "passkey_exists");
    let list = app.req(Method::GET, "/v1/users/bob/passkeys").send().await;
    assert_eq!(list.assert_status(StatusCode::OK), &json!([]));
}

async fn deleting_the_user_deletes_passkeys(db: Db) {
    let app = TestApp::new(db).await;
    user(&app, "alice").await;
    let mut key = SoftKey::new(&origin(&app));
    register(&app, "alice", &mut key).await;
    let old_handle = key.user_handle.clone();
    assert_eq!(app.req(Method::DELETE, "/v1/users/alice").send().await.status, StatusCode::NO_CONTENT);

    // A new user with the same id gets a new user handle; the old passkey signs in no more.
    user(&app, "alice").await;
    let mut fresh = SoftKey::new(&origin(&app));
    register(&app, "alice", &mut fresh).await;
    assert_ne!(fresh.user_handle, old_handle);
    let ceremony = start_authentication(&app, None).await;
    let r = finish_authentication(&app, &ceremony, key.get(&ceremony["options"])).await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown_credential");
    let list = app.req(Method::GET, "/v1/users/alice/passkeys").send().await;
    assert_eq!(list.assert_status(StatusCode::OK).as_array().unwrap().len(), 1);
}

/// The demo page's backend: sign-up and sign-in with a passkey give a session cookie; a
/// transfer asks for approval (by email code here: the account has no phone yet).
async fn demo_signs_up_signs_in_and_asks_for_approval(db: Db) {
    let app = TestApp::new(db).await;
    let page = app.anon(Method::GET, "/demo").send().await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.as_str().unwrap().contains("<script src=\"/demo/app.js\""));
    let mut key = SoftKey::new(&origin(&app));

    let signup = json!({ "username": "Jane", "display_name": "Jane Doe", "email": "jane@example.com" });
    let started = app.anon(Method::POST, "/demo/api/signup").json(signup.clone()).send().await;
    let started = started.assert_status(StatusCode::CREATED).clone();
    let id = started["ceremony_id"].as_str().unwrap();
    let r = app
        .anon(Method::POST, &format!("/demo/api/signup/{id}"))
        .json(json!({ "credential": key.create(&started["options"]) }))
        .send()
        .await;
    assert_eq!(r.assert_status(StatusCode::OK)["username"], "jane");
    let cookie = r.headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert!(r.headers["set-cookie"].to_str().unwrap().contains("HttpOnly"));
    // The account is the RP user `demo.jane`, with the passkey.
    let list = app.req(Method::GET, "/v1/users/demo.jane/passkeys").send().await;
    assert_eq!(list.assert_status(StatusCode::OK).as_array().unwrap().len(), 1);
    // The name is taken now.
    app.anon(Method::POST, "/demo/api/signup")
        .json(signup)
        .send()
        .await
        .assert_problem(StatusCode::CONFLICT, "username_taken");

    // Usernameless sign-in.
    app.anon(Method::GET, "/demo/api/session").send().await.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let started = app.anon(Method::POST, "/demo/api/signin").json(json!({})).send().await;
    let started = started.assert_status(StatusCode::CREATED).clone();
    let id = started["ceremony_id"].as_str().unwrap();
    let r = app
        .anon(Method::POST, &format!("/demo/api/signin/{id}"))
        .json(json!({ "credential": key.get(&started["options"]) }))
        .send()
        .await;
    assert_eq!(r.assert_status(StatusCode::OK)["display_name"], "Jane Doe");
    let session = app.anon(Method::GET, "/demo/api/session").header("cookie", &cookie).send().await;
    assert_eq!(session.assert_status(StatusCode::OK)["passkeys"].as_array().unwrap().len(), 1);
    let forged = cookie.replace(&cookie[cookie.len() - 4..], "AAAA");
    app.anon(Method::GET, "/demo/api/session")
        .header("cookie", &forged)
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");

    // A transfer: no phone yet, so a code goes by email (to the log provider); a wrong code
    // is refused and the approval stays pending.
    let r = app
        .anon(Method::POST, "/demo/api/approvals")
        .header("cookie", &cookie)
        .json(json!({ "amount": "EUR 1,250.00", "payee": "ACME GmbH" }))
        .send()
        .await;
    let created = r.assert_status(StatusCode::CREATED).clone();
    assert_eq!(created["factor"], "email");
    assert_eq!(created["details"][0]["value"], "EUR 1,250.00");
    let id = created["id"].as_str().unwrap();
    let r = app
        .anon(Method::POST, &format!("/demo/api/approvals/{id}/verify"))
        .header("cookie", &cookie)
        .json(json!({ "code": "000000" }))
        .send()
        .await;
    assert!(r.status == StatusCode::BAD_REQUEST, "{}", r.body);
    let status = app.anon(Method::GET, &format!("/demo/api/approvals/{id}")).header("cookie", &cookie).send().await;
    assert_eq!(status.assert_status(StatusCode::OK)["status"], "pending");
    // Nobody else's session can read it.
    app.anon(Method::GET, &format!("/demo/api/approvals/{id}"))
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");

    // A phone can be added: the page gets an enrollment URI.
    let r = app.anon(Method::POST, "/demo/api/phone").header("cookie", &cookie).send().await;
    assert!(r.assert_status(StatusCode::CREATED)["uri"].as_str().unwrap().starts_with("assent://enroll?"));

    // Not served in production (unless asked for).
    let prod = TestApp::with_config(db, |c| c.mode = assent_server::config::Mode::Production).await;
    prod.anon(Method::GET, "/demo").send().await.assert_problem(StatusCode::NOT_FOUND, "not_found");
}
