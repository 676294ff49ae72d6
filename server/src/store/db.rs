//! The statement layer under the store: one SQL dialect, two engines.
//!
//! - **SQLite** runs in the server's own threads through `rusqlite`: a statement is a function
//!   call on the calling task's thread, with no hand-off. Reads take a connection from a small
//!   pool of readers; writes run in a transaction on the one writer connection, held for the
//!   whole transaction behind an async mutex. SQLite serialises writers anyway; statements are
//!   index lookups of a few microseconds, shorter than a thread hand-off would be.
//! - **PostgreSQL** goes through `sqlx`'s PostgreSQL driver and its pool.
//!
//! Statements are written once with `$n` parameters, which both engines accept. The API has
//! the shape of `sqlx`'s: `query(sql).bind(v)...execute(db)` / `.fetch_optional(db)`, with
//! rows read by column name into types that implement [`FromRow`] (see [`row!`](crate::row)).

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use rusqlite::{OpenFlags, types::ToSqlOutput};
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::{Arguments, Postgres, Row as _};

use super::{Backend, Store};
use crate::error::{Error, Result};

/// A database failure, from either engine.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite said no.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL (or its driver) said no.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// A statement expected to return a row returned none.
    #[error("no row returned")]
    RowNotFound,
    /// The store was closed (the server is shutting down).
    #[error("the database connections are closed")]
    Closed,
}

impl DbError {
    /// Whether a UNIQUE or PRIMARY KEY constraint refused the write.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            DbError::Postgres(sqlx::Error::Database(db)) => db.is_unique_violation(),
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Database(DbError::Sqlite(e))
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(DbError::Postgres(e))
    }
}

/// A statement parameter.
#[derive(Debug, Clone)]
pub enum Arg<'q> {
    /// An integer, or a NULL integer.
    Int(Option<i64>),
    /// A text, or a NULL text.
    Text(Option<Cow<'q, str>>),
}

/// What can be bound to a `$n` parameter.
pub trait Bind<'q> {
    /// The parameter.
    fn into_arg(self) -> Arg<'q>;
}

impl<'q> Bind<'q> for i64 {
    fn into_arg(self) -> Arg<'q> {
        Arg::Int(Some(self))
    }
}

impl<'q> Bind<'q> for Option<i64> {
    fn into_arg(self) -> Arg<'q> {
        Arg::Int(self)
    }
}

impl<'q> Bind<'q> for &'q str {
    fn into_arg(self) -> Arg<'q> {
        Arg::Text(Some(Cow::Borrowed(self)))
    }
}

impl<'q> Bind<'q> for Option<&'q str> {
    fn into_arg(self) -> Arg<'q> {
        Arg::Text(self.map(Cow::Borrowed))
    }
}

impl<'q> Bind<'q> for &'q String {
    fn into_arg(self) -> Arg<'q> {
        Arg::Text(Some(Cow::Borrowed(self.as_str())))
    }
}

impl<'q> Bind<'q> for &'q Option<String> {
    fn into_arg(self) -> Arg<'q> {
        Arg::Text(self.as_deref().map(Cow::Borrowed))
    }
}

impl<'q> Bind<'q> for String {
    fn into_arg(self) -> Arg<'q> {
        Arg::Text(Some(Cow::Owned(self)))
    }
}

impl<'q> Bind<'q> for Option<String> {
    fn into_arg(self) -> Arg<'q> {
        Arg::Text(self.map(Cow::Owned))
    }
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Int(Some(v)) => ToSqlOutput::from(*v),
            Arg::Text(Some(v)) => ToSqlOutput::from(v.as_ref()),
            Arg::Int(None) | Arg::Text(None) => ToSqlOutput::from(rusqlite::types::Null),
        })
    }
}

/// A column value both engines can decode.
pub trait Value: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> {}

impl<T> Value for T where T: rusqlite::types::FromSql + for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> {}

/// A result row, read by column name or position.
#[derive(Debug)]
pub enum Row<'r> {
    /// A SQLite row.
    Sqlite(&'r rusqlite::Row<'r>),
    /// A PostgreSQL row.
    Postgres(&'r PgRow),
}

impl Row<'_> {
    /// The column called `name`.
    pub fn get<T: Value>(&self, name: &str) -> Result<T> {
        match self {
            Row::Sqlite(row) => Ok(row.get(name)?),
            Row::Postgres(row) => Ok(row.try_get(name)?),
        }
    }

    /// The column at `index` (from 0).
    pub fn at<T: Value>(&self, index: usize) -> Result<T> {
        match self {
            Row::Sqlite(row) => Ok(row.get(index)?),
            Row::Postgres(row) => Ok(row.try_get(index)?),
        }
    }
}

/// A type read from a result row.
pub trait FromRow: Sized {
    /// Reads one row.
    fn from_row(row: &Row<'_>) -> Result<Self>;
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Value),+> FromRow for ($($t,)+) {
            fn from_row(row: &Row<'_>) -> Result<Self> {
                Ok(($(row.at::<$t>($i)?,)+))
            }
        }
    };
}

tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);

/// Declares a row struct and reads it by column name, one column per field.
#[macro_export]
macro_rules! row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty, )*
        }

        impl $crate::store::db::FromRow for $name {
            fn from_row(row: &$crate::store::db::Row<'_>) -> $crate::error::Result<Self> {
                Ok(Self { $( $field: row.get(stringify!($field))?, )* })
            }
        }
    };
}

/// What a statement changed.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    rows: u64,
}

impl Done {
    /// Rows inserted, updated or deleted.
    pub fn rows_affected(&self) -> u64 {
        self.rows
    }
}

/// A statement with its parameters.
#[derive(Debug)]
#[must_use = "a query does nothing until it is executed or fetched"]
pub struct Query<'q> {
    sql: Cow<'q, str>,
    args: Vec<Arg<'q>>,
}

/// A statement; bind its `$1`, `$2`, ... in order.
pub fn query<'q>(sql: impl Into<Cow<'q, str>>) -> Query<'q> {
    Query { sql: sql.into(), args: Vec::new() }
}

/// Where a statement runs: the store (a reader, or the pool on PostgreSQL) or an open
/// transaction.
#[derive(Debug)]
pub enum Db<'c> {
    /// Outside any transaction.
    Store(&'c Store),
    /// Inside this transaction.
    Tx(&'c mut Tx),
    /// A write that is a transaction of its own, committed when the statement ends.
    Autocommit(&'c Store),
}

/// A single write statement committed on its own: see [`Store::autocommit`].
#[derive(Debug, Clone, Copy)]
pub struct Autocommit<'c>(pub(super) &'c Store);

impl Db<'_> {
    /// The backend the statement will run on.
    pub fn backend(&self) -> Backend {
        match self {
            Db::Store(store) | Db::Autocommit(store) => store.backend(),
            Db::Tx(tx) => tx.backend(),
        }
    }

    /// The same place, for one more statement.
    pub fn reborrow(&mut self) -> Db<'_> {
        match self {
            Db::Store(store) => Db::Store(store),
            Db::Tx(tx) => Db::Tx(tx),
            Db::Autocommit(store) => Db::Autocommit(store),
        }
    }
}

impl<'c> From<Autocommit<'c>> for Db<'c> {
    fn from(a: Autocommit<'c>) -> Self {
        Db::Autocommit(a.0)
    }
}

impl<'c> From<&'c Store> for Db<'c> {
    fn from(store: &'c Store) -> Self {
        Db::Store(store)
    }
}

impl<'c> From<&'c mut Tx> for Db<'c> {
    fn from(tx: &'c mut Tx) -> Self {
        Db::Tx(tx)
    }
}

impl<'q> Query<'q> {
    /// Binds the next parameter.
    pub fn bind(mut self, value: impl Bind<'q>) -> Self {
        self.args.push(value.into_arg());
        self
    }

    /// Runs the statement; rows it returns are read and dropped.
    pub async fn execute<'c>(self, db: impl Into<Db<'c>>) -> Result<Done> {
        let changed = self.run(db.into(), |_| Ok(()), true).await?;
        Ok(Done { rows: changed })
    }

    /// The first row, if any.
    pub async fn fetch_optional<'c, T: FromRow>(self, db: impl Into<Db<'c>>) -> Result<Option<T>> {
        let mut first = None;
        self.run(
            db.into(),
            |row| {
                if first.is_none() {
                    first = Some(T::from_row(row)?);
                }
                Ok(())
            },
            false,
        )
        .await?;
        Ok(first)
    }

    /// The first row; an error when there is none.
    pub async fn fetch_one<'c, T: FromRow>(self, db: impl Into<Db<'c>>) -> Result<T> {
        self.fetch_optional(db).await?.ok_or(Error::Database(DbError::RowNotFound))
    }

    /// Every row.
    pub async fn fetch_all<'c, T: FromRow>(self, db: impl Into<Db<'c>>) -> Result<Vec<T>> {
        let mut all = Vec::new();
        self.run(
            db.into(),
            |row| {
                let _: () = all.push(T::from_row(row)?);
                Ok(())
            },
            false,
        )
        .await?;
        Ok(all)
    }

    /// Runs the statement, handing each row to `each`; returns the rows changed when
    /// `count_changes`.
    async fn run(self, db: Db<'_>, each: impl FnMut(&Row<'_>) -> Result<()>, count_changes: bool) -> Result<u64> {
        match db {
            Db::Store(store) => match &*store.engine {
                Engine::Sqlite(sqlite) => sqlite.read(|conn| self.run_sqlite(conn, each, count_changes)),
                Engine::Postgres(pool) => self.run_postgres(pool, each, count_changes).await,
            },
            Db::Autocommit(store) => match &*store.engine {
                Engine::Sqlite(sqlite) => {
                    sqlite.check_open()?;
                    let conn = sqlite.writer.lock().await;
                    let changed = self.run_sqlite(&conn, each, count_changes);
                    let _ = sqlite.wal_grew.try_send(());
                    changed
                }
                Engine::Postgres(pool) => self.run_postgres(pool, each, count_changes).await,
            },
            Db::Tx(tx) => match &mut tx.0 {
                TxInner::Sqlite(tx) => self.run_sqlite(&tx.conn, each, count_changes),
                TxInner::Postgres(tx) => self.run_postgres(&mut **tx, each, count_changes).await,
            },
        }
    }

    fn run_sqlite(
        &self,
        conn: &rusqlite::Connection,
        mut each: impl FnMut(&Row<'_>) -> Result<()>,
        count_changes: bool,
    ) -> Result<u64> {
        let mut stmt = conn.prepare_cached(&self.sql)?;
        for (n, arg) in self.args.iter().enumerate() {
            // `$n` is a named parameter to SQLite; look its slot up by name, as the same `$n`
            // may appear several times and the slots are numbered by first appearance.
            if let Some(slot) = stmt.parameter_index(param_name(n + 1))? {
                stmt.raw_bind_parameter(slot, arg)?;
            }
        }
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            each(&Row::Sqlite(row))?;
        }
        Ok(if count_changes { conn.changes() } else { 0 })
    }

    async fn run_postgres<'c, E>(
        &self,
        conn: E,
        mut each: impl FnMut(&Row<'_>) -> Result<()>,
        count_changes: bool,
    ) -> Result<u64>
    where
        E: sqlx::Executor<'c, Database = Postgres>,
    {
        let mut args = PgArguments::default();
        for arg in &self.args {
            match arg {
                Arg::Int(v) => args.add(*v),
                Arg::Text(v) => args.add(v.as_deref()),
            }
            .map_err(|e| Error::Database(DbError::Postgres(sqlx::Error::Encode(e))))?;
        }
        let query = sqlx::query_with::<Postgres, _>(&self.sql, args);
        if count_changes {
            return Ok(query.execute(conn).await?.rows_affected());
        }
        for row in query.fetch_all(conn).await? {
            each(&Row::Postgres(&row))?;
        }
        Ok(0)
    }
}

/// `"$1"`, `"$2"`, ... without an allocation for the first 32.
fn param_name(n: usize) -> &'static str {
    const NAMES: [&str; 32] = [
        "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15", "$16", "$17",
        "$18", "$19", "$20", "$21", "$22", "$23", "$24", "$25", "$26", "$27", "$28", "$29", "$30", "$31", "$32",
    ];
    NAMES.get(n - 1).copied().unwrap_or("$?")
}

/// The engine behind a [`Store`].
pub(super) enum Engine {
    Sqlite(Sqlite),
    Postgres(PgPool),
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::Sqlite(s) => f.debug_struct("Sqlite").field("path", &s.readers.path).finish_non_exhaustive(),
            Engine::Postgres(pool) => f.debug_tuple("Postgres").field(pool).finish(),
        }
    }
}

/// SQLite: one writer connection, a pool of readers.
pub(super) struct Sqlite {
    writer: Arc<tokio::sync::Mutex<rusqlite::Connection>>,
    readers: Readers,
    closed: AtomicBool,
    /// Tells the checkpoint thread that the WAL grew; the thread ends when this is dropped.
    wal_grew: std::sync::mpsc::SyncSender<()>,
}

/// Prepared statements kept per connection: every statement the server runs, with room.
const STATEMENT_CACHE: usize = 256;

impl Sqlite {
    /// Opens the database at `path` (created if missing) in WAL mode.
    pub(super) fn open(path: &Path, readers: usize) -> Result<Self> {
        let writer = open_connection(path)?;
        // Checkpoints (copying the WAL back into the database file, with its fsyncs) run on a
        // thread of their own, not inside a request's COMMIT.
        writer.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 67108864;",
        )?;
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let wal_grew = spawn_checkpointer(open_connection(path)?, Arc::downgrade(&writer))?;
        Ok(Sqlite {
            writer,
            readers: Readers { path: path.to_owned(), idle: Mutex::new(Vec::new()), keep: readers.max(1) },
            closed: AtomicBool::new(false),
            wal_grew,
        })
    }

    pub(super) async fn begin(&self) -> Result<Tx> {
        self.check_open()?;
        let conn = Arc::clone(&self.writer).lock_owned().await;
        // IMMEDIATE takes the write lock now: another process (the CLI) writing meanwhile
        // makes us wait here, under busy_timeout, rather than fail at the first write.
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Tx(TxInner::Sqlite(SqliteTx { conn, open: true, wal_grew: self.wal_grew.clone() })))
    }

    /// Reads outside a transaction, on a reader connection.
    fn read<R>(&self, f: impl FnOnce(&rusqlite::Connection) -> Result<R>) -> Result<R> {
        self.check_open()?;
        self.readers.with(f)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Database(DbError::Closed));
        }
        Ok(())
    }

    /// Refuses new work and drops idle readers (their file handles); the writer closes
    /// with the last handle on the store.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.readers.idle.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

/// How often, at most, the WAL is checkpointed while writes come in.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A WAL longer than this (64 MiB of 4 KiB pages, `journal_size_limit`) is started over by a
/// `RESTART` checkpoint.
const RESTART_AFTER_FRAMES: i64 = 16_384;

/// Starts the thread that checkpoints the WAL after commits, at most every [`CHECKPOINT_EVERY`]
/// (see [`checkpoint`]).
fn spawn_checkpointer(
    conn: rusqlite::Connection,
    writer: Weak<tokio::sync::Mutex<rusqlite::Connection>>,
) -> Result<std::sync::mpsc::SyncSender<()>> {
    let (wal_grew, grown) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while grown.recv().is_ok() {
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Err(e) = checkpoint(&conn, &writer, RESTART_AFTER_FRAMES) {
                    tracing::warn!(error = %e, "SQLite checkpoint failed; retried after the next commit");
                }
            }
        })
        .map_err(|e| Error::internal(format!("starting the SQLite checkpoint thread: {e}")))?;
    Ok(wal_grew)
}

/// Copies what it can of the WAL into the database file without waiting for anyone
/// (`PASSIVE`), on the checkpoint thread's own connection.
///
/// Under steady reads and writes that is never enough: SQLite starts the WAL over only when a
/// write begins with every frame copied and no reader on the WAL, and with reads and writes
/// always in flight that moment never comes. The file would grow without end (gigabytes in a
/// minute of load), and the shared-memory index every connection maps with it. So once the WAL
/// is longer than `restart_after` frames, the thread takes the writer connection (new writes
/// wait on its async mutex; no server thread blocks) and runs a `RESTART` checkpoint on it:
/// it copies the rest, waits out the readers (each holds the WAL for one statement) and starts
/// the WAL over; `journal_size_limit` then trims the file.
fn checkpoint(
    conn: &rusqlite::Connection,
    writer: &Weak<tokio::sync::Mutex<rusqlite::Connection>>,
    restart_after: i64,
) -> rusqlite::Result<()> {
    let frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))?;
    if frames >= restart_after
        && let Some(writer) = writer.upgrade()
    {
        let writer = writer.blocking_lock();
        writer.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(())
}

fn open_connection(path: &Path) -> Result<rusqlite::Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags)?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Reader connections, used on the caller's thread and put back.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
    keep: usize,
}

impl Readers {
    fn with<R>(&self, f: impl FnOnce(&rusqlite::Connection) -> Result<R>) -> Result<R> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = open_connection(&self.path)?;
                // Writes belong in a transaction on the writer.
                conn.execute_batch("PRAGMA query_only = ON")?;
                conn
            }
        };
        let out = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.keep {
            idle.push(conn);
        }
        out
    }
}

/// A write transaction: committed by [`Tx::commit`], rolled back when dropped.
#[derive(Debug)]
pub struct Tx(TxInner);

#[derive(Debug)]
enum TxInner {
    Sqlite(SqliteTx),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

struct SqliteTx {
    conn: tokio::sync::OwnedMutexGuard<rusqlite::Connection>,
    open: bool,
    wal_grew: std::sync::mpsc::SyncSender<()>,
}

impl fmt::Debug for SqliteTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteTx").field("open", &self.open).finish_non_exhaustive()
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open {
            // Nothing to report to: the caller has gone (an error or a cancelled request).
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rolling back a SQLite transaction failed");
            }
        }
    }
}

impl Tx {
    pub(super) fn postgres(tx: sqlx::Transaction<'static, Postgres>) -> Self {
        Tx(TxInner::Postgres(tx))
    }

    /// Makes the transaction's writes durable and visible.
    pub async fn commit(self) -> Result<()> {
        match self.0 {
            TxInner::Sqlite(mut tx) => {
                tx.conn.prepare_cached("COMMIT")?.execute([])?;
                tx.open = false;
                // Full means a checkpoint is already due.
                let _ = tx.wal_grew.try_send(());
                Ok(())
            }
            TxInner::Postgres(tx) => Ok(tx.commit().await?),
        }
    }

    /// Undoes the transaction's writes.
    pub async fn rollback(self) -> Result<()> {
        match self.0 {
            TxInner::Sqlite(mut tx) => {
                tx.open = false;
                tx.conn.prepare_cached("ROLLBACK")?.execute([])?;
                Ok(())
            }
            TxInner::Postgres(tx) => Ok(tx.rollback().await?),
        }
    }

    /// The backend the transaction runs on.
    pub fn backend(&self) -> Backend {
        match self.0 {
            TxInner::Sqlite(_) => Backend::Sqlite,
            TxInner::Postgres(_) => Backend::Postgres,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_frames(conn: &rusqlite::Connection) -> i64 {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1)).unwrap()
    }

    fn write(conn: &rusqlite::Connection, rows: usize) {
        conn.execute_batch("BEGIN").unwrap();
        for _ in 0..rows {
            conn.execute("INSERT INTO t (v) VALUES (randomblob(2000))", []).unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
    }

    /// The case that made the WAL grow without end: a reader is on the WAL while the
    /// checkpoint runs, another while the next write begins.
    #[test]
    fn a_long_wal_starts_over_although_readers_keep_coming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.db");
        let sqlite = Sqlite::open(&path, 2).unwrap();
        let writer = Arc::downgrade(&sqlite.writer);
        let conn = sqlite.writer.blocking_lock();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)").unwrap();
        write(&conn, 200);
        drop(conn);

        // A reader holds a snapshot while more is written and while the checkpoint runs.
        let (started, ready) = std::sync::mpsc::channel();
        let reader_path = path.clone();
        let reader = std::thread::spawn(move || {
            let r = open_connection(&reader_path).unwrap();
            r.execute_batch("BEGIN").unwrap();
            let _: i64 = r.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0)).unwrap();
            started.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            r.execute_batch("COMMIT").unwrap();
        });
        ready.recv().unwrap();
        write(&sqlite.writer.blocking_lock(), 200);
        let checkpointer = open_connection(&path).unwrap();
        checkpoint(&checkpointer, &writer, 100).unwrap();
        reader.join().unwrap();

        // A new reader is on the WAL when the next write begins: the write still goes to the
        // start of a fresh WAL.
        let other = open_connection(&path).unwrap();
        other.execute_batch("BEGIN").unwrap();
        let _: i64 = other.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0)).unwrap();
        write(&sqlite.writer.blocking_lock(), 1);
        other.execute_batch("COMMIT").unwrap();
        let frames = wal_frames(&checkpointer);
        assert!(frames < 10, "the WAL holds {frames} frames");
    }

    /// With `sqlite_stat4` (what `ANALYZE` writes when SQLite is built with STAT4), SQLite
    /// compiles a statement again whenever a parameter that could change its plan is bound to
    /// a new value: on every run of the server's statements, once a database has been
    /// analysed. That cost a fifth of the push cycle's throughput on a database with a
    /// million past challenges. The workspace builds SQLite without STAT4
    /// (`.cargo/config.toml`); this fails if a build brings it back.
    #[test]
    fn statements_are_not_compiled_again_for_their_bindings() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("stat4.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT NOT NULL, b INTEGER NOT NULL);
             CREATE INDEX t_by_a ON t (a);
             CREATE INDEX t_by_b ON t (b);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO t (a, b) SELECT CASE WHEN i % 10 = 0 THEN 'u' || i ELSE 'common' END, i % 7 FROM n;
             ANALYZE;",
        )
        .unwrap();
        let mut statement = conn.prepare("SELECT COUNT(*) FROM t WHERE a = ?1 AND b = ?2").unwrap();
        for (a, b) in [("common", 1), ("u10", 3), ("u20", 6), ("common", 2)] {
            let _: i64 = statement.query_row(rusqlite::params![a, b], |row| row.get(0)).unwrap();
        }
        let compiled_again = statement.get_status(rusqlite::StatementStatus::RePrepare);
        assert_eq!(compiled_again, 0, "SQLite compiled the statement again for its bindings (built with STAT4?)");
    }
}
