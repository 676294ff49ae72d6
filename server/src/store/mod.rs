//! Persistence. All SQL lives under this module, written once in a dialect SQLite and
//! PostgreSQL both accept (`$n` parameters, `RETURNING`, `ON CONFLICT`); where the two truly
//! differ, the difference is spelled out here and nowhere else.
//!
//! SQLite gets one writer connection and a pool of readers: SQLite serialises writers anyway,
//! and a single writer never meets `SQLITE_BUSY` from its own process. PostgreSQL uses one pool
//! for both.

pub mod api_keys;
pub mod challenges;
pub mod devices;
pub mod enrollments;
pub mod events;
pub mod limits;
mod notify;
pub mod otp;
pub mod passkeys;
pub mod proofs;
pub mod settings;
pub mod users;
pub mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Transaction};

use crate::error::{Error, Result};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Which database sits behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite (single node).
    Sqlite,
    /// PostgreSQL (one or more server replicas).
    Postgres,
}

impl Backend {
    /// The row-locking clause for claiming work: PostgreSQL skips rows other workers hold;
    /// SQLite has a single writer, so there is nothing to skip.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        }
    }

    /// Reads the backend from a database URL.
    pub fn from_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::internal(format!(
                "unsupported database URL scheme in {:?}: use sqlite:// or postgres://",
                url.split(':').next().unwrap_or_default()
            )))
        }
    }
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    reader: AnyPool,
    writer: AnyPool,
    backend: Backend,
    /// Kept for the LISTEN connection, which needs a PostgreSQL-specific connection.
    postgres_url: Option<crate::config::Secret>,
}

/// A write transaction.
pub type Tx = Transaction<'static, Any>;

impl Store {
    /// Connects to `url`, creating the SQLite file (and its directory) when needed.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        match backend {
            Backend::Sqlite => {
                let url = sqlite_url_with_create(url)?;
                let options = AnyConnectOptions::from_str(&url)?;
                let writer = sqlite_pool(1).connect_with(options.clone()).await?;
                let reader = sqlite_pool(max_connections.max(1)).connect_with(options).await?;
                Ok(Self { reader, writer, backend, postgres_url: None })
            }
            Backend::Postgres => {
                // No test query before each acquire: it doubled the round trips of every
                // statement run outside a transaction. A connection the server closed fails
                // its next statement and leaves the pool; connections are recycled anyway.
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(10))
                    .test_before_acquire(false)
                    .max_lifetime(Duration::from_secs(30 * 60))
                    .idle_timeout(Duration::from_secs(10 * 60))
                    .connect(url)
                    .await?;
                Ok(Self {
                    reader: pool.clone(),
                    writer: pool,
                    backend,
                    postgres_url: Some(crate::config::Secret::new(url)),
                })
            }
        }
    }

    /// Applies the embedded migrations for this backend.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.writer).await.map_err(|e| Error::internal(format!("migrations: {e}")))
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for reads that need no transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(self.writer.begin().await?)
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

fn sqlite_pool(max: u32) -> AnyPoolOptions {
    // A connection to a local file does not go stale: skip the round trip that tests it on
    // every acquire.
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute("PRAGMA busy_timeout = 5000").await?;
                Ok(())
            })
        })
}

/// Adds `mode=rwc` so a fresh start creates the database file, and creates its directory.
fn sqlite_url_with_create(url: &str) -> Result<String> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let dir = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty() && path != ":memory:");
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
    }
    Ok(if query.contains("mode=") {
        url.to_owned()
    } else if query.is_empty() {
        format!("sqlite://{path}?mode=rwc")
    } else {
        format!("sqlite://{path}?{query}&mode=rwc")
    })
}

/// Reads a 0/1 column as a bool (SQLite has no boolean type; we use integers on both sides).
pub(crate) fn flag(v: i64) -> bool {
    v != 0
}
