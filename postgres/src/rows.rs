//! Rows: input writes, guarded derived writes, deletes, and reading row
//! states. Many rows go to the server in one statement: each column as an
//! array parameter, turned back into rows by `unnest`.

use crate::conn::{borrow, invalid, Conn, Param, PgResult};
use crate::progress::next_revision;
use crate::reads;
use crate::sql::{
    any_key_at, array_type, coerce_key, encode_key, key_at, key_column, key_param, key_type,
    placeholders, quote, read_states, state_sql, Column, Source,
};
use crate::PgStore;
use postgres::types::Type;
use rederive_runtime::error::Result;
use rederive_runtime::graph::{Graph, TableId, TableNode};
use rederive_runtime::row::TableInfo;
use rederive_runtime::storage::{
    ChangeCursor, ChangedRow, Fence, Outcome, OutcomeKind, Pass, RecordedRead, Revision, RowState,
    Rows, ScannedRow, Status, Values, Written,
};
use rederive_runtime::value::{Key, SqlType, Value};
use std::collections::{HashMap, HashSet};

/// How many rows one statement writes at most.
const ROWS_PER_STATEMENT: usize = 4096;

/// Splits positions into runs of distinct keys, in order, at most
/// [`ROWS_PER_STATEMENT`] long: one statement may not write a row twice.
fn runs<'k>(positions: &[usize], key: impl Fn(usize) -> &'k Key) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut seen: HashSet<&Key> = HashSet::new();
    let mut run = Vec::new();
    for &i in positions {
        let k = key(i);
        if run.len() == ROWS_PER_STATEMENT || seen.contains(k) {
            out.push(std::mem::take(&mut run));
            seen.clear();
        }
        seen.insert(k);
        run.push(i);
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// The upsert of input rows: each column an array parameter (`$3`..),
/// the revision `$1` and the time `$2` shared. A row equal to the stored
/// one (`IS NOT DISTINCT FROM`: NULL equals NULL) is left alone, with its
/// `changed_at`.
fn upsert_input_sql(info: &TableInfo) -> String {
    let cols: Vec<String> = info.columns.iter().map(|c| quote(c.name)).collect();
    let arrays = placeholders(3, cols.len());
    let unnest: Vec<String> = arrays
        .iter()
        .zip(info.columns)
        .map(|(p, c)| format!("{p}::{}", array_type(c.ty)))
        .collect();
    let names: Vec<String> = (0..cols.len()).map(|i| format!("c{i}")).collect();
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
            .map(|c| format!("t.{c} IS NOT DISTINCT FROM excluded.{c}"))
            .collect();
        format!(
            "DO UPDATE SET {}, __changed_at = excluded.__changed_at, \
             __changed_ms = excluded.__changed_ms WHERE NOT ({})",
            sets.join(", "),
            same.join(" AND ")
        )
    };
    format!(
        "INSERT INTO {t} AS t({cols}, __changed_at, __changed_ms) \
         SELECT {u}, $1::bigint, $2::bigint FROM unnest({unnest}) AS u({names}) \
         ON CONFLICT ({key}) {conflict}",
        t = quote(info.name),
        cols = cols.join(", "),
        u = names
            .iter()
            .map(|n| format!("u.{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        unnest = unnest.join(", "),
        names = names.join(", "),
        key = key_column(info),
    )
}

/// How a derived write treats a key that has a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conflict {
    /// Leaves it alone: the rows were planned as new (`RETURNING` tells
    /// which were inserted).
    Skip,
    /// The write guard and early cutoff (`RETURNING` tells which were
    /// written, and at which `changed_at`).
    Guard,
}

/// The insert of derived rows: the code id `$1` and the revision `$2`
/// shared; then arrays of keys, of each value column, of statuses,
/// messages, origins, and of each input's `changed_at`.
fn derived_write_sql(
    info: &TableInfo,
    inputs: usize,
    key_ty: SqlType,
    conflict: Conflict,
) -> String {
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
    let mut types = vec![array_type(key_ty)];
    types.extend(info.columns.iter().map(|c| array_type(c.ty)));
    types.extend(["smallint[]", "text[]", "bytea[]"]);
    types.extend(std::iter::repeat_n("bigint[]", inputs));
    let arrays: Vec<String> = placeholders(3, types.len())
        .iter()
        .zip(&types)
        .map(|(p, ty)| format!("{p}::{ty}"))
        .collect();
    let mut names = vec!["k".to_owned()];
    names.extend((0..values.len()).map(|i| format!("v{i}")));
    names.extend(["st", "er", "og"].map(String::from));
    names.extend((0..inputs).map(|j| format!("i{j}")));
    let mut select: Vec<String> = names[..names.len() - inputs]
        .iter()
        .map(|n| format!("u.{n}"))
        .collect();
    select.extend(["$1::bigint".to_owned(), "$2::bigint".to_owned()]);
    select.extend((0..inputs).map(|j| format!("u.i{j}")));
    let on_conflict = match conflict {
        Conflict::Skip => "DO NOTHING RETURNING t.__key".to_owned(),
        Conflict::Guard => {
            let same: Vec<String> = values
                .iter()
                .map(String::as_str)
                .chain(["__status", "__error", "__origin_key"])
                .map(|c| format!("t.{c} IS NOT DISTINCT FROM excluded.{c}"))
                .collect();
            let mut sets = vec![format!(
                "__changed_at = CASE WHEN {} THEN t.__changed_at ELSE excluded.__changed_at END",
                same.join(" AND ")
            )];
            sets.extend(
                values
                    .iter()
                    .chain(&ins)
                    .map(String::as_str)
                    .chain(["__status", "__error", "__origin_key", "__code"])
                    .map(|c| format!("{c} = excluded.{c}")),
            );
            // Each input on its own: every one at least the stored one's.
            let guard: Vec<String> = ins
                .iter()
                .map(|c| format!("excluded.{c} >= t.{c}"))
                .collect();
            let guard = if guard.is_empty() {
                "true".to_owned()
            } else {
                guard.join(" AND ")
            };
            format!(
                "DO UPDATE SET {} WHERE {guard} RETURNING t.__key, t.__changed_at",
                sets.join(", ")
            )
        }
    };
    format!(
        "INSERT INTO {t} AS t({cols}) SELECT {select} FROM unnest({arrays}) AS u({names}) \
         ON CONFLICT (__key) {on_conflict}",
        t = quote(info.name),
        cols = cols.join(", "),
        select = select.join(", "),
        arrays = arrays.join(", "),
        names = names.join(", "),
    )
}

/// The parameters of derived rows for [`derived_write_sql`].
fn derived_params(
    t: &TableNode,
    key_ty: SqlType,
    keys: &[Key],
    outcomes: &[Outcome],
    rows: &[usize],
) -> Result<Vec<Param>> {
    let info = t.info;
    let mut key_col = Column::new(key_ty);
    let mut values: Vec<Column> = info.columns.iter().map(|c| Column::new(c.ty)).collect();
    let mut status: Vec<i16> = Vec::with_capacity(rows.len());
    let mut error: Vec<Option<&str>> = Vec::with_capacity(rows.len());
    let mut origin: Vec<Option<Vec<u8>>> = Vec::with_capacity(rows.len());
    let mut ins: Vec<Vec<i64>> = vec![Vec::with_capacity(rows.len()); t.inputs.len()];
    for &i in rows {
        let o = &outcomes[i];
        if o.ins.len() != t.inputs.len() {
            return Err(invalid(format!(
                "a result of `{}` has {} input revisions, the table has {} inputs",
                info.name,
                o.ins.len(),
                t.inputs.len()
            )));
        }
        key_col.push_key(&keys[i]);
        match &o.kind {
            OutcomeKind::Ok(v) => {
                if v.len() != info.columns.len() {
                    return Err(invalid(format!(
                        "a result of `{}` has {} values, the table has {} columns",
                        info.name,
                        v.len(),
                        info.columns.len()
                    )));
                }
                for ((col, value), def) in values.iter_mut().zip(v).zip(info.columns) {
                    col.push(value, info.name, def.name)?;
                }
                status.push(Status::Ok.code() as i16);
                error.push(None);
                origin.push(None);
            }
            OutcomeKind::Error(m) => {
                for (col, def) in values.iter_mut().zip(info.columns) {
                    col.push(&Value::Null, info.name, def.name)?;
                }
                status.push(Status::Error.code() as i16);
                error.push(Some(m));
                origin.push(None);
            }
            OutcomeKind::Blocked { table, key } => {
                for (col, def) in values.iter_mut().zip(info.columns) {
                    col.push(&Value::Null, info.name, def.name)?;
                }
                status.push(Status::Blocked.code() as i16);
                error.push(Some(table));
                origin.push(Some(encode_key(key)));
            }
        }
        for (j, r) in o.ins.iter().enumerate() {
            ins[j].push(r.get());
        }
    }
    let mut params: Vec<Param> = vec![key_col.into_param()];
    params.extend(values.into_iter().map(Column::into_param));
    let error: Vec<Option<String>> = error.into_iter().map(|e| e.map(str::to_owned)).collect();
    params.push(Box::new(status));
    params.push(Box::new(error));
    params.push(Box::new(origin));
    params.extend(ins.into_iter().map(|i| Box::new(i) as Param));
    Ok(params)
}

impl PgStore {
    /// The state of one key in `tables`.
    fn load_key(
        c: &mut Conn,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
        values: Values,
    ) -> PgResult<Vec<Option<RowState>>> {
        let Some(&first) = tables.first() else {
            return Ok(Vec::new());
        };
        let Some(k) = key_param(key, key_type(graph, first)) else {
            return Ok(vec![None; tables.len()]);
        };
        let sql = state_sql(graph, tables, Source::Key, values);
        let row = c.query_one(&sql, &[k.as_ref()])?;
        read_states(c, graph, tables, &row, &mut 1, values)
    }

    /// The code id of a version, given one if it has none yet (inside the
    /// caller's write transaction: an id is remembered only when it was
    /// found, not given, so that a rolled back transaction leaves no wrong
    /// id behind).
    fn code_id(c: &mut Conn, code: &str) -> PgResult<i64> {
        if let Some(&id) = c.code_ids.get(code) {
            return Ok(id);
        }
        let found = c.query_opt("SELECT id FROM rederive_codes WHERE code = $1", &[&code])?;
        if let Some(row) = found {
            let id: i64 = row.try_get(0)?;
            c.code_ids.insert(code.to_owned(), id);
            return Ok(id);
        }
        Ok(c.query_one(
            "INSERT INTO rederive_codes(code) VALUES ($1) RETURNING id",
            &[&code],
        )?
        .try_get(0)?)
    }

    /// Whether a table fence holds, locking the table lease against a
    /// takeover until the write commits (the lease stays: the batch may be
    /// written in parts). Row fences are checked by
    /// [`PgStore::take_row_leases`].
    fn table_fence_holds(c: &mut Conn, table: &str, fence: &Fence) -> PgResult<bool> {
        let Fence::Table { owner } = fence else {
            return Ok(true);
        };
        Ok(c.query_opt(
            "SELECT 1 FROM rederive_table_leases WHERE tbl = $1 AND owner = $2 FOR KEY SHARE",
            &[&table, owner],
        )?
        .is_some())
    }

    /// Fencing and release in one statement: the row leases of `outcomes`
    /// that `owner` still holds are deleted, and those rows (by their
    /// stored keys) are the ones written.
    fn take_row_leases(
        c: &mut Conn,
        table: &str,
        owner: &str,
        outcomes: &[Outcome],
    ) -> PgResult<HashSet<Vec<u8>>> {
        let keys: Vec<Vec<u8>> = outcomes.iter().map(|o| encode_key(&o.key)).collect();
        let rows = c.query(
            "DELETE FROM rederive_leases WHERE tbl = $1 AND owner = $2 AND key = ANY($3::bytea[]) \
             RETURNING key",
            &[&table, &owner, &keys],
        )?;
        rows.iter()
            .map(|r| Ok(r.try_get::<_, Vec<u8>>(0)?))
            .collect()
    }

    /// Removes what this batch wrote (rows at `rev`) for root rows that do
    /// not exist, unless no root row was deleted since `read_at` (zero:
    /// unknown, always look).
    fn drop_orphans(
        c: &mut Conn,
        graph: &Graph,
        id: TableId,
        rev: Revision,
        read_at: Revision,
        last_delete: Revision,
    ) -> PgResult<Vec<Key>> {
        if read_at != Revision::ZERO && last_delete <= read_at {
            return Ok(Vec::new());
        }
        let t = graph.table(id);
        let root = graph.table(t.root).info;
        // Found through the index on `__changed_at`: only this batch's
        // rows carry `rev`.
        let sql = format!(
            "DELETE FROM {t} d WHERE d.__changed_at = $1 AND NOT EXISTS \
             (SELECT 1 FROM {r} r WHERE r.{k} = d.__key) RETURNING d.__key",
            t = quote(t.info.name),
            r = quote(root.name),
            k = key_column(root),
        );
        let rows = c.query(&sql, &[&rev.get()])?;
        let ty = graph.key_type(id);
        let mut orphans = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(k) = key_at(r, 0, ty)? {
                reads::row_gone(c, t.info.name, &k, rev)?;
                orphans.push(k);
            }
        }
        Ok(orphans)
    }

    /// One attempt of [`Rows::write_outcomes`], inside its transaction.
    #[allow(clippy::too_many_arguments)]
    fn write_outcomes_in(
        c: &mut Conn,
        graph: &Graph,
        id: TableId,
        code: &str,
        outcomes: &[Outcome],
        keys: &[Key],
        pass: Pass,
        fence: &Fence,
        read_at: Revision,
    ) -> PgResult<Vec<Written>> {
        let t = graph.table(id);
        let key_ty = graph.key_type(id);
        let (rev, last_delete) = next_revision(c, pass == Pass::OnDemand, false)?;
        let mut written = vec![Written::Rejected; outcomes.len()];
        if !Self::table_fence_holds(c, t.info.name, fence)? {
            return Ok(written);
        }
        let mut held = match fence {
            Fence::Rows { owner } => Some(Self::take_row_leases(c, t.info.name, owner, outcomes)?),
            _ => None,
        };
        // The rows whose lease is held: new rows (inserted without
        // comparing) and the others (written under the guard). The write
        // gives a lease back: a key given twice is written once.
        let (mut new, mut guarded) = (Vec::new(), Vec::new());
        for (i, o) in outcomes.iter().enumerate() {
            if let Some(held) = &mut held {
                if !held.remove(&encode_key(&o.key)) {
                    continue;
                }
            }
            if o.new {
                new.push(i);
            } else {
                guarded.push(i);
            }
        }
        let code_id = Self::code_id(c, code)?;
        let shared: [&(dyn postgres::types::ToSql + Sync); 2] = [&code_id, &rev.get()];
        if !new.is_empty() {
            let sql = derived_write_sql(t.info, t.inputs.len(), key_ty, Conflict::Skip);
            for run in runs(&new, |i| &keys[i]) {
                let params = derived_params(t, key_ty, keys, outcomes, &run)?;
                let mut all = shared.to_vec();
                all.extend(borrow(&params));
                let inserted: HashSet<Key> = c
                    .query(&sql, &all)?
                    .iter()
                    .map(|r| key_at(r, 0, key_ty))
                    .filter_map(|k| k.transpose())
                    .collect::<PgResult<_>>()?;
                for i in run {
                    if inserted.contains(&keys[i]) {
                        written[i] = Written::Changed;
                    } else {
                        // A row of its key appeared meanwhile: the guard decides.
                        guarded.push(i);
                    }
                }
            }
            guarded.sort_unstable();
        }
        if !guarded.is_empty() {
            let sql = derived_write_sql(t.info, t.inputs.len(), key_ty, Conflict::Guard);
            for run in runs(&guarded, |i| &keys[i]) {
                let params = derived_params(t, key_ty, keys, outcomes, &run)?;
                let mut all = shared.to_vec();
                all.extend(borrow(&params));
                let index: HashMap<&Key, usize> = run.iter().map(|&i| (&keys[i], i)).collect();
                for r in c.query(&sql, &all)? {
                    let Some(key) = key_at(&r, 0, key_ty)? else {
                        continue;
                    };
                    let changed = Revision::new(r.try_get(1)?);
                    if let Some(&i) = index.get(&key) {
                        written[i] = if changed == rev {
                            Written::Changed
                        } else {
                            Written::Unchanged
                        };
                    }
                }
            }
        }
        // The rows written replace their recorded reads.
        if !t.reads.is_empty() {
            let rows: Vec<(&Key, &[_])> = outcomes
                .iter()
                .zip(keys)
                .zip(&written)
                .filter(|(_, w)| **w != Written::Rejected)
                .map(|((o, k), _)| (k, o.reads.as_slice()))
                .collect();
            reads::replace_reads(c, graph, t.info.name, &rows)?;
        }
        // A root row deleted while its rows were being computed takes
        // them along.
        for key in Self::drop_orphans(c, graph, id, rev, read_at, last_delete)? {
            for (i, k) in keys.iter().enumerate() {
                if *k == key {
                    written[i] = Written::Rejected;
                }
            }
        }
        Ok(written)
    }
}

impl Rows for PgStore {
    fn put_rows(&self, info: &TableInfo, rows: &[Vec<Value>]) -> Result<Revision> {
        let Some((key_at, key_ty)) = info.key.and_then(|i| Some((i, info.columns.get(i)?.ty)))
        else {
            return Err(invalid(format!("`{}` has no key column", info.name)));
        };
        // Keys as stored, to tell a key given twice.
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            if row.len() != info.columns.len() {
                return Err(invalid(format!(
                    "a row of `{}` has {} values, the table has {} columns",
                    info.name,
                    row.len(),
                    info.columns.len()
                )));
            }
            let key = Key::from_value(&row[key_at])
                .ok_or_else(|| invalid(format!("a row of `{}` has no key", info.name)))?;
            keys.push(coerce_key(&key, key_ty, info.name)?);
        }
        let sql = upsert_input_sql(info);
        let now = self.now_ms();
        let positions: Vec<usize> = (0..rows.len()).collect();
        // Many rows per statement. A key given twice is written twice, in
        // order (by two statements): the last value wins.
        let runs = runs(&positions, |i| &keys[i]);
        let mut arrays = Vec::with_capacity(runs.len());
        for run in &runs {
            let mut columns: Vec<Column> = info.columns.iter().map(|c| Column::new(c.ty)).collect();
            for &i in run {
                for ((col, value), def) in columns.iter_mut().zip(&rows[i]).zip(info.columns) {
                    col.push(value, info.name, def.name)?;
                }
            }
            arrays.push(
                columns
                    .into_iter()
                    .map(Column::into_param)
                    .collect::<Vec<_>>(),
            );
        }
        self.write(|c| {
            let (rev, _) = next_revision(c, true, false)?;
            for params in &arrays {
                let r = rev.get();
                let mut all: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&r, &now];
                all.extend(borrow(params));
                c.execute(&sql, &all)?;
            }
            Ok(rev)
        })
    }

    fn delete_row(&self, graph: &Graph, id: TableId, key: &Key) -> Result<bool> {
        let info = graph.table(id).info;
        let k = key_param(key, key_type(graph, id));
        self.write(|c| {
            let (rev, _) = next_revision(c, true, true)?;
            let Some(k) = &k else {
                // No row can have this key.
                return Ok(false);
            };
            let n = c.execute(
                &format!(
                    "DELETE FROM {} WHERE {} = $1",
                    quote(info.name),
                    key_column(info)
                ),
                &[k.as_ref()],
            )?;
            reads::tombstone(c, info.name, key, rev)?;
            for d in graph.derived_from_root(id) {
                let name = graph.table(d).info.name;
                c.execute(
                    &format!("DELETE FROM {} WHERE __key = $1", quote(name)),
                    &[k.as_ref()],
                )?;
                reads::row_gone(c, name, key, rev)?;
            }
            Ok(n > 0)
        })
    }

    fn load(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
        values: Values,
    ) -> Result<Vec<Option<RowState>>> {
        self.read(|c| Self::load_key(c, graph, tables, key, values))
    }

    fn changed_page(
        &self,
        graph: &Graph,
        driver: TableId,
        tables: &[TableId],
        after: &ChangeCursor,
        limit: usize,
        values: Values,
    ) -> Result<Vec<ChangedRow>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The position is the key of the last row seen among the rows of
        // the cursor's revision: rows come in (`changed_at`, key) order.
        let driver_ty = key_type(graph, driver);
        let position: Option<Param> = match after.position() {
            Value::Null => None,
            v => {
                let key = Key::from_value(v)
                    .and_then(|k| key_param(&k, driver_ty))
                    .ok_or_else(|| {
                        invalid(format!(
                            "a change cursor of `{}` at {:?}, which is no key of it",
                            graph.table(driver).info.name,
                            v
                        ))
                    })?;
                Some(key)
            }
        };
        let source = Source::Changes {
            driver,
            positioned: position.is_some(),
            limit: limit.min(i64::MAX as usize),
        };
        let sql = state_sql(graph, tables, source, values);
        let revision = after.revision().get();
        self.read(|c| {
            let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&revision];
            if let Some(p) = &position {
                params.push(p.as_ref());
            }
            let rows = c.query(&sql, &params)?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let mut i = 1;
                let states = read_states(c, graph, tables, r, &mut i, values)?;
                let at = Revision::new(r.try_get(i)?);
                if let Some(key) = key_at(r, 0, driver_ty)? {
                    out.push(ChangedRow {
                        cursor: ChangeCursor::at(at, key.to_value()),
                        key,
                        states,
                    });
                }
            }
            Ok(out)
        })
    }

    fn write_outcomes(
        &self,
        graph: &Graph,
        id: TableId,
        code: &str,
        outcomes: &[Outcome],
        pass: Pass,
        fence: &Fence,
        read_at: Revision,
    ) -> Result<Vec<Written>> {
        let t = graph.table(id);
        if t.info.input {
            return Err(rederive_runtime::Error::NotAnInput(t.info.name.to_owned()));
        }
        let key_ty = graph.key_type(id);
        let keys = outcomes
            .iter()
            .map(|o| coerce_key(&o.key, key_ty, t.info.name))
            .collect::<Result<Vec<_>>>()?;
        self.write(|c| {
            Self::write_outcomes_in(c, graph, id, code, outcomes, &keys, pass, fence, read_at)
        })
    }

    fn begin_snapshot(&self) -> Result<()> {
        Ok(self.lock()?.begin_snapshot()?)
    }

    fn end_snapshot(&self) -> Result<()> {
        Ok(self.lock()?.end_snapshot()?)
    }

    fn is_empty(&self, table: &str) -> Result<bool> {
        let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {})", quote(table));
        self.read(|c| Ok(c.query_one(&sql, &[])?.try_get(0)?))
    }

    fn scan_page(
        &self,
        graph: &Graph,
        tables: &[TableId],
        after: Option<&Key>,
        limit: usize,
        values: Values,
    ) -> Result<Vec<ScannedRow>> {
        let Some(&first) = tables.first() else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let ty = key_type(graph, first);
        let after = match after {
            Some(k) => match key_param(k, ty) {
                Some(p) => Some(p),
                // A key of the other type: compare as SQLite would, where
                // every integer sorts before every text.
                None if matches!(k, Key::Int(_)) => None,
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let sql = state_sql(
            graph,
            tables,
            Source::Scan {
                first: after.is_none(),
                limit: limit.min(i64::MAX as usize),
            },
            values,
        );
        // One statement: the first table in key order, the others joined
        // by key.
        self.read(|c| {
            let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::new();
            if let Some(a) = &after {
                params.push(a.as_ref());
            }
            let rows = c.query(&sql, &params)?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let states = read_states(c, graph, tables, r, &mut 1, values)?;
                if let Some(key) = key_at(r, 0, ty)? {
                    out.push(ScannedRow { key, states });
                }
            }
            Ok(out)
        })
    }

    fn row_count(&self, table: &str) -> Result<u64> {
        let sql = format!("SELECT count(*) FROM {}", quote(table));
        self.read(|c| {
            let n: i64 = c.query_one(&sql, &[])?.try_get(0)?;
            Ok(n as u64)
        })
    }

    fn changed_in_range(
        &self,
        info: &TableInfo,
        first: &Key,
        last: &Key,
        after: Revision,
    ) -> Result<bool> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {t} WHERE {kc} BETWEEN $1 AND $2 AND __changed_at > $3)",
            t = quote(info.name),
            kc = key_column(info),
        );
        self.read(|c| {
            // The key's type is the column's, as the server infers it.
            let ty = match c.param_types(&sql)?.first() {
                Some(&Type::INT8) => SqlType::Integer,
                _ => SqlType::Text,
            };
            let (Some(first), Some(last)) = (key_param(first, ty), key_param(last, ty)) else {
                // Keys of the other type: unknown, so changed.
                return Ok(true);
            };
            Ok(
                c.query_one(&sql, &[first.as_ref(), last.as_ref(), &after.get()])?
                    .try_get(0)?,
            )
        })
    }

    fn keys_after(&self, info: &TableInfo, after: Option<&Key>, limit: usize) -> Result<Vec<Key>> {
        keys_in_order(self, info.name, &key_column(info), "", after, limit)
    }

    fn reads_of(&self, graph: &Graph, id: TableId, key: &Key) -> Result<Vec<RecordedRead>> {
        self.read(|c| reads::reads_of(c, graph, id, key))
    }

    fn readers_of(&self, graph: &Graph, table: TableId, key: &Key) -> Result<Vec<(TableId, Key)>> {
        self.read(|c| reads::readers_of(c, graph, table, key))
    }

    fn readers_changed_since(
        &self,
        graph: &Graph,
        reader: TableId,
        since: Revision,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        self.read(|c| reads::readers_changed(c, graph, reader, since, after, limit))
    }

    fn keys_with_status(
        &self,
        info: &TableInfo,
        status: Status,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        // The status is written into the statement, so that the partial
        // index on failed and blocked rows serves it.
        let cond = format!("__status = {} AND", status.code());
        keys_in_order(self, info.name, "__key", &cond, after, limit)
    }
}

/// Keys of a table in key order after `after`, at most `limit`, among the
/// rows meeting `cond` (SQL ending in `AND`, or empty).
fn keys_in_order(
    store: &PgStore,
    table: &str,
    key_col: &str,
    cond: &str,
    after: Option<&Key>,
    limit: usize,
) -> Result<Vec<Key>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let t = quote(table);
    // Two statements rather than `$1 IS NULL OR ..`, which would keep the
    // planner from seeking in the key's index.
    let Some(after) = after else {
        let w = match cond.strip_suffix("AND") {
            Some(c) => format!("WHERE {c}"),
            None => String::new(),
        };
        let sql = format!("SELECT {key_col} FROM {t} {w} ORDER BY {key_col} LIMIT $1");
        return store.read(|c| keys_of(&c.query(&sql, &[&limit])?));
    };
    // The key's type is the column's, as the server infers it for `$1`
    // (a derived table's key type is its root's, which a `TableInfo` does
    // not tell).
    let sql = format!(
        "SELECT {key_col} FROM {t} WHERE {cond} {key_col} > $1 ORDER BY {key_col} LIMIT $2"
    );
    store.read(|c| {
        let ty = match c.param_types(&sql)?.first() {
            Some(&Type::INT8) => SqlType::Integer,
            _ => SqlType::Text,
        };
        let Some(after) = key_param(after, ty) else {
            // A key of the other type: integers sort before text (as in
            // SQLite), so after an integer comes every text key, and after
            // a text no integer key.
            return match after {
                Key::Int(_) => {
                    let w = match cond.strip_suffix("AND") {
                        Some(c) => format!("WHERE {c}"),
                        None => String::new(),
                    };
                    let sql = format!("SELECT {key_col} FROM {t} {w} ORDER BY {key_col} LIMIT $1");
                    keys_of(&c.query(&sql, &[&limit])?)
                }
                Key::Text(_) => Ok(Vec::new()),
            };
        };
        keys_of(&c.query(&sql, &[after.as_ref(), &limit])?)
    })
}

/// Keys from a query's first column, of whichever type it has.
fn keys_of(rows: &[postgres::Row]) -> PgResult<Vec<Key>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        if let Some(k) = any_key_at(r, 0)? {
            out.push(k);
        }
    }
    Ok(out)
}
