//! The engine: `Db` and what it does with the graph and the store.
//!
//! `refresh` walks the derived tables in topological order. For each table it
//! reads, through the index on `__changed_at`, the input rows changed since
//! the table's watermark, decides for each key whether the stored row is
//! fresh, computes the stale ones in parallel (outside any transaction), and
//! writes the results in batches. Its cost follows the number of changed
//! rows, not the size of the tables.

use crate::backend::{Backend, Fence, Outcome, OutcomeKind, RowState, Status, Written};
use crate::code::code_version;
use crate::error::{Error, Result};
use crate::graph::{Graph, TableId};
pub use crate::lease::DEFAULT_LEASE_TTL;
use crate::lease::{new_worker_id, start_heartbeat, Heartbeat};
use crate::node::NodeDef;
use crate::row::{Input, Row};
use crate::staleness::{FailedRow, Report, StaleRow, Staleness, TableReport, TableStatus};
use crate::store::Store;
use crate::value::{Key, Value};
use rayon::prelude::*;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How many changed rows are read, computed and written together.
pub(crate) const BATCH: usize = 512;

/// A rederive database: the registered graph over an SQLite file.
///
/// `Db` is `Send + Sync`; its methods take `&self`. Functions run on a
/// thread pool and never inside a write transaction.
pub struct Db {
    store: Mutex<Box<dyn Backend>>,
    graph: Graph,
    /// The current code version of each table's producer (by table id).
    codes: Vec<Option<String>>,
    /// For each table, the tables it is computed from (transitively) in
    /// topological order, ending with itself.
    ancestry: Vec<Vec<TableId>>,
    /// Leases: this process's worker id, and whether leases are used at all
    /// (not for a private in-memory database, which no one else can see).
    worker: String,
    leasing: AtomicBool,
    /// Whether other workers can see the database (a file, not a private
    /// in-memory database).
    shared: bool,
    /// Lease time-to-live in milliseconds (shared with the heartbeat).
    lease_ttl_ms: Arc<AtomicI64>,
    heartbeat: Option<Heartbeat>,
    /// Set to stop running refreshes (between batches; nothing half-written).
    cancel: Arc<AtomicBool>,
    /// Whether this worker is registered as alive (done on its first claim,
    /// so that opening a database to read it writes nothing).
    registered: AtomicBool,
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

/// What to do about one derived row.
enum Plan {
    /// Nothing: computed from the current inputs with the current code.
    Fresh,
    /// Compute it, or record that it is blocked.
    Work(Work),
    /// An input row is missing (not computed yet, or deleted meanwhile).
    Wait,
}

/// A stale row's work.
enum Work {
    /// Compute from these input rows.
    Compute {
        ins: Vec<i64>,
        inputs: Vec<Vec<Value>>,
    },
    /// Store as blocked by this failed row.
    Block {
        ins: Vec<i64>,
        table: String,
        key: Key,
    },
}

impl Db {
    /// Opens or creates the database at `path` for the graph registered in
    /// this binary, which is checked first.
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        Db::open_with(path, Graph::from_registry()?)
    }

    /// Opens a private in-memory database for the registered graph.
    pub fn open_in_memory() -> Result<Db> {
        Db::open_in_memory_with(Graph::from_registry()?)
    }

    /// Opens a database file with an explicitly assembled graph.
    pub fn open_with(path: impl AsRef<Path>, graph: Graph) -> Result<Db> {
        Db::open_backend(Box::new(Store::open(path.as_ref())?), graph)
    }

    /// Opens an in-memory database with an explicitly assembled graph.
    pub fn open_in_memory_with(graph: Graph) -> Result<Db> {
        Db::open_backend(Box::new(Store::open_in_memory()?), graph)
    }

    /// Opens a database through any storage backend (the SQLite store is
    /// what `open` uses), checking the graph against what it stores.
    pub fn open_backend(mut store: Box<dyn Backend>, graph: Graph) -> Result<Db> {
        let codes = graph
            .tables()
            .iter()
            .map(|t| {
                t.producer
                    .map(|p| code_version(&graph.nodes()[p]))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        store.sync_schema(&graph, &codes)?;
        let ancestry = (0..graph.tables().len())
            .map(|id| graph.ancestry(id))
            .collect();
        let worker = new_worker_id();
        let ttl = Arc::new(AtomicI64::new(DEFAULT_LEASE_TTL.as_millis() as i64));
        // A backend with a second handle is shared with other workers: use
        // leases, and keep them alive from a heartbeat thread.
        let second = store.second_handle()?;
        let shared = second.is_some();
        let heartbeat = second.and_then(|h| start_heartbeat(h, worker.clone(), ttl.clone()));
        Ok(Db {
            store: Mutex::new(store),
            graph,
            codes,
            ancestry,
            leasing: AtomicBool::new(shared),
            shared,
            lease_ttl_ms: ttl,
            worker,
            heartbeat,
            cancel: Arc::new(AtomicBool::new(false)),
            registered: AtomicBool::new(false),
        })
    }

    /// Sets how long a lease on a row lasts without being extended (the
    /// time after which a crashed worker's rows are taken over). A running
    /// worker extends its leases every third of this. Default: 30 s.
    pub fn set_lease_ttl(&self, ttl: Duration) {
        let ms = ttl.as_millis().clamp(1, i64::MAX as u128) as i64;
        self.lease_ttl_ms.store(ms, Ordering::Relaxed);
    }

    /// Turns leases on or off. They are on for database files, so that
    /// several workers (threads or processes) never compute the same row at
    /// once; a program that is the only writer of its database may turn
    /// them off to save the bookkeeping. The write guard stays on either way.
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

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::SeqCst) {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// SQLite's `PRAGMA data_version`: changes whenever another connection
    /// commits to the database (how watch mode notices writes).
    pub fn data_version(&self) -> Result<i64> {
        self.store().data_version()
    }

    /// This process's worker id, as shown in `status`.
    pub fn worker_id(&self) -> &str {
        &self.worker
    }

    /// The id of the calling thread's leases: one per thread, so that two
    /// threads sharing a `Db` never compute the same row at once.
    fn lease_owner(&self) -> String {
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

    /// The current code version of a derived table's function.
    pub fn code_version(&self, table: &str) -> Result<Option<&str>> {
        Ok(self.codes[self.graph.table_id(table)?].as_deref())
    }

    fn id_of<T: Row>(&self) -> Result<TableId> {
        self.graph.table_id(T::TABLE.name)
    }

    /// Converts a key to the type of the table's key column.
    pub fn coerce_key(&self, id: TableId, key: Key) -> Result<Key> {
        let ty = crate::store::key_type(&self.graph, id);
        key.clone().coerce(ty).ok_or_else(|| Error::KeyType {
            table: self.graph.table(id).info.name.to_owned(),
            key,
            expected: ty.to_string(),
        })
    }

    // ----- inputs -------------------------------------------------------

    /// Writes one input row (insert or replace), as one revision.
    pub fn put<T: Input>(&self, row: T) -> Result<()> {
        self.put_all(std::iter::once(row))
    }

    /// Writes many input rows of one table in one transaction and one revision.
    pub fn put_all<T: Input>(&self, rows: impl IntoIterator<Item = T>) -> Result<()> {
        self.id_of::<T>()?;
        let encoded = rows
            .into_iter()
            .map(|r| r.encode())
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|message| Error::Encode {
                table: T::TABLE.name.to_owned(),
                message,
            })?;
        self.store().put_rows(&T::TABLE, &encoded)
    }

    /// The keys of every row of an input table, in key order.
    pub fn keys<T: Input>(&self) -> Result<Vec<Key>> {
        self.id_of::<T>()?;
        let mut out = Vec::new();
        self.for_each_page(
            |after| self.store().keys_after(&T::TABLE, after, BATCH),
            |keys| {
                out.extend(keys);
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// Deletes an input row and everything derived from it. Returns whether
    /// the row existed.
    pub fn delete<T: Input>(&self, key: impl Into<Key>) -> Result<bool> {
        let id = self.id_of::<T>()?;
        let key = self.coerce_key(id, key.into())?;
        self.store().delete_row(&self.graph, id, &key)
    }

    // ----- reading --------------------------------------------------------

    /// A fresh row: an input row as stored, or a derived row computed first
    /// if it is missing or stale (with whatever it needs).
    pub fn get<T: Row>(&self, key: impl Into<Key>) -> Result<T> {
        let id = self.id_of::<T>()?;
        let key = self.coerce_key(id, key.into())?;
        let values = self.get_values(id, &key)?;
        T::decode(values).map_err(|message| Error::Decode {
            table: T::TABLE.name.to_owned(),
            key,
            message,
        })
    }

    /// Like [`Db::get`], by table id, returning the encoded columns.
    pub fn get_values(&self, id: TableId, key: &Key) -> Result<Vec<Value>> {
        let info = self.graph.table(id).info;
        if info.input {
            let state = self
                .store()
                .load_states(&self.graph, &[id], key)?
                .pop()
                .flatten();
            return state
                .map(|s| s.values)
                .ok_or_else(|| self.not_found(id, key));
        }
        let quick = self
            .store()
            .settled_row(&self.graph, &self.ancestry[id], key)?;
        // Settled everywhere as of this epoch: the stored row is the answer.
        // Else check this row's provenance upstream; else compute.
        let settled = match quick {
            Some(Some(state)) => Some(state),
            Some(None) => None,
            None => self.settled_state(id, key)?,
        };
        let state = match settled {
            Some(state) => Some(state),
            None => {
                let mut report = Report::default();
                self.ensure(id, key, &mut report)?;
                self.store()
                    .load_states(&self.graph, &[id], key)?
                    .pop()
                    .flatten()
            }
        };
        let state = state.ok_or_else(|| self.not_found(id, key))?;
        match state.status {
            Status::Ok => Ok(state.values),
            Status::Error => Err(Error::Failed {
                table: info.name.to_owned(),
                key: key.clone(),
                message: state.message.unwrap_or_default(),
            }),
            Status::Blocked => Err(Error::Blocked {
                table: info.name.to_owned(),
                key: key.clone(),
                failed_table: state.message.unwrap_or_default(),
                failed_key: state.origin_key.unwrap_or_else(|| key.clone()),
            }),
        }
    }

    /// The row's state if it and everything upstream of it is settled,
    /// read in one query over the table's ancestors (all keyed alike).
    fn settled_state(&self, id: TableId, key: &Key) -> Result<Option<RowState>> {
        let tables = &self.ancestry[id];
        let states = self.store().load_provenance(&self.graph, tables, key)?;
        for (i, &t) in tables.iter().enumerate() {
            let node = self.graph.table(t);
            if node.info.input {
                continue;
            }
            let Some(row) = &states[i] else {
                return Ok(None);
            };
            if row.code.as_deref() != self.codes[t].as_deref() {
                return Ok(None);
            }
            for (j, input) in node.inputs.iter().enumerate() {
                let pos = tables.iter().position(|x| x == input);
                let current = pos.and_then(|p| states[p].as_ref()).map(|s| s.changed_at);
                if current != Some(row.ins[j]) {
                    return Ok(None);
                }
            }
        }
        Ok(states.into_iter().last().flatten())
    }

    fn not_found(&self, id: TableId, key: &Key) -> Error {
        let root = self.graph.table(self.graph.table(id).root).info.name;
        Error::NotFound {
            table: root.to_owned(),
            key: key.clone(),
        }
    }

    /// Whether a row is fresh, and if not, the cause, naming the table and key.
    pub fn explain<T: Row>(&self, key: impl Into<Key>) -> Result<Staleness> {
        let id = self.id_of::<T>()?;
        let key = self.coerce_key(id, key.into())?;
        self.explain_id(id, &key)
    }

    /// Like [`Db::explain`], by table id.
    pub fn explain_id(&self, id: TableId, key: &Key) -> Result<Staleness> {
        let t = self.graph.table(id);
        let root_state = self
            .store()
            .load_states(&self.graph, &[t.root], key)?
            .pop()
            .flatten();
        if root_state.is_none() {
            return Err(self.not_found(id, key));
        }
        if t.info.input {
            return Ok(Staleness::Fresh);
        }
        self.explain_derived(id, key, &mut HashMap::new())
    }

    /// `seen` remembers the tables already explained for this key, so that a
    /// graph with shared upstream tables (diamonds) is walked once.
    fn explain_derived(
        &self,
        id: TableId,
        key: &Key,
        seen: &mut HashMap<TableId, Staleness>,
    ) -> Result<Staleness> {
        if let Some(s) = seen.get(&id) {
            return Ok(s.clone());
        }
        let s = self.explain_derived_once(id, key, seen)?;
        seen.insert(id, s.clone());
        Ok(s)
    }

    fn explain_derived_once(
        &self,
        id: TableId,
        key: &Key,
        seen: &mut HashMap<TableId, Staleness>,
    ) -> Result<Staleness> {
        let t = self.graph.table(id);
        let states = self.load_with_inputs(id, key)?;
        let Some(row) = &states[0] else {
            return Ok(Staleness::Missing);
        };
        for &input in &t.inputs {
            if !self.graph.table(input).info.input
                && !self.explain_derived(input, key, seen)?.is_settled()
            {
                return Ok(Staleness::UpstreamStale {
                    table: self.graph.table(input).info.name.to_owned(),
                    key: key.clone(),
                });
            }
        }
        for (j, &input) in t.inputs.iter().enumerate() {
            let current = states[j + 1].as_ref().map(|s| s.changed_at);
            if current != Some(row.ins[j]) {
                return Ok(Staleness::InputChanged {
                    table: self.graph.table(input).info.name.to_owned(),
                    key: key.clone(),
                });
            }
        }
        if row.code.as_deref() != self.codes[id].as_deref() {
            let node = self.graph.producer(id).map(|n| n.name).unwrap_or_default();
            return Ok(Staleness::CodeChanged {
                node: node.to_owned(),
            });
        }
        Ok(match row.status {
            Status::Ok => Staleness::Fresh,
            Status::Error => Staleness::Failed {
                message: row.message.clone().unwrap_or_default(),
            },
            Status::Blocked => Staleness::Blocked {
                table: row.message.clone().unwrap_or_default(),
                key: row.origin_key.clone().unwrap_or_else(|| key.clone()),
            },
        })
    }

    /// The derived rows that one input row makes stale (or that are missing),
    /// each with its cause, in topological order.
    pub fn stale_from<T: Input>(&self, key: impl Into<Key>) -> Result<Vec<StaleRow>> {
        let id = self.id_of::<T>()?;
        let key = self.coerce_key(id, key.into())?;
        self.stale_from_id(id, &key)
    }

    /// Like [`Db::stale_from`], by table id.
    pub fn stale_from_id(&self, root: TableId, key: &Key) -> Result<Vec<StaleRow>> {
        let mut out = Vec::new();
        for id in self.graph.derived_from_root(root) {
            let cause = self.explain_id(id, key)?;
            if !cause.is_settled() {
                out.push(StaleRow {
                    table: self.graph.table(id).info.name.to_owned(),
                    key: key.clone(),
                    cause,
                });
            }
        }
        Ok(out)
    }

    /// Counts every table's rows by state, in one query per table over its
    /// root table (a report for humans, not part of the incremental path).
    pub fn status(&self) -> Result<Vec<TableStatus>> {
        let mut out = Vec::new();
        for &id in self.graph.topological() {
            let t = self.graph.table(id);
            let mut st = TableStatus {
                table: t.info.name.to_owned(),
                input: t.info.input,
                ..TableStatus::default()
            };
            if t.info.input {
                st.rows = self.store().row_count(t.info)?;
                st.fresh = st.rows;
                out.push(st);
                continue;
            }
            let settle_ms = self.graph.producer(id).map_or(0, |n| n.settle_ms as i64);
            let [rows, fresh, failed, blocked, missing, stale, settling] = self
                .store()
                .status_counts(&self.graph, id, self.codes[id].as_deref(), settle_ms)?;
            st.rows = rows;
            st.fresh = fresh;
            st.failed = failed;
            st.blocked = blocked;
            st.missing = missing;
            st.stale = stale;
            st.settling = settling;
            for (worker, n) in self.store().running(t.info.name)? {
                st.running += n;
                st.workers.push(worker);
            }
            out.push(st);
        }
        Ok(out)
    }

    /// Calls `each` with every page of keys that `fetch(after)` returns,
    /// from the start until an empty page.
    fn for_each_page(
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

    /// Whether any row of any table is stored as failed.
    pub fn has_failures(&self) -> Result<bool> {
        for id in self.graph.derived_in_order() {
            let info = self.graph.table(id).info;
            if !self
                .store()
                .keys_with_status(info, Status::Error, None, 1)?
                .is_empty()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every failed row with its message and the rows it blocks.
    pub fn errors(&self) -> Result<Vec<FailedRow>> {
        let mut out = Vec::new();
        for id in self.graph.derived_in_order().collect::<Vec<_>>() {
            let info = self.graph.table(id).info;
            let root = self.graph.table(id).root;
            self.for_each_page(
                |after| {
                    self.store()
                        .keys_with_status(info, Status::Error, after, BATCH)
                },
                |keys| {
                    for key in keys {
                        let downstream: Vec<TableId> = self.graph.derived_from_root(root).collect();
                        let states = self.store().load_states(&self.graph, &downstream, &key)?;
                        let message = states
                            .iter()
                            .zip(&downstream)
                            .find(|(_, &t)| t == id)
                            .and_then(|(s, _)| s.as_ref().and_then(|s| s.message.clone()))
                            .unwrap_or_default();
                        let blocks = states
                            .iter()
                            .zip(&downstream)
                            .filter_map(|(s, &t)| {
                                let s = s.as_ref()?;
                                (s.status == Status::Blocked
                                    && s.message.as_deref() == Some(info.name)
                                    && s.origin_key.as_ref() == Some(&key))
                                .then(|| (self.graph.table(t).info.name.to_owned(), key.clone()))
                            })
                            .collect();
                        out.push(FailedRow {
                            table: info.name.to_owned(),
                            key,
                            message,
                            blocks,
                        });
                    }
                    Ok(())
                },
            )?;
        }
        Ok(out)
    }

    // ----- computing ------------------------------------------------------

    /// Computes every missing and stale row, table by table in topological
    /// order, functions in parallel.
    pub fn refresh(&self) -> Result<Report> {
        self.refresh_with_progress(|_, _| {})
    }

    /// Like [`Db::refresh`], calling `progress(table, report so far)` after
    /// every batch written.
    pub fn refresh_with_progress(
        &self,
        mut progress: impl FnMut(&str, &TableReport),
    ) -> Result<Report> {
        let mut report = Report::default();
        for id in self.graph.derived_in_order().collect::<Vec<_>>() {
            let name = self.graph.table(id).info.name;
            let r = self.refresh_table(id, &mut |r| progress(name, r))?;
            report.record(name, r);
        }
        Ok(report)
    }

    /// Recomputes the rows whose function failed, even though their inputs
    /// and code did not change, then refreshes what they unblock.
    pub fn retry(&self) -> Result<Report> {
        let mut report = Report::default();
        for id in self.graph.derived_in_order().collect::<Vec<_>>() {
            let info = self.graph.table(id).info;
            self.for_each_page(
                |after| {
                    self.store()
                        .keys_with_status(info, Status::Error, after, BATCH)
                },
                |keys| {
                    let mut batch = Vec::new();
                    for key in keys {
                        let states = self.load_with_inputs(id, &key)?;
                        match self.plan_forced(id, &key, states) {
                            Plan::Work(work) => batch.push((key, work)),
                            Plan::Fresh | Plan::Wait => {}
                        }
                    }
                    if !batch.is_empty() {
                        let r = self.execute(id, batch, None, true, true)?;
                        report.record(info.name, r);
                    }
                    Ok(())
                },
            )?;
        }
        let rest = self.refresh()?;
        for (t, r) in rest.tables {
            report.record(&t, r);
        }
        Ok(report)
    }

    /// Recomputes just the rows derived from one input row.
    pub fn refresh_from<T: Input>(&self, key: impl Into<Key>) -> Result<Report> {
        let id = self.id_of::<T>()?;
        let key = self.coerce_key(id, key.into())?;
        self.refresh_from_id(id, &key)
    }

    /// Like [`Db::refresh_from`], by table id.
    pub fn refresh_from_id(&self, root: TableId, key: &Key) -> Result<Report> {
        if !self.graph.table(root).info.input {
            return Err(Error::NotAnInput(
                self.graph.table(root).info.name.to_owned(),
            ));
        }
        if self
            .store()
            .load_states(&self.graph, &[root], key)?
            .pop()
            .flatten()
            .is_none()
        {
            return Err(self.not_found(root, key));
        }
        let mut report = Report::default();
        for id in self.graph.derived_from_root(root).collect::<Vec<_>>() {
            self.ensure(id, key, &mut report)?;
        }
        Ok(report)
    }

    /// Brings one derived row up to date, its derived inputs first.
    fn ensure(&self, id: TableId, key: &Key, report: &mut Report) -> Result<()> {
        let t = self.graph.table(id);
        for &input in &t.inputs {
            if !self.graph.table(input).info.input {
                self.ensure(input, key, report)?;
            }
        }
        loop {
            let plan = {
                let states = self.load_with_inputs(id, key)?;
                self.plan(id, key, states)
            };
            match plan {
                Plan::Fresh => return Ok(()),
                Plan::Wait => return Err(self.not_found(id, key)),
                Plan::Work(work) => {
                    let r = self.execute(id, vec![(key.clone(), work)], None, true, false)?;
                    let skipped = r.skipped > 0;
                    report.record(t.info.name, TableReport { skipped: 0, ..r });
                    if !skipped {
                        return Ok(());
                    }
                    // Another worker holds the row: wait for its result (or
                    // for its lease to expire), then look again.
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// A derived table followed by its inputs: the tables whose state
    /// decides what to do about one of its rows.
    fn with_inputs(&self, id: TableId) -> Vec<TableId> {
        let t = self.graph.table(id);
        let mut tables = Vec::with_capacity(1 + t.inputs.len());
        tables.push(id);
        tables.extend(&t.inputs);
        tables
    }

    fn load_with_inputs(&self, id: TableId, key: &Key) -> Result<Vec<Option<RowState>>> {
        self.store()
            .load_states(&self.graph, &self.with_inputs(id), key)
    }

    /// Like [`Db::plan`], but a fresh failed row is computed again.
    fn plan_forced(&self, id: TableId, key: &Key, mut states: Vec<Option<RowState>>) -> Plan {
        if let Some(row) = states[0].as_mut() {
            // Forget the provenance so that the row is not taken as fresh.
            row.ins.clear();
        }
        self.plan(id, key, states)
    }

    /// Decides what to do about one row, given its state and its inputs'.
    fn plan(&self, id: TableId, key: &Key, mut states: Vec<Option<RowState>>) -> Plan {
        let t = self.graph.table(id);
        let n = t.inputs.len();
        states.truncate(1 + n);
        let mut ins = Vec::with_capacity(n);
        for s in &states[1..] {
            match s {
                Some(s) => ins.push(s.changed_at),
                None => return Plan::Wait,
            }
        }
        if let Some(row) = &states[0] {
            if row.code.as_deref() == self.codes[id].as_deref() && row.ins == ins {
                return Plan::Fresh;
            }
        }
        for (j, s) in states[1..].iter().enumerate() {
            let Some(s) = s else { continue };
            match s.status {
                Status::Ok => {}
                Status::Error => {
                    let table = self.graph.table(t.inputs[j]).info.name.to_owned();
                    return Plan::Work(Work::Block {
                        ins,
                        table,
                        key: key.clone(),
                    });
                }
                Status::Blocked => {
                    let table = s.message.clone().unwrap_or_default();
                    let key = s.origin_key.clone().unwrap_or_else(|| key.clone());
                    return Plan::Work(Work::Block { ins, table, key });
                }
            }
        }
        let inputs = states
            .drain(1..)
            .map(|s| s.map(|s| s.values).unwrap_or_default())
            .collect();
        Plan::Work(Work::Compute { ins, inputs })
    }

    /// Refreshes one derived table: every row whose inputs changed since the
    /// table's watermark, or all rows after a code change.
    fn refresh_table(
        &self,
        id: TableId,
        progress: &mut dyn FnMut(&TableReport),
    ) -> Result<TableReport> {
        let t = self.graph.table(id);
        let ((start, epoch), watermark) = {
            let store = self.store();
            (store.revision_and_epoch()?, store.watermark(t.info.name)?)
        };
        let mut report = TableReport::default();
        let mut complete = true;
        let mut drivers = t.inputs.clone();
        drivers.sort();
        drivers.dedup();
        let mut tables = self.with_inputs(id);
        // With `settle`, the root row's last change time decides too.
        let settle_ms = self
            .graph
            .producer(id)
            .map(|n| n.settle_ms as i64)
            .unwrap_or(0);
        let root_pos = if settle_ms > 0 {
            Some(tables.iter().position(|&x| x == t.root).unwrap_or_else(|| {
                tables.push(t.root);
                tables.len() - 1
            }))
        } else {
            None
        };
        for driver in drivers {
            let mut cursor = (watermark, i64::MIN);
            loop {
                self.check_cancel()?;
                let seen = self.store().revision()?;
                let page =
                    self.store()
                        .load_changed_page(&self.graph, driver, &tables, cursor, BATCH)?;
                let Some(last) = page.last() else { break };
                cursor = last.1;
                let mut batch = Vec::new();
                let now = crate::store::now_ms();
                for (key, _, states) in page {
                    let settling = root_pos.is_some_and(|p| {
                        states[p]
                            .as_ref()
                            .is_some_and(|r| now < r.changed_ms + settle_ms)
                    });
                    match self.plan(id, &key, states) {
                        Plan::Fresh => {}
                        Plan::Wait => complete = false,
                        Plan::Work(_) if settling => {
                            report.settling += 1;
                            complete = false;
                        }
                        Plan::Work(work) => batch.push((key, work)),
                    }
                }
                if !batch.is_empty() {
                    let r = self.execute(id, batch, Some(seen), false, false)?;
                    complete &= r.skipped == 0;
                    report.add(&r);
                    progress(&report);
                }
            }
        }
        if complete {
            let store = self.store();
            store.raise_watermark(t.info.name, start)?;
            store.raise_epoch_mark(t.info.name, epoch)?;
        }
        Ok(report)
    }

    /// Computes the planned rows (in parallel, outside any transaction) and
    /// stores them in one write transaction.
    /// `outside_refresh`: written by `get`, `refresh_from` or `retry` rather
    /// than by a refresh pass (see the store's epoch). `seen`: the revision
    /// before the states behind `batch` were read; when anything was written
    /// since, each claimed row is planned again under its lease. `forced`:
    /// failed rows are computed again even if fresh (`retry`).
    fn execute(
        &self,
        id: TableId,
        batch: Vec<(Key, Work)>,
        seen: Option<i64>,
        outside_refresh: bool,
        forced: bool,
    ) -> Result<TableReport> {
        let Some(node) = self.graph.producer(id) else {
            return Ok(TableReport::default());
        };
        let name = self.graph.table(id).info.name;
        let mut r = TableReport::default();
        let owner = self
            .leasing
            .load(Ordering::Relaxed)
            .then(|| self.lease_owner());
        let ttl = self.lease_ttl_ms.load(Ordering::Relaxed);
        if owner.is_some() && !self.registered.swap(true, Ordering::SeqCst) {
            self.store().register_worker(&self.worker, ttl)?;
        }
        // A worker that is alone takes the table for the batch: one lease.
        let solo = match &owner {
            Some(owner) => self
                .store()
                .claim_table(name, &self.worker, owner, batch.len(), ttl)?,
            None => None,
        };
        let batch = match &owner {
            None => batch,
            Some(owner) => {
                let keys: Vec<&Key> = batch.iter().map(|(k, _)| k).collect();
                let (claimed, revision) = match solo {
                    Some(revision) => (vec![true; keys.len()], revision),
                    None => self.store().claim(name, &keys, &self.worker, owner, ttl)?,
                };
                let mut kept = Vec::with_capacity(batch.len());
                let mut unneeded = Vec::new();
                for ((key, work), got) in batch.into_iter().zip(claimed) {
                    if !got {
                        r.skipped += 1;
                        continue;
                    }
                    if seen == Some(revision) {
                        kept.push((key, work));
                        continue;
                    }
                    // Something was written since the plan (perhaps this very
                    // row, by the worker that held it): plan again.
                    let states = self.load_with_inputs(id, &key)?;
                    let plan = if forced {
                        self.plan_forced(id, &key, states)
                    } else {
                        self.plan(id, &key, states)
                    };
                    match plan {
                        Plan::Work(work) => kept.push((key, work)),
                        Plan::Fresh => unneeded.push(key),
                        Plan::Wait => {
                            r.skipped += 1;
                            unneeded.push(key)
                        }
                    }
                }
                if !unneeded.is_empty() && solo.is_none() {
                    let refs: Vec<&Key> = unneeded.iter().collect();
                    self.store().release(name, &refs, owner)?;
                }
                kept
            }
        };
        let outcomes = compute_all(node, batch);
        if self.cancel.load(Ordering::SeqCst) {
            // Abandon the batch: write nothing, give the rows back.
            if let Some(owner) = &owner {
                if solo.is_some() {
                    self.store().release_table(name, owner)?;
                } else {
                    let keys: Vec<&Key> = outcomes.iter().map(|o| &o.key).collect();
                    self.store().release(name, &keys, owner)?;
                }
            }
            return Err(Error::Cancelled);
        }
        let code = self.codes[id].as_deref().unwrap_or_default();
        let written = self.store().write_outcomes(
            &self.graph,
            id,
            code,
            &outcomes,
            outside_refresh,
            match (&owner, solo) {
                (None, _) => Fence::None,
                (Some(owner), Some(_)) => Fence::Table(owner),
                (Some(owner), None) => Fence::Rows(owner),
            },
        )?;
        for (o, w) in outcomes.iter().zip(written) {
            match (w, &o.kind) {
                (Written::Rejected, _) => r.skipped += 1,
                (_, OutcomeKind::Blocked { .. }) => r.blocked += 1,
                (_, OutcomeKind::Error(_)) => r.failed += 1,
                (Written::Changed, OutcomeKind::Ok(_)) => r.computed += 1,
                (Written::Unchanged, OutcomeKind::Ok(_)) => r.unchanged += 1,
            }
        }
        Ok(r)
    }
}

/// Runs a batch's work: the first row alone, timed, and the rest on the
/// thread pool only when they are slow enough for parallelism to pay off
/// (for trivial functions, handing rows to other threads costs more than
/// the calls themselves).
fn compute_all(node: &NodeDef, batch: Vec<(Key, Work)>) -> Vec<Outcome> {
    const PARALLEL_ABOVE: std::time::Duration = std::time::Duration::from_micros(20);
    let mut rest = batch.into_iter();
    let Some((key, work)) = rest.next() else {
        return Vec::new();
    };
    let started = std::time::Instant::now();
    let first = run(node, key, work);
    let slow = started.elapsed() > PARALLEL_ABOVE;
    let mut outcomes = vec![first];
    if slow {
        outcomes.par_extend(
            rest.collect::<Vec<_>>()
                .into_par_iter()
                .map(|(k, w)| run(node, k, w)),
        );
    } else {
        outcomes.extend(rest.map(|(k, w)| run(node, k, w)));
    }
    outcomes
}

/// Does one row's work: calls the function (catching panics) or records the block.
fn run(node: &NodeDef, key: Key, work: Work) -> Outcome {
    match work {
        Work::Compute { ins, inputs } => {
            let kind = match catch_unwind(AssertUnwindSafe(|| (node.compute)(inputs))) {
                Ok(Ok(values)) => OutcomeKind::Ok(values),
                Ok(Err(message)) => OutcomeKind::Error(message),
                Err(payload) => {
                    OutcomeKind::Error(format!("panicked: {}", panic_message(&payload)))
                }
            };
            Outcome { key, ins, kind }
        }
        Work::Block {
            ins,
            table,
            key: origin,
        } => Outcome {
            key,
            ins,
            kind: OutcomeKind::Blocked { table, key: origin },
        },
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
