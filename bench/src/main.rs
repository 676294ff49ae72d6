//! `assent-bench`: runs full push approval cycles against an assent server and reports
//! throughput, latency per step and the server's peak memory, next to the machine's
//! single-core ES256 limits.
//!
//! One cycle: the RP creates a challenge (number matching on) and long-polls its result; the
//! phone (the SDK core with its software key store) fetches and verifies the challenge, signs
//! and posts its approval; the cycle ends when the RP's long-poll sees `approved`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use assent_sdk::{
    AssentClient, ClientConfig, DeviceRegistration, Platform, PushRegistration, SignatureFormat, memory_state_store,
    software_key_store,
};
use clap::Parser;
use serde_json::{Value, json};

/// Push approval cycles against an assent server.
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
    /// Phones (one user each) to enroll before the run.
    #[arg(long, default_value_t = 64)]
    devices: usize,
    /// Cycles in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Cycles to run in all.
    #[arg(long, default_value_t = 10_000)]
    cycles: usize,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Latencies of one step, in microseconds.
#[derive(Debug, Default)]
struct Samples(Vec<u64>);

impl Samples {
    fn add(&mut self, d: Duration) {
        self.0.push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }
    fn summary(&mut self) -> Value {
        self.0.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.0.is_empty() {
                return 0.0;
            }
            let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
            self.0[i] as f64 / 1000.0
        };
        json!({"count": self.0.len(), "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99), "max_ms": pct(1.0)})
    }
}

#[derive(Debug, Default)]
struct Steps {
    create: Samples,
    fetch: Samples,
    approve: Samples,
    result: Samples,
    cycle: Samples,
    errors: u64,
    first_error: Option<String>,
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

/// A server this tool started, stopped when dropped.
struct Started {
    child: Child,
    _dir: PathBuf,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(database: &str) -> anyhow::Result<(Started, String, String)> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("no parent dir")?.join("assent");
    let dir = std::env::temp_dir().join(format!("assent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut cmd = Command::new(&bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&dir);
    if database != "sqlite" {
        cmd.args(["--database-url", database]);
    }
    cmd.env("ASSENT_LOG", "warn")
        // The anti-fatigue limit (5 per user per 10 minutes) would stop a load test at once.
        .env("ASSENT_CHALLENGES__PUSH_PER_USER_PER_10_MINUTES", "1000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("assent: listening on ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(60)).context("the server did not start")?;
    let key = std::fs::read_to_string(dir.join("admin-api-key"))?.trim().to_owned();
    Ok((Started { child, _dir: dir }, url, key))
}

/// Peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Single-core ES256 operations per second: p256 signing (what the server signs challenges
/// with and the SDK signs answers with) and verifying through the library the server uses.
fn crypto_limits() -> (f64, f64, f64) {
    use assent_protocol::jws::{self, JwsType, KeyRef};
    let key = assent_protocol::p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let claims = json!({"htm": "GET", "htu": "/v1/device/challenges", "iat": 1, "jti": "x"});
    let rate = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        let mut n = 0u32;
        while started.elapsed() < Duration::from_millis(700) {
            f();
            n += 1;
        }
        f64::from(n) / started.elapsed().as_secs_f64()
    };
    let token = jws::sign(JwsType::Proof, KeyRef::Kid("dev"), &claims, &key).unwrap_or_default();
    let sign = rate(&mut || {
        let _ = jws::sign(JwsType::Proof, KeyRef::Kid("dev"), &claims, &key);
    });
    // assent-protocol is built with its `ring` feature here, as in the server.
    let verify_ring = rate(&mut || {
        let _ = jws::decode_and_verify(&token, JwsType::Proof, key.verifying_key());
    });
    // What a phone pays: p256's own verification.
    use assent_protocol::p256::ecdsa::signature::Verifier as _;
    let sig = assent_protocol::p256::ecdsa::Signature::from_slice(&[1u8; 64]).ok();
    let verify_p256 = rate(&mut || {
        if let Some(sig) = &sig {
            let _ = key.verifying_key().verify(b"payload", sig);
        }
    });
    (sign, verify_ring, verify_p256)
}

async fn enroll_phones(rp: &Rp, n: usize, base: &str) -> anyhow::Result<Vec<Phone>> {
    let mut phones = Vec::with_capacity(n);
    let run = std::process::id();
    for i in 0..n {
        let user = format!("bench-{run}-{i}");
        rp.put(&format!("/v1/users/{user}"), json!({"display_name": format!("Bench user {i}")})).await?;
        let enrollment = rp.post(&format!("/v1/users/{user}/enrollments"), json!({})).await?;
        let uri = enrollment["uri"].as_str().context("no uri")?.to_owned();
        let config = ClientConfig { server_url_override: Some(base.to_owned()), ..ClientConfig::default() };
        let client = AssentClient::new(software_key_store(SignatureFormat::Raw), memory_state_store(), Some(config))?;
        let registration = DeviceRegistration {
            name: format!("bench phone {i}"),
            platform: Platform::Other,
            push: PushRegistration::poll_only(),
        };
        client.enroll(uri, registration).await?;
        phones.push(Phone { client, user });
    }
    Ok(phones)
}

async fn cycle(rp: &Rp, phone: &Phone, steps: &tokio::sync::Mutex<Steps>) -> anyhow::Result<()> {
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
    let number = created["number"].as_u64().context("no number")? as u32;
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
    let mut s = steps.lock().await;
    s.create.add(t_create);
    s.fetch.add(t_fetch);
    s.approve.add(t_approve);
    s.result.add(total.saturating_sub(t_create));
    s.cycle.add(total);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (started, base, key) = match (&args.start, &args.server, &args.api_key) {
        (Some(db), _, _) => {
            let (s, url, key) = start_server(db)?;
            (Some(s), url, key)
        }
        (None, Some(url), Some(key)) => (None, url.trim_end_matches('/').to_owned(), key.clone()),
        _ => bail!("give --start sqlite|postgres://..., or --server URL and --api-key KEY"),
    };
    let (sign_rate, verify_rate, verify_p256) = tokio::task::spawn_blocking(crypto_limits).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency * 2).build()?;
    let rp = Arc::new(Rp { http, base: base.clone(), key });

    eprintln!("enrolling {} phones...", args.devices);
    let phones = Arc::new(enroll_phones(&rp, args.devices.max(args.concurrency), &base).await?);
    eprintln!("running {} cycles at concurrency {}...", args.cycles, args.concurrency);
    let steps = Arc::new(tokio::sync::Mutex::new(Steps::default()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let run_started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let (rp, phones, steps, next) = (rp.clone(), phones.clone(), steps.clone(), next.clone());
        let total = args.cycles;
        let concurrency = args.concurrency;
        workers.spawn(async move {
            // Each worker owns the phones w, w+concurrency, ...: one pending challenge per user.
            let mine: Vec<&Phone> = phones.iter().skip(w).step_by(concurrency).collect();
            let mut i = 0;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let phone = mine[i % mine.len()];
                i += 1;
                if let Err(e) = cycle(&rp, phone, &steps).await {
                    let mut s = steps.lock().await;
                    s.errors += 1;
                    s.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = run_started.elapsed().as_secs_f64();
    let mut s = steps.lock().await;
    let completed = s.cycle.0.len();
    let rate = completed as f64 / elapsed;
    let rss = started.as_ref().and_then(|st| peak_rss_mib(st.child.id()));

    // Crypto per cycle: the server signs 1 challenge and verifies 3 signatures (2 proofs and
    // the answer); the phone verifies 1 and signs 3 (2 proofs and the answer).
    let server_crypto_secs = 1.0 / sign_rate + 3.0 / verify_rate;
    let phone_crypto_secs = 1.0 / verify_p256 + 3.0 / sign_rate;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let server_limit_one_core = 1.0 / server_crypto_secs;
    let shared_limit = cores / (server_crypto_secs + phone_crypto_secs);
    let report = json!({
        "database": args.start.as_deref().map(|d| if d == "sqlite" { "sqlite" } else { "postgres" }).unwrap_or("external"),
        "devices": phones.len(), "concurrency": args.concurrency, "cycles": completed, "errors": s.errors,
        "first_error": s.first_error, "seconds": elapsed, "cycles_per_second": rate,
        "steps": {"create": s.create.summary(), "phone_fetch_verify": s.fetch.summary(),
                  "phone_approve": s.approve.summary(), "rp_result": s.result.summary(), "cycle": s.cycle.summary()},
        "server_peak_rss_mib": rss,
        "crypto": {"es256_sign_per_core_per_s": sign_rate, "es256_verify_server_per_core_per_s": verify_rate,
                   "es256_verify_p256_per_core_per_s": verify_p256,
                   "server_crypto_limit_cycles_per_core_per_s": server_limit_one_core,
                   "machine_crypto_limit_cycles_per_s": shared_limit,
                   "fraction_of_machine_crypto_limit": rate / shared_limit},
    });
    println!(
        "assent-bench: {completed} push approval cycles in {elapsed:.2} s = {rate:.0} cycles/s ({} errors)",
        s.errors
    );
    for (name, key) in [
        ("create", "create"),
        ("phone fetch+verify", "phone_fetch_verify"),
        ("phone approve", "phone_approve"),
        ("rp result", "rp_result"),
        ("cycle", "cycle"),
    ] {
        let v = &report["steps"][key];
        println!(
            "  {name:<20} p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms",
            v["p50_ms"].as_f64().unwrap_or(0.0),
            v["p95_ms"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(rss) = rss {
        println!("  server peak RSS      {rss:.1} MiB");
    }
    println!(
        "  ES256 per core: sign {sign_rate:.0}/s, verify {verify_rate:.0}/s (server, ring), {verify_p256:.0}/s (p256); \
         crypto limit for this machine with the phones on it: {shared_limit:.0} cycles/s; reached {:.0}%",
        100.0 * rate / shared_limit
    );
    if let Some(e) = &s.first_error {
        println!("  first error: {e}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    drop(started);
    Ok(())
}
