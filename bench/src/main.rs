//! `assent-bench`: load on an assent server, with throughput and latency per step.
//!
//! - **Push approval cycles**: the RP creates a challenge (number matching on) and long-polls
//!   its result; the phone (the SDK core, its keys in a `ring` key store) fetches and verifies the
//!   challenge, signs and posts its approval; the cycle ends when the RP's long-poll sees
//!   `approved`.
//! - **OTP cycles** (`--otp-cycles`): the RP creates a challenge for a user with a phone number
//!   and no device, the development SMS provider logs the code, the RP verifies it.
//! - **Okta hook calls** (`--okta-calls`): Okta's telephony inline hook request, answered after
//!   the SMS provider chain accepted the message.
//!
//! It also reports the server's peak memory and the machine's single-core ES256 limits.

/// mimalloc: the tool shares the two cores with the server, and glibc's malloc and free were
/// about 6% of its CPU. (The server keeps glibc: with mimalloc it held about 45 MiB more with
/// 4,096 open connections; docs/performance.md.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod keystore;
mod load;
mod prefill;
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use assent_sdk::{
    AssentClient, ClientConfig, Connection, DeviceRegistration, Platform, PushRegistration, memory_state_store,
};
use clap::Parser;
use serde_json::{Value, json};

use crate::load::{Steps, drive};
use crate::server::{Codes, OKTA_SECRET, Target};

/// Load on an assent server: push approval cycles, OTP cycles, Okta hook calls.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Start a server on this database: `sqlite` (a fresh file) or a `postgres://` URL of an
    /// empty database. Without it, --server and --api-key name a running server.
    #[arg(long)]
    start: Option<String>,
    /// Base URL of a running server.
    #[arg(long)]
    server: Option<String>,
    /// API key for a running server.
    #[arg(long)]
    api_key: Option<String>,
    /// Phones (one user each) to enroll before the run. Each worker cycles through its share;
    /// with enough phones no user sees more challenges than a real one would.
    #[arg(long, default_value_t = 4096)]
    devices: usize,
    /// Make the phones share one pool of HTTP connections. Without it each phone holds its own
    /// connection, as a real phone does; each open connection costs the server about 15 KiB,
    /// so runs with tens of thousands of phones need this.
    #[arg(long)]
    shared_connections: bool,
    /// Requests or cycles in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Push approval cycles to run.
    #[arg(long, default_value_t = 10_000)]
    cycles: usize,
    /// OTP cycles to run (needs --start: the codes are read from the server's log).
    #[arg(long, default_value_t = 0)]
    otp_cycles: usize,
    /// Okta telephony hook calls to make (needs --start, which configures the hook's secret).
    #[arg(long, default_value_t = 0)]
    okta_calls: usize,
    /// With --start: users with an enrolled device to write into the database first.
    #[arg(long, default_value_t = 0)]
    prefill_devices: i64,
    /// With --start: past challenges (decided, with deliveries and audit events) to write first.
    #[arg(long, default_value_t = 0)]
    prefill_challenges: i64,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Phone {
    client: Arc<AssentClient>,
    user: String,
}

struct Rp {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Rp {
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let res = req.bearer_auth(&self.key).send().await?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{status}: {body}");
        }
        Ok(body)
    }
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body)).await
    }
    async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body)).await
    }
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }
}

/// Single-core ES256 operations per second.
#[derive(Debug, Clone, Copy)]
struct CryptoRates {
    /// `ring` signing: the server's challenges and the simulated phones' proofs and answers.
    ring_sign: f64,
    /// Verification through `assent-protocol` built with `ring`, as in the server.
    ring_verify: f64,
    /// Pure-Rust `p256`, what the SDK uses on a phone without a hardware key store.
    p256_sign: f64,
    p256_verify: f64,
}

fn crypto_rates() -> anyhow::Result<CryptoRates> {
    use assent_protocol::jws::{self, JwsType, KeyRef};
    use assent_protocol::p256::ecdsa::signature::Verifier as _;
    let key = jws::generate_signing_key()?;
    let claims = json!({"htm": "GET", "htu": "/v1/device/challenges", "iat": 1, "jti": "x"});
    let rate = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        let mut n = 0u32;
        while started.elapsed() < Duration::from_millis(500) {
            f();
            n += 1;
        }
        f64::from(n) / started.elapsed().as_secs_f64()
    };
    let token = jws::sign(JwsType::Proof, KeyRef::Kid("dev"), &claims, &key)?;
    let input = jws::signing_input(JwsType::Proof, KeyRef::Kid("dev"), &claims)?;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ring_key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ring_sign = rate(&mut || {
        let _ = ring_key.sign(&rng, input.as_bytes());
    });
    let ring_verify = rate(&mut || {
        let _ = jws::decode_and_verify(&token, JwsType::Proof, key.verifying_key());
    });
    let p256_sign = rate(&mut || {
        let _ = jws::sign(JwsType::Proof, KeyRef::Kid("dev"), &claims, &key);
    });
    let signature: assent_protocol::p256::ecdsa::Signature =
        assent_protocol::p256::ecdsa::signature::Signer::sign(&key, input.as_bytes());
    let p256_verify = rate(&mut || {
        let _ = key.verifying_key().verify(input.as_bytes(), &signature);
    });
    Ok(CryptoRates { ring_sign, ring_verify, p256_sign, p256_verify })
}

/// Enrolls `n` phones, `concurrency` at a time; phone `i` belongs to user `bench-<run>-<i>`.
/// With `shared`, the phones make their requests over one pool of connections.
async fn enroll_phones(rp: &Arc<Rp>, n: usize, concurrency: usize, shared: bool) -> anyhow::Result<Vec<Phone>> {
    let run = std::process::id();
    let config = ClientConfig { server_url_override: Some(rp.base.clone()), ..ClientConfig::default() };
    let shared = if shared { Some(Connection::new(&config)?) } else { None };
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency.min(n) {
        let (rp, config, shared) = (rp.clone(), config.clone(), shared.clone());
        tasks.spawn(async move {
            let mut mine = Vec::new();
            for i in (worker..n).step_by(concurrency) {
                let connection = match &shared {
                    Some(connection) => connection.clone(),
                    None => Connection::new(&config)?,
                };
                mine.push((i, enroll_phone(&rp, connection, &format!("bench-{run}-{i}"), i).await?));
            }
            Ok::<_, anyhow::Error>(mine)
        });
    }
    let mut phones = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        phones.extend(joined??);
    }
    phones.sort_by_key(|(i, _)| *i);
    Ok(phones.into_iter().map(|(_, phone)| phone).collect())
}

async fn enroll_phone(rp: &Rp, connection: Connection, user: &str, i: usize) -> anyhow::Result<Phone> {
    rp.put(&format!("/v1/users/{user}"), json!({"display_name": format!("Bench user {i}")})).await?;
    let enrollment = rp.post(&format!("/v1/users/{user}/enrollments"), json!({})).await?;
    let uri = enrollment["uri"].as_str().context("no uri")?.to_owned();
    let client = AssentClient::with_connection(keystore::ring_key_store(), memory_state_store(), connection);
    let registration = DeviceRegistration {
        name: format!("bench phone {i}"),
        platform: Platform::Other,
        push: PushRegistration::poll_only(),
    };
    client.enroll(uri, registration).await?;
    Ok(Phone { client, user: user.to_owned() })
}

async fn push_cycle(rp: &Rp, phone: &Phone) -> anyhow::Result<Steps> {
    let started = Instant::now();
    let created = rp
        .post(
            "/v1/challenges",
            json!({"user_id": phone.user, "title": "Pay EUR 42.00", "number_matching": true,
                   "details": [{"label": "Payee", "value": "ACME GmbH"}, {"label": "Amount", "value": "EUR 42.00"}]}),
        )
        .await?;
    let t_create = started.elapsed();
    let id = created["id"].as_str().context("no id")?.to_owned();
    let number = u32::try_from(created["number"].as_u64().context("no number")?)?;
    let poll_path = format!("/v1/challenges/{id}?wait=30");
    let poll = rp.get(&poll_path);
    let phone_side = async {
        let t0 = Instant::now();
        let challenge = phone.client.challenge(id.clone()).await?;
        let t_fetch = t0.elapsed();
        let t1 = Instant::now();
        phone.client.approve(challenge, Some(number)).await?;
        Ok::<_, anyhow::Error>((t_fetch, t1.elapsed()))
    };
    let (result, phone_times) = tokio::join!(poll, phone_side);
    let (t_fetch, t_approve) = phone_times?;
    let mut result = result?;
    // A long-poll that started after the decision, or lost a race, is simply read again.
    while result["status"] == "pending" {
        result = rp.get(&format!("/v1/challenges/{id}?wait=30")).await?;
    }
    if result["status"] != "approved" {
        bail!("challenge ended {}", result["status"]);
    }
    let total = started.elapsed();
    Ok(vec![
        ("create", t_create),
        ("phone fetch+verify", t_fetch),
        ("phone approve", t_approve),
        ("rp result", total.saturating_sub(t_create)),
        ("cycle", total),
    ])
}

/// Users with a phone number and no device, one per worker: their challenges fall back to SMS.
async fn otp_users(rp: &Rp, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let run = std::process::id();
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        let user = format!("bench-otp-{run}-{i}");
        // +1 650 253 xxxx: valid US numbers the toll-fraud guard lets through.
        let phone = format!("+1650253{:04}", i % 10_000);
        rp.put(&format!("/v1/users/{user}"), json!({"phone": phone})).await?;
        users.push((user, phone));
    }
    Ok(users)
}

async fn otp_cycle(rp: &Rp, codes: &Codes, user: &str, phone: &str) -> anyhow::Result<Steps> {
    let started = Instant::now();
    let created = rp.post("/v1/challenges", json!({"user_id": user, "title": "Sign in"})).await?;
    let t_create = started.elapsed();
    if created["factor"] != "sms" {
        bail!("expected an SMS challenge, got {created}");
    }
    let id = created["id"].as_str().context("no id")?;
    let code = codes.take(phone).await?;
    let t1 = Instant::now();
    let verified = rp.post(&format!("/v1/challenges/{id}/verify"), json!({"code": code})).await?;
    if verified["status"] != "approved" {
        bail!("verification ended {}", verified["status"]);
    }
    Ok(vec![("create+send", t_create), ("verify", t1.elapsed()), ("cycle", started.elapsed())])
}

async fn okta_call(http: &reqwest::Client, base: &str, i: usize) -> anyhow::Result<Steps> {
    let started = Instant::now();
    let body = json!({
        "eventId": format!("bench{i}"), "eventTime": "2026-01-01T00:00:00.000Z",
        "eventType": "com.okta.telephony.provider", "eventTypeVersion": "1.0", "contentType": "application/json",
        "cloudEventVersion": "0.1", "source": "https://example.okta.com/api/v1/inlineHooks/cal0bench/execute",
        "requestType": "com.okta.user.telephony.mfa-verification",
        "data": {
            "userProfile": {"firstName": "Bench", "lastName": "User", "login": "bench@example.com", "userId": "00ubench"},
            "messageProfile": {"msgTemplate": "Your Okta code is 388291", "phoneNumber": format!("+1650253{:04}", i % 10_000),
                "otpExpires": "2026-01-01T00:05:00.000Z", "deliveryChannel": "SMS", "otpCode": "388291", "locale": "EN-US"}
        }
    });
    let res = http
        .post(format!("{base}/v1/hooks/okta/telephony"))
        .header("Authorization", OKTA_SECRET)
        .json(&body)
        .send()
        .await?;
    let status = res.status();
    let answer: Value = res.json().await.unwrap_or(Value::Null);
    let value = &answer["commands"][0]["value"][0];
    if !status.is_success() || value["status"] != "SUCCESSFUL" {
        bail!("{status}: {answer}");
    }
    Ok(vec![("call", started.elapsed())])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.start.is_none() && (args.otp_cycles > 0 || args.okta_calls > 0) {
        bail!("--otp-cycles and --okta-calls need --start (the server's log and hook secret)");
    }
    if args.start.is_none() && (args.prefill_devices > 0 || args.prefill_challenges > 0) {
        bail!("--prefill-devices and --prefill-challenges need --start");
    }
    let started = match &args.start {
        Some(database) => {
            let target = Target::new(database)?;
            if args.prefill_devices > 0 || args.prefill_challenges > 0 {
                target.migrate()?;
                prefill::prefill(&target.database_url(), args.prefill_devices, args.prefill_challenges).await?;
            }
            Some(target.start()?)
        }
        None => None,
    };
    let (base, key) = match (&started, &args.server, &args.api_key) {
        (Some(s), _, _) => (s.url.clone(), s.api_key.clone()),
        (None, Some(url), Some(key)) => (url.trim_end_matches('/').to_owned(), key.clone()),
        _ => bail!("give --start sqlite|postgres://..., or --server URL and --api-key KEY"),
    };
    let crypto = tokio::task::spawn_blocking(crypto_rates).await??;
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency * 2).build()?;
    let rp = Arc::new(Rp { http: http.clone(), base: base.clone(), key });
    let concurrency = args.concurrency.max(1);
    let mut reports = serde_json::Map::new();

    let mut push_rate = None;
    if args.cycles > 0 {
        eprintln!("enrolling {} phones...", args.devices.max(concurrency));
        let phones =
            Arc::new(enroll_phones(&rp, args.devices.max(concurrency), concurrency, args.shared_connections).await?);
        eprintln!("running {} push approval cycles at concurrency {concurrency}...", args.cycles);
        let rp = rp.clone();
        let mut outcome = drive(concurrency, args.cycles, move |worker, iteration| {
            let (rp, phones) = (rp.clone(), phones.clone());
            async move {
                // Worker w owns phones w, w + concurrency, ...: one pending challenge per user.
                let mine = phones.len().div_ceil(concurrency);
                let mut index = worker + (iteration % mine) * concurrency;
                if index >= phones.len() {
                    index = worker;
                }
                push_cycle(&rp, &phones[index]).await
            }
        })
        .await;
        push_rate = Some(outcome.rate());
        let mut report = outcome.report("push approval cycles", concurrency);
        report["devices"] = json!(args.devices.max(concurrency));
        report["shared_connections"] = json!(args.shared_connections);
        load::print(&report);
        reports.insert("push".into(), report);
    }

    if args.otp_cycles > 0 {
        let codes = started.as_ref().map(|s| s.codes.clone()).context("no server")?;
        let users = Arc::new(otp_users(&rp, concurrency).await?);
        eprintln!("running {} OTP cycles at concurrency {concurrency}...", args.otp_cycles);
        let rp = rp.clone();
        let mut outcome = drive(concurrency, args.otp_cycles, move |worker, _| {
            let (rp, codes, users) = (rp.clone(), codes.clone(), users.clone());
            async move {
                let (user, phone) = &users[worker];
                otp_cycle(&rp, &codes, user, phone).await
            }
        })
        .await;
        let report = outcome.report("OTP cycles (SMS, development provider)", concurrency);
        load::print(&report);
        reports.insert("otp".into(), report);
    }

    if args.okta_calls > 0 {
        eprintln!("making {} Okta hook calls at concurrency {concurrency}...", args.okta_calls);
        let base = base.clone();
        let mut outcome = drive(concurrency, args.okta_calls, move |worker, iteration| {
            let (http, base) = (http.clone(), base.clone());
            async move { okta_call(&http, &base, worker * 1000 + iteration).await }
        })
        .await;
        let report = outcome.report("Okta telephony hook calls", concurrency);
        load::print(&report);
        reports.insert("okta".into(), report);
    }

    // Crypto per push cycle: the server signs 1 challenge and verifies 3 signatures (2 proofs
    // and the answer); the phone verifies 1 and signs 3 (2 proofs and the answer).
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let server_secs = 1.0 / crypto.ring_sign + 3.0 / crypto.ring_verify;
    let phone_secs = 1.0 / crypto.ring_verify + 3.0 / crypto.ring_sign;
    let server_limit = cores / server_secs;
    let shared_limit = cores / (server_secs + phone_secs);
    let rss = started.as_ref().and_then(|s| s.peak_rss_mib());
    let report = json!({
        "database": args.start.as_deref().map(|d| if d == "sqlite" { "sqlite" } else { "postgres" }).unwrap_or("external"),
        "prefilled": {"devices": args.prefill_devices, "challenges": args.prefill_challenges},
        "runs": reports,
        "server_peak_rss_mib": rss,
        "crypto": {"cores": cores,
                   "es256_sign_ring_per_core_per_s": crypto.ring_sign, "es256_verify_ring_per_core_per_s": crypto.ring_verify,
                   "es256_sign_p256_per_core_per_s": crypto.p256_sign, "es256_verify_p256_per_core_per_s": crypto.p256_verify,
                   "server_crypto_limit_cycles_per_s": server_limit,
                   "shared_crypto_limit_cycles_per_s": shared_limit,
                   "fraction_of_server_crypto_limit": push_rate.map(|r| r / server_limit),
                   "fraction_of_shared_crypto_limit": push_rate.map(|r| r / shared_limit)},
    });
    if let Some(rss) = rss {
        println!("server peak RSS: {rss:.1} MiB");
    }
    println!(
        "ES256 per core: ring sign {:.0}/s, verify {:.0}/s; p256 sign {:.0}/s, verify {:.0}/s",
        crypto.ring_sign, crypto.ring_verify, crypto.p256_sign, crypto.p256_verify
    );
    println!(
        "push cycle crypto limit on {cores} cores: {server_limit:.0}/s for the server's share alone, \
         {shared_limit:.0}/s with the phones' share on the same machine"
    );
    if let Some(rate) = push_rate {
        println!(
            "push approval cycles reached {:.0}% of the server's crypto limit ({:.0}% of the shared one)",
            100.0 * rate / server_limit,
            100.0 * rate / shared_limit
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    drop(started);
    Ok(())
}
