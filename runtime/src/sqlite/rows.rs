//! Rows: input writes, guarded derived writes, and reading row states.

use super::sql::{bump_epoch, derived_row_params, key_column, next_revision, Source, UPSERT_ROWS};
use super::{from_ref, keys_of, quote, run, SqlResult, SqlValue, SqliteStore};
use crate::error::Result;
use crate::graph::{Graph, TableId, TableNode};
use crate::row::TableInfo;
use crate::storage::{
    ChangeCursor, ChangedRow, Fence, Outcome, OutcomeKind, Pass, Revision, RowState, Rows,
    ScannedRow, Status, Values, Written,
};
use crate::value::{Key, Value};
use rusqlite::{params, params_from_iter, OptionalExtension};
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
        let sql = self.cache.state_sql(graph, tables, Source::Key, values);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let k = key.to_value();
        Ok(stmt.query_row([SqlValue(&k)], |r| {
            self.cache.read_states(graph, tables, r, &mut 1, values)
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

    /// Inserts the rows planned as new, many to a statement. Returns the
    /// positions (into `rows`) of those whose key turned out to exist: they
    /// need the guarded write.
    fn insert_new(
        &self,
        tx: &rusqlite::Connection,
        table: &TableNode,
        rows: &[(usize, Vec<Value>)],
        shared: &[Value; 2],
        rev: Revision,
        written: &mut [Written],
    ) -> SqlResult<Vec<usize>> {
        let (info, inputs) = (table.info, table.inputs.len());
        let per_row = derived_row_params(info, inputs);
        let chunk_rows = (30_000 / per_row).clamp(1, UPSERT_ROWS);
        let mut existing = Vec::new();
        let mut at = 0;
        for chunk in rows.chunks(chunk_rows) {
            let sql = self.cache.insert_new_sql(info, inputs, chunk.len());
            let n = tx
                .prepare_cached(&sql)?
                .execute(params_from_iter(write_params(shared, chunk)))?;
            if n == chunk.len() {
                for (i, _) in chunk {
                    written[*i] = Written::Changed;
                }
            } else {
                // Some keys existed (written by someone else meanwhile):
                // find which rows are this batch's own.
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT __changed_at FROM {} WHERE __key = ?1",
                    quote(info.name)
                ))?;
                for (pos, (i, p)) in chunk.iter().enumerate() {
                    let at_rev: Option<Revision> =
                        stmt.query_row([SqlValue(&p[0])], |r| r.get(0)).optional()?;
                    if at_rev == Some(rev) {
                        written[*i] = Written::Changed;
                    } else {
                        existing.push(at + pos);
                    }
                }
            }
            at += chunk.len();
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
        Ok(orphans.iter().filter_map(Key::from_value).collect())
    }
}

/// One outcome's own parameters in a multi-row write: key, values,
/// status, message, origin, ins (the code version and the revision are
/// shared by every row: see `sql::derived_placeholders`).
fn outcome_params(o: &Outcome, columns: usize) -> Vec<Value> {
    let mut params = Vec::with_capacity(1 + columns + 3 + o.ins.len());
    params.push(o.key.to_value());
    match &o.kind {
        OutcomeKind::Ok(v) => {
            params.extend(v.iter().cloned());
            params.extend([Value::Integer(Status::Ok.code()), Value::Null, Value::Null]);
        }
        OutcomeKind::Error(m) => {
            params.extend(std::iter::repeat_n(Value::Null, columns));
            params.extend([
                Value::Integer(Status::Error.code()),
                Value::Text(m.clone()),
                Value::Null,
            ]);
        }
        OutcomeKind::Blocked { table, key } => {
            params.extend(std::iter::repeat_n(Value::Null, columns));
            params.extend([
                Value::Integer(Status::Blocked.code()),
                Value::Text(table.clone()),
                key.to_value(),
            ]);
        }
    }
    params.extend(o.ins.iter().map(|i| Value::Integer(i.get())));
    params
}

/// The parameters of one multi-row write: the shared code version and
/// revision, then each row's own.
fn write_params<'a>(
    shared: &'a [Value; 2],
    chunk: &'a [(usize, Vec<Value>)],
) -> impl Iterator<Item = SqlValue<'a>> {
    shared
        .iter()
        .chain(chunk.iter().flat_map(|(_, p)| p))
        .map(SqlValue)
}

impl Rows for SqliteStore {
    fn put_rows(&self, info: &TableInfo, rows: &[Vec<Value>]) -> Result<Revision> {
        run(|| {
            let tx = self.write()?;
            let rev = next_revision(&tx)?;
            bump_epoch(&tx)?;
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
                let states = self.cache.read_states(graph, tables, r, &mut i, values)?;
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
            let shared = [Value::Text(code.to_owned()), Value::Integer(rev.get())];
            // Each row's parameters, for the rows whose lease is held: new
            // rows (inserted without comparing) and the others (upserted
            // under the guard).
            let mut new: Vec<(usize, Vec<Value>)> = Vec::new();
            let mut rows: Vec<(usize, Vec<Value>)> = Vec::with_capacity(outcomes.len());
            {
                // Fencing and release in one statement: only the current
                // holder of the lease writes, and gives it back as it does.
                let mut release = tx.prepare_cached(
                    "DELETE FROM rederive_leases WHERE tbl = ?1 AND key = ?2 AND owner = ?3 RETURNING 1",
                )?;
                for (i, o) in outcomes.iter().enumerate() {
                    if let Fence::Rows { owner } = fence {
                        let key = o.key.to_value();
                        let held = release
                            .query_row(params![t.info.name, SqlValue(&key), owner], |_| Ok(()))
                            .optional()?
                            .is_some();
                        if !held {
                            continue;
                        }
                    }
                    let params = outcome_params(o, t.info.columns.len());
                    if o.new {
                        new.push((i, params));
                    } else {
                        rows.push((i, params));
                    }
                }
            }
            let existing = self.insert_new(&tx, t, &new, &shared, rev, &mut written)?;
            if !existing.is_empty() {
                let mut new = new.into_iter().map(Some).collect::<Vec<_>>();
                rows.extend(existing.into_iter().filter_map(|p| new[p].take()));
            }
            // Many rows per statement: fewer statement executions, same work.
            let per_row = derived_row_params(t.info, t.inputs.len());
            let chunk_rows = (30_000 / per_row).clamp(1, UPSERT_ROWS);
            for chunk in rows.chunks(chunk_rows) {
                let sql = self
                    .cache
                    .upsert_derived_sql(t.info, t.inputs.len(), chunk.len());
                let mut stmt = tx.prepare_cached(&sql)?;
                let index: HashMap<&Key, usize> =
                    chunk.iter().map(|(i, _)| (&outcomes[*i].key, *i)).collect();
                let mut returned = stmt.query(params_from_iter(write_params(&shared, chunk)))?;
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

    fn is_empty(&self, table: &str) -> Result<bool> {
        run(|| {
            let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {})", quote(table));
            Ok(self
                .conn
                .prepare_cached(&sql)?
                .query_row([], |r| r.get(0))?)
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
            let source = Source::Scan {
                first: after.is_none(),
            };
            let sql = self.cache.state_sql(graph, tables, source, values);
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let after = after.map(Key::to_value).unwrap_or(Value::Null);
            let rows = stmt.query_map(params![SqlValue(&after), limit as i64], |r| {
                let key = from_ref(r.get_ref(0)?);
                let states = self.cache.read_states(graph, tables, r, &mut 1, values)?;
                Ok((key, states))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, states) = row?;
                if let Some(key) = Key::from_value(&key) {
                    out.push(ScannedRow { key, states });
                }
            }
            Ok(out)
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
