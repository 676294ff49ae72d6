//! `[push]` configuration: layering through figment and start-up errors.

use std::sync::Arc;

use assent_server::clock::SystemClock;
use assent_server::config::{Config, Mode, Overrides, Secret};
use assent_server::push::{ApnsConfig, ApnsEnvironment, FcmConfig, PushClients, PushConfig};

use super::{apns, fcm};

fn clients(config: PushConfig, mode: Mode) -> Result<PushClients, String> {
    PushClients::from_config(&config, mode, Arc::new(SystemClock)).map_err(|e| e.to_string())
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Error by value
fn push_sections_come_from_the_file_and_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "assent.toml",
            r#"
            [push.apns]
            environment = "production"
            topic = "com.example.bank"
            key_id = "ABC123DEFG"
            team_id = "TEAM123456"
            "#,
        )?;
        jail.set_env("ASSENT_PUSH__APNS__KEY_FILE", "/run/secrets/apns.p8");
        jail.set_env("ASSENT_PUSH__APNS__TITLE", "Bank sign-in");
        jail.set_env("ASSENT_PUSH__FCM__CREDENTIALS_FILE", "/run/secrets/fcm.json");
        jail.set_env("ASSENT_PUSH__FCM__PROJECT_ID", "example-project");
        let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;

        let apns = config.push.apns.ok_or("no [push.apns]")?;
        assert_eq!(apns.environment, ApnsEnvironment::Production);
        assert_eq!(apns.key_file.as_deref(), Some(std::path::Path::new("/run/secrets/apns.p8")));
        assert_eq!(apns.title, "Bank sign-in");
        assert_eq!(apns.body, "Tap to review");
        assert_eq!(apns.timeout_seconds, 10);
        let fcm = config.push.fcm.ok_or("no [push.fcm]")?;
        assert_eq!(fcm.credentials_file.as_deref(), Some(std::path::Path::new("/run/secrets/fcm.json")));
        assert_eq!(fcm.project_id.as_deref(), Some("example-project"));
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)]
fn an_inline_key_from_the_environment_stays_a_redacted_string() {
    let pem =
        "-----BEGIN PRIVATE KEY-----\nMIGTAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBHkwdwIBAQQg\n-----END PRIVATE KEY-----\n";
    let json = fcm::service_account_json("https://oauth2.googleapis.com/token");
    figment::Jail::expect_with(|jail| {
        jail.set_env("ASSENT_PUSH__APNS__ENVIRONMENT", "sandbox");
        jail.set_env("ASSENT_PUSH__APNS__TOPIC", "com.example.bank");
        jail.set_env("ASSENT_PUSH__APNS__KEY_ID", "ABC123DEFG");
        jail.set_env("ASSENT_PUSH__APNS__TEAM_ID", "1234567890");
        jail.set_env("ASSENT_PUSH__APNS__KEY", pem);
        jail.set_env("ASSENT_PUSH__FCM__CREDENTIALS", &json);
        let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;

        let apns = config.push.apns.as_ref().ok_or("no [push.apns]")?;
        assert_eq!(apns.team_id, "1234567890");
        assert_eq!(apns.key.as_ref().map(Secret::expose), Some(pem.trim_end())); // figment trims
        let fcm = config.push.fcm.as_ref().ok_or("no [push.fcm]")?;
        assert_eq!(fcm.credentials.as_ref().map(Secret::expose), Some(json.as_str()));
        let debug = format!("{config:?}");
        assert!(!debug.contains("PRIVATE KEY") && !debug.contains("MIGTAgEA"), "{debug}");
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)]
fn unknown_push_keys_are_refused() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("assent.toml", "[push.apns]\ntpoic = \"com.example.bank\"\n")?;
        let err = Config::load(None, &Overrides::default()).expect_err("typo must be refused");
        assert!(err.to_string().contains("tpoic"), "{err}");
        Ok(())
    });
}

#[test]
fn no_push_configuration_means_no_clients() {
    let clients = clients(PushConfig::default(), Mode::Production).unwrap();
    assert!(clients.apns.is_none() && clients.fcm.is_none());
}

#[test]
fn missing_or_unreadable_credentials_are_start_up_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("AuthKey.p8");
    let apns_with = |c: ApnsConfig| PushConfig { apns: Some(c), fcm: None };
    let fcm_with = |c: FcmConfig| PushConfig { apns: None, fcm: Some(c) };

    let err = clients(apns_with(apns::config()), Mode::Dev).unwrap_err();
    assert_eq!(err, "push configuration: push.apns.key_file: missing: set push.apns.key_file (or push.apns.key)");

    let err =
        clients(apns_with(ApnsConfig { key_file: Some(missing.clone()), ..apns::config() }), Mode::Dev).unwrap_err();
    assert!(err.starts_with("push configuration: push.apns.key_file: cannot read "), "{err}");
    assert!(err.contains("AuthKey.p8"), "{err}");

    let both = ApnsConfig { key_file: Some(missing), key: Some(Secret::new("x")), ..apns::config() };
    assert!(clients(apns_with(both), Mode::Dev).unwrap_err().contains("not both"));

    let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LW5vdC1hLWtleQ==\n-----END PRIVATE KEY-----\n";
    let garbage = ApnsConfig { key: Some(Secret::new(secret)), ..apns::config() };
    let err = clients(apns_with(garbage), Mode::Dev).unwrap_err();
    assert!(err.contains("push.apns.key: the key is not a P-256 private key"), "{err}");
    assert!(!err.contains("c2VjcmV0"), "{err}");

    let err = clients(fcm_with(fcm::config()), Mode::Dev).unwrap_err();
    assert!(err.contains("push.fcm.credentials_file: missing"), "{err}");

    let not_json = FcmConfig { credentials: Some(Secret::new("{\"private_key\": 12345678}")), ..fcm::config() };
    let err = clients(fcm_with(not_json), Mode::Dev).unwrap_err();
    assert!(err.contains("push.fcm.credentials: not a service account JSON key"), "{err}");
    assert!(!err.contains("12345678"), "{err}");

    let mut account: serde_json::Value =
        serde_json::from_str(&fcm::service_account_json("https://oauth2.googleapis.com/token")).unwrap();
    account.as_object_mut().unwrap().remove("project_id");
    let no_project = FcmConfig { credentials: Some(Secret::new(account.to_string())), ..fcm::config() };
    let err = clients(fcm_with(no_project), Mode::Dev).unwrap_err();
    assert!(err.contains("push.fcm.project_id: missing"), "{err}");
}

#[test]
fn production_refuses_plain_http_endpoints() {
    let key = assent_protocol::jws::generate_signing_key().unwrap();
    let pem = {
        use assent_protocol::p256::pkcs8::{EncodePrivateKey as _, LineEnding};
        key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    };
    let apns =
        ApnsConfig { key: Some(Secret::new(pem)), base_url: Some("http://127.0.0.1:1".into()), ..apns::config() };
    let config = PushConfig { apns: Some(apns), fcm: None };
    assert!(clients(config.clone(), Mode::Dev).is_ok());
    let err = clients(config, Mode::Production).unwrap_err();
    assert!(err.contains("push.apns.base_url") && err.contains("refused in production"), "{err}");

    let fcm = FcmConfig {
        credentials: Some(Secret::new(fcm::service_account_json("http://127.0.0.1:1/token"))),
        ..fcm::config()
    };
    let config = PushConfig { apns: None, fcm: Some(fcm) };
    assert!(clients(config.clone(), Mode::Dev).is_ok());
    let err = clients(config, Mode::Production).unwrap_err();
    assert!(err.contains("push.fcm.credentials") && err.contains("refused in production"), "{err}");

    let ok = FcmConfig {
        credentials: Some(Secret::new(fcm::service_account_json("https://oauth2.googleapis.com/token"))),
        ..fcm::config()
    };
    let clients = clients(PushConfig { apns: None, fcm: Some(ok) }, Mode::Production).unwrap();
    assert!(clients.fcm.is_some());
}
