//! End-to-end: the real `assent` binary as a process, over TCP, on both databases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use assent_tests::{PgDatabase, Server, assent_bin};
use serde_json::{Value, json};

async fn serve_round_trip(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = database_url.map(|u| vec!["--database-url", u]).unwrap_or_default();
    let server = Server::start(dir.path(), &[], &args);
    assert!(server.log().contains("created the first API key and wrote it to"), "{}", server.log());
    let key = server.admin_key();
    let http = reqwest::Client::new();

    let health = http.get(format!("{}/healthz", server.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(format!("{}/readyz", server.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let put = http
        .put(format!("{}/v1/users/jane", server.url))
        .bearer_auth(&key)
        .json(&json!({"display_name": "Jane", "email": "jane@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let user: Value =
        http.get(format!("{}/v1/users/jane", server.url)).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(user["email"], "jane@example.com");

    let refused = http.get(format!("{}/v1/users/jane", server.url)).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");

    // A key created with the CLI works against the running server; revoked, it stops working.
    let mut cli = Command::new(assent_bin());
    cli.args(["api-key", "create", "--name", "ci", "--data-dir"]).arg(dir.path()).args(&args);
    let out = cli.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let ok = http.get(format!("{}/v1/events", server.url)).bearer_auth(&token).send().await.unwrap();
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
        listed.contains(id) && listed.contains("ci\t") && !listed.contains(token.split_once('.').unwrap().1),
        "{listed}"
    );
    let revoke = Command::new(assent_bin())
        .args(["api-key", "revoke", id, "--data-dir"])
        .arg(dir.path())
        .args(&args)
        .output()
        .unwrap();
    assert!(revoke.status.success());
    let gone = http.get(format!("{}/v1/events", server.url)).bearer_auth(&token).send().await.unwrap();
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
    let out = Command::new(assent_bin()).args(["migrate", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("assent.db").exists());
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
}

#[tokio::test]
async fn production_mode_logs_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("ASSENT_MODE", "production")], &[]);
    reqwest::get(format!("{}/healthz", server.url)).await.unwrap();
    let log = server.log();
    let json_line = log.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON log line in:\n{log}"));
    let parsed: Value = serde_json::from_str(json_line).unwrap();
    assert!(parsed.get("level").is_some(), "{json_line}");
    server.terminate();
}

#[tokio::test]
async fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("assent.toml"), "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out =
        Command::new(assent_bin()).args(["serve", "--config"]).arg(dir.path().join("assent.toml")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The wire format is standard ES256 JWS: a phone built on PyJWT and `cryptography`, which
/// shares no code with Assent, enrolls, verifies a challenge and approves it.
#[tokio::test]
async fn an_independent_jose_implementation_can_be_the_phone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/pyjwt_phone.py");
    let out = Command::new("python3").arg(script).arg(&server.url).arg(server.admin_key()).output().unwrap();
    assert!(
        out.status.success(),
        "python phone failed (pip install -r tests/requirements.txt):\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

/// Passkeys against a WebAuthn implementation nobody on the project wrote: Yubico's
/// python-fido2 parses the options and builds the credentials and assertions.
#[tokio::test]
async fn an_independent_webauthn_implementation_registers_and_signs_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/fido2_passkeys.py");
    let out = Command::new("python3").arg(script).arg(&server.url).arg(server.admin_key()).output().unwrap();
    assert!(
        out.status.success(),
        "python-fido2 failed (pip install -r tests/requirements.txt):\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

/// Two replicas on one PostgreSQL: a long-poll waiting on one is woken by an approval
/// made through the other (LISTEN/NOTIFY).
#[tokio::test]
async fn replicas_share_decisions_through_postgres() {
    use assent_protocol::messages::Decision;
    use assent_tests::phone::{Phone, Rp};

    let db = PgDatabase::create().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start(dir_a.path(), &[], &["--database-url", &db.url]);
    // A replica with a key of its own is refused: phones pinned the first one's.
    let mut refused = Command::new(assent_bin());
    refused.args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db.url, "--data-dir"]).arg(dir_b.path());
    let out = refused.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server_key_file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let key_file = dir_a.path().join("server-key.pem");
    // Codes issued by one replica must verify on the other: they share the OTP pepper too.
    let pepper = std::fs::read_to_string(dir_a.path().join("otp-pepper")).unwrap();
    let mut without_pepper = Command::new(assent_bin());
    without_pepper
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db.url, "--data-dir"])
        .arg(dir_b.path())
        .env("ASSENT_SERVER_KEY_FILE", &key_file);
    let out = without_pepper.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fallback.pepper"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = Server::start(
        dir_b.path(),
        &[("ASSENT_SERVER_KEY_FILE", key_file.to_str().unwrap()), ("ASSENT_FALLBACK__PEPPER", pepper.trim())],
        &["--database-url", &db.url],
    );
    let rp_a = Rp::new(&a.url, &a.admin_key());
    let rp_b = Rp::new(&b.url, &a.admin_key());
    rp_a.user("rita", "Rita").await;
    let phone = Phone::enroll(&rp_a.enrollment_uri("rita").await).await;

    for _ in 0..3 {
        let created = rp_a.challenge(json!({"user_id": "rita"})).await;
        let id = created.expect(201)["id"].as_str().unwrap().to_owned();
        let path = format!("/v1/challenges/{id}?wait=25");
        let poll = rp_b.get(&path);
        let approve = async {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let metrics = reqwest::get(format!("{}/metrics", b.url)).await.unwrap().text().await.unwrap();
                if metrics.lines().any(|l| l == "assent_challenge_long_polls 1") {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "replica B never started waiting");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            phone.answer(&id, Decision::Approve, None).await
        };
        let started = std::time::Instant::now();
        let (polled, answered) = tokio::join!(poll, approve);
        answered.expect(200);
        assert_eq!(polled.expect(200)["status"], "approved");
        // Woken by the notification, not by the 25 s timeout (a generous bound, not a benchmark).
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }
    b.terminate();
    a.terminate();
}

/// A challenge committed by a server that is then killed (SIGKILL) before its push reached
/// the provider is delivered by the next server process: the delivery sat in the outbox.
#[tokio::test]
async fn push_delivery_survives_a_crash() {
    use assent_protocol::messages::{Decision, PushProvider, PushRegistration};
    use assent_tests::fakes::{FakeFcm, fcm_service_account};
    use assent_tests::phone::{Phone, Rp};

    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("fcm.json");
    // First life: FCM cannot be reached at all.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    std::fs::write(&credentials, fcm_service_account(&format!("http://{dead}/token"))).unwrap();
    let fcm_env = |base: &str| {
        vec![
            ("ASSENT_PUSH__FCM__CREDENTIALS_FILE".to_owned(), credentials.to_str().unwrap().to_owned()),
            ("ASSENT_PUSH__FCM__BASE_URL".to_owned(), base.to_owned()),
        ]
    };
    let env = fcm_env(&format!("http://{dead}"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start(dir.path(), &env, &[]);
    let rp = Rp::new(&server.url, &server.admin_key());
    rp.user("sam", "Sam").await;
    let push = PushRegistration { provider: PushProvider::Fcm, token: Some("fcm-token-sam".into()) };
    let mut phone = Phone::enroll_with(&rp.enrollment_uri("sam").await, push).await.unwrap();
    let id = rp.challenge(json!({"user_id": "sam"})).await.expect(201)["id"].as_str().unwrap().to_owned();
    server.kill();

    // Second life: FCM is reachable.
    let (fake, account) = FakeFcm::start_for_test_account().await;
    std::fs::write(&credentials, account).unwrap();
    let env = fcm_env(&fake.base_url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start(dir.path(), &env, &[]);
    let rp = Rp::new(&server.url, &server.admin_key());
    phone.base = server.url.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let c = rp.get(&format!("/v1/challenges/{id}")).await;
        if c.body["deliveries"][0]["status"] == "sent" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not delivered after restart: {}\n{}", c.body, server.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let sends = fake.sends();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].json()["message"]["data"]["challenge_id"], id.as_str());
    phone.answer(&id, Decision::Approve, None).await.expect(200);
    server.terminate();
}

/// Runs `assent serve` expecting it to refuse to start; returns its stderr.
fn refused_start(dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let mut child = Command::new(assent_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("assent started although it should have refused");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    stderr
}

/// The text without ANSI colour sequences (the dev log colours field names).
fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls the server's log until a line contains `needle`; returns it without colours.
async fn log_line(server: &Server, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(line) = server.log().lines().map(without_ansi).find(|l| l.contains(needle)) {
            return line;
        }
        assert!(std::time::Instant::now() < deadline, "no log line with {needle:?}:\n{}", server.log());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// DESIGN section 5: in dev mode with nothing configured, SMS and email go to the log, so the
/// whole fallback works on a fresh start.
#[tokio::test]
async fn fallback_works_on_a_fresh_start_through_the_log() {
    use assent_tests::fakes::code_in;
    use assent_tests::phone::Rp;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    assert!(dir.path().join("otp-pepper").exists(), "the pepper is generated into the data directory");
    let rp = Rp::new(&server.url, &server.admin_key());
    let put = rp
        .call(
            reqwest::Method::PUT,
            "/v1/users/jane",
            Some(json!({"phone": "+16502530000", "email": "jane@example.com"})),
        )
        .await;
    put.expect(201);

    for (channel, field) in [("sms", "text="), ("email", "body=")] {
        let created = rp.challenge(json!({"user_id": "jane", "channel": channel})).await;
        let id = created.expect(201)["id"].as_str().unwrap().to_owned();
        let view = rp.get(&format!("/v1/challenges/{id}")).await;
        assert_eq!(view.expect(200)["otp"]["provider"], "log");
        let message_id = view.body["otp"]["message_id"].as_str().unwrap().to_owned();
        let line = log_line(&server, &message_id).await;
        let code = code_in(line.split_once(field).unwrap().1);
        let approved = rp.post(&format!("/v1/challenges/{id}/verify"), json!({"code": code})).await;
        assert_eq!(approved.expect(200)["status"], "approved", "{channel}");
    }
    let factors = rp.get("/v1/users/jane/factors").await;
    assert_eq!(factors.expect(200)["phone"]["verified"], true);
    assert_eq!(factors.body["email"]["verified"], true);
    server.terminate();
}

/// Production: the `log` providers are refused at start, and no code reaches any log line,
/// even at debug level.
#[tokio::test]
async fn production_never_logs_codes() {
    use assent_tests::fakes::FakeSms;
    use assent_tests::phone::Rp;

    let dir = tempfile::tempdir().unwrap();
    let production = [("ASSENT_MODE", "production")];
    let stderr = refused_start(dir.path(), &[production[0], ("ASSENT_SMS__PROVIDERS", "[{kind = \"log\"}]")]);
    assert!(stderr.contains("development only"), "{stderr}");
    let stderr = refused_start(dir.path(), &[production[0], ("ASSENT_EMAIL__PROVIDER__KIND", "log")]);
    assert!(stderr.contains("development only"), "{stderr}");

    let twilio = FakeSms::twilio().await;
    let providers = format!(
        "[{{kind = \"twilio\", account_sid = \"AC1\", auth_token = \"e2e-twilio-token\", from = \"+15005550006\", base_url = \"{}\"}}]",
        twilio.url
    );
    let server = Server::start(
        dir.path(),
        &[production[0], ("ASSENT_LOG", "debug"), ("ASSENT_SMS__PROVIDERS", &providers)],
        &[],
    );
    let rp = Rp::new(&server.url, &server.admin_key());
    rp.call(reqwest::Method::PUT, "/v1/users/jane", Some(json!({"phone": "+16502530000"}))).await.expect(201);
    let mut codes = Vec::new();
    for attempt in 0..3 {
        let created = rp.challenge(json!({"user_id": "jane"})).await;
        let id = created.expect(201)["id"].as_str().unwrap().to_owned();
        let code = twilio.last_code();
        codes.push(code.clone());
        let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
        rp.post(&format!("/v1/challenges/{id}/verify"), json!({"code": wrong})).await.problem(400, "invalid_code");
        if attempt < 2 {
            rp.post(&format!("/v1/challenges/{id}/verify"), json!({"code": code})).await.expect(200);
        }
    }
    log_line(&server, "SMS accepted").await;
    let log = server.log();
    assert!(log.lines().any(|l| l.starts_with('{')), "JSON logs:\n{log}");
    for line in log.lines() {
        // Timestamps have six-digit fractions; a code is looked for everywhere else.
        let line = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(mut fields)) => {
                fields.remove("timestamp");
                Value::Object(fields).to_string()
            }
            _ => line.to_owned(),
        };
        let digit_runs: Vec<&str> = line.split(|c: char| !c.is_ascii_digit()).filter(|r| r.len() == 6).collect();
        for code in &codes {
            assert!(!digit_runs.contains(&code.as_str()), "code {code} in the log: {line}");
        }
    }
    assert!(!log.contains("e2e-twilio-token"), "the provider secret in the log:\n{log}");
    server.terminate();
}
