//! Recorded reads: which rows a derived row read through its `ctx`, and
//! tombstones of deleted rows that were read.

use super::sql::{bump_epoch, key_column, next_revision};
use super::{from_ref, keys_of, quote, KeyParam, SqlResult, SqliteStore};
use crate::graph::{Graph, TableId};
use crate::storage::{Read, RecordedRead, Revision};
use crate::value::Key;
use rusqlite::{params, Connection};

/// The tables of recorded reads and tombstones (created with the database,
/// or by the first write open of an older one).
pub(super) const READS_DDL: &str = "
    CREATE TABLE IF NOT EXISTS rederive_reads(
        reader TEXT NOT NULL,
        reader_key ANY NOT NULL,
        tbl TEXT NOT NULL,
        key ANY NOT NULL,
        seen INTEGER,
        PRIMARY KEY (reader, reader_key, tbl, key)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS rederive_reads_by_row ON rederive_reads(tbl, key, reader, reader_key);
    CREATE TABLE IF NOT EXISTS rederive_tombstones(
        tbl TEXT NOT NULL,
        key ANY NOT NULL,
        deleted_at INTEGER NOT NULL,
        PRIMARY KEY (tbl, key)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS rederive_tombstones_by_revision ON rederive_tombstones(tbl, deleted_at);";

/// How many reads one multi-row insert records (4 parameters each).
const READS_PER_INSERT: usize = 256;

/// Records the reads of the rows a batch wrote, replacing what each row
/// recorded before: `(key, reads, new)`, where a `new` row did not exist
/// before this batch (so had no reads to forget). The reads go in with
/// multi-row inserts: fewer statements, the same index entries.
pub(super) fn record_reads<'a>(
    tx: &Connection,
    graph: &Graph,
    reader: &str,
    rows: impl Iterator<Item = (&'a Key, &'a [Read], bool)>,
) -> SqlResult<()> {
    let mut bound: Vec<(KeyParam, &str, KeyParam, Option<i64>)> = Vec::new();
    for (key, reads, new) in rows {
        if !new {
            forget_reader(tx, reader, key)?;
        }
        bound.extend(reads.iter().map(|r| {
            (
                KeyParam(key),
                graph.table(r.table).info.name,
                KeyParam(&r.key),
                r.seen.map(Revision::get),
            )
        }));
    }
    let values = |n: usize| {
        let mut sql = String::from(
            "INSERT OR REPLACE INTO rederive_reads(reader, reader_key, tbl, key, seen) VALUES ",
        );
        for i in 0..n {
            let p = 2 + 4 * i;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("(?1, ?{}, ?{}, ?{}, ?{})", p, p + 1, p + 2, p + 3));
        }
        sql
    };
    let mut chunks = bound.chunks_exact(READS_PER_INSERT);
    if chunks.len() > 0 {
        let mut insert = tx.prepare_cached(&values(READS_PER_INSERT))?;
        let mut params: Vec<&dyn rusqlite::ToSql> = Vec::new();
        for chunk in chunks.by_ref() {
            params.clear();
            params.push(&reader);
            for (k, t, rk, seen) in chunk {
                params.extend([k as &dyn rusqlite::ToSql, t, rk, seen]);
            }
            insert.execute(&params[..])?;
        }
    }
    let mut insert = tx.prepare_cached(&values(1))?;
    for (k, t, rk, seen) in chunks.remainder() {
        insert.execute(params![reader, k, t, rk, seen])?;
    }
    Ok(())
}

/// Removes the reads recorded by one derived row (which is gone).
pub(super) fn forget_reader(tx: &Connection, reader: &str, key: &Key) -> SqlResult<()> {
    tx.prepare_cached("DELETE FROM rederive_reads WHERE reader = ?1 AND reader_key = ?2")?
        .execute(params![reader, KeyParam(key)])?;
    Ok(())
}

/// Records, at `rev`, that the row `(table, key)` was deleted, if any row
/// read it.
pub(super) fn tombstone(tx: &Connection, table: &str, key: &Key, rev: Revision) -> SqlResult<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO rederive_tombstones(tbl, key, deleted_at) \
         SELECT ?1, ?2, ?3 WHERE EXISTS \
         (SELECT 1 FROM rederive_reads WHERE tbl = ?1 AND key = ?2)",
    )?
    .execute(params![table, KeyParam(key), rev])?;
    Ok(())
}

/// A deleted or derived row `(table, key)` is gone: its readers are told,
/// and its own reads forgotten.
pub(super) fn row_gone(tx: &Connection, table: &str, key: &Key, rev: Revision) -> SqlResult<()> {
    tombstone(tx, table, key, rev)?;
    forget_reader(tx, table, key)
}

/// Every row of `table` is gone (the table was rebuilt or dropped): its
/// readers are told under a new revision, and its rows' reads forgotten.
pub(super) fn table_gone(tx: &Connection, table: &str) -> SqlResult<()> {
    let read: bool = tx
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM rederive_reads WHERE tbl = ?1)")?
        .query_row([table], |r| r.get(0))?;
    if read {
        let rev = next_revision(tx)?;
        bump_epoch(tx)?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO rederive_tombstones(tbl, key, deleted_at) \
             SELECT DISTINCT tbl, key, ?2 FROM rederive_reads WHERE tbl = ?1",
        )?
        .execute(params![table, rev])?;
    }
    tx.prepare_cached("DELETE FROM rederive_reads WHERE reader = ?1")?
        .execute([table])?;
    Ok(())
}

impl SqliteStore {
    pub(super) fn reads_of_row(
        &self,
        graph: &Graph,
        id: TableId,
        key: &Key,
    ) -> SqlResult<Vec<RecordedRead>> {
        let reader = graph.table(id).info.name;
        let mut out = Vec::new();
        for &t in &graph.table(id).reads {
            let info = graph.table(t).info;
            let sql = format!(
                "SELECT r.key, r.seen, x.__changed_at FROM rederive_reads r \
                 LEFT JOIN {x} x ON x.{k} = r.key \
                 WHERE r.reader = ?1 AND r.reader_key = ?2 AND r.tbl = ?3 ORDER BY r.key",
                x = quote(info.name),
                k = key_column(info),
            );
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![reader, KeyParam(key), info.name])?;
            while let Some(r) = rows.next()? {
                let Some(read_key) = Key::from_value(&from_ref(r.get_ref(0)?)) else {
                    continue;
                };
                let seen: Option<i64> = r.get(1)?;
                let now: Option<i64> = r.get(2)?;
                out.push(RecordedRead {
                    read: Read {
                        table: t,
                        key: read_key,
                        seen: seen.map(Revision::new),
                    },
                    now: now.map(Revision::new),
                });
            }
        }
        out.sort_by(|a, b| a.read.cmp(&b.read));
        Ok(out)
    }

    pub(super) fn readers_of_row(
        &self,
        graph: &Graph,
        table: TableId,
        key: &Key,
    ) -> SqlResult<Vec<(TableId, Key)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT reader, reader_key FROM rederive_reads WHERE tbl = ?1 AND key = ?2 \
             ORDER BY reader, reader_key",
        )?;
        let mut rows = stmt.query(params![graph.table(table).info.name, KeyParam(key)])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let name: String = r.get(0)?;
            let (Ok(reader), Some(k)) = (
                graph.table_id(&name),
                Key::from_value(&from_ref(r.get_ref(1)?)),
            ) else {
                continue;
            };
            out.push((reader, k));
        }
        Ok(out)
    }

    pub(super) fn readers_changed(
        &self,
        graph: &Graph,
        reader: TableId,
        since: Revision,
        after: Option<&Key>,
        limit: usize,
    ) -> SqlResult<Vec<Key>> {
        let t = graph.table(reader);
        if t.reads.is_empty() {
            return Ok(Vec::new());
        }
        let name = t.info.name.replace('\'', "''");
        let parts: Vec<String> = t
            .reads
            .iter()
            .map(|&x| {
                let info = graph.table(x).info;
                let lit = info.name.replace('\'', "''");
                format!(
                    "SELECT r.reader_key AS k FROM {x} x CROSS JOIN rederive_reads r \
                       ON r.tbl = '{lit}' AND r.key = +x.{key} AND r.reader = '{name}' \
                     WHERE x.__changed_at > ?1 \
                     UNION SELECT r.reader_key FROM rederive_tombstones d CROSS JOIN rederive_reads r \
                       ON r.tbl = d.tbl AND r.key = d.key AND r.reader = '{name}' \
                     WHERE d.tbl = '{lit}' AND d.deleted_at > ?1",
                    x = quote(info.name),
                    key = key_column(info),
                )
            })
            .collect();
        // CROSS JOIN: driven by the rows changed since (few), never by
        // every recorded read; `+x.key` has no affinity, so that the
        // comparison with the untyped `r.key` can use the index.
        let sql = format!(
            "SELECT DISTINCT k FROM ({}) WHERE ?2 IS NULL OR k > ?2 ORDER BY k LIMIT ?3",
            parts.join(" UNION ")
        );
        let after = after.map(KeyParam);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit = i64::try_from(limit).unwrap_or(-1);
        let rows = stmt.query_map(params![since, after, limit], |r| {
            Ok(from_ref(r.get_ref(0)?))
        })?;
        keys_of(rows)
    }
}
