//! The SQLite backend: every line of SQL for SQLite, and the only module
//! that knows `rusqlite`.
//!
//! Layout of a database file:
//! - `rederive_meta`: the format version, the revision counter and the
//!   epoch;
//! - `rederive_tables`: the catalog: each table's columns, its producer's
//!   code version, its watermark and its epoch mark;
//! - one STRICT table per input table: its columns, `__changed_at` (indexed)
//!   and `__changed_ms`;
//! - one STRICT table per derived table: `__key` (the root key), the value
//!   columns, `__status`, `__error`, `__origin_key`, `__code` (an id in
//!   `rederive_codes`), `__changed_at` (indexed), and one `__in_N` per input
//!   holding the input row's `__changed_at` when the row was computed;
//! - `rederive_codes`: the code versions derived rows were computed with,
//!   each named by a small id (ids are never reused);
//! - `rederive_reads`: the rows each derived row read through its `ctx`,
//!   one entry a read keyed by the row read, then the reader (table id and
//!   key read, reader table id and key); `rederive_read_tables`: those
//!   tables' ids; `rederive_reader_reads`: each reader row's reads, with
//!   the `changed_at` each saw (or none), packed into one value;
//!   `rederive_reads_pending`: reader rows of a build whose index entries
//!   are still to be inserted, in one sorted pass (`reads.rs`);
//!   `rederive_tombstones`: rows that were read and deleted, with the
//!   deleting revision;
//! - `rederive_leases`, `rederive_table_leases`, `rederive_workers`: row
//!   leases, whole-table leases of a worker that is alone, and live workers.
//!
//! A connection is opened in WAL mode with `synchronous = NORMAL` and a busy
//! timeout; write transactions are `BEGIN IMMEDIATE`.

mod leases;
mod progress;
mod reads;
mod replicas;
mod rows;
mod schema;
mod sql;

use crate::clock::{self, Clock};
use crate::error::{Error, Result};
use crate::storage::{Backend, Connector, Revision};
use crate::value::{Key, Value};
use rusqlite::types::{FromSql, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The newest storage format this build reads and writes: 2 since each
/// recorded read is one entry of the index by row read, 3 since a build's
/// entries may be pending (see the module docs); a database of an older
/// format is converted when it is opened.
pub const FORMAT: i64 = 3;

/// A database in an SQLite file (or a private in-memory one).
pub struct SqliteStore {
    conn: Connection,
    path: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    cache: sql::Cache,
    /// Whether a read transaction is held open for a snapshot
    /// ([`crate::storage::Rows::begin_snapshot`]).
    snapshot: std::cell::Cell<bool>,
}

/// Opens connections to one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteConnector {
    path: PathBuf,
    clock: Arc<dyn Clock>,
}

impl SqliteConnector {
    /// Connections to the file at `path`, on the system clock.
    pub fn new(path: impl Into<PathBuf>) -> SqliteConnector {
        SqliteConnector {
            path: path.into(),
            clock: clock::system(),
        }
    }

    /// The same, on another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> SqliteConnector {
        self.clock = clock;
        self
    }
}

impl Connector for SqliteConnector {
    fn connect(&self) -> Result<Box<dyn Backend>> {
        Ok(Box::new(SqliteStore::open_with_clock(
            &self.path,
            self.clock.clone(),
        )?))
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// An error inside this module: SQLite's, or one of ours. Converted into
/// [`Error::Storage`] or passed through at the trait boundary, so that
/// `rusqlite`'s types never reach users.
#[derive(Debug)]
pub(crate) enum SqlError {
    Sqlite(rusqlite::Error),
    Ours(Error),
}

impl From<rusqlite::Error> for SqlError {
    fn from(e: rusqlite::Error) -> Self {
        SqlError::Sqlite(e)
    }
}

impl From<rusqlite::types::FromSqlError> for SqlError {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        SqlError::Sqlite(e.into())
    }
}

impl From<Error> for SqlError {
    fn from(e: Error) -> Self {
        SqlError::Ours(e)
    }
}

impl From<SqlError> for Error {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::Sqlite(e) => Error::Storage(Box::new(e)),
            SqlError::Ours(e) => e,
        }
    }
}

pub(crate) type SqlResult<T> = std::result::Result<T, SqlError>;

/// Runs a body written with `?` on SQLite's errors and ours.
pub(crate) fn run<T>(body: impl FnOnce() -> SqlResult<T>) -> Result<T> {
    body().map_err(Error::from)
}

impl SqliteStore {
    /// Opens (or creates) a database file.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with_clock(path, clock::system())
    }

    /// Opens (or creates) a database file whose leases and change times
    /// follow `clock`.
    pub fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> Result<SqliteStore> {
        run(|| {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            let store = SqliteStore {
                conn,
                path: Some(path.to_owned()),
                clock,
                cache: Default::default(),
                snapshot: std::cell::Cell::new(false),
            };
            store.init()?;
            Ok(store)
        })
    }

    /// Opens a private in-memory database.
    pub fn open_in_memory() -> Result<SqliteStore> {
        SqliteStore::open_in_memory_with_clock(clock::system())
    }

    /// Opens a private in-memory database on `clock`.
    pub fn open_in_memory_with_clock(clock: Arc<dyn Clock>) -> Result<SqliteStore> {
        run(|| {
            let store = SqliteStore {
                conn: Connection::open_in_memory()?,
                path: None,
                clock,
                cache: Default::default(),
                snapshot: std::cell::Cell::new(false),
            };
            store.init()?;
            Ok(store)
        })
    }

    fn not_a_database(&self, reason: impl Into<String>) -> Error {
        Error::NotADatabase {
            path: self
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from(":memory:")),
            reason: reason.into(),
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A write transaction (`BEGIN IMMEDIATE`: the write lock is taken at
    /// once, so that two writers never deadlock upgrading a read).
    fn write(&self) -> SqlResult<Transaction<'_>> {
        // A write ends the snapshot held for reads.
        self.end_snapshot_now()?;
        Ok(Transaction::new_unchecked(
            &self.conn,
            TransactionBehavior::Immediate,
        )?)
    }

    /// Ends the read transaction of a snapshot, if one is held.
    pub(super) fn end_snapshot_now(&self) -> SqlResult<()> {
        if self.snapshot.replace(false) && !self.conn.is_autocommit() {
            self.conn.execute_batch("COMMIT")?;
        }
        Ok(())
    }

    /// Converts a database of an older storage format to [`FORMAT`], in
    /// one write transaction (checked again inside it: another process may
    /// have converted it meanwhile): format 1 stored each read twice, with
    /// table names; format 2 lacked the list of rows whose index entries
    /// are pending.
    fn migrate(&self) -> SqlResult<()> {
        let tx = self.write()?;
        let format: i64 = tx.query_row(
            "SELECT value FROM rederive_meta WHERE key = 'format'",
            [],
            |r| r.get(0),
        )?;
        if format < FORMAT {
            if format == 1 {
                reads::migrate_from_format_1(&tx)?;
            }
            tx.execute_batch(reads::READS_DDL)?;
            tx.execute(
                "UPDATE rederive_meta SET value = ?1 WHERE key = 'format'",
                [FORMAT],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn init(&self) -> SqlResult<()> {
        self.conn.busy_timeout(Duration::from_secs(10))?;
        self.conn.set_prepared_statement_cache_capacity(256);
        // Reading the schema is the first thing that fails on a file that is
        // not SQLite at all.
        let names: Vec<String> = match self
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        {
            Ok(names) => names,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::NotADatabase =>
            {
                return Err(self
                    .not_a_database("the file is not an SQLite database")
                    .into());
            }
            Err(e) => return Err(e.into()),
        };
        let ours = names.iter().any(|n| n == "rederive_meta");
        if !names.is_empty() && !ours {
            return Err(self
                .not_a_database(format!(
                    "it is an SQLite database with other tables ({}) and no rederive metadata",
                    names.join(", ")
                ))
                .into());
        }
        if self.path.is_some() {
            let mode: String = self
                .conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(self
                    .not_a_database(format!("could not switch to WAL mode (got {mode})"))
                    .into());
            }
        }
        self.conn
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;")?;
        if ours {
            let format: Option<i64> = self
                .conn
                .query_row(
                    "SELECT value FROM rederive_meta WHERE key = 'format'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            return match format {
                Some(f) if f > FORMAT => Err(Error::NewerFormat {
                    found: f,
                    supported: FORMAT,
                }
                .into()),
                Some(f) if f < FORMAT => self.migrate(),
                Some(_) => Ok(()),
                None => Err(self
                    .not_a_database("rederive_meta has no format version")
                    .into()),
            };
        }
        self.conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS rederive_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
             INSERT OR IGNORE INTO rederive_meta VALUES ('format', {FORMAT}), ('revision', 0), ('epoch', 0);
             CREATE TABLE IF NOT EXISTS rederive_tables(
                 name TEXT PRIMARY KEY,
                 input INTEGER NOT NULL,
                 columns TEXT NOT NULL,
                 code TEXT,
                 watermark INTEGER NOT NULL DEFAULT 0,
                 epoch_mark INTEGER NOT NULL DEFAULT 0
             ) STRICT;
             CREATE TABLE IF NOT EXISTS rederive_leases(
                 tbl TEXT NOT NULL,
                 key ANY NOT NULL,
                 worker TEXT NOT NULL,
                 owner TEXT NOT NULL,
                 expires_ms INTEGER NOT NULL,
                 PRIMARY KEY (tbl, key)
             ) STRICT, WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS rederive_table_leases(
                 tbl TEXT NOT NULL PRIMARY KEY,
                 worker TEXT NOT NULL,
                 owner TEXT NOT NULL,
                 rows INTEGER NOT NULL,
                 expires_ms INTEGER NOT NULL
             ) STRICT, WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS rederive_workers(
                 worker TEXT NOT NULL PRIMARY KEY,
                 expires_ms INTEGER NOT NULL
             ) STRICT, WITHOUT ROWID;
             {}
             COMMIT;",
            reads::READS_DDL
        ))?;
        Ok(())
    }
}

impl Backend for SqliteStore {
    fn connector(&self) -> Option<Arc<dyn Connector>> {
        let path = self.path.clone()?;
        Some(Arc::new(
            SqliteConnector::new(path).with_clock(self.clock.clone()),
        ))
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    fn replicas(&self) -> Option<&dyn crate::storage::Replicas> {
        Some(self)
    }
}

/// An SQL identifier, quoted.
pub(crate) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A [`Value`] as an SQLite parameter.
struct SqlValue<'a>(&'a Value);

impl ToSql for SqlValue<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(value_ref(self.0)))
    }
}

/// A [`Key`] as an SQLite parameter.
struct KeyParam<'a>(&'a Key);

impl ToSql for KeyParam<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(key_ref(self.0)))
    }
}

/// A [`Key`] as SQLite sees it, borrowed.
fn key_ref(k: &Key) -> ValueRef<'_> {
    match k {
        Key::Int(i) => ValueRef::Integer(*i),
        Key::Text(t) => ValueRef::Text(t.as_bytes()),
    }
}

/// A [`Value`] as SQLite sees it, borrowed.
fn value_ref(v: &Value) -> ValueRef<'_> {
    match v {
        Value::Null => ValueRef::Null,
        Value::Integer(i) => ValueRef::Integer(*i),
        Value::Real(f) => ValueRef::Real(*f),
        Value::Text(s) => ValueRef::Text(s.as_bytes()),
        Value::Blob(b) => ValueRef::Blob(b),
    }
}

impl ToSql for Revision {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.get()))
    }
}

impl FromSql for Revision {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(Revision::new)
    }
}

fn from_ref(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Keys from a query's first column (values that are no key are skipped).
fn keys_of(rows: impl Iterator<Item = rusqlite::Result<Value>>) -> SqlResult<Vec<Key>> {
    let mut out = Vec::new();
    for row in rows {
        if let Some(k) = Key::from_value(&row?) {
            out.push(k);
        }
    }
    Ok(out)
}
