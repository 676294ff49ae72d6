//! End-to-end: the real `assent` binary as a process, over TCP, on both databases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use assent_tests::{PgDatabase, Server, assent_bin};
use serde_json::{Value, json};

async fn serve_round_trip(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = database_url
        .map(|u| vec!["--database-url", u])
        .unwrap_or_default();
    let server = Server::start(dir.path(), &[], &args);
    assert!(
        server
            .log()
            .contains("created the first API key and wrote it to"),
        "{}",
        server.log()
    );
    let key = server.admin_key();
    let http = reqwest::Client::new();

    let health = http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = http
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let put = http
        .put(format!("{}/v1/users/jane", server.url))
        .bearer_auth(&key)
        .json(&json!({"display_name": "Jane", "email": "jane@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let user: Value = http
        .get(format!("{}/v1/users/jane", server.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["email"], "jane@example.com");

    let refused = http
        .get(format!("{}/v1/users/jane", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );

    // A key created with the CLI works against the running server; revoked, it stops working.
    let mut cli = Command::new(assent_bin());
    cli.args(["api-key", "create", "--name", "ci", "--data-dir"])
        .arg(dir.path())
        .args(&args);
    let out = cli.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let ok = http
        .get(format!("{}/v1/events", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let id = token.split_once('.').unwrap().0;
    let listed = Command::new(assent_bin())
        .args(["api-key", "list", "--data-dir"])
        .arg(dir.path())
        .args(&args)
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains(id)
            && listed.contains("ci\t")
            && !listed.contains(token.split_once('.').unwrap().1),
        "{listed}"
    );
    let revoke = Command::new(assent_bin())
        .args(["api-key", "revoke", id, "--data-dir"])
        .arg(dir.path())
        .args(&args)
        .output()
        .unwrap();
    assert!(revoke.status.success());
    let gone = http
        .get(format!("{}/v1/events", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 401);

    // SIGTERM: a clean exit.
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn serve_on_sqlite_with_no_setup() {
    serve_round_trip(None).await;
}

#[tokio::test]
async fn serve_on_postgres() {
    let db = PgDatabase::create().await;
    serve_round_trip(Some(&db.url)).await;
}

#[tokio::test]
async fn migrate_command_applies_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(assent_bin())
        .args(["migrate", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("assent.db").exists());
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
}

#[tokio::test]
async fn production_mode_logs_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("ASSENT_MODE", "production")], &[]);
    reqwest::get(format!("{}/healthz", server.url))
        .await
        .unwrap();
    let log = server.log();
    let json_line = log
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON log line in:\n{log}"));
    let parsed: Value = serde_json::from_str(json_line).unwrap();
    assert!(parsed.get("level").is_some(), "{json_line}");
    server.terminate();
}

#[tokio::test]
async fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("assent.toml"), "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(assent_bin())
        .args(["serve", "--config"])
        .arg(dir.path().join("assent.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lisen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
