//! Opening a database: checking the graph, applying the catalog rules
//! ([`crate::catalog`]), and the tables a program left behind.

use super::Db;
use crate::catalog::{self, SchemaChange};
use crate::code::code_version;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::lease::{new_worker_id, start_heartbeat, Orphans, DEFAULT_LEASE_TTL};
use crate::sqlite::SqliteStore;
use crate::storage::Backend;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};

/// Whether opening may create and alter tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create missing tables and bring changed ones in line (what
    /// [`Db::open`] does).
    Write,
    /// Change no table: fail with [`Error::SchemaNotApplied`] when the
    /// database lacks this program's tables or stores older layouts (what
    /// read-only commands such as `status` and `explain` use). A new code
    /// version is still recorded: that is bookkeeping, not a table change.
    Read,
}

/// The backend of a database URL (`postgres://...`); `None` for a file path.
fn open_location(path: &Path) -> Result<Option<Box<dyn Backend>>> {
    match path.to_str() {
        Some(location) => crate::storage::url::open_url(location),
        None => Ok(None),
    }
}

/// A table the database holds that this program no longer has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftoverTable {
    /// Its name.
    pub name: String,
    /// Whether it held input rows (which only an explicit request drops).
    pub input: bool,
    /// How many rows it holds.
    pub rows: u64,
}

impl Db {
    /// Opens or creates the database at `path` for the graph registered in
    /// this binary, which is checked first.
    ///
    /// `path` is a SQLite file, or the URL of a server database when its
    /// backend is linked in: `postgres://user@host/db` with the `rederive`
    /// crate's `postgres` feature. A URL whose backend is not linked in is
    /// an [`Error::NotADatabase`] naming the feature to enable.
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        Db::open_with(path, Graph::from_registry()?)
    }

    /// Opens an existing database without creating or altering any table
    /// (see [`OpenMode::Read`]).
    pub fn open_to_read(path: impl AsRef<Path>) -> Result<Db> {
        let path = path.as_ref();
        if let Some(store) = open_location(path)? {
            return Db::open_backend_as(store, Graph::from_registry()?, OpenMode::Read);
        }
        if !path.exists() {
            return Err(Error::NotADatabase {
                path: path.to_owned(),
                reason: "the file does not exist".into(),
            });
        }
        let store = Box::new(SqliteStore::open(path)?);
        Db::open_backend_as(store, Graph::from_registry()?, OpenMode::Read)
    }

    /// Opens a private in-memory database for the registered graph.
    pub fn open_in_memory() -> Result<Db> {
        Db::open_in_memory_with(Graph::from_registry()?)
    }

    /// Opens a database file (or URL, as [`Db::open`] does) with an
    /// explicitly assembled graph.
    pub fn open_with(path: impl AsRef<Path>, graph: Graph) -> Result<Db> {
        let path = path.as_ref();
        if let Some(store) = open_location(path)? {
            return Db::open_backend(store, graph);
        }
        Db::open_backend(Box::new(SqliteStore::open(path)?), graph)
    }

    /// Opens an in-memory database with an explicitly assembled graph.
    pub fn open_in_memory_with(graph: Graph) -> Result<Db> {
        Db::open_backend(Box::new(SqliteStore::open_in_memory()?), graph)
    }

    /// Opens a database through any storage backend, creating and
    /// altering tables as the graph needs ([`OpenMode::Write`]).
    pub fn open_backend(store: Box<dyn Backend>, graph: Graph) -> Result<Db> {
        Db::open_backend_as(store, graph, OpenMode::Write)
    }

    /// Opens a database through any storage backend, in either mode.
    pub fn open_backend_as(store: Box<dyn Backend>, graph: Graph, mode: OpenMode) -> Result<Db> {
        let codes = graph
            .tables()
            .iter()
            .map(|t| {
                t.producer
                    .map(|p| code_version(&graph.nodes()[p]))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        // Most opens find everything as it was: check with reads first, so
        // that opening a database to read it takes no write lock.
        let changes = catalog::plan(&store.stored_tables()?, &graph, &codes)?;
        if mode == OpenMode::Read {
            refuse_table_changes(&graph, &changes)?;
        }
        if !changes.is_empty() {
            store.apply_schema(&graph, &codes)?;
        }
        let ancestry = graph.ids().map(|id| graph.ancestry(id)).collect();
        let row_cost_ns = graph.ids().map(|_| AtomicU64::new(0)).collect();
        let compute_ns = graph.ids().map(|_| AtomicU64::new(0)).collect();
        let dependencies: Vec<Vec<_>> = graph.ids().map(|id| graph.dependencies(id)).collect();
        let reads_upstream = dependencies
            .iter()
            .map(|d| d.iter().any(|&t| !graph.table(t).reads.is_empty()))
            .collect();
        let worker = new_worker_id(store.clock().now_ms());
        let ttl = Arc::new(AtomicI64::new(DEFAULT_LEASE_TTL.as_millis() as i64));
        // A database that other connections can see is shared with other
        // workers: use leases, and keep them alive from a heartbeat thread.
        let connector = store.connector();
        let shared = connector.is_some();
        let orphans = Arc::new(Orphans::default());
        let heartbeat = match connector {
            Some(c) => start_heartbeat(c.connect()?, worker.clone(), ttl.clone(), orphans.clone()),
            None => None,
        };
        Ok(Db {
            clock: store.clock(),
            store: Mutex::new(store),
            graph,
            codes,
            ancestry,
            dependencies,
            reads_upstream,
            leasing: AtomicBool::new(shared),
            shared,
            lease_ttl_ms: ttl,
            worker,
            heartbeat,
            orphans,
            cancel: Arc::new(AtomicBool::new(false)),
            registered: AtomicBool::new(false),
            alone: AtomicBool::new(false),
            row_cost_ns,
            compute_ns,
        })
    }

    /// The tables the database holds that this program's graph no longer
    /// has, with their row counts.
    pub fn leftover_tables(&self) -> Result<Vec<LeftoverTable>> {
        let store = self.store();
        let stored = store.stored_tables()?;
        catalog::leftovers(&stored, &self.graph)
            .into_iter()
            .map(|s| {
                Ok(LeftoverTable {
                    name: s.name.clone(),
                    input: s.input,
                    rows: store.row_count(&s.name)?,
                })
            })
            .collect()
    }

    /// Drops a leftover table (see [`Db::leftover_tables`]). A table of
    /// this program's graph is never dropped; a leftover input table only
    /// with `inputs_too`, since its rows cannot be computed again.
    pub fn drop_leftover_table(&self, name: &str, inputs_too: bool) -> Result<()> {
        let leftover = self.leftover_tables()?.into_iter().find(|t| t.name == name);
        let refuse = |reason: &str| {
            Err(Error::NotDropped {
                table: name.to_owned(),
                reason: reason.to_owned(),
            })
        };
        match leftover {
            None if self.graph.table_id(name).is_ok() => {
                refuse("it is a table of this program's graph")
            }
            None => refuse("the database has no such table"),
            Some(t) if t.input && !inputs_too => refuse(&format!(
                "it is an input table with {} rows that nothing can compute again; drop input tables explicitly",
                t.rows
            )),
            Some(_) => {
                self.store().drop_table(name)?;
                Ok(())
            }
        }
    }
}

/// In [`OpenMode::Read`], a change that would create or alter a table is
/// an error naming the tables.
fn refuse_table_changes(graph: &Graph, changes: &[SchemaChange]) -> Result<()> {
    let mut missing = Vec::new();
    let mut changed = Vec::new();
    for change in changes.iter().filter(|c| c.alters_tables()) {
        match *change {
            SchemaChange::Create(id) => missing.push(graph.table(id).info.name.to_owned()),
            SchemaChange::Replace(id) | SchemaChange::AddColumns { table: id, .. } => {
                changed.push(graph.table(id).info.name.to_owned())
            }
            SchemaChange::NewCode(_) => {}
        }
    }
    if missing.is_empty() && changed.is_empty() {
        Ok(())
    } else {
        Err(Error::SchemaNotApplied { missing, changed })
    }
}
