//! The SQLite store. All SQL lives here: the engine speaks in tables, keys,
//! values and revisions, so that another backend (PostgreSQL) can take this
//! module's place.
//!
//! Layout:
//! - `rederive_meta`: the format version, the revision counter (one per write
//!   transaction) and the epoch (bumped by writes that can make rows stale
//!   outside a refresh pass);
//! - `rederive_tables`: each table's columns, its producer's code version, its
//!   watermark (the revision up to which every input change was processed)
//!   and its epoch mark (the epoch as of which it had no stale rows);
//! - one STRICT table per input table: its columns, `__changed_at` (indexed)
//!   and `__changed_ms`;
//! - one STRICT table per derived table: `__key` (the root key), the value
//!   columns, `__status`, `__error`, `__origin_key`, `__code`, `__changed_at`
//!   (indexed), and one `__in_N` per input holding the input row's
//!   `__changed_at` when the row was computed;
//! - `rederive_leases`, `rederive_table_leases`, `rederive_workers`: row
//!   leases, whole-table leases of a worker that is alone, and live workers.

use crate::backend::{Backend, ChangedRow, Fence, Outcome, OutcomeKind, RowState, Status, Written};
use crate::error::{Error, Result};
use crate::graph::{Graph, TableId};
use crate::row::TableInfo;
use crate::schema::{create_table, fingerprint, migrate_input};
use crate::value::{Key, SqlType, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{
    params_from_iter, Connection, OpenFlags, OptionalExtension, ToSql, TransactionBehavior,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The newest storage format this build reads and writes.
pub const FORMAT: i64 = 1;

pub(crate) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

struct SqlValue<'a>(&'a Value);

impl ToSql for SqlValue<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
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

fn key_param(key: &Key) -> Value {
    key.to_value()
}

/// The SQL type of a table's key: the key column for inputs, the root's key
/// column for derived tables.
pub fn key_type(graph: &Graph, id: TableId) -> SqlType {
    let root = graph.table(graph.table(id).root).info;
    root.key_column().map(|c| c.ty).unwrap_or(SqlType::Text)
}

/// The name of a table's key column.
fn key_column(info: &TableInfo) -> String {
    match info.key_column() {
        Some(c) if info.input => quote(c.name),
        _ => "__key".to_owned(),
    }
}

/// Extends every lease of `worker` to `ttl_ms` from now, on its own
/// connection (the heartbeat of a worker whose functions run long).
pub fn extend_leases(conn: &Connection, worker: &str, ttl_ms: i64) -> Result<()> {
    let until = now_ms() + ttl_ms;
    for sql in [
        "UPDATE rederive_leases SET expires_ms = ?2 WHERE worker = ?1",
        "UPDATE rederive_table_leases SET expires_ms = ?2 WHERE worker = ?1",
        "UPDATE rederive_workers SET expires_ms = ?2 WHERE worker = ?1",
    ] {
        conn.execute(sql, rusqlite::params![worker, until])?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

type SqlCache = std::cell::RefCell<
    std::collections::HashMap<(Vec<TableId>, Option<TableId>, bool), std::sync::Arc<str>>,
>;

/// The SQLite store.
pub struct Store {
    conn: Connection,
    path: Option<PathBuf>,
    sql_cache: SqlCache,
    settled_cache: SqlCache,
    upsert_cache: UpsertCache,
}

impl Store {
    /// Opens (or creates) a database file.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let store = Store {
            conn,
            path: Some(path.to_owned()),
            sql_cache: SqlCache::default(),
            settled_cache: SqlCache::default(),
            upsert_cache: Default::default(),
        };
        store.init()?;
        Ok(store)
    }

    /// Opens a private in-memory database.
    pub fn open_in_memory() -> Result<Store> {
        let store = Store {
            conn: Connection::open_in_memory()?,
            path: None,
            sql_cache: SqlCache::default(),
            settled_cache: SqlCache::default(),
            upsert_cache: Default::default(),
        };
        store.init()?;
        Ok(store)
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

    fn init(&self) -> Result<()> {
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
                return Err(self.not_a_database("the file is not an SQLite database"));
            }
            Err(e) => return Err(e.into()),
        };
        let ours = names.iter().any(|n| n == "rederive_meta");
        if !names.is_empty() && !ours {
            return Err(self.not_a_database(format!(
                "it is an SQLite database with other tables ({}) and no rederive metadata",
                names.join(", ")
            )));
        }
        if self.path.is_some() {
            let mode: String = self
                .conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(
                    self.not_a_database(format!("could not switch to WAL mode (got {mode})"))
                );
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
            match format {
                Some(f) if f > FORMAT => {
                    return Err(Error::NewerFormat {
                        found: f,
                        supported: FORMAT,
                    })
                }
                Some(_) => {}
                None => return Err(self.not_a_database("rederive_meta has no format version")),
            }
            return Ok(());
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
             COMMIT;"
        ))?;
        Ok(())
    }

    /// The SELECT that reads the state of one key in several tables: over a
    /// single key (`driver: None`), or over a page of a driver table's rows
    /// changed since a cursor. Built once per shape and cached.
    fn state_sql(
        &self,
        graph: &Graph,
        tables: &[TableId],
        driver: Option<TableId>,
        all_values: bool,
    ) -> std::sync::Arc<str> {
        let cache_key = (tables.to_vec(), driver, all_values);
        if let Some(sql) = self.sql_cache.borrow().get(&cache_key) {
            return sql.clone();
        }
        let mut select = vec!["q.k".to_owned()];
        let mut joins = String::new();
        for (i, &id) in tables.iter().enumerate() {
            let t = graph.table(id);
            let a = format!("a{i}");
            select.push(format!("{a}.__changed_at"));
            if t.info.input {
                select.push(format!("{a}.__changed_ms"));
            } else {
                select.push(format!(
                    "{a}.__status, {a}.__error, {a}.__origin_key, {a}.__code"
                ));
                for j in 0..t.inputs.len() {
                    select.push(format!("{a}.__in_{j}"));
                }
            }
            if all_values || i + 1 == tables.len() {
                for c in t.info.columns {
                    select.push(format!("{a}.{}", quote(c.name)));
                }
            }
            joins.push_str(&format!(
                " LEFT JOIN {} {a} ON {a}.{} = q.k",
                quote(t.info.name),
                key_column(t.info)
            ));
        }
        let source = match driver {
            None => "(SELECT ?1 AS k) q".to_owned(),
            Some(d) => {
                select.push("q.ca".into());
                select.push("q.rid".into());
                let info = graph.table(d).info;
                // Two index seeks merged: the rest of the cursor's revision
                // (`= ca AND rowid >`), then later revisions (`> ca`). A
                // single row-value comparison would make SQLite seek on
                // `__changed_at` alone and rescan the cursor's revision on
                // every page.
                let part = |cond: &str, order: &str| {
                    format!(
                        "SELECT * FROM (SELECT {key} AS k, __changed_at AS ca, rowid AS rid FROM {t} \
                         WHERE {cond} ORDER BY {order} LIMIT ?3)",
                        key = key_column(info),
                        t = quote(info.name)
                    )
                };
                format!(
                    "(SELECT * FROM ({} UNION ALL {}) ORDER BY ca, rid LIMIT ?3) q",
                    part("__changed_at = ?1 AND rowid > ?2", "rowid"),
                    part("__changed_at > ?1", "__changed_at, rowid")
                )
            }
        };
        let order = if driver.is_some() {
            " ORDER BY q.ca, q.rid"
        } else {
            ""
        };
        let sql: std::sync::Arc<str> =
            format!("SELECT {} FROM {source}{joins}{order}", select.join(", ")).into();
        self.sql_cache.borrow_mut().insert(cache_key, sql.clone());
        sql
    }

    /// Direct access for tests and tools.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Whether every table of the graph is stored as the graph describes it,
    /// with its current code version.
    fn schema_in_sync(&self, graph: &Graph, codes: &[Option<String>]) -> Result<bool> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT input, columns, code FROM rederive_tables WHERE name = ?1")?;
        for &id in graph.topological() {
            let t = graph.table(id);
            let stored: Option<(bool, String, Option<String>)> = stmt
                .query_row([t.info.name], |r| {
                    Ok((r.get::<_, i64>(0)? != 0, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let expected_code = if t.info.input {
                None
            } else {
                codes[id].clone()
            };
            if stored != Some((t.info.input, fingerprint(graph, id), expected_code)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The state of one key in `tables`, with every table's values or only
    /// the last one's.
    fn load_key(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
        all_values: bool,
    ) -> Result<Vec<Option<RowState>>> {
        let sql = self.state_sql(graph, tables, None, all_values);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let k = key_param(key);
        Ok(stmt.query_row([SqlValue(&k)], |r| {
            read_states(graph, tables, r, &mut 1, all_values)
        })?)
    }

    /// A second handle on the same file, for another thread.
    pub fn reopen(&self) -> Result<Option<Store>> {
        self.path.as_deref().map(Store::open).transpose()
    }
}

impl Backend for Store {
    /// The file, if any.
    fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Brings the stored tables in line with the graph: creates missing
    /// tables, rebuilds derived tables whose row type changed, adds new
    /// nullable columns to input tables (anything else is an error), and
    /// resets the watermark of tables whose code version changed.
    fn sync_schema(&mut self, graph: &Graph, codes: &[Option<String>]) -> Result<()> {
        // Most opens find everything as it was: check with reads first, so
        // that opening a database to read it takes no write lock and writes
        // nothing.
        if self.schema_in_sync(graph, codes)? {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for &id in graph.topological() {
            let t = graph.table(id);
            let name = t.info.name;
            let fp = fingerprint(graph, id);
            let stored: Option<(bool, String, Option<String>)> = tx
                .query_row(
                    "SELECT input, columns, code FROM rederive_tables WHERE name = ?1",
                    [name],
                    |r| Ok((r.get::<_, i64>(0)? != 0, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let code = codes[id].clone();
            match stored {
                None => {
                    create_table(&tx, graph, id)?;
                    tx.execute(
                        "INSERT INTO rederive_tables(name, input, columns, code, watermark) VALUES (?1, ?2, ?3, ?4, 0)",
                        rusqlite::params![name, t.info.input as i64, fp, code],
                    )?;
                }
                Some((true, _, _)) if !t.info.input => {
                    return Err(Error::SchemaChanged {
                        table: name.to_owned(),
                        detail: "it was an input table and is now derived; dropping it would lose input rows".into(),
                    });
                }
                Some((was_input, old_fp, _)) if t.info.input && (old_fp != fp || !was_input) => {
                    if !was_input {
                        // A derived table became an input table: its rows can be recomputed
                        // by nobody now, but they are derived data, so they may go.
                        tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote(name)))?;
                        create_table(&tx, graph, id)?;
                    } else {
                        migrate_input(&tx, t.info, &old_fp)?;
                    }
                    tx.execute(
                        "UPDATE rederive_tables SET input = 1, columns = ?2, code = NULL WHERE name = ?1",
                        rusqlite::params![name, fp],
                    )?;
                }
                Some((_, old_fp, _)) if !t.info.input && old_fp != fp => {
                    // Derived data can always be recomputed: rebuild.
                    tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote(name)))?;
                    create_table(&tx, graph, id)?;
                    tx.execute(
                        "UPDATE rederive_tables SET columns = ?2, code = ?3, watermark = 0, epoch_mark = 0 WHERE name = ?1",
                        rusqlite::params![name, fp, code],
                    )?;
                }
                Some((_, _, old_code)) if !t.info.input && old_code != code => {
                    tx.execute(
                        "UPDATE rederive_tables SET code = ?2, watermark = 0, epoch_mark = 0 WHERE name = ?1",
                        rusqlite::params![name, code],
                    )?;
                }
                Some(_) => {}
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The current revision.
    fn revision(&self) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM rederive_meta WHERE key = 'revision'")?
            .query_row([], |r| r.get(0))?)
    }

    /// Writes input rows (each `values` in column order) under one new revision.
    /// A row equal to the stored one keeps its `changed_at`.
    fn put_rows(&mut self, info: &TableInfo, rows: &[Vec<Value>]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rev = next_revision(&tx)?;
        bump_epoch(&tx)?;
        let stamps = [Value::Integer(rev), Value::Integer(now_ms())];
        // Many rows per statement, as for derived rows. A key given twice is
        // upserted twice, in order: the last value wins.
        let chunk_rows = (30_000 / (info.columns.len() + 2)).clamp(1, UPSERT_ROWS);
        for chunk in rows.chunks(chunk_rows) {
            let sql = {
                let mut cache = self.upsert_cache.borrow_mut();
                cache
                    .entry((info.name, chunk.len()))
                    .or_insert_with(|| upsert_input_sql(info, chunk.len()).into())
                    .clone()
            };
            let params = chunk
                .iter()
                .flat_map(|values| values.iter().chain(&stamps))
                .map(SqlValue);
            tx.prepare_cached(&sql)?.execute(params_from_iter(params))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes an input row and every row derived from it. Returns whether
    /// the input row existed.
    fn delete_row(&mut self, graph: &Graph, id: TableId, key: &Key) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        next_revision(&tx)?;
        bump_epoch(&tx)?;
        let info = graph.table(id).info;
        let k = key_param(key);
        let n = tx.execute(
            &format!(
                "DELETE FROM {} WHERE {} = ?1",
                quote(info.name),
                key_column(info)
            ),
            [SqlValue(&k)],
        )?;
        for d in graph.derived_from_root(id) {
            tx.execute(
                &format!(
                    "DELETE FROM {} WHERE __key = ?1",
                    quote(graph.table(d).info.name)
                ),
                [SqlValue(&k)],
            )?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// The stored state of one key in several tables, in one query (every
    /// table of a root shares its key).
    fn load_states(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
    ) -> Result<Vec<Option<RowState>>> {
        self.load_key(graph, tables, key, true)
    }

    /// Like [`Store::load_states`], with the value columns of the last
    /// table only (the others' values come back empty).
    fn load_provenance(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
    ) -> Result<Vec<Option<RowState>>> {
        self.load_key(graph, tables, key, false)
    }

    /// Like [`Store::load_states`] for a page of keys: the rows of `driver`
    /// changed after `after` (through the index on `__changed_at`), each
    /// with its cursor and its state in `tables`.
    fn load_changed_page(
        &self,
        graph: &Graph,
        driver: TableId,
        tables: &[TableId],
        after: (i64, i64),
        limit: usize,
    ) -> Result<Vec<ChangedRow>> {
        let sql = self.state_sql(graph, tables, Some(driver), true);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params![after.0, after.1, limit as i64], |r| {
            let key = from_ref(r.get_ref(0)?);
            let mut i = 1;
            let states = read_states(graph, tables, r, &mut i, true)?;
            let cursor = (r.get::<_, i64>(i)?, r.get::<_, i64>(i + 1)?);
            Ok((key, cursor, states))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, cursor, states) = row?;
            if let Some(key) = Key::from_value(&key) {
                out.push((key, cursor, states));
            }
        }
        Ok(out)
    }

    /// Stores results of one derived table in one write transaction, each
    /// only if the write guard passes: every input it was computed from is
    /// at least as new as those of the stored row. A result equal to the
    /// stored row keeps its `changed_at` (early cutoff).
    fn write_outcomes(
        &mut self,
        graph: &Graph,
        id: TableId,
        code: &str,
        outcomes: &[Outcome],
        outside_refresh: bool,
        fence: Fence<'_>,
    ) -> Result<Vec<Written>> {
        let t = graph.table(id);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rev = next_revision(&tx)?;
        if outside_refresh {
            bump_epoch(&tx)?;
        }
        if let Fence::Table(owner) = fence {
            let held = tx
                .prepare_cached(
                    "DELETE FROM rederive_table_leases WHERE tbl = ?1 AND owner = ?2 RETURNING 1",
                )?
                .query_row(rusqlite::params![t.info.name, owner], |_| Ok(()))
                .optional()?
                .is_some();
            if !held {
                tx.commit()?;
                return Ok(vec![Written::Rejected; outcomes.len()]);
            }
        }
        let lease_owner = match fence {
            Fence::Rows(owner) => Some(owner),
            _ => None,
        };
        let mut written = vec![Written::Rejected; outcomes.len()];
        let nulls = vec![Value::Null; t.info.columns.len()];
        let code_value = Value::Text(code.to_owned());
        // Each row's parameters, for the rows whose lease is held.
        let mut rows: Vec<(usize, Vec<Value>)> = Vec::with_capacity(outcomes.len());
        {
            // Fencing and release in one statement: only the current
            // holder of the lease writes, and gives the lease back as it does.
            let mut release = tx.prepare_cached(
                "DELETE FROM rederive_leases WHERE tbl = ?1 AND key = ?2 AND owner = ?3 RETURNING 1",
            )?;
            for (i, o) in outcomes.iter().enumerate() {
                let key = o.key.to_value();
                if let Some(owner) = lease_owner {
                    let held = release
                        .query_row(
                            rusqlite::params![t.info.name, SqlValue(&key), owner],
                            |_| Ok(()),
                        )
                        .optional()?
                        .is_some();
                    if !held {
                        continue;
                    }
                }
                let (values, status, message, origin) = match &o.kind {
                    OutcomeKind::Ok(v) => (v, Status::Ok, Value::Null, Value::Null),
                    OutcomeKind::Error(m) => {
                        (&nulls, Status::Error, Value::Text(m.clone()), Value::Null)
                    }
                    OutcomeKind::Blocked { table, key } => (
                        &nulls,
                        Status::Blocked,
                        Value::Text(table.clone()),
                        key.to_value(),
                    ),
                };
                let mut params = Vec::with_capacity(1 + values.len() + 5 + o.ins.len());
                params.push(key);
                params.extend(values.iter().cloned());
                params.extend([
                    Value::Integer(status as i64),
                    message,
                    origin,
                    code_value.clone(),
                    Value::Integer(rev),
                ]);
                params.extend(o.ins.iter().map(|&i| Value::Integer(i)));
                rows.push((i, params));
            }
        }
        // Many rows per statement: fewer statement executions, same work.
        let per_row = 1 + t.info.columns.len() + 5 + t.inputs.len();
        let chunk_rows = (30_000 / per_row).clamp(1, UPSERT_ROWS);
        for chunk in rows.chunks(chunk_rows) {
            let sql = upsert_sql(&self.upsert_cache, t.info, t.inputs.len(), chunk.len());
            let mut stmt = tx.prepare_cached(&sql)?;
            let index: std::collections::HashMap<&Key, usize> =
                chunk.iter().map(|(i, _)| (&outcomes[*i].key, *i)).collect();
            let mut returned = stmt.query(params_from_iter(
                chunk.iter().flat_map(|(_, p)| p).map(SqlValue),
            ))?;
            while let Some(r) = returned.next()? {
                let Some(key) = Key::from_value(&from_ref(r.get_ref(0)?)) else {
                    continue;
                };
                let changed: i64 = r.get(1)?;
                if let Some(&i) = index.get(&key) {
                    written[i] = if changed == rev {
                        Written::Changed
                    } else {
                        Written::Unchanged
                    };
                }
            }
        }
        // A root row deleted while its rows were being computed takes them
        // along: what this batch inserted for it goes again (found through
        // the index on `__changed_at`: only this batch's rows carry `rev`).
        let root = graph.table(t.root).info;
        let orphans = tx
            .prepare_cached(&format!(
                "DELETE FROM {t} WHERE __changed_at = ?1 AND NOT EXISTS \
                 (SELECT 1 FROM {r} WHERE {r}.{k} = {t}.__key) RETURNING __key",
                t = quote(t.info.name),
                r = quote(root.name),
                k = key_column(root),
            ))?
            .query_map([rev], |r| Ok(from_ref(r.get_ref(0)?)))?
            .collect::<rusqlite::Result<Vec<Value>>>()?;
        for key in orphans.iter().filter_map(Key::from_value) {
            if let Some(i) = outcomes.iter().position(|o| o.key == key) {
                written[i] = Written::Rejected;
            }
        }
        tx.commit()?;
        Ok(written)
    }

    /// The revision up to which every input change was processed for `table`.
    fn watermark(&self, table: &str) -> Result<i64> {
        Ok(self
            .conn
            .prepare_cached("SELECT watermark FROM rederive_tables WHERE name = ?1")?
            .query_row([table], |r| r.get(0))?)
    }

    /// Registers a worker as alive for `ttl_ms` (extended by its heartbeat).
    fn register_worker(&self, worker: &str, ttl_ms: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO rederive_workers(worker, expires_ms) VALUES (?1, ?2)
             ON CONFLICT(worker) DO UPDATE SET expires_ms = excluded.expires_ms",
            rusqlite::params![worker, now_ms() + ttl_ms],
        )?;
        Ok(())
    }

    /// Claims a whole table for one batch, when `worker` is the only live
    /// worker and nobody else holds rows of the table: one lease instead of
    /// one per row. Returns the revision at the time of the claim, or `None`
    /// when other workers are about (then rows are claimed one by one).
    ///
    /// A worker that starts later registers first, then finds this lease
    /// and leaves the table alone until the batch is written.
    fn claim_table(
        &mut self,
        table: &str,
        worker: &str,
        owner: &str,
        rows: usize,
        ttl_ms: i64,
    ) -> Result<Option<i64>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        let others: bool = tx
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM rederive_workers WHERE worker != ?1 AND expires_ms >= ?2)
                     OR EXISTS(SELECT 1 FROM rederive_leases WHERE tbl = ?3 AND owner != ?4 AND expires_ms >= ?2)",
            )?
            .query_row(rusqlite::params![worker, now, table, owner], |r| r.get(0))?;
        if others {
            return Ok(None);
        }
        let got = tx
            .prepare_cached(
                "INSERT INTO rederive_table_leases(tbl, worker, owner, rows, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(tbl) DO UPDATE SET worker = excluded.worker, owner = excluded.owner,
                   rows = excluded.rows, expires_ms = excluded.expires_ms
                 WHERE expires_ms < ?6 OR owner = excluded.owner
                 RETURNING 1",
            )?
            .query_row(rusqlite::params![table, worker, owner, rows as i64, now + ttl_ms, now], |_| Ok(()))
            .optional()?
            .is_some();
        if !got {
            return Ok(None);
        }
        let revision: i64 = tx
            .prepare_cached("SELECT value FROM rederive_meta WHERE key = 'revision'")?
            .query_row([], |r| r.get(0))?;
        tx.commit()?;
        Ok(Some(revision))
    }

    /// Claims rows of `table` for `owner` (of process-level `worker`) until
    /// `ttl_ms` from now: a row is claimed unless another owner holds an
    /// unexpired lease on it. Returns which keys were claimed, and the
    /// revision at the time of the claim.
    fn claim(
        &mut self,
        table: &str,
        keys: &[&Key],
        worker: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<(Vec<bool>, i64)> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now_ms();
        let mut claimed = Vec::with_capacity(keys.len());
        let table_held: bool = tx
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM rederive_table_leases WHERE tbl = ?1 AND owner != ?2 AND expires_ms >= ?3)",
            )?
            .query_row(rusqlite::params![table, owner, now], |r| r.get(0))?;
        if table_held {
            // Another worker holds the whole table for a batch.
            let revision: i64 = tx
                .prepare_cached("SELECT value FROM rederive_meta WHERE key = 'revision'")?
                .query_row([], |r| r.get(0))?;
            return Ok((vec![false; keys.len()], revision));
        }
        // An expired table lease is taken over row by row: remove it, so
        // that its worker's fence fails should it come back.
        tx.prepare_cached("DELETE FROM rederive_table_leases WHERE tbl = ?1 AND expires_ms < ?2")?
            .execute(rusqlite::params![table, now])?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO rederive_leases(tbl, key, worker, owner, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(tbl, key) DO UPDATE SET worker = excluded.worker, owner = excluded.owner,
                   expires_ms = excluded.expires_ms
                 WHERE expires_ms < ?6 OR owner = excluded.owner
                 RETURNING 1",
            )?;
            for key in keys {
                let k = key.to_value();
                let got = stmt
                    .query_row(
                        rusqlite::params![table, SqlValue(&k), worker, owner, now + ttl_ms, now],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                claimed.push(got);
            }
        }
        let revision: i64 = tx
            .prepare_cached("SELECT value FROM rederive_meta WHERE key = 'revision'")?
            .query_row([], |r| r.get(0))?;
        tx.commit()?;
        Ok((claimed, revision))
    }

    /// Gives up leases (work abandoned, or found fresh after claiming).
    fn release(&mut self, table: &str, keys: &[&Key], owner: &str) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM rederive_leases WHERE tbl = ?1 AND key = ?2 AND owner = ?3",
            )?;
            for key in keys {
                stmt.execute(rusqlite::params![table, SqlValue(&key.to_value()), owner])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Gives up a table lease that ended up unused.
    fn release_table(&self, table: &str, owner: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM rederive_table_leases WHERE tbl = ?1 AND owner = ?2",
            rusqlite::params![table, owner],
        )?;
        Ok(())
    }

    /// Gives up every lease of a worker and unregisters it (on shutdown).
    fn release_worker(&mut self, worker: &str) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM rederive_leases WHERE worker = ?1", [worker])?;
        tx.execute(
            "DELETE FROM rederive_table_leases WHERE worker = ?1",
            [worker],
        )?;
        tx.execute("DELETE FROM rederive_workers WHERE worker = ?1", [worker])?;
        tx.commit()?;
        Ok(())
    }

    /// Unexpired leases of a table, counted by owner.
    fn running(&self, table: &str) -> Result<Vec<(String, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT worker, sum(n) FROM (
                 SELECT worker, count(*) AS n FROM rederive_leases WHERE tbl = ?1 AND expires_ms >= ?2 GROUP BY worker
                 UNION ALL
                 SELECT worker, rows FROM rederive_table_leases WHERE tbl = ?1 AND expires_ms >= ?2)
             GROUP BY worker ORDER BY worker",
        )?;
        let rows = stmt.query_map(rusqlite::params![table, now_ms()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The current revision and epoch, read together.
    fn revision_and_epoch(&self) -> Result<(i64, i64)> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT (SELECT value FROM rederive_meta WHERE key = 'revision'), \
                 (SELECT value FROM rederive_meta WHERE key = 'epoch')",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?)
    }

    /// Marks `table` as having no stale rows as of `epoch`.
    fn raise_epoch_mark(&self, table: &str, epoch: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE rederive_tables SET epoch_mark = max(epoch_mark, ?2) WHERE name = ?1",
            )?
            .execute(rusqlite::params![table, epoch])?;
        Ok(())
    }

    /// The state of one row of `tables[last]`, read only if every table in
    /// `tables` is marked settled as of the current epoch (one query).
    /// `None` when some table may hold stale rows.
    fn settled_row(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
    ) -> Result<Option<Option<RowState>>> {
        let Some(&last) = tables.last() else {
            return Ok(None);
        };
        let names: Vec<String> = tables
            .iter()
            .filter(|&&t| !graph.table(t).info.input)
            .map(|&t| graph.table(t).info.name.replace('\'', "''"))
            .collect();
        let cache_key = (tables.to_vec(), None, false);
        let sql = {
            let cached = self.settled_cache.borrow().get(&cache_key).cloned();
            match cached {
                Some(sql) => sql,
                None => {
                    let inner = self.state_sql(graph, &[last], None, true);
                    let sql: std::sync::Arc<str> = format!(
                        "SELECT (SELECT value FROM rederive_meta WHERE key = 'epoch') <= \
                           (SELECT coalesce(min(epoch_mark), 1 << 62) FROM rederive_tables WHERE name IN ('{}')), s.* \
                         FROM ({inner}) s",
                        names.join("', '")
                    )
                    .into();
                    self.settled_cache
                        .borrow_mut()
                        .insert(cache_key, sql.clone());
                    sql
                }
            }
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let k = key_param(key);
        let row = stmt.query_row([SqlValue(&k)], |r| {
            let settled: bool = r.get(0)?;
            if !settled {
                return Ok(None);
            }
            // Column 1 is the inner query's key.
            let mut states = read_states(graph, &[last], r, &mut 2, true)?;
            Ok(Some(states.pop().flatten()))
        })?;
        Ok(row)
    }

    /// Raises the watermark of `table` to `revision` (never lowers it).
    fn raise_watermark(&self, table: &str, revision: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE rederive_tables SET watermark = max(watermark, ?2) WHERE name = ?1",
            )?
            .execute(rusqlite::params![table, revision])?;
        Ok(())
    }

    /// Counts a derived table's rows by state in one pass over its root
    /// table: `[rows, fresh, failed, blocked, missing, stale, settling]`.
    /// A row is fresh when it was computed with `code` from the current
    /// `changed_at` of each input.
    fn status_counts(
        &self,
        graph: &Graph,
        id: TableId,
        code: Option<&str>,
        settle_ms: i64,
    ) -> Result<[u64; 7]> {
        let t = graph.table(id);
        let root = graph.table(t.root).info;
        let mut joins = format!(
            " LEFT JOIN {} t ON t.__key = r.{}",
            quote(t.info.name),
            key_column(root)
        );
        let mut fresh = vec![
            "t.__key IS NOT NULL".to_owned(),
            "t.__code IS ?1".to_owned(),
        ];
        for (j, &input) in t.inputs.iter().enumerate() {
            let info = graph.table(input).info;
            joins.push_str(&format!(
                " LEFT JOIN {} i{j} ON i{j}.{} = r.{}",
                quote(info.name),
                key_column(info),
                key_column(root)
            ));
            fresh.push(format!("t.__in_{j} IS i{j}.__changed_at"));
        }
        let f = format!("({})", fresh.join(" AND "));
        let sql = format!(
            "SELECT count(t.__key),
                    coalesce(sum({f} AND t.__status = 0), 0),
                    coalesce(sum({f} AND t.__status = 1), 0),
                    coalesce(sum({f} AND t.__status = 2), 0),
                    coalesce(sum(t.__key IS NULL), 0),
                    coalesce(sum(t.__key IS NOT NULL AND NOT {f}), 0),
                    coalesce(sum(?2 > 0 AND NOT {f} AND r.__changed_ms > ?3 - ?2), 0)
             FROM {r} r{joins}",
            r = quote(root.name)
        );
        let counts =
            self.conn
                .query_row(&sql, rusqlite::params![code, settle_ms, now_ms()], |r| {
                    let mut out = [0u64; 7];
                    for (i, slot) in out.iter_mut().enumerate() {
                        *slot = r.get::<_, i64>(i)? as u64;
                    }
                    Ok(out)
                })?;
        Ok(counts)
    }

    /// The number of rows of a table.
    fn row_count(&self, info: &TableInfo) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM {}", quote(info.name));
        let n: i64 = self.conn.query_row(&sql, [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Every key of a table, in key order, a page at a time.
    fn keys_after(&self, info: &TableInfo, after: Option<&Key>, limit: usize) -> Result<Vec<Key>> {
        let kc = key_column(info);
        let sql = match after {
            Some(_) => format!(
                "SELECT {kc} FROM {t} WHERE {kc} > ?1 ORDER BY {kc} LIMIT ?2",
                t = quote(info.name)
            ),
            None => format!(
                "SELECT {kc} FROM {t} ORDER BY {kc} LIMIT ?2",
                t = quote(info.name)
            ),
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let after = after.map(|k| k.to_value()).unwrap_or(Value::Null);
        let rows = stmt.query_map(rusqlite::params![SqlValue(&after), limit as i64], |r| {
            Ok(from_ref(r.get_ref(0)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            if let Some(k) = Key::from_value(&row?) {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Keys of rows with the given status, a page at a time.
    fn keys_with_status(
        &self,
        info: &TableInfo,
        status: Status,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        let sql = format!(
            "SELECT __key FROM {t} WHERE __status = ?1 AND (?2 IS NULL OR __key > ?2) ORDER BY __key LIMIT ?3",
            t = quote(info.name)
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let after = after.map(|k| k.to_value()).unwrap_or(Value::Null);
        let rows = stmt.query_map(
            rusqlite::params![status as i64, SqlValue(&after), limit as i64],
            |r| Ok(from_ref(r.get_ref(0)?)),
        )?;
        let mut out = Vec::new();
        for row in rows {
            if let Some(k) = Key::from_value(&row?) {
                out.push(k);
            }
        }
        Ok(out)
    }

    fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    fn extend_leases(&self, worker: &str, ttl_ms: i64) -> Result<()> {
        extend_leases(&self.conn, worker, ttl_ms)
    }

    fn second_handle(&self) -> Result<Option<Box<dyn Backend>>> {
        Ok(self.reopen()?.map(|s| Box::new(s) as Box<dyn Backend>))
    }
}

/// Reads the states of `tables` from a row of a state query, from column `*i` on.
fn read_states(
    graph: &Graph,
    tables: &[TableId],
    r: &rusqlite::Row<'_>,
    i: &mut usize,
    all_values: bool,
) -> rusqlite::Result<Vec<Option<RowState>>> {
    let mut out = Vec::with_capacity(tables.len());
    for (n, &id) in tables.iter().enumerate() {
        let t = graph.table(id);
        let changed_at: Option<i64> = r.get(*i)?;
        *i += 1;
        let mut state = RowState {
            changed_at: changed_at.unwrap_or(0),
            status: Status::Ok,
            message: None,
            origin_key: None,
            code: None,
            ins: Vec::new(),
            values: Vec::with_capacity(t.info.columns.len()),
            changed_ms: 0,
        };
        if t.info.input {
            state.changed_ms = r.get::<_, Option<i64>>(*i)?.unwrap_or(0);
            *i += 1;
        } else {
            state.status = Status::from_i64(r.get::<_, Option<i64>>(*i)?.unwrap_or(0));
            state.message = r.get(*i + 1)?;
            state.origin_key = Key::from_value(&from_ref(r.get_ref(*i + 2)?));
            state.code = r.get(*i + 3)?;
            *i += 4;
            for _ in 0..t.inputs.len() {
                state.ins.push(r.get::<_, Option<i64>>(*i)?.unwrap_or(0));
                *i += 1;
            }
        }
        if all_values || n + 1 == tables.len() {
            for _ in t.info.columns {
                state.values.push(from_ref(r.get_ref(*i)?));
                *i += 1;
            }
        }
        out.push(changed_at.map(|_| state));
    }
    Ok(out)
}

/// The epoch changes with every write that can make derived rows stale
/// other than a refresh pass itself: input writes, and derived rows written
/// by `get`, `refresh_from` and `retry`. A table whose `epoch_mark` (set by
/// a complete refresh pass) is the current epoch has no stale rows.
fn bump_epoch(tx: &Connection) -> Result<()> {
    tx.prepare_cached("UPDATE rederive_meta SET value = value + 1 WHERE key = 'epoch'")?
        .execute([])?;
    Ok(())
}

fn next_revision(tx: &Connection) -> Result<i64> {
    Ok(tx
        .prepare_cached(
            "UPDATE rederive_meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
        )?
        .query_row([], |r| r.get(0))?)
}

fn upsert_input_sql(info: &TableInfo, rows: usize) -> String {
    let cols: Vec<String> = info.columns.iter().map(|c| quote(c.name)).collect();
    let key = key_column(info);
    let per_row = cols.len() + 2;
    let groups: Vec<String> = (0..rows)
        .map(|r| {
            let ph: Vec<String> = (1..=per_row)
                .map(|i| format!("?{}", r * per_row + i))
                .collect();
            format!("({})", ph.join(", "))
        })
        .collect();
    let others: Vec<&String> = cols
        .iter()
        .enumerate()
        .filter(|(i, _)| info.key != Some(*i))
        .map(|(_, c)| c)
        .collect();
    let conflict = if others.is_empty() {
        "DO NOTHING".to_owned()
    } else {
        let sets: Vec<String> = others
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let same: Vec<String> = others
            .iter()
            .map(|c| format!("{c} IS excluded.{c}"))
            .collect();
        format!(
            "DO UPDATE SET {}, __changed_at = excluded.__changed_at, __changed_ms = excluded.__changed_ms WHERE NOT ({})",
            sets.join(", "),
            same.join(" AND ")
        )
    };
    format!(
        "INSERT INTO {t}({cols}, __changed_at, __changed_ms) VALUES {groups} ON CONFLICT({key}) {conflict}",
        t = quote(info.name),
        cols = cols.join(", "),
        groups = groups.join(", "),
    )
}

type UpsertCache = std::cell::RefCell<std::collections::HashMap<(&'static str, usize), Arc<str>>>;

/// The upsert of `rows` derived rows at once, built once per shape.
fn upsert_sql(cache: &UpsertCache, info: &TableInfo, inputs: usize, rows: usize) -> Arc<str> {
    if let Some(sql) = cache.borrow().get(&(info.name, rows)) {
        return sql.clone();
    }
    let sql: Arc<str> = upsert_derived_sql(info, inputs, rows).into();
    cache.borrow_mut().insert((info.name, rows), sql.clone());
    sql
}

/// How many derived rows one upsert statement writes at most.
const UPSERT_ROWS: usize = 64;

fn upsert_derived_sql(info: &TableInfo, inputs: usize, rows: usize) -> String {
    let values: Vec<String> = info.columns.iter().map(|c| quote(c.name)).collect();
    let ins: Vec<String> = (0..inputs).map(|j| format!("__in_{j}")).collect();
    let mut cols = vec!["__key".to_owned()];
    cols.extend(values.iter().cloned());
    cols.extend(
        [
            "__status",
            "__error",
            "__origin_key",
            "__code",
            "__changed_at",
        ]
        .map(String::from),
    );
    cols.extend(ins.iter().cloned());
    let per_row = cols.len();
    let groups: Vec<String> = (0..rows)
        .map(|r| {
            let ph: Vec<String> = (1..=per_row)
                .map(|i| format!("?{}", r * per_row + i))
                .collect();
            format!("({})", ph.join(", "))
        })
        .collect();
    let mut same: Vec<String> = values
        .iter()
        .map(|c| format!("{c} IS excluded.{c}"))
        .collect();
    same.extend(["__status", "__error", "__origin_key"].map(|c| format!("{c} IS excluded.{c}")));
    let mut sets = vec![format!(
        "__changed_at = CASE WHEN {} THEN __changed_at ELSE excluded.__changed_at END",
        same.join(" AND ")
    )];
    sets.extend(
        values
            .iter()
            .chain(&ins)
            .map(|c| format!("{c} = excluded.{c}")),
    );
    sets.extend(
        ["__status", "__error", "__origin_key", "__code"].map(|c| format!("{c} = excluded.{c}")),
    );
    let guard: Vec<String> = ins.iter().map(|c| format!("excluded.{c} >= {c}")).collect();
    let guard = if guard.is_empty() {
        "1".to_owned()
    } else {
        guard.join(" AND ")
    };
    format!(
        "INSERT INTO {t}({cols}) VALUES {groups} ON CONFLICT(__key) DO UPDATE SET {sets} WHERE {guard} \
         RETURNING __key, __changed_at",
        t = quote(info.name),
        cols = cols.join(", "),
        groups = groups.join(", "),
        sets = sets.join(", "),
    )
}
