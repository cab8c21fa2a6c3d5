//! The engine: [`Db`], the graph over a storage backend.
//!
//! One `impl Db`, split by concept: `open` (opening, catalog rules),
//! `write` (input rows), `read` (`get`), `explain` (`explain`,
//! `stale_from`, `status`, `errors`), `refresh` (planning and refresh
//! passes), `compute` (running user functions). Claiming, re-planning and
//! committing a batch is the lease module's ([`crate::lease`]).
//!
//! `refresh` walks the derived tables in topological order. For each table
//! it reads the input rows changed since the table's watermark (or, for a
//! table no refresh has filled yet, every input row in key order), asks the
//! judge ([`crate::judge`]) about each key, computes the stale rows in
//! parallel (outside any transaction), and writes the results in batches.
//! Its cost follows the number of changed rows, not the size of the tables.

pub(crate) mod compute;
pub(crate) mod deps;
mod explain;
mod open;
mod read;
pub(crate) mod refresh;
mod write;

pub use crate::lease::DEFAULT_LEASE_TTL;
pub use open::{LeftoverTable, OpenMode};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::graph::{Graph, TableId};
use crate::lease::{Heartbeat, Orphans};
use crate::row::Row;
use crate::storage::{Backend, ChangeToken};
use crate::value::Key;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How many changed rows are read, computed and written together.
pub(crate) const BATCH: usize = 512;

/// A rederive database: the registered graph over a storage backend (an
/// SQLite file by default).
///
/// `Db` is `Send + Sync`; its methods take `&self`. Functions run on a
/// thread pool and never inside a write transaction.
pub struct Db {
    store: Mutex<Box<dyn Backend>>,
    graph: Graph,
    clock: Arc<dyn Clock>,
    /// The current code version of each table's producer (by table index).
    codes: Vec<Option<String>>,
    /// For each table, the tables it is computed from (transitively) in
    /// topological order, ending with itself.
    ancestry: Vec<Vec<TableId>>,
    /// For each table, every table its rows depend on through inputs and
    /// reads, ending with itself ([`Graph::dependencies`]).
    dependencies: Vec<Vec<TableId>>,
    /// For each table, whether a table it depends on (or itself) records
    /// reads: then its rows are settled row by row ([`deps`]).
    reads_upstream: Vec<bool>,
    /// Leases: this process's worker id, and whether leases are used at all
    /// (not for a private in-memory database, which no one else can see).
    pub(crate) worker: String,
    pub(crate) leasing: AtomicBool,
    /// Whether other workers can see the database.
    shared: bool,
    /// Lease time-to-live in milliseconds (shared with the heartbeat).
    pub(crate) lease_ttl_ms: Arc<AtomicI64>,
    heartbeat: Option<Heartbeat>,
    /// Leases this worker could not give back (see [`Orphans`]).
    pub(crate) orphans: Arc<Orphans>,
    /// Set to stop running refreshes (between batches; nothing half-written).
    pub(crate) cancel: Arc<AtomicBool>,
    /// Whether this worker is registered as alive (done on its first claim,
    /// so that opening a database to read it writes nothing).
    pub(crate) registered: AtomicBool,
    /// Whether the last claim found this worker alone (or used no leases):
    /// then larger batches pay off.
    pub(crate) alone: AtomicBool,
    /// For each table, what computing and writing one row took lately, in
    /// nanoseconds (0: not measured yet): claims of slow rows are sized by
    /// it, so that one worker does not claim what others could share.
    pub(crate) row_cost_ns: Vec<AtomicU64>,
    /// What one row of each table took to compute lately (its function
    /// alone, in nanoseconds; 0 until known): whether a build computes
    /// rows ahead of their claim.
    pub(crate) compute_ns: Vec<AtomicU64>,
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.stop();
        }
        if self.registered.load(Ordering::Relaxed) {
            // A clean shutdown gives its leases back at once.
            let _ = self.store().release_worker(&self.worker);
        }
    }
}

impl Db {
    /// Sets how long a lease on a row lasts without being extended (the
    /// time after which a crashed worker's rows are taken over). A running
    /// worker extends its leases every third of this. Default: 30 s.
    pub fn set_lease_ttl(&self, ttl: Duration) {
        self.lease_ttl_ms
            .store(crate::clock::millis(ttl), Ordering::Relaxed);
    }

    /// The lease time-to-live now in force.
    pub(crate) fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms.load(Ordering::Relaxed).max(1) as u64)
    }

    /// Turns leases on or off. They are on for databases that other
    /// connections can see, so that several workers (threads or processes)
    /// never compute the same row at once; a program that is the only
    /// writer of its database may turn them off to save the bookkeeping.
    /// The write guard stays on either way.
    pub fn set_leasing(&self, on: bool) {
        self.leasing.store(on && self.shared, Ordering::Relaxed);
    }

    /// A flag that, once set, stops running and future refreshes of this
    /// `Db` with [`Error::Cancelled`]: the batch being computed is abandoned
    /// (nothing of it is written) and its leases are released. Safe to set
    /// from a signal handler or another thread.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Uses `flag` as this `Db`'s cancel flag (see [`Db::cancel_flag`]).
    pub fn with_cancel_flag(mut self, flag: Arc<AtomicBool>) -> Db {
        self.cancel = flag;
        self
    }

    pub(crate) fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::SeqCst) {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// A token that changes whenever another connection commits to the
    /// database (how watch mode notices writes; cheap to poll).
    pub fn change_token(&self) -> Result<ChangeToken> {
        self.store().change_token()
    }

    /// This process's worker id, as shown in `status`.
    pub fn worker_id(&self) -> &str {
        &self.worker
    }

    /// The id of the calling thread's leases: one per thread, so that two
    /// threads sharing a `Db` never compute the same row at once.
    pub(crate) fn lease_owner(&self) -> String {
        format!("{}/{:?}", self.worker, std::thread::current().id())
    }

    /// The graph this database was opened with.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Box<dyn Backend>> {
        // A panic while holding the lock cannot leave the store half-written
        // (every write is one transaction), so a poisoned lock is usable.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The current code version of a derived table's function.
    pub fn code_version(&self, table: &str) -> Result<Option<&str>> {
        Ok(self.code(self.graph.table_id(table)?))
    }

    pub(crate) fn code(&self, id: TableId) -> Option<&str> {
        self.codes[id.index()].as_deref()
    }

    pub(crate) fn ancestry(&self, id: TableId) -> &[TableId] {
        &self.ancestry[id.index()]
    }

    pub(crate) fn dependencies(&self, id: TableId) -> &[TableId] {
        &self.dependencies[id.index()]
    }

    pub(crate) fn reads_upstream(&self, id: TableId) -> bool {
        self.reads_upstream[id.index()]
    }

    pub(crate) fn id_of<T: Row>(&self) -> Result<TableId> {
        self.graph.table_id(T::TABLE.name)
    }

    pub(crate) fn name(&self, id: TableId) -> &'static str {
        self.graph.table(id).info.name
    }

    /// Converts a key to the type of the table's key column.
    pub fn coerce_key(&self, id: TableId, key: Key) -> Result<Key> {
        let ty = self.graph.key_type(id);
        key.clone().coerce(ty).ok_or_else(|| Error::KeyType {
            table: self.name(id).to_owned(),
            key,
            expected: ty.to_string(),
        })
    }

    pub(crate) fn not_found(&self, id: TableId, key: &Key) -> Error {
        let root = self.graph.table(id).root;
        Error::NotFound {
            table: self.name(root).to_owned(),
            key: key.clone(),
        }
    }

    /// Calls `each` with every page of keys that `fetch(after)` returns,
    /// from the start until an empty page.
    pub(crate) fn for_each_page(
        &self,
        mut fetch: impl FnMut(Option<&Key>) -> Result<Vec<Key>>,
        mut each: impl FnMut(Vec<Key>) -> Result<()>,
    ) -> Result<()> {
        let mut after: Option<Key> = None;
        loop {
            let keys = fetch(after.as_ref())?;
            let Some(last) = keys.last().cloned() else {
                return Ok(());
            };
            each(keys)?;
            after = Some(last);
        }
    }
}
