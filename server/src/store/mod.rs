//! Persistence. All SQL lives under this module, written once in a dialect SQLite and
//! PostgreSQL both accept (`$n` parameters, `RETURNING`, `ON CONFLICT`); where the two truly
//! differ, the difference is spelled out here and nowhere else.
//!
//! SQLite gets one writer connection and a pool of readers, used on the server's own threads
//! (see [`db`]): SQLite serialises writers anyway, and a single writer never meets
//! `SQLITE_BUSY` from its own process. PostgreSQL uses one pool for both.

pub mod api_keys;
pub mod challenges;
pub mod db;
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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use self::db::Engine;
pub use self::db::{Db, Tx};
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
    engine: Arc<Engine>,
    backend: Backend,
    /// The database's URL: the migrations and the PostgreSQL LISTEN connection open their own.
    url: crate::config::Secret,
}

impl Store {
    /// Connects to `url`, creating the SQLite file (and its directory) when needed.
    /// `max_connections` is the PostgreSQL pool's size, or the number of SQLite readers kept.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let backend = Backend::from_url(url)?;
        let engine = match backend {
            Backend::Sqlite => {
                let path = sqlite_path(url)?;
                let readers = usize::try_from(max_connections).unwrap_or(1);
                Engine::Sqlite(db::Sqlite::open(&path, readers)?)
            }
            Backend::Postgres => {
                // No test query before each acquire: it doubled the round trips of every
                // statement run outside a transaction. A connection the server closed fails
                // its next statement and leaves the pool; connections are recycled anyway.
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(10))
                    .test_before_acquire(false)
                    .max_lifetime(Duration::from_secs(30 * 60))
                    .idle_timeout(Duration::from_secs(10 * 60))
                    .connect(url)
                    .await?;
                Engine::Postgres(pool)
            }
        };
        Ok(Self { engine: Arc::new(engine), backend, url: crate::config::Secret::new(url) })
    }

    /// Applies the embedded migrations for this backend.
    pub async fn migrate(&self) -> Result<()> {
        let failed = |e: sqlx::migrate::MigrateError| Error::internal(format!("migrations: {e}"));
        match &*self.engine {
            Engine::Sqlite(_) => {
                // sqlx keeps the migration bookkeeping; a connection of its own runs them.
                let path = sqlite_path(self.url.expose())?;
                let mut conn = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5))
                    .connect()
                    .await?;
                SQLITE_MIGRATIONS.run(&mut conn).await.map_err(failed)?;
                sqlx::Connection::close(conn).await?;
                Ok(())
            }
            Engine::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await.map_err(failed),
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where reads that need no transaction run.
    pub fn reader(&self) -> &Self {
        self
    }

    /// Runs one write statement as a transaction of its own: one round trip on PostgreSQL
    /// instead of three with BEGIN and COMMIT. For a write that stands alone.
    pub fn autocommit(&self) -> db::Autocommit<'_> {
        db::Autocommit(self)
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        match &*self.engine {
            Engine::Sqlite(sqlite) => sqlite.begin().await,
            Engine::Postgres(pool) => Ok(Tx::postgres(pool.begin().await?)),
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        db::query("SELECT 1").execute(self).await?;
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match &*self.engine {
            Engine::Sqlite(sqlite) => sqlite.close(),
            Engine::Postgres(pool) => pool.close().await,
        }
    }
}

/// The file of a `sqlite:` URL; its directory is created when missing.
fn sqlite_path(url: &str) -> Result<PathBuf> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    if path.is_empty() || path == ":memory:" {
        return Err(Error::internal(
            "an in-memory SQLite database cannot be shared by the server's connections: give a file path",
        ));
    }
    let dir = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
    }
    Ok(PathBuf::from(path))
}

/// Reads a 0/1 column as a bool (SQLite has no boolean type; we use integers on both sides).
pub(crate) fn flag(v: i64) -> bool {
    v != 0
}
