//! `assent`: the server binary and its operator commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use assent_server::audit::Actor;
use assent_server::clock::{Clock, SystemClock};
use assent_server::config::{Config, Mode, Overrides};
use assent_server::{api_keys, app, telemetry};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Assent: push-first authentication backend.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (default: ./assent.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory for the SQLite database and generated secrets [env: ASSENT_DATA_DIR].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Database URL, sqlite://... or postgres://... [env: ASSENT_DATABASE_URL].
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// dev or production [env: ASSENT_MODE].
    #[arg(long, global = true)]
    mode: Option<CliMode>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CliMode {
    Dev,
    Production,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve {
        /// Address to listen on [env: ASSENT_LISTEN] [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys for RP backends.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Create a key and print it once.
    Create(CreateKey),
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke {
        /// The key id (`key_...`).
        id: String,
    },
}

#[derive(Debug, Args)]
struct CreateKey {
    /// A name to recognise the key by.
    #[arg(long)]
    name: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("assent: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("assent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let listen = match &cli.command {
        Command::Serve { listen } => *listen,
        _ => None,
    };
    let overrides = Overrides {
        listen,
        data_dir: cli.data_dir,
        database_url: cli.database_url,
        mode: cli.mode.map(|m| match m {
            CliMode::Dev => Mode::Dev,
            CliMode::Production => Mode::Production,
        }),
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    telemetry::init(config.mode);

    match cli.command {
        Command::Serve { .. } => app::run(config).await?,
        Command::Migrate => {
            app::open_store(&config).await.context("applying migrations")?;
            println!("migrations applied to {}", redact_url(&config.database_url()));
        }
        Command::ApiKey(cmd) => {
            let store = app::open_store(&config).await?;
            let now = Arc::new(SystemClock).now();
            match cmd {
                ApiKeyCommand::Create(CreateKey { name }) => {
                    let key = api_keys::create(&store, &name, now, &Actor::Cli).await?;
                    eprintln!("created {}; this is the only time the key is shown:", key.id);
                    println!("{}", key.token);
                }
                ApiKeyCommand::List => {
                    for key in api_keys::list(&store).await? {
                        let state = match key.revoked_at {
                            Some(at) => format!("revoked {}", at.date()),
                            None => "active".to_owned(),
                        };
                        println!("{}\t{}\t{}\t{state}", key.id, key.name, key.created_at.date());
                    }
                }
                ApiKeyCommand::Revoke { id } => {
                    api_keys::revoke(&store, &id, now, &Actor::Cli).await?;
                    println!("revoked {id}");
                }
            }
            store.close().await;
        }
    }
    Ok(())
}

/// The URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
