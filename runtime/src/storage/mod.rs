//! The storage interface: what the engine needs from a database, in the
//! words of the design (revisions, provenance, watermarks, claims, fences),
//! never in those of one database.
//!
//! A backend implements four small traits and the [`Backend`] trait that
//! ties them together:
//!
//! - [`Catalog`]: which tables the database holds, and bringing them in line
//!   with a graph;
//! - [`Rows`]: input writes, derived results under the write guard, and
//!   reading the state of rows;
//! - [`Progress`]: the revision counter, each table's watermark and the
//!   epoch that lets a reader trust a table without looking at its rows;
//! - [`Leases`]: claims on rows or whole tables, their fences, heartbeats.
//!
//! The SQLite backend ([`crate::sqlite`]) is one implementation; the
//! conformance suite ([`conformance`]) is the contract's executable form:
//! every backend must pass it.
//!
//! # The model a backend stores
//!
//! - One **revision** counter. Every write transaction (input writes,
//!   deletes, a batch of derived results) takes the next revision.
//! - An **input row**: its columns, `changed_at` (the revision at which its
//!   value last changed: writing an equal value keeps it) and the wall-clock
//!   time of that change (for `settle`).
//! - A **derived row**, keyed by its root key: its columns (none when it
//!   failed or is blocked), a [`RowStatus`], the code version it was computed
//!   with, the `changed_at` of each of its inputs when it was computed
//!   (`ins`, in the function's parameter order), and its own `changed_at`.
//! - For a derived table that declares reads, each row's **recorded
//!   reads** (table, key, and the read row's `changed_at` then, or none),
//!   replaced with the row, removed with it, and findable from the row read;
//!   deleting a row that was read leaves a **tombstone** (its table, key and
//!   the deleting revision), so that its readers are found as for a change.
//! - For each derived table, a **watermark** (the revision up to which every
//!   input change was processed) and an **epoch mark**.
//! - One **epoch** counter, moved by every write that can make derived rows
//!   stale behind a refresh pass's back (input writes, deletes, and derived
//!   rows written on demand: [`Pass::OnDemand`]). A table whose epoch mark
//!   equals the current epoch has no stale rows, so a reader may trust its
//!   stored rows without checking their provenance.
//! - **Leases**: per row `(table, key)` or per table, each held by an owner
//!   (a thread of a worker) until it expires; and the live workers.
//!
//! Every method is one transaction or one consistent read, never runs user
//! code, and takes `&self`: a backend that needs mutable state for a
//! transaction keeps it inside. Time comes from the backend's [`Clock`].

pub mod conformance;
mod replicas;
mod types;
pub mod url;

pub use replicas::*;
pub use types::*;
pub use url::UrlBackend;

use crate::clock::Clock;
use crate::error::Result;
use crate::graph::{Graph, TableId};
use crate::row::TableInfo;
use crate::value::{Key, Value};
use std::sync::Arc;
use std::time::Duration;

/// Which tables a database holds, and bringing them in line with a graph.
pub trait Catalog {
    /// Every rederive table the database holds, as its catalog describes it
    /// (name, whether it is an input table, its column fingerprint and code
    /// version). Empty for a new database.
    fn stored_tables(&self) -> Result<Vec<StoredTable>>;

    /// Brings the stored tables in line with the graph in one transaction:
    /// reads the catalog again inside it, asks [`crate::catalog::plan`]
    /// what to change (which also refuses what must not be done), and
    /// applies every [`SchemaChange`]. `codes[id]` is the current code
    /// version of each derived table's function.
    fn apply_schema(&self, graph: &Graph, codes: &[Option<String>]) -> Result<()>;

    /// Drops a table that the graph no longer has, with its catalog entry.
    /// Returns whether it existed.
    fn drop_table(&self, name: &str) -> Result<bool>;
}

/// Input writes, derived results, and reading rows.
pub trait Rows {
    /// Writes input rows of one table (each in column order) under one new
    /// revision, which it returns. A row equal to the stored one keeps its
    /// `changed_at`; a key given twice is written twice, in order.
    fn put_rows(&self, info: &TableInfo, rows: &[Vec<Value>]) -> Result<Revision>;

    /// Deletes an input row and every derived row of its key, under one new
    /// revision, moving the epoch. Returns whether the input row existed.
    fn delete_row(&self, graph: &Graph, id: TableId, key: &Key) -> Result<bool>;

    /// The state of one key in several tables of one root, read together
    /// (`None` where a table has no row of that key).
    fn load(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
        values: Values,
    ) -> Result<Vec<Option<RowState>>>;

    /// Up to `limit` rows of `driver` whose `changed_at` is after the
    /// cursor, in the order of `changed_at` then of a position the backend
    /// chooses, each with its cursor and its state in `tables` (with the
    /// values asked for). Paging from [`ChangeCursor::after`] a revision with
    /// the last row's cursor visits every such row exactly once.
    fn changed_page(
        &self,
        graph: &Graph,
        driver: TableId,
        tables: &[TableId],
        after: &ChangeCursor,
        limit: usize,
        values: Values,
    ) -> Result<Vec<ChangedRow>>;

    /// Stores results of one derived table in one transaction under one new
    /// revision. For each outcome, in order of the checks:
    ///
    /// 1. **Fence**: with [`Fence::Rows`], only if its owner still holds the
    ///    row's lease, which is given back by the write; with
    ///    [`Fence::Table`], only if its owner still holds the table lease
    ///    (else the whole batch is [`Written::Rejected`]), which it keeps:
    ///    a batch may be written in several parts, and the lease is given
    ///    back with [`Leases::release`].
    /// 2. **Write guard**: only if every `ins` is at least the stored row's.
    /// 3. **Early cutoff**: a result equal to the stored one (values and
    ///    status) keeps the stored `changed_at` ([`Written::Unchanged`]).
    /// 4. A result whose root row does not exist is not kept. `read_at` is
    ///    a revision at or before the one at which the outcomes' inputs
    ///    were read ([`Revision::ZERO`] when unknown): a backend may skip
    ///    this check when no root row was deleted since.
    ///
    /// [`Pass::OnDemand`] moves the epoch. An outcome marked
    /// [`Outcome::new`] may be inserted without comparing; if a row of
    /// its key appeared meanwhile, the checks above still apply to it.
    #[allow(clippy::too_many_arguments)]
    fn write_outcomes(
        &self,
        graph: &Graph,
        id: TableId,
        code: &str,
        outcomes: &[Outcome],
        pass: Pass,
        fence: &Fence,
        read_at: Revision,
    ) -> Result<Vec<Written>>;

    /// Reads that follow see one snapshot of the database, until
    /// [`Rows::end_snapshot`] or a write (so that a batch's many reads
    /// through `ctx` cost one read transaction, not one each). The default
    /// does nothing.
    fn begin_snapshot(&self) -> Result<()> {
        Ok(())
    }

    /// Ends the snapshot of [`Rows::begin_snapshot`], if one is held.
    fn end_snapshot(&self) -> Result<()> {
        Ok(())
    }

    /// Whether a stored table holds no row (cheap, whatever its size).
    fn is_empty(&self, table: &str) -> Result<bool>;

    /// Whether a row of `table` with a key in `first..=last` (in the
    /// backend's key order) was written after revision `after`: what a
    /// build pass asks before trusting a page it planned at `after`
    /// (another worker may have computed some of its rows since). The
    /// default answers `true`, which only costs planning again.
    fn changed_in_range(
        &self,
        info: &TableInfo,
        first: &Key,
        last: &Key,
        after: Revision,
    ) -> Result<bool> {
        let _ = (info, first, last, after);
        Ok(true)
    }

    /// Up to `limit` keys of `tables[0]` after `after`, in key order, each
    /// with its state in every table of `tables` (all of one root), with
    /// the values asked for. How a table that no refresh has filled yet is built:
    /// one ordered scan rather than a walk over changes.
    fn scan_page(
        &self,
        graph: &Graph,
        tables: &[TableId],
        after: Option<&Key>,
        limit: usize,
        values: Values,
    ) -> Result<Vec<ScannedRow>>;

    /// The number of rows of a stored table (by name: leftover tables that
    /// the graph no longer has are counted too).
    fn row_count(&self, table: &str) -> Result<u64>;

    /// Keys of a table in key order, after `after`, at most `limit`.
    fn keys_after(&self, info: &TableInfo, after: Option<&Key>, limit: usize) -> Result<Vec<Key>>;

    /// The reads recorded for one derived row (see [`Outcome::reads`]), in
    /// `(table, key)` order, each with the read row's `changed_at` now.
    /// Empty for a row that records none, or does not exist.
    fn reads_of(&self, graph: &Graph, id: TableId, key: &Key) -> Result<Vec<RecordedRead>>;

    /// The derived rows that recorded a read of `(table, key)`, as
    /// `(reader table, key)`, in order: one index lookup.
    fn readers_of(&self, graph: &Graph, table: TableId, key: &Key) -> Result<Vec<(TableId, Key)>>;

    /// Up to `limit` keys of `reader`'s rows after `after`, in key order,
    /// that recorded a read of a row changed, created or deleted after
    /// revision `since`.
    fn readers_changed_since(
        &self,
        graph: &Graph,
        reader: TableId,
        since: Revision,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>>;

    /// Keys of a derived table's rows with a status, in key order.
    fn keys_with_status(
        &self,
        info: &TableInfo,
        status: Status,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>>;
}

/// The revision counter, watermarks and epochs.
pub trait Progress {
    /// The current revision.
    fn revision(&self) -> Result<Revision>;

    /// The current revision and epoch, read together.
    fn snapshot(&self) -> Result<(Revision, Epoch)>;

    /// The revision up to which every input change of a derived table was
    /// processed (zero for a new table, and after its code changed).
    fn watermark(&self, table: &str) -> Result<Revision>;

    /// Records that a refresh pass processed every input change of a table
    /// up to `upto`, and found no stale row as of `epoch`. Neither mark is
    /// ever lowered.
    fn mark_processed(&self, table: &str, upto: Revision, epoch: Epoch) -> Result<()>;

    /// Whether every derived table among `tables` is marked processed as of
    /// the current epoch (so that none of their rows is stale).
    fn tables_settled(&self, graph: &Graph, tables: &[TableId]) -> Result<bool>;

    /// The state of one key in the last of `tables`, if every derived table
    /// among `tables` is marked processed as of the current epoch (`None`
    /// otherwise: the caller must then check provenance). One consistent read.
    fn load_if_settled(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
    ) -> Result<Option<Option<RowState>>>;

    /// A token that changes whenever another connection commits a write.
    /// Cheap: watch mode polls it.
    fn change_token(&self) -> Result<ChangeToken>;
}

/// Claims, fences and heartbeats.
pub trait Leases {
    /// Registers a worker as alive until `ttl` from now.
    fn register_worker(&self, worker: &str, ttl: Duration) -> Result<()>;

    /// Extends every lease of a worker, and its registration, to `ttl` from
    /// now (the heartbeat).
    fn heartbeat(&self, worker: &str, ttl: Duration) -> Result<()>;

    /// Claims rows of `table` for `owner` (a thread of `worker`) until `ttl`
    /// from now, in one transaction. With [`ClaimMode::TableIfAlone`], when
    /// `worker` is the only live worker and no other owner holds a lease in
    /// the table, the whole table is claimed with one lease (its fence is
    /// [`Fence::Table`]); otherwise each key is claimed unless another owner
    /// holds an unexpired lease on it, or on the whole table ([`Fence::Rows`]).
    /// An expired table lease is removed, so that its owner's fence fails.
    fn claim(
        &self,
        table: &str,
        keys: &[&Key],
        worker: &str,
        owner: &str,
        ttl: Duration,
        mode: ClaimMode,
    ) -> Result<Claim>;

    /// Gives leases back: with [`Fence::Rows`], those of `keys`; with
    /// [`Fence::Table`], the table lease (`keys` is not read). Giving back
    /// a lease no longer held does nothing.
    fn release(&self, table: &str, fence: &Fence, keys: &[&Key]) -> Result<()>;

    /// Gives every lease of a worker back and unregisters it.
    fn release_worker(&self, worker: &str) -> Result<()>;

    /// Unexpired leases of a table, counted by worker, sorted by worker.
    fn running(&self, table: &str) -> Result<Vec<RunningWork>>;
}

/// A database the engine can run on.
pub trait Backend: Catalog + Rows + Progress + Leases + Send {
    /// How to open more connections to the same database (for the lease
    /// heartbeat, for watch mode), or `None` for a private database that
    /// no other connection can see (then the engine uses no leases).
    fn connector(&self) -> Option<Arc<dyn Connector>>;

    /// The clock this backend stamps leases and input changes with.
    fn clock(&self) -> Arc<dyn Clock>;

    /// Replicas ([`Replicas`]), where this backend keeps them; `None`, the
    /// default, for a backend without them.
    fn replicas(&self) -> Option<&dyn Replicas> {
        None
    }
}

/// Opens connections to one database.
pub trait Connector: Send + Sync {
    /// A new connection to the same database.
    fn connect(&self) -> Result<Box<dyn Backend>>;

    /// Where the database is, for messages (a path or a URL without secrets).
    fn location(&self) -> String;

    /// Starts listening for hints that another connection committed a
    /// write: `wake` is called (from another thread) soon after each such
    /// commit, until the returned [`Subscription`] is dropped. Watch mode
    /// uses this to react at once instead of at its next poll.
    ///
    /// Hints are only hints: one may be lost (a connection pooler drops
    /// `LISTEN`, the listening connection breaks), and a hint may come for
    /// a write that changed nothing this reader sees. The change token
    /// ([`Progress::change_token`]) stays the truth, polled as the fallback.
    /// `Ok(None)`, the default, means the backend sends no hints.
    fn subscribe(&self, wake: Arc<dyn Fn() + Send + Sync>) -> Result<Option<Subscription>> {
        let _ = wake;
        Ok(None)
    }
}

/// Hints of other connections' writes, delivered while this lives (see
/// [`Connector::subscribe`]); dropping it stops the listener and waits for
/// its thread to end.
pub struct Subscription {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscription {
    /// A subscription served by `thread`, which must return soon after
    /// `stop` is set.
    pub fn new(
        stop: Arc<std::sync::atomic::AtomicBool>,
        thread: std::thread::JoinHandle<()>,
    ) -> Subscription {
        Subscription {
            stop,
            thread: Some(thread),
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
