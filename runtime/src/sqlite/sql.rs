//! The SQL text the SQLite backend runs, built once per shape and cached,
//! and the reading of row states from query results.

use super::{from_ref, quote, SqlResult};
use crate::graph::{Graph, TableId};
use crate::row::TableInfo;
use crate::storage::{Revision, RowState, RowStatus, Status, Values};
use crate::value::Key;
use rusqlite::OptionalExtension;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// How many rows one multi-row upsert statement writes at most.
pub(super) const UPSERT_ROWS: usize = 64;

/// Which parameters each row of a derived write binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Shape {
    /// Every column: key, values, status, error, origin, inputs.
    Any,
    /// Computed values only: key, values, inputs (the status is `Ok`, the
    /// error and origin NULL, written as constants).
    Ok,
}

impl Shape {
    /// How many parameters of its own each derived row binds.
    pub(super) fn row_params(self, info: &TableInfo, inputs: usize) -> usize {
        match self {
            Shape::Any => 1 + info.columns.len() + 3 + inputs,
            Shape::Ok => 1 + info.columns.len() + inputs,
        }
    }
}

/// Which keys a state query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Source {
    /// One key (parameter 1).
    Key,
    /// One key (parameter 1) of one table, looked up directly: no row when
    /// it has none (cheaper than [`Source::Key`]'s join, for reads of one
    /// row).
    Row,
    /// A page of a driver table's rows changed after a cursor (parameters:
    /// revision, rowid, limit).
    Changes(TableId),
    /// A page of the first table's keys in key order: the first page
    /// (parameter 1 unused), or the page after a key (parameter 1); the
    /// limit is parameter 2; with `bounded`, only keys up to parameter 3.
    Scan { first: bool, bounded: bool },
}

/// State queries by source and values read, then by tables (looked up by
/// slice, so that a hit allocates nothing).
type StateQueries = HashMap<(Source, Values), HashMap<Vec<TableId>, Arc<str>>>;

/// A multi-row insert: the table, its number of rows, what they bind.
type InsertShape = (&'static str, usize, Shape);

/// Statements built once per shape.
#[derive(Default)]
pub(crate) struct Cache {
    states: RefCell<StateQueries>,
    settled: RefCell<HashMap<Vec<TableId>, Arc<str>>>,
    upserts: RefCell<HashMap<(&'static str, usize), Arc<str>>>,
    inserts: RefCell<HashMap<InsertShape, Arc<str>>>,
    /// Code versions by id (see [`Cache::code_at`]).
    codes: RefCell<HashMap<i64, Arc<str>>>,
    /// Ids of code versions (see [`Cache::code_id`]).
    code_ids: RefCell<Vec<(Box<str>, i64)>>,
}

fn cached<K: std::hash::Hash + Eq>(
    map: &RefCell<HashMap<K, Arc<str>>>,
    key: K,
    build: impl FnOnce() -> String,
) -> Arc<str> {
    if let Some(sql) = map.borrow().get(&key) {
        return sql.clone();
    }
    let sql: Arc<str> = build().into();
    map.borrow_mut().insert(key, sql.clone());
    sql
}

/// The name of a table's key column.
pub(super) fn key_column(info: &TableInfo) -> String {
    match info.key_column() {
        Some(c) if info.input => quote(c.name),
        _ => "__key".to_owned(),
    }
}

impl Cache {
    /// The SELECT that reads the state of keys in several tables, for the
    /// keys `source` gives.
    pub(super) fn state_sql(
        &self,
        graph: &Graph,
        tables: &[TableId],
        source: Source,
        values: Values,
    ) -> Arc<str> {
        if let Some(sql) = self
            .states
            .borrow()
            .get(&(source, values))
            .and_then(|m| m.get(tables))
        {
            return sql.clone();
        }
        let sql: Arc<str> = build_state_sql(graph, tables, source, values).into();
        self.states
            .borrow_mut()
            .entry((source, values))
            .or_default()
            .insert(tables.to_vec(), sql.clone());
        sql
    }

    /// [`Cache::state_sql`] of the last table, preceded by whether every
    /// derived table of `tables` is marked processed as of the current epoch.
    pub(super) fn settled_sql(&self, graph: &Graph, tables: &[TableId]) -> Arc<str> {
        if let Some(sql) = self.settled.borrow().get(tables) {
            return sql.clone();
        }
        cached(&self.settled, tables.to_vec(), || {
            let last = *tables.last().expect("tables is not empty");
            let names: Vec<String> = tables
                .iter()
                .filter(|&&t| !graph.table(t).info.input)
                .map(|&t| graph.table(t).info.name.replace('\'', "''"))
                .collect();
            let inner = self.state_sql(graph, &[last], Source::Key, Values::All);
            format!(
                "SELECT (SELECT value FROM rederive_meta WHERE key = 'epoch') <= \
                   (SELECT coalesce(min(epoch_mark), 1 << 62) FROM rederive_tables WHERE name IN ('{}')), s.* \
                 FROM ({inner}) s",
                names.join("', '")
            )
        })
    }

    /// The upsert of `rows` input rows at once.
    pub(super) fn upsert_input_sql(&self, info: &TableInfo, rows: usize) -> Arc<str> {
        cached(&self.upserts, (info.name, rows), || {
            build_upsert_input(info, rows)
        })
    }

    /// The insert of `rows` new derived rows at once (a row of a key that
    /// exists is left alone: the caller then writes it with the guard).
    /// With `shape` [`Shape::Ok`], the rows are computed values and bind no
    /// status, error or origin.
    pub(super) fn insert_new_sql(
        &self,
        info: &TableInfo,
        inputs: usize,
        rows: usize,
        shape: Shape,
    ) -> Arc<str> {
        cached(&self.inserts, (info.name, rows, shape), || {
            let cols = derived_columns(info, inputs);
            format!(
                "INSERT OR IGNORE INTO {t}({cols}) VALUES {groups}",
                t = quote(info.name),
                groups = derived_placeholders(info, inputs, rows, shape),
                cols = cols.join(", "),
            )
        })
    }

    /// The guarded upsert of `rows` derived rows at once.
    pub(super) fn upsert_derived_sql(
        &self,
        info: &TableInfo,
        inputs: usize,
        rows: usize,
    ) -> Arc<str> {
        cached(&self.upserts, (info.name, rows), || {
            build_upsert_derived(info, inputs, rows)
        })
    }
}

fn build_state_sql(graph: &Graph, tables: &[TableId], source: Source, values: Values) -> String {
    // A scan reads its first table directly, in key order (no self-join).
    let scan = matches!(source, Source::Scan { .. } | Source::Row);
    let mut select = vec![if scan {
        format!("a0.{}", key_column(graph.table(tables[0]).info))
    } else {
        "q.k".to_owned()
    }];
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
        if values.of(i, tables.len()) {
            for c in t.info.columns {
                select.push(format!("{a}.{}", quote(c.name)));
            }
        }
        if scan && i == 0 {
            continue;
        }
        let on = if scan {
            format!("a0.{}", key_column(graph.table(tables[0]).info))
        } else {
            "q.k".to_owned()
        };
        joins.push_str(&format!(
            " LEFT JOIN {} {a} ON {a}.{} = {on}",
            quote(t.info.name),
            key_column(t.info)
        ));
    }
    let (from, order) = match source {
        Source::Key => ("(SELECT ?1 AS k) q".to_owned(), ""),
        Source::Row => {
            let info = graph.table(tables[0]).info;
            return format!(
                "SELECT {} FROM {} a0 WHERE a0.{} = ?1",
                select.join(", "),
                quote(info.name),
                key_column(info)
            );
        }
        Source::Scan { first, bounded } => {
            let info = graph.table(tables[0]).info;
            let key = key_column(info);
            let mut conds = Vec::new();
            if !first {
                conds.push(format!("a0.{key} > ?1"));
            }
            if bounded {
                conds.push(format!("a0.{key} <= ?3"));
            }
            let cond = if conds.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conds.join(" AND "))
            };
            let sql = format!(
                "SELECT {} FROM {} a0{joins}{cond} ORDER BY a0.{key} LIMIT ?2",
                select.join(", "),
                quote(info.name)
            );
            return sql;
        }
        Source::Changes(d) => {
            select.push("q.ca".into());
            select.push("q.rid".into());
            let info = graph.table(d).info;
            // Two index seeks merged: the rest of the cursor's revision
            // (`= ca AND rowid >`), then later revisions (`> ca`). A single
            // row-value comparison would make SQLite seek on `__changed_at`
            // alone and rescan the cursor's revision on every page.
            let part = |cond: &str, order: &str| {
                format!(
                    "SELECT * FROM (SELECT {key} AS k, __changed_at AS ca, rowid AS rid FROM {t} \
                     WHERE {cond} ORDER BY {order} LIMIT ?3)",
                    key = key_column(info),
                    t = quote(info.name)
                )
            };
            (
                format!(
                    "(SELECT * FROM ({} UNION ALL {}) ORDER BY ca, rid LIMIT ?3) q",
                    part("__changed_at = ?1 AND rowid > ?2", "rowid"),
                    part("__changed_at > ?1", "__changed_at, rowid")
                ),
                " ORDER BY q.ca, q.rid",
            )
        }
    };
    format!("SELECT {} FROM {from}{joins}{order}", select.join(", "))
}

/// The number of columns a state query selects for one table.
fn state_columns(graph: &Graph, id: TableId, with_values: bool) -> usize {
    let t = graph.table(id);
    let meta = if t.info.input { 2 } else { 5 + t.inputs.len() };
    meta + if with_values { t.info.columns.len() } else { 0 }
}

/// An integer column (NULL and other types read as 0).
fn int_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<i64> {
    Ok(match r.get_ref(i)? {
        rusqlite::types::ValueRef::Integer(v) => v,
        _ => 0,
    })
}

/// A text column, or `None`.
fn text_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    Ok(match r.get_ref(i)? {
        rusqlite::types::ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        _ => None,
    })
}

impl Cache {
    /// A code version read from a row: its id in `rederive_codes`, looked
    /// up once per connection (ids never change once given).
    fn code_at(
        &self,
        conn: &rusqlite::Connection,
        r: &rusqlite::Row<'_>,
        i: usize,
    ) -> rusqlite::Result<Option<Arc<str>>> {
        let rusqlite::types::ValueRef::Integer(id) = r.get_ref(i)? else {
            return Ok(None);
        };
        if let Some(code) = self.codes.borrow().get(&id) {
            return Ok(Some(code.clone()));
        }
        let code: Option<String> = conn
            .prepare_cached("SELECT code FROM rederive_codes WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let Some(code) = code else {
            return Ok(None);
        };
        let code: Arc<str> = code.into();
        self.codes.borrow_mut().insert(id, code.clone());
        Ok(Some(code))
    }

    /// The id of a code version in `rederive_codes`, given it if it has
    /// none yet (inside the caller's write transaction: an id is
    /// remembered only when it was found, not given, so that a rolled
    /// back transaction leaves no wrong id behind).
    pub(super) fn code_id(&self, tx: &rusqlite::Connection, code: &str) -> rusqlite::Result<i64> {
        if let Some((_, id)) = self.code_ids.borrow().iter().find(|(c, _)| &**c == code) {
            return Ok(*id);
        }
        let found: Option<i64> = tx
            .prepare_cached("SELECT id FROM rederive_codes WHERE code = ?1")?
            .query_row([code], |r| r.get(0))
            .optional()?;
        if let Some(id) = found {
            self.code_ids.borrow_mut().push((code.into(), id));
            return Ok(id);
        }
        tx.prepare_cached("INSERT INTO rederive_codes(code) VALUES (?1) RETURNING id")?
            .query_row([code], |r| r.get(0))
    }

    /// Reads the states of `tables` from a row of a state query, from
    /// column `*i` on.
    pub(super) fn read_states(
        &self,
        conn: &rusqlite::Connection,
        graph: &Graph,
        tables: &[TableId],
        r: &rusqlite::Row<'_>,
        i: &mut usize,
        values: Values,
    ) -> rusqlite::Result<Vec<Option<RowState>>> {
        // One slot more: a build's scan adds the state of the table being
        // built to each row (growing a full vector is a reallocation a row).
        let mut out = Vec::with_capacity(tables.len() + 1);
        for (n, &id) in tables.iter().enumerate() {
            let with_values = values.of(n, tables.len());
            if r.get_ref(*i)? == rusqlite::types::ValueRef::Null {
                // No row: skip its columns.
                *i += state_columns(graph, id, with_values);
                out.push(None);
                continue;
            }
            let t = graph.table(id);
            let mut state = RowState {
                changed_at: Revision::new(int_at(r, *i)?),
                status: RowStatus::Ok,
                code: None,
                ins: Vec::new(),
                values: Vec::new(),
                changed_ms: 0,
            };
            *i += 1;
            if t.info.input {
                state.changed_ms = int_at(r, *i)?;
                *i += 1;
            } else {
                state.status = match Status::from_code(int_at(r, *i)?) {
                    Status::Ok => RowStatus::Ok,
                    Status::Error => RowStatus::Failed {
                        message: text_at(r, *i + 1)?.unwrap_or_default(),
                    },
                    Status::Blocked => RowStatus::Blocked {
                        table: text_at(r, *i + 1)?.unwrap_or_default(),
                        key: Key::from_value(&from_ref(r.get_ref(*i + 2)?))
                            .unwrap_or_else(|| Key::Text(String::new())),
                    },
                };
                state.code = self.code_at(conn, r, *i + 3)?;
                *i += 4;
                state.ins.reserve_exact(t.inputs.len());
                for _ in 0..t.inputs.len() {
                    state.ins.push(Revision::new(int_at(r, *i)?));
                    *i += 1;
                }
            }
            if with_values {
                // Failed and blocked rows have no values (their columns are NULL).
                if state.status == RowStatus::Ok {
                    state.values.reserve_exact(t.info.columns.len());
                    for c in 0..t.info.columns.len() {
                        state.values.push(from_ref(r.get_ref(*i + c)?));
                    }
                }
                *i += t.info.columns.len();
            }
            out.push(Some(state));
        }
        Ok(out)
    }
}

/// `(?1, ?2, ..), (?k, ..), ..`: `rows` groups of `per_row` placeholders.
fn placeholders(rows: usize, per_row: usize) -> String {
    (0..rows)
        .map(|r| {
            let ph: Vec<String> = (1..=per_row)
                .map(|i| format!("?{}", r * per_row + i))
                .collect();
            format!("({})", ph.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn build_upsert_input(info: &TableInfo, rows: usize) -> String {
    let cols: Vec<String> = info.columns.iter().map(|c| quote(c.name)).collect();
    let key = key_column(info);
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
        groups = placeholders(rows, info.columns.len() + 2),
    )
}

/// The groups of a multi-row write of derived rows: the code version is
/// parameter 1 and the revision parameter 2 for every row; each row's own
/// parameters follow: key, values, status, error, origin, then one per
/// input (see [`derived_columns`] for the column order).
fn derived_placeholders(info: &TableInfo, inputs: usize, rows: usize, shape: Shape) -> String {
    let own = shape.row_params(info, inputs);
    let values = info.columns.len();
    let before_code = match shape {
        Shape::Any => 1 + values + 3,
        Shape::Ok => 1 + values,
    };
    (0..rows)
        .map(|r| {
            let p = |j: usize| format!("?{}", 3 + r * own + j);
            let mut ph: Vec<String> = (0..before_code).map(p).collect();
            if shape == Shape::Ok {
                ph.extend([Status::Ok.code().to_string(), "NULL".into(), "NULL".into()]);
            }
            ph.extend(["?1".to_owned(), "?2".to_owned()]);
            ph.extend((before_code..own).map(p));
            format!("({})", ph.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A derived table's columns in the order they are written: key, values,
/// status, error, origin, code, `changed_at`, then one per input.
fn derived_columns(info: &TableInfo, inputs: usize) -> Vec<String> {
    let mut cols = vec!["__key".to_owned()];
    cols.extend(info.columns.iter().map(|c| quote(c.name)));
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
    cols.extend((0..inputs).map(|j| format!("__in_{j}")));
    cols
}

fn build_upsert_derived(info: &TableInfo, inputs: usize, rows: usize) -> String {
    let values: Vec<String> = info.columns.iter().map(|c| quote(c.name)).collect();
    let ins: Vec<String> = (0..inputs).map(|j| format!("__in_{j}")).collect();
    let cols = derived_columns(info, inputs);
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
        groups = derived_placeholders(info, inputs, rows, Shape::Any),
        sets = sets.join(", "),
    )
}

/// Moves the epoch (see [`crate::storage`]).
pub(super) fn bump_epoch(tx: &rusqlite::Connection) -> SqlResult<()> {
    tx.prepare_cached("UPDATE rederive_meta SET value = value + 1 WHERE key = 'epoch'")?
        .execute([])?;
    Ok(())
}

/// Takes the next revision.
pub(super) fn next_revision(tx: &rusqlite::Connection) -> SqlResult<Revision> {
    Ok(tx
        .prepare_cached(
            "UPDATE rederive_meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
        )?
        .query_row([], |r| r.get(0))?)
}

/// The current revision.
pub(super) fn current_revision(conn: &rusqlite::Connection) -> SqlResult<Revision> {
    Ok(conn
        .prepare_cached("SELECT value FROM rederive_meta WHERE key = 'revision'")?
        .query_row([], |r| r.get(0))?)
}
