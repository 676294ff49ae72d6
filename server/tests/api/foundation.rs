//! Foundation: API keys, users, problems, events, operations.

use axum::http::{Method, StatusCode, header};
use serde_json::json;

use crate::both_databases;
use assent_server::clock::Clock;

use crate::support::{Db, TestApp};

both_databases!(
    bootstrap_key_works_and_others_are_refused,
    user_round_trip,
    bad_phone_and_email_have_their_codes,
    malformed_and_oversized_bodies_are_problems,
    events_record_changes_and_page,
    revoked_key_is_refused,
    operations_endpoints,
    bootstrap_key_is_issued_once,
);

async fn bootstrap_key_works_and_others_are_refused(db: Db) {
    let app = TestApp::new(db).await;
    let key_file = app.db.config.data_dir.join("admin-api-key");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    app.req(Method::GET, "/v1/events").send().await.assert_status(StatusCode::OK);

    let missing = app.anon(Method::GET, "/v1/events").send().await;
    missing.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(missing.headers[header::WWW_AUTHENTICATE], "Bearer");

    let (id, _) = app.admin_key.split_once('.').unwrap();
    for bad in [
        "Bearer nonsense".to_owned(),
        format!("Bearer {id}.wrongsecret"),
        "Bearer key_00000000000000000000000000000000.x".to_owned(),
        format!("Basic {}", app.admin_key),
        format!("Bearer {}x", app.admin_key),
    ] {
        app.anon(Method::GET, "/v1/users/alice")
            .auth(&bad)
            .send()
            .await
            .assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

async fn user_round_trip(db: Db) {
    let app = TestApp::new(db).await;
    let created = app
        .req(Method::PUT, "/v1/users/alice@example.com")
        .json(json!({"display_name": "Alice Example", "phone": "+1 (650) 253-0000", "email": "alice@example.com"}))
        .send()
        .await;
    let user = created.assert_status(StatusCode::CREATED);
    assert_eq!(user["id"], "alice@example.com");
    assert_eq!(user["phone"], "+16502530000");
    assert_eq!(user["phone_verified"], false);

    // Fields left out are kept; null clears.
    let updated = app.req(Method::PUT, "/v1/users/alice@example.com").json(json!({"email": null})).send().await;
    let user = updated.assert_status(StatusCode::OK);
    assert_eq!(user["display_name"], "Alice Example");
    assert_eq!(user["phone"], "+16502530000");
    assert!(user["email"].is_null());

    let fetched = app.req(Method::GET, "/v1/users/alice@example.com").send().await;
    assert_eq!(fetched.assert_status(StatusCode::OK)["display_name"], "Alice Example");

    let factors = app.req(Method::GET, "/v1/users/alice@example.com/factors").send().await;
    assert_eq!(
        *factors.assert_status(StatusCode::OK),
        json!({"devices": [], "passkeys": [], "phone": {"value": "+16502530000", "verified": false}, "email": null})
    );

    app.req(Method::DELETE, "/v1/users/alice@example.com").send().await.assert_status(StatusCode::NO_CONTENT);
    app.req(Method::GET, "/v1/users/alice@example.com").send().await.assert_problem(StatusCode::NOT_FOUND, "not_found");
    app.req(Method::DELETE, "/v1/users/alice@example.com")
        .send()
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    app.req(Method::GET, "/v1/users/bob/factors").send().await.assert_problem(StatusCode::NOT_FOUND, "not_found");
}

async fn bad_phone_and_email_have_their_codes(db: Db) {
    let app = TestApp::new(db).await;
    app.req(Method::PUT, "/v1/users/bob")
        .json(json!({"phone": "555-1234"}))
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_phone");
    app.req(Method::PUT, "/v1/users/bob")
        .json(json!({"email": "bob@"}))
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_email");
    app.req(Method::PUT, "/v1/users/bad%20id")
        .json(json!({}))
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_id");
    app.req(Method::PUT, "/v1/users/bob")
        .json(json!({"display_name": ""}))
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_display_name");
    // Nothing was half-written by the refused requests.
    app.req(Method::GET, "/v1/users/bob").send().await.assert_problem(StatusCode::NOT_FOUND, "not_found");
    let long = "x".repeat(129);
    app.req(Method::GET, &format!("/v1/users/{long}"))
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_id");
}

async fn malformed_and_oversized_bodies_are_problems(db: Db) {
    let app = TestApp::new(db).await;
    app.req(Method::PUT, "/v1/users/carol")
        .raw("application/json", "{not json")
        .send()
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "malformed_json");
    app.req(Method::PUT, "/v1/users/carol")
        .raw("application/json", r#"{"phone": 5}"#)
        .send()
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "malformed_json");
    app.req(Method::PUT, "/v1/users/carol")
        .raw("application/json", r#"{"nickname": "c"}"#)
        .send()
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "malformed_json");
    app.req(Method::PUT, "/v1/users/carol")
        .raw("text/plain", "{}")
        .send()
        .await
        .assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let big = format!(r#"{{"display_name": "{}"}}"#, "x".repeat(70 * 1024));
    app.req(Method::PUT, "/v1/users/carol")
        .raw("application/json", big)
        .send()
        .await
        .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    app.req(Method::GET, "/v1/nowhere").send().await.assert_problem(StatusCode::NOT_FOUND, "not_found");
    app.req(Method::PATCH, "/v1/users/carol")
        .send()
        .await
        .assert_problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    app.req(Method::GET, "/v1/events?limit=abc").send().await.assert_problem(StatusCode::BAD_REQUEST, "invalid_query");
    app.req(Method::GET, "/v1/events?limit=0")
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_limit");
}

async fn events_record_changes_and_page(db: Db) {
    let app = TestApp::new(db).await;
    app.req(Method::PUT, "/v1/users/dave")
        .json(json!({"phone": "+16502530000"}))
        .send()
        .await
        .assert_status(StatusCode::CREATED);
    app.req(Method::PUT, "/v1/users/dave")
        .json(json!({"phone": "+16502530001"}))
        .send()
        .await
        .assert_status(StatusCode::OK);
    // An identical upsert changes nothing and records nothing.
    app.req(Method::PUT, "/v1/users/dave")
        .json(json!({"phone": "+16502530001"}))
        .send()
        .await
        .assert_status(StatusCode::OK);
    app.req(Method::PUT, "/v1/users/erin").json(json!({})).send().await.assert_status(StatusCode::CREATED);
    app.req(Method::DELETE, "/v1/users/dave").send().await.assert_status(StatusCode::NO_CONTENT);

    let all = app.req(Method::GET, "/v1/events").send().await;
    let kinds: Vec<_> =
        all.body["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["api_key.created", "user.created", "user.updated", "user.created", "user.deleted"]);
    let key_id = app.admin_key.split_once('.').unwrap().0;
    assert_eq!(all.body["events"][1]["actor"], key_id);
    assert_eq!(all.body["events"][2]["data"], json!({"fields": ["phone"]}));
    assert_eq!(all.body["events"][0]["actor"], "system");

    let dave = app.req(Method::GET, "/v1/events?user_id=dave").send().await;
    let dave = dave.body["events"].as_array().unwrap().clone();
    assert_eq!(dave.len(), 3);

    let first = app.req(Method::GET, "/v1/events?limit=2").send().await;
    assert_eq!(first.body["events"].as_array().unwrap().len(), 2);
    let after = first.body["next_after"].as_str().unwrap();
    let rest = app.req(Method::GET, &format!("/v1/events?after={after}&limit=10")).send().await;
    assert_eq!(rest.body["events"].as_array().unwrap().len(), 3);
    assert!(rest.body.get("next_after").is_none());
    let unknown = app.req(Method::GET, "/v1/events?after=evt_unknown").send().await;
    assert_eq!(unknown.body["events"], json!([]));

    // The log is append-only in the database itself.
    let mut tx = app.state.store.begin().await.unwrap();
    let edit = assent_server::store::db::query("UPDATE events SET kind = 'x'").execute(&mut tx).await;
    assert!(edit.is_err(), "events must refuse updates");
    drop(tx);
    let mut tx = app.state.store.begin().await.unwrap();
    assert!(
        assent_server::store::db::query("DELETE FROM events").execute(&mut tx).await.is_err(),
        "events must refuse deletes"
    );
}

async fn revoked_key_is_refused(db: Db) {
    use assent_server::api_keys;
    use assent_server::audit::Actor;
    let app = TestApp::new(db).await;
    let key = api_keys::create(&app.state.store, "ci", app.clock.now(), &Actor::Cli).await.unwrap();
    let bearer = format!("Bearer {}", key.token);
    app.anon(Method::GET, "/v1/events").auth(&bearer).send().await.assert_status(StatusCode::OK);
    api_keys::revoke(&app.state.store, &key.id, app.clock.now(), &Actor::Cli).await.unwrap();
    app.anon(Method::GET, "/v1/events")
        .auth(&bearer)
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let listed = api_keys::list(&app.state.store).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|k| k.id == key.id && k.revoked_at.is_some()));
    let events = app.req(Method::GET, "/v1/events").send().await;
    let kinds: Vec<_> = events.body["events"].as_array().unwrap().iter().map(|e| e["kind"].clone()).collect();
    assert_eq!(kinds, [json!("api_key.created"), json!("api_key.created"), json!("api_key.revoked")]);
}

async fn operations_endpoints(db: Db) {
    let app = TestApp::new(db).await;
    app.anon(Method::GET, "/healthz").send().await.assert_status(StatusCode::OK);
    app.anon(Method::GET, "/readyz").send().await.assert_status(StatusCode::OK);
    app.req(Method::GET, "/v1/users/nobody").send().await;
    let metrics = app.anon(Method::GET, "/metrics").send().await;
    let text = metrics.assert_status(StatusCode::OK).as_str().unwrap().to_owned();
    assert!(
        text.contains(r#"assent_http_requests_total{method="GET",route="/v1/users/{user_id}",status="404"} 1"#),
        "{text}"
    );
    assert!(text.contains("assent_http_request_duration_seconds_bucket"), "{text}");

    let doc = app.anon(Method::GET, "/openapi.json").send().await;
    let doc = doc.assert_status(StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/users/{user_id}",
        "/v1/users/{user_id}/factors",
        "/v1/events",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["paths"]["/v1/users/{user_id}"].get("put").is_some());
    assert!(doc["paths"]["/v1/users/{user_id}"].get("delete").is_some());

    app.state.store.close().await;
    app.anon(Method::GET, "/readyz")
        .send()
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable");
}

async fn bootstrap_key_is_issued_once(db: Db) {
    let app = TestApp::new(db).await;
    // A second start on the same database keeps the existing key and writes no new one.
    std::fs::remove_file(app.db.config.data_dir.join("admin-api-key")).unwrap();
    let issued = assent_server::app::issue_bootstrap_key(&app.state.store, &app.db.config.data_dir, app.clock.now())
        .await
        .unwrap();
    assert!(issued.is_none());
    assert!(!app.db.config.data_dir.join("admin-api-key").exists());
    app.req(Method::GET, "/v1/events").send().await.assert_status(StatusCode::OK);
}
