//! `assent-device`: a reference "phone" built on the Assent SDK, for trying Assent from a
//! terminal, for demos and for tests.
//!
//! It is a poll-only device (no push) with a software key store whose private key is saved,
//! together with the SDK's device state, in one JSON file (`--state`, default
//! `./assent-device.json`, written with mode 0600). That is fine for a reference app and not
//! for a real phone, whose key must stay in Secure Enclave / Android Keystore.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use assent_sdk::{
    AssentClient, AssentError, Challenge, ChallengeStatus, ClientConfig, DeviceRegistration, Platform,
    PushRegistration, SignatureFormat, SoftwareKeyStore, StateStore, StorageError, write_file_atomically,
};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

/// A reference device for Assent: enroll, then list and answer sign-in requests.
#[derive(Debug, Parser)]
#[command(name = "assent-device", version)]
struct Cli {
    /// File holding the device state and its (software) private key.
    #[arg(long, global = true, env = "ASSENT_DEVICE_STATE", default_value = "assent-device.json")]
    state: PathBuf,
    /// Extra PEM root certificate to trust (a server behind a private CA).
    #[arg(long, global = true, value_name = "PEM_FILE")]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll this device from an `assent://enroll?...` URI (the QR code's content).
    Enroll {
        /// The enrollment URI.
        uri: String,
        /// Device name shown to the user and the relying party.
        #[arg(long, default_value = "assent-device")]
        name: String,
        /// Server base URL to use instead of the one in the URI.
        #[arg(long)]
        server: Option<String>,
    },
    /// Show the enrolled device.
    Status,
    /// List pending requests.
    List,
    /// Show one request.
    Show {
        /// Challenge id (`chl_...`).
        id: String,
    },
    /// Approve a request (asks for the number when number matching is on).
    Approve {
        /// Challenge id.
        id: String,
        /// The number shown on the sign-in page, instead of asking.
        #[arg(long)]
        number: Option<u32>,
    },
    /// Deny a request.
    Deny {
        /// Challenge id.
        id: String,
    },
    /// Report a request as fraud (you did not start it).
    Fraud {
        /// Challenge id.
        id: String,
    },
    /// Poll for requests and prompt for each one.
    Watch {
        /// Seconds between polls.
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
    /// Unenroll: remove the device from the server and forget it here.
    Unenroll {
        /// Only forget the device here (e.g. it was already revoked).
        #[arg(long)]
        local: bool,
    },
}

/// The state file: the SDK's state document and the software keys.
#[derive(Debug, Default, Serialize, Deserialize)]
struct DeviceFile {
    /// The SDK's device state (opaque to this app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<serde_json::Value>,
    /// Software private keys, alias -> base64url scalar. Reference app only.
    #[serde(default)]
    keys: BTreeMap<String, String>,
}

/// The SDK's [`StateStore`] over the state file; every save also writes the current keys.
#[derive(Debug)]
struct FileStore {
    path: PathBuf,
    keys: Arc<SoftwareKeyStore>,
}

fn read_file(path: &Path) -> Result<DeviceFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DeviceFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn storage(e: impl std::fmt::Display) -> StorageError {
    StorageError::Failed { detail: e.to_string() }
}

impl StateStore for FileStore {
    fn load(&self) -> Result<Option<String>, StorageError> {
        let file = read_file(&self.path).map_err(|e| storage(format!("{e:#}")))?;
        file.state.map(|v| serde_json::to_string(&v)).transpose().map_err(storage)
    }

    fn save(&self, state: String) -> Result<(), StorageError> {
        let file =
            DeviceFile { state: Some(serde_json::from_str(&state).map_err(storage)?), keys: self.keys.export_keys() };
        let text = serde_json::to_string_pretty(&file).map_err(storage)?;
        write_file_atomically(&self.path, text.as_bytes()).map_err(storage)
    }

    fn clear(&self) -> Result<(), StorageError> {
        // The keys go with the state: once unenrolled, nothing is worth keeping.
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(storage(e)),
        }
    }
}

fn open(cli: &Cli, server: Option<String>) -> Result<Arc<AssentClient>> {
    let keys = Arc::new(SoftwareKeyStore::new(SignatureFormat::Der));
    for (alias, scalar) in read_file(&cli.state)?.keys {
        keys.import_key(&alias, &scalar)
            .with_context(|| format!("loading key {alias} from {}", cli.state.display()))?;
    }
    let mut config = ClientConfig { server_url_override: server, ..ClientConfig::default() };
    if let Some(path) = &cli.ca_cert {
        let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        config.extra_root_certificates_pem.push(pem);
    }
    let store = Arc::new(FileStore { path: cli.state.clone(), keys: keys.clone() });
    Ok(AssentClient::new(keys, store, Some(config))?)
}

/// Adds a hint an operator can act on to the SDK's error.
fn explain(e: AssentError) -> anyhow::Error {
    let hint = match &e {
        AssentError::NotEnrolled => "enroll first: assent-device enroll '<uri>'",
        AssentError::DeviceRevoked => "this device was revoked; forget it with: assent-device unenroll --local",
        AssentError::Unauthorized { .. } => "the server refused this device; is the clock right?",
        AssentError::ServerKeyMismatch => {
            "the server key is not the one pinned at enrollment; enroll again with a fresh QR code"
        }
        AssentError::Tampered { .. } => "a server message failed verification and was ignored",
        _ => "",
    };
    if hint.is_empty() { e.into() } else { anyhow::Error::new(e).context(hint) }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the chain on one line, without a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let server = match &cli.command {
        Command::Enroll { server, .. } => server.clone(),
        _ => None,
    };
    let client = open(&cli, server)?;
    match cli.command {
        Command::Enroll { uri, name, .. } => {
            let device = DeviceRegistration { name, platform: Platform::Other, push: PushRegistration::poll_only() };
            let e = client.enroll(uri, device).await.map_err(explain)?;
            println!("Enrolled device {} for {} ({}) at {}", e.device_id, e.user_display_name, e.user_id, e.server_url);
            println!("Server key pinned: {}", e.server_key_id);
            println!("State saved in {}", cli.state.display());
        }
        Command::Status => match client.enrollment() {
            Some(e) => {
                println!("device:      {}", e.device_id);
                println!("user:        {} ({})", e.user_display_name, e.user_id);
                println!("server:      {}", e.server_url);
                println!("server key:  {}", e.server_key_id);
                println!("state file:  {}", cli.state.display());
            }
            None => println!("not enrolled (state file {})", cli.state.display()),
        },
        Command::List => {
            let pending = client.pending_challenges().await.map_err(explain)?;
            if pending.is_empty() {
                println!("no pending requests");
            }
            for challenge in &pending {
                println!("{}  {}  (expires in {})", challenge.id, challenge.title, remaining(challenge.expires_at));
            }
        }
        Command::Show { id } => {
            let challenge = client.challenge(id).await.map_err(explain)?;
            print_challenge(&challenge);
        }
        Command::Approve { id, number } => {
            let challenge = client.challenge(id).await.map_err(explain)?;
            print_challenge(&challenge);
            let number = match (&challenge.number_choices, number) {
                (Some(choices), None) => Some(ask_number(choices).await?),
                (_, number) => number,
            };
            let outcome = client.approve(challenge, number).await.map_err(explain)?;
            print_outcome(&outcome.status);
        }
        Command::Deny { id } => {
            let challenge = client.challenge(id).await.map_err(explain)?;
            let outcome = client.deny(challenge).await.map_err(explain)?;
            print_outcome(&outcome.status);
        }
        Command::Fraud { id } => {
            let challenge = client.challenge(id).await.map_err(explain)?;
            let outcome = client.report_fraud(challenge).await.map_err(explain)?;
            print_outcome(&outcome.status);
        }
        Command::Watch { interval } => watch(&client, Duration::from_secs(interval.max(1))).await?,
        Command::Unenroll { local } => {
            if local {
                client.reset().await.map_err(explain)?;
                println!("Device forgotten locally");
            } else {
                client.unenroll().await.map_err(explain)?;
                println!("Device unenrolled");
            }
        }
    }
    Ok(())
}

/// Polls, shows each new request once, and asks what to do with it, until Ctrl-C or end of
/// input.
async fn watch(client: &AssentClient, interval: Duration) -> Result<()> {
    let mut seen = HashSet::new();
    println!("Watching for requests (Ctrl-C to stop)");
    loop {
        let pending = client.pending_challenges().await.map_err(explain)?;
        for challenge in pending {
            if !seen.insert(challenge.id.clone()) {
                continue;
            }
            println!();
            print_challenge(&challenge);
            let Some(answer) = prompt("[a]pprove, [d]eny, report [f]raud, [s]kip? ").await? else {
                return Ok(());
            };
            let result = match answer.trim().to_ascii_lowercase().as_str() {
                "a" | "approve" => {
                    let number = match &challenge.number_choices {
                        Some(choices) => Some(ask_number(choices).await?),
                        None => None,
                    };
                    client.approve(challenge, number).await
                }
                "d" | "deny" => client.deny(challenge).await,
                "f" | "fraud" => client.report_fraud(challenge).await,
                _ => {
                    println!("skipped");
                    continue;
                }
            };
            match result {
                Ok(outcome) => print_outcome(&outcome.status),
                Err(e @ (AssentError::Expired | AssentError::AlreadyDecided | AssentError::NotFound)) => {
                    println!("not answered: {e}");
                }
                Err(e) => return Err(explain(e)),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn print_challenge(c: &Challenge) {
    println!("{}  {}", c.id, c.title);
    for detail in &c.details {
        println!("  {}: {}", detail.label, detail.value);
    }
    let context: Vec<String> =
        [c.context.ip.as_ref().map(|ip| format!("IP {ip}")), c.context.location.clone(), c.context.user_agent.clone()]
            .into_iter()
            .flatten()
            .collect();
    if !context.is_empty() {
        println!("  from: {}", context.join(", "));
    }
    println!("  expires in {}", remaining(c.expires_at));
    if let Some(choices) = &c.number_choices {
        println!("  number matching: {}", numbers(choices));
    }
}

fn numbers(choices: &[u32]) -> String {
    choices.iter().map(|n| format!("{n:02}")).collect::<Vec<_>>().join(" / ")
}

fn remaining(at: SystemTime) -> String {
    match at.duration_since(SystemTime::now()) {
        Ok(left) => format!("{} s", left.as_secs()),
        Err(_) => "0 s (expired)".into(),
    }
}

fn print_outcome(status: &ChallengeStatus) {
    let text = match status {
        ChallengeStatus::Approved => "approved".to_owned(),
        ChallengeStatus::Denied => "denied".to_owned(),
        ChallengeStatus::FraudReported => "reported as fraud".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    };
    println!("Request {text}");
}

/// Asks which number the sign-in page shows, until the answer is one of the choices.
async fn ask_number(choices: &[u32]) -> Result<u32> {
    for _ in 0..3 {
        let question = format!("Which number does the sign-in page show? [{}] ", numbers(choices));
        let Some(answer) = prompt(&question).await? else {
            break;
        };
        match answer.trim().parse::<u32>() {
            Ok(n) if choices.contains(&n) => return Ok(n),
            _ => println!("pick one of {}", numbers(choices)),
        }
    }
    bail!("no number chosen")
}

/// Prints `question` and reads one line from stdin (off the async threads); `None` at end of
/// input.
async fn prompt(question: &str) -> Result<Option<String>> {
    print!("{question}");
    io::stdout().flush()?;
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line).map(|n| (n > 0).then_some(line))
    })
    .await??;
    Ok(line)
}
