//! Rows: input writes, guarded derived writes, and reading row states.

use super::sql::{bump_epoch, key_column, next_revision, read_states, UPSERT_ROWS};
use super::{from_ref, keys_of, quote, run, SqlResult, SqlValue, SqliteStore};
use crate::error::Result;
use crate::graph::{Graph, TableId};
use crate::row::TableInfo;
use crate::storage::{
    ChangeCursor, ChangedRow, Fence, Outcome, OutcomeKind, Pass, Revision, RowState, Rows, Status,
    Values, Written,
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
        let sql = self.cache.state_sql(graph, tables, None, values);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let k = key.to_value();
        Ok(stmt.query_row([SqlValue(&k)], |r| {
            read_states(graph, tables, r, &mut 1, values)
        })?)
    }

    /// Checks a table fence (the lease is given back by the same
    /// statement). Row fences are checked row by row while writing.
    fn table_fence_holds(tx: &rusqlite::Connection, table: &str, fence: &Fence) -> SqlResult<bool> {
        let Fence::Table { owner } = fence else {
            return Ok(true);
        };
        Ok(tx
            .prepare_cached(
                "DELETE FROM rederive_table_leases WHERE tbl = ?1 AND owner = ?2 RETURNING 1",
            )?
            .query_row(params![table, owner], |_| Ok(()))
            .optional()?
            .is_some())
    }
}

/// One outcome's upsert parameters: key, values, status, message, origin,
/// code, revision, ins.
fn outcome_params(o: &Outcome, columns: usize, code: &Value, rev: Revision) -> Vec<Value> {
    let nulls;
    let (values, status, message, origin) = match &o.kind {
        OutcomeKind::Ok(v) => (v, Status::Ok, Value::Null, Value::Null),
        OutcomeKind::Error(m) => {
            nulls = vec![Value::Null; columns];
            (&nulls, Status::Error, Value::Text(m.clone()), Value::Null)
        }
        OutcomeKind::Blocked { table, key } => {
            nulls = vec![Value::Null; columns];
            (
                &nulls,
                Status::Blocked,
                Value::Text(table.clone()),
                key.to_value(),
            )
        }
    };
    let mut params = Vec::with_capacity(1 + values.len() + 5 + o.ins.len());
    params.push(o.key.to_value());
    params.extend(values.iter().cloned());
    params.extend([
        Value::Integer(status.code()),
        message,
        origin,
        code.clone(),
        Value::Integer(rev.get()),
    ]);
    params.extend(o.ins.iter().map(|i| Value::Integer(i.get())));
    params
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
            next_revision(&tx)?;
            bump_epoch(&tx)?;
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
            let sql = self.cache.state_sql(graph, tables, Some(driver), values);
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
                let states = read_states(graph, tables, r, &mut i, values)?;
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
            let code_value = Value::Text(code.to_owned());
            // Each row's parameters, for the rows whose lease is held.
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
                    rows.push((i, outcome_params(o, t.info.columns.len(), &code_value, rev)));
                }
            }
            // Many rows per statement: fewer statement executions, same work.
            let per_row = 1 + t.info.columns.len() + 5 + t.inputs.len();
            let chunk_rows = (30_000 / per_row).clamp(1, UPSERT_ROWS);
            for chunk in rows.chunks(chunk_rows) {
                let sql = self
                    .cache
                    .upsert_derived_sql(t.info, t.inputs.len(), chunk.len());
                let mut stmt = tx.prepare_cached(&sql)?;
                let index: HashMap<&Key, usize> =
                    chunk.iter().map(|(i, _)| (&outcomes[*i].key, *i)).collect();
                let mut returned = stmt.query(params_from_iter(
                    chunk.iter().flat_map(|(_, p)| p).map(SqlValue),
                ))?;
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
            // them along: what this batch inserted for it goes again (found
            // through the index on `__changed_at`: only this batch's rows
            // carry `rev`).
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
