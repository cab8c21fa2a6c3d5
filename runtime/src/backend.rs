//! The storage interface. The engine reaches the database only through
//! [`Backend`]; the SQLite store ([`crate::store::Store`]) is the one
//! implementation today, and a PostgreSQL backend (many machines sharing one
//! database, claiming work with `FOR UPDATE SKIP LOCKED`) will be another.
//!
//! Revisions (`i64` here) are the backend's business: the engine compares
//! and stores them, and nothing public on `Db` exposes them.

use crate::error::Result;
use crate::graph::{Graph, TableId};
use crate::row::TableInfo;
use crate::value::{Key, Value};
use std::path::Path;

/// A row's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Computed successfully (always, for input rows).
    Ok = 0,
    /// The function failed.
    Error = 1,
    /// An input failed.
    Blocked = 2,
}

impl Status {
    pub(crate) fn from_i64(i: i64) -> Status {
        match i {
            1 => Status::Error,
            2 => Status::Blocked,
            _ => Status::Ok,
        }
    }
}

/// What is stored about one row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowState {
    /// The revision at which the row's value last changed.
    pub changed_at: i64,
    /// Ok, error or blocked.
    pub status: Status,
    /// The error message (error), or the failed table (blocked).
    pub message: Option<String>,
    /// The failed row's key (blocked).
    pub origin_key: Option<Key>,
    /// The code version it was computed with (derived rows).
    pub code: Option<String>,
    /// The `changed_at` of each input when it was computed (derived rows).
    pub ins: Vec<i64>,
    /// The value columns (NULL for failed and blocked rows).
    pub values: Vec<Value>,
    /// Wall-clock time of the last change, in ms since the epoch (input rows).
    pub changed_ms: i64,
}

/// A result to store for one derived row.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The row's key.
    pub key: Key,
    /// The `changed_at` of each input it was computed from.
    pub ins: Vec<i64>,
    /// Value, error or block.
    pub kind: OutcomeKind,
}

/// The result of computing one row.
#[derive(Debug, Clone)]
pub enum OutcomeKind {
    /// The encoded row.
    Ok(Vec<Value>),
    /// The function's error message.
    Error(String),
    /// Not computed: this upstream row failed.
    Blocked {
        /// The failed table.
        table: String,
        /// The failed key.
        key: Key,
    },
}

/// What happened to one stored outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored, and the value differs from before (or is new).
    Changed,
    /// Stored; the value equals the previous one, whose `changed_at` is kept.
    Unchanged,
    /// Not stored: the stored row was computed from newer inputs.
    Rejected,
}

/// How a batch's results prove that their worker still holds the rows.
#[derive(Debug, Clone, Copy)]
pub enum Fence<'a> {
    /// No leases (a private database, or leases turned off).
    None,
    /// Each row's lease, held by this owner.
    Rows(&'a str),
    /// The table lease of a worker that was alone, held by this owner.
    Table(&'a str),
}

/// A changed row of a driver table: its key, its cursor, and its state in
/// the tables asked for.
pub type ChangedRow = (Key, (i64, i64), Vec<Option<RowState>>);

/// What the engine needs from a database. Every method is one transaction
/// (or one consistent read); none runs user code.
pub trait Backend: Send {
    /// The database file, if it is one.
    fn path(&self) -> Option<&Path>;

    /// Brings the stored tables in line with the graph (create, rebuild
    /// derived tables whose row type changed, migrate or refuse input
    /// changes, reset watermarks of tables whose code version changed).
    fn sync_schema(&mut self, graph: &Graph, codes: &[Option<String>]) -> Result<()>;

    /// The current revision.
    fn revision(&self) -> Result<i64>;

    /// The current revision and epoch, read together.
    fn revision_and_epoch(&self) -> Result<(i64, i64)>;

    /// A counter that changes whenever another connection commits.
    fn data_version(&self) -> Result<i64>;

    /// Writes input rows under one new revision; equal rows keep `changed_at`.
    fn put_rows(&mut self, info: &TableInfo, rows: &[Vec<Value>]) -> Result<()>;

    /// Deletes an input row and every row derived from it.
    fn delete_row(&mut self, graph: &Graph, id: TableId, key: &Key) -> Result<bool>;

    /// The state of one key in several tables.
    fn load_states(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
    ) -> Result<Vec<Option<RowState>>>;

    /// Like `load_states`, with the values of the last table only.
    fn load_provenance(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
    ) -> Result<Vec<Option<RowState>>>;

    /// A page of a driver table's rows changed after a cursor, with their
    /// states in `tables`.
    fn load_changed_page(
        &self,
        graph: &Graph,
        driver: TableId,
        tables: &[TableId],
        after: (i64, i64),
        limit: usize,
    ) -> Result<Vec<ChangedRow>>;

    /// The state of one row of the last table, if every table is settled as
    /// of the current epoch.
    fn settled_row(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
    ) -> Result<Option<Option<RowState>>>;

    /// Stores a batch of results under the write guard, early cutoff and
    /// the fence.
    fn write_outcomes(
        &mut self,
        graph: &Graph,
        id: TableId,
        code: &str,
        outcomes: &[Outcome],
        outside_refresh: bool,
        fence: Fence<'_>,
    ) -> Result<Vec<Written>>;

    /// The revision up to which every input change was processed for a table.
    fn watermark(&self, table: &str) -> Result<i64>;

    /// Raises a table's watermark.
    fn raise_watermark(&self, table: &str, revision: i64) -> Result<()>;

    /// Marks a table as having no stale rows as of an epoch.
    fn raise_epoch_mark(&self, table: &str, epoch: i64) -> Result<()>;

    /// Registers a worker as alive.
    fn register_worker(&self, worker: &str, ttl_ms: i64) -> Result<()>;

    /// Extends every lease of a worker.
    fn extend_leases(&self, worker: &str, ttl_ms: i64) -> Result<()>;

    /// Claims a whole table for a batch when the worker is alone.
    fn claim_table(
        &mut self,
        table: &str,
        worker: &str,
        owner: &str,
        rows: usize,
        ttl_ms: i64,
    ) -> Result<Option<i64>>;

    /// Claims rows one by one.
    fn claim(
        &mut self,
        table: &str,
        keys: &[&Key],
        worker: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<(Vec<bool>, i64)>;

    /// Gives row leases back.
    fn release(&mut self, table: &str, keys: &[&Key], owner: &str) -> Result<()>;

    /// Gives a table lease back.
    fn release_table(&self, table: &str, owner: &str) -> Result<()>;

    /// Gives every lease of a worker back and unregisters it.
    fn release_worker(&mut self, worker: &str) -> Result<()>;

    /// Unexpired leases of a table, counted by worker.
    fn running(&self, table: &str) -> Result<Vec<(String, u64)>>;

    /// A derived table's rows by state: `[rows, fresh, failed, blocked,
    /// missing, stale, settling]`.
    fn status_counts(
        &self,
        graph: &Graph,
        id: TableId,
        code: Option<&str>,
        settle_ms: i64,
    ) -> Result<[u64; 7]>;

    /// The number of rows of a table.
    fn row_count(&self, info: &TableInfo) -> Result<u64>;

    /// Keys of a table in key order, a page at a time.
    fn keys_after(&self, info: &TableInfo, after: Option<&Key>, limit: usize) -> Result<Vec<Key>>;

    /// Keys of a derived table's rows with a status, a page at a time.
    fn keys_with_status(
        &self,
        info: &TableInfo,
        status: Status,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>>;

    /// Another handle on the same database for another thread (the lease
    /// heartbeat), or `None` for a private database.
    fn second_handle(&self) -> Result<Option<Box<dyn Backend>>>;
}
