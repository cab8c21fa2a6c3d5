//! Rows: input writes, guarded derived writes, and reading row states.

use super::sql::{bump_epoch, key_column, next_revision, Shape, Source, UPSERT_ROWS};
use super::{
    from_ref, key_ref, keys_of, quote, reads, replicas, run, value_ref, KeyParam, SqlResult,
    SqlValue, SqliteStore,
};
use crate::error::Result;
use crate::graph::{Graph, TableId, TableNode};
use crate::row::TableInfo;
use crate::storage::{
    ChangeCursor, ChangedRow, Fence, Outcome, OutcomeKind, Pass, RecordedRead, Revision, RowState,
    Rows, ScannedRow, Status, Values, Written,
};
use crate::value::{Key, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, params_from_iter, OptionalExtension, ToSql};
use std::collections::HashMap;

impl SqliteStore {
    /// The state of one key in `tables`.
    pub(super) fn load_key(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
        values: Values,
    ) -> SqlResult<Vec<Option<RowState>>> {
        if tables.len() == 1 {
            // One row: looked up directly (most reads through a `ctx`).
            let sql = self.cache.state_sql(graph, tables, Source::Row, values);
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let mut rows = stmt.query([KeyParam(key)])?;
            return Ok(match rows.next()? {
                Some(r) => self
                    .cache
                    .read_states(&self.conn, graph, tables, r, &mut 1, values)?,
                None => vec![None],
            });
        }
        let sql = self.cache.state_sql(graph, tables, Source::Key, values);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        Ok(stmt.query_row([KeyParam(key)], |r| {
            self.cache
                .read_states(&self.conn, graph, tables, r, &mut 1, values)
        })?)
    }

    /// Checks a table fence (the lease stays: the batch may be written in
    /// parts). Row fences are checked row by row while writing.
    fn table_fence_holds(tx: &rusqlite::Connection, table: &str, fence: &Fence) -> SqlResult<bool> {
        let Fence::Table { owner } = fence else {
            return Ok(true);
        };
        Ok(tx
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM rederive_table_leases WHERE tbl = ?1 AND owner = ?2)",
            )?
            .query_row(params![table, owner], |r| r.get(0))?)
    }

    /// Inserts the rows planned as new (positions into `outcomes`), many
    /// to a statement. Returns the positions of those whose key turned out
    /// to exist: they need the guarded write (the others were written).
    fn insert_new(
        &self,
        tx: &rusqlite::Connection,
        table: &TableNode,
        outcomes: &[Outcome],
        new: &[usize],
        shared: &[Param<'_>; 2],
        rev: Revision,
    ) -> SqlResult<Vec<usize>> {
        let (info, inputs) = (table.info, table.inputs.len());
        let (ok, other): (Vec<usize>, Vec<usize>) = new
            .iter()
            .partition(|&&i| matches!(outcomes[i].kind, OutcomeKind::Ok(_)));
        let mut existing = Vec::new();
        let mut params = Vec::new();
        for (rows, shape) in [(ok, Shape::Ok), (other, Shape::Any)] {
            let chunk_rows = (30_000 / shape.row_params(info, inputs)).clamp(1, UPSERT_ROWS);
            for chunk in rows.chunks(chunk_rows) {
                let sql = self.cache.insert_new_sql(info, inputs, chunk.len(), shape);
                params.clear();
                params.extend_from_slice(shared);
                for &i in chunk {
                    push_params(&mut params, &outcomes[i], info.columns.len(), shape);
                }
                let n = tx
                    .prepare_cached(&sql)?
                    .execute(params_from_iter(&params))?;
                if n == chunk.len() {
                    continue;
                }
                // Some keys existed (written by someone else meanwhile):
                // find which rows are this batch's own.
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT __changed_at FROM {} WHERE __key = ?1",
                    quote(info.name)
                ))?;
                for &i in chunk {
                    let at_rev: Option<Revision> = stmt
                        .query_row([Param::Key(&outcomes[i].key)], |r| r.get(0))
                        .optional()?;
                    if at_rev != Some(rev) {
                        existing.push(i);
                    }
                }
            }
        }
        Ok(existing)
    }

    /// Removes what this batch wrote for root rows that do not exist (deleted
    /// while the batch was computed), unless no root row was deleted since
    /// `read_at` (zero: unknown, always look).
    fn drop_orphans(
        &self,
        tx: &rusqlite::Connection,
        graph: &Graph,
        id: TableId,
        rev: Revision,
        read_at: Revision,
    ) -> SqlResult<Vec<Key>> {
        if read_at == Revision::ZERO {
            return self.delete_orphans(tx, graph, id, rev);
        }
        let last_delete: Revision = tx
            .prepare_cached(
                "SELECT coalesce((SELECT value FROM rederive_meta WHERE key = 'last_delete'), 0)",
            )?
            .query_row([], |r| r.get(0))?;
        if last_delete <= read_at {
            return Ok(Vec::new());
        }
        self.delete_orphans(tx, graph, id, rev)
    }

    /// Removes this batch's rows (those written at `rev`) whose root row
    /// does not exist.
    fn delete_orphans(
        &self,
        tx: &rusqlite::Connection,
        graph: &Graph,
        id: TableId,
        rev: Revision,
    ) -> SqlResult<Vec<Key>> {
        let t = graph.table(id);
        let root = graph.table(t.root).info;
        // Found through the index on `__changed_at`: only this batch's
        // rows carry `rev`.
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
        let orphans: Vec<Key> = orphans.iter().filter_map(Key::from_value).collect();
        for key in &orphans {
            reads::row_gone(tx, t.info.name, key, rev)?;
        }
        Ok(orphans)
    }
}

/// One parameter of a derived write, borrowed from its outcome.
#[derive(Clone, Copy)]
enum Param<'a> {
    Value(&'a Value),
    Key(&'a Key),
    Int(i64),
    Text(&'a str),
    Null,
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Param::Value(v) => ToSqlOutput::Borrowed(value_ref(v)),
            Param::Key(k) => ToSqlOutput::Borrowed(key_ref(k)),
            Param::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
            Param::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

/// Adds one outcome's own parameters in a multi-row write: key, values,
/// status, message, origin (unless the shape writes them as constants),
/// ins. The code version and the revision are shared by every row (see
/// `sql::derived_placeholders`).
fn push_params<'a>(out: &mut Vec<Param<'a>>, o: &'a Outcome, columns: usize, shape: Shape) {
    out.push(Param::Key(&o.key));
    match &o.kind {
        OutcomeKind::Ok(v) => {
            out.extend(v.iter().map(Param::Value));
            if shape == Shape::Any {
                out.extend([Param::Int(Status::Ok.code()), Param::Null, Param::Null]);
            }
        }
        OutcomeKind::Error(m) => {
            out.extend(std::iter::repeat_n(Param::Null, columns));
            out.extend([
                Param::Int(Status::Error.code()),
                Param::Text(m),
                Param::Null,
            ]);
        }
        OutcomeKind::Blocked { table, key } => {
            out.extend(std::iter::repeat_n(Param::Null, columns));
            out.extend([
                Param::Int(Status::Blocked.code()),
                Param::Text(table),
                Param::Key(key),
            ]);
        }
    }
    out.extend(o.ins.iter().map(|i| Param::Int(i.get())));
}

impl Rows for SqliteStore {
    fn put_rows(&self, info: &TableInfo, rows: &[Vec<Value>]) -> Result<Revision> {
        run(|| {
            let tx = self.write()?;
            let rev = next_revision(&tx)?;
            bump_epoch(&tx)?;
            replicas::record_puts(&tx, info, rows, rev)?;
            let stamps = [Value::Integer(rev.get()), Value::Integer(self.now_ms())];
            // Many rows per statement. A key given twice is upserted twice,
            // in order: the last value wins.
            let chunk_rows = (30_000 / (info.columns.len() + 2)).clamp(1, UPSERT_ROWS);
            for chunk in rows.chunks(chunk_rows) {
                let sql = self.cache.upsert_input_sql(info, chunk.len());
                let params = chunk
                    .iter()
                    .flat_map(|values| values.iter().chain(&stamps))
                    .map(SqlValue);
                tx.prepare_cached(&sql)?.execute(params_from_iter(params))?;
            }
            tx.commit()?;
            Ok(rev)
        })
    }

    fn delete_row(&self, graph: &Graph, id: TableId, key: &Key) -> Result<bool> {
        run(|| {
            let tx = self.write()?;
            let rev = next_revision(&tx)?;
            bump_epoch(&tx)?;
            replicas::record_delete(&tx, graph.table(id).info, key, rev)?;
            let existed = delete_input(&tx, graph, id, key, rev)?;
            tx.commit()?;
            Ok(existed)
        })
    }

    fn load(
        &self,
        graph: &Graph,
        tables: &[TableId],
        key: &Key,
        values: Values,
    ) -> Result<Vec<Option<RowState>>> {
        run(|| self.load_key(graph, tables, key, values))
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
        run(|| {
            let sql = self
                .cache
                .state_sql(graph, tables, Source::Changes(driver), values);
            let mut stmt = self.conn.prepare_cached(&sql)?;
            // Before the first row after the cursor's revision: none of the
            // rows changed at that revision itself.
            let rowid = match after.position() {
                Value::Integer(i) => *i,
                _ => i64::MAX,
            };
            let rows = stmt.query_map(params![after.revision(), rowid, limit as i64], |r| {
                let key = from_ref(r.get_ref(0)?);
                let mut i = 1;
                let states = self
                    .cache
                    .read_states(&self.conn, graph, tables, r, &mut i, values)?;
                let cursor = ChangeCursor::at(r.get(i)?, Value::Integer(r.get(i + 1)?));
                Ok((key, cursor, states))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, cursor, states) = row?;
                if let Some(key) = Key::from_value(&key) {
                    out.push(ChangedRow {
                        key,
                        cursor,
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
        run(|| {
            let t = graph.table(id);
            let tx = self.write()?;
            let rev = next_revision(&tx)?;
            if pass == Pass::OnDemand {
                bump_epoch(&tx)?;
            }
            let mut written = vec![Written::Rejected; outcomes.len()];
            if !Self::table_fence_holds(&tx, t.info.name, fence)? {
                tx.commit()?;
                return Ok(written);
            }
            let shared = [
                Param::Int(self.cache.code_id(&tx, code)?),
                Param::Int(rev.get()),
            ];
            // The rows whose lease is held: new rows (inserted without
            // comparing) and the others (upserted under the guard).
            let mut new: Vec<usize> = Vec::new();
            let mut rows: Vec<usize> = Vec::with_capacity(outcomes.len());
            {
                // Fencing and release in one statement: only the current
                // holder of the lease writes, and gives it back as it does.
                let mut release = tx.prepare_cached(
                    "DELETE FROM rederive_leases WHERE tbl = ?1 AND key = ?2 AND owner = ?3 RETURNING 1",
                )?;
                for (i, o) in outcomes.iter().enumerate() {
                    if let Fence::Rows { owner } = fence {
                        let held = release
                            .query_row(params![t.info.name, Param::Key(&o.key), owner], |_| Ok(()))
                            .optional()?
                            .is_some();
                        if !held {
                            continue;
                        }
                    }
                    if o.new {
                        new.push(i);
                    } else {
                        rows.push(i);
                    }
                }
            }
            let existing = self.insert_new(&tx, t, outcomes, &new, &shared, rev)?;
            for &i in &new {
                written[i] = Written::Changed;
            }
            for &i in &existing {
                // Left to the guarded write below, which tells.
                written[i] = Written::Rejected;
            }
            rows.extend(existing.iter().copied());
            // Many rows per statement: fewer statement executions, same work.
            let chunk_rows =
                (30_000 / Shape::Any.row_params(t.info, t.inputs.len())).clamp(1, UPSERT_ROWS);
            let mut params = Vec::new();
            for chunk in rows.chunks(chunk_rows) {
                let sql = self
                    .cache
                    .upsert_derived_sql(t.info, t.inputs.len(), chunk.len());
                let mut stmt = tx.prepare_cached(&sql)?;
                let index: HashMap<&Key, usize> =
                    chunk.iter().map(|&i| (&outcomes[i].key, i)).collect();
                params.clear();
                params.extend_from_slice(&shared);
                for &i in chunk {
                    push_params(&mut params, &outcomes[i], t.info.columns.len(), Shape::Any);
                }
                let mut returned = stmt.query(params_from_iter(&params))?;
                while let Some(r) = returned.next()? {
                    let Some(key) = Key::from_value(&from_ref(r.get_ref(0)?)) else {
                        continue;
                    };
                    let changed: Revision = r.get(1)?;
                    if let Some(&i) = index.get(&key) {
                        written[i] = if changed == rev {
                            Written::Changed
                        } else {
                            Written::Unchanged
                        };
                    }
                }
            }
            // The rows written replace their recorded reads.
            if !t.reads.is_empty() {
                let rows = outcomes
                    .iter()
                    .zip(&written)
                    .enumerate()
                    .filter(|(_, (_, w))| **w != Written::Rejected)
                    // A row this batch inserted had no reads recorded.
                    .map(|(i, (o, _))| (&o.key, &o.reads[..], o.new && !existing.contains(&i)));
                reads::record_reads(&tx, graph, t.info.name, rows)?;
            }
            // A root row deleted while its rows were being computed takes
            // them along.
            for key in self.drop_orphans(&tx, graph, id, rev, read_at)? {
                if let Some(i) = outcomes.iter().position(|o| o.key == key) {
                    written[i] = Written::Rejected;
                }
            }
            tx.commit()?;
            Ok(written)
        })
    }

    fn begin_snapshot(&self) -> Result<()> {
        run(|| {
            if !self.snapshot.get() && self.conn.is_autocommit() {
                self.conn.execute_batch("BEGIN DEFERRED")?;
                self.snapshot.set(true);
            }
            Ok(())
        })
    }

    fn end_snapshot(&self) -> Result<()> {
        run(|| self.end_snapshot_now())
    }

    fn is_empty(&self, table: &str) -> Result<bool> {
        run(|| {
            let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {})", quote(table));
            Ok(self
                .conn
                .prepare_cached(&sql)?
                .query_row([], |r| r.get(0))?)
        })
    }

    fn changed_in_range(
        &self,
        info: &TableInfo,
        first: &Key,
        last: &Key,
        after: Revision,
    ) -> Result<bool> {
        run(|| {
            let kc = key_column(info);
            let sql = format!(
                "SELECT EXISTS (SELECT 1 FROM {t} WHERE {kc} BETWEEN ?1 AND ?2 \
                 AND __changed_at > ?3)",
                t = quote(info.name)
            );
            let (first, last) = (first.to_value(), last.to_value());
            Ok(self.conn.prepare_cached(&sql)?.query_row(
                params![SqlValue(&first), SqlValue(&last), after.get()],
                |r| r.get(0),
            )?)
        })
    }

    fn scan_page(
        &self,
        graph: &Graph,
        tables: &[TableId],
        after: Option<&Key>,
        limit: usize,
        values: Values,
    ) -> Result<Vec<ScannedRow>> {
        run(|| {
            // One snapshot for both reads below.
            let tx = self.conn.unchecked_transaction()?;
            // The last table (the one being built, usually sparse) is read
            // by one range query and merged by key, rather than looked up
            // for every key of the others.
            let (head, last) = match tables.split_last() {
                Some((&last, head)) if !head.is_empty() => (head, Some(last)),
                _ => (tables, None),
            };
            let n = tables.len();
            let all_or_none = |read: bool| if read { Values::All } else { Values::None };
            let head_values = all_or_none(values.of(0, n));
            let after = after.map(Key::to_value).unwrap_or(Value::Null);
            let scan = |tables: &[TableId], values: Values, upto: Option<&Value>| {
                let source = Source::Scan {
                    first: after == Value::Null,
                    bounded: upto.is_some(),
                };
                let sql = self.cache.state_sql(graph, tables, source, values);
                let mut stmt = tx.prepare_cached(&sql)?;
                let limit = if upto.is_some() { -1 } else { limit as i64 };
                let bound = SqlValue(upto.unwrap_or(&Value::Null));
                let all: [&dyn ToSql; 3] = [&SqlValue(&after), &limit, &bound];
                let mut rows = stmt.query(&all[..if upto.is_some() { 3 } else { 2 }])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let key = Key::from_value(&from_ref(r.get_ref(0)?));
                    let states = self
                        .cache
                        .read_states(&tx, graph, tables, r, &mut 1, values)?;
                    if let Some(key) = key {
                        out.push(ScannedRow { key, states });
                    }
                }
                Ok::<_, rusqlite::Error>(out)
            };
            let mut page = scan(head, head_values, None)?;
            let (Some(last), Some(end)) = (last, page.last()) else {
                return Ok(page);
            };
            let end = end.key.to_value();
            let mut built = scan(&[last], all_or_none(values.of(n - 1, n)), Some(&end))?
                .into_iter()
                .peekable();
            for row in &mut page {
                while built.peek().is_some_and(|b| b.key < row.key) {
                    built.next();
                }
                let state = match built.peek() {
                    Some(b) if b.key == row.key => built.next().and_then(|mut b| b.states.pop()),
                    _ => None,
                };
                row.states.push(state.flatten());
            }
            Ok(page)
        })
    }

    fn row_count(&self, table: &str) -> Result<u64> {
        run(|| {
            let sql = format!("SELECT count(*) FROM {}", quote(table));
            let n: i64 = self.conn.query_row(&sql, [], |r| r.get(0))?;
            Ok(n as u64)
        })
    }

    fn keys_after(&self, info: &TableInfo, after: Option<&Key>, limit: usize) -> Result<Vec<Key>> {
        run(|| {
            let kc = key_column(info);
            // Two statements rather than `?1 IS NULL OR ..`, which would
            // keep SQLite from seeking in the key's index.
            let cond = if after.is_some() {
                "WHERE ?1 IS NOT NULL AND"
            } else {
                "WHERE ?1 IS NULL OR"
            };
            let sql = format!(
                "SELECT {kc} FROM {t} {cond} {kc} > ?1 ORDER BY {kc} LIMIT ?2",
                t = quote(info.name)
            );
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let after = after.map(|k| k.to_value()).unwrap_or(Value::Null);
            let rows = stmt.query_map(params![SqlValue(&after), limit as i64], |r| {
                Ok(from_ref(r.get_ref(0)?))
            })?;
            keys_of(rows)
        })
    }

    fn reads_of(&self, graph: &Graph, id: TableId, key: &Key) -> Result<Vec<RecordedRead>> {
        run(|| self.reads_of_row(graph, id, key))
    }

    fn readers_of(&self, graph: &Graph, table: TableId, key: &Key) -> Result<Vec<(TableId, Key)>> {
        run(|| self.readers_of_row(graph, table, key))
    }

    fn readers_changed_since(
        &self,
        graph: &Graph,
        reader: TableId,
        since: Revision,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        run(|| self.readers_changed(graph, reader, since, after, limit))
    }

    fn keys_with_status(
        &self,
        info: &TableInfo,
        status: Status,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>> {
        run(|| {
            let sql = format!(
                "SELECT __key FROM {t} WHERE __status = ?1 AND (?2 IS NULL OR __key > ?2) ORDER BY __key LIMIT ?3",
                t = quote(info.name)
            );
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let after = after.map(|k| k.to_value()).unwrap_or(Value::Null);
            let rows = stmt.query_map(
                params![status.code(), SqlValue(&after), limit as i64],
                |r| Ok(from_ref(r.get_ref(0)?)),
            )?;
            keys_of(rows)
        })
    }
}

/// Deletes an input row and everything derived from it, at revision `rev`
/// (inside the caller's transaction, which took `rev` and moved the epoch).
/// Returns whether the row existed.
pub(super) fn delete_input(
    tx: &rusqlite::Connection,
    graph: &Graph,
    id: TableId,
    key: &Key,
    rev: Revision,
) -> SqlResult<bool> {
    // What lets a batch of results skip looking for orphans.
    tx.prepare_cached(
        "INSERT INTO rederive_meta VALUES ('last_delete', ?1) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute([rev])?;
    let info = graph.table(id).info;
    let k = key.to_value();
    let n = tx.execute(
        &format!(
            "DELETE FROM {} WHERE {} = ?1",
            quote(info.name),
            key_column(info)
        ),
        [SqlValue(&k)],
    )?;
    reads::tombstone(tx, info.name, key, rev)?;
    for d in graph.derived_from_root(id) {
        let name = graph.table(d).info.name;
        tx.execute(
            &format!("DELETE FROM {} WHERE __key = ?1", quote(name)),
            [SqlValue(&k)],
        )?;
        reads::row_gone(tx, name, key, rev)?;
    }
    Ok(n > 0)
}
