//! Recorded reads: which rows a derived row read through its `ctx`, and
//! tombstones of deleted rows that were read.
//!
//! Each read is one entry of one B-tree, `rederive_reads`, keyed by the
//! row read (`tbl, key`) and then by its reader: "which rows read X" is one
//! index lookup. Tables are named there by small integer ids
//! (`rederive_read_tables`, never reused), which keeps the entries short.
//! A reader's own reads, needed far less often (to check them before it
//! runs, to replace them when it is computed again), are packed into one
//! value per reader row in `rederive_reader_reads` (see [`pack`]): a row
//! with five reads costs five index entries and one row, not ten index
//! entries with table names as in storage format 1.
//!
//! A large batch of new rows (a build) leaves its index entries to later:
//! its rows are listed in `rederive_reads_pending`, in the same
//! transaction as their packed reads, and the entries of every pending row
//! are inserted in one sorted pass (far cheaper than as many inserts at
//! random places of the index) before anything asks the index: the walk of
//! readers that ends a refresh pass, `readers_of`, a deletion's tombstone,
//! a recomputed row's reads replaced. The list is durable, so that a crash
//! or another worker in the middle of a build finds the index completed,
//! not short.

use super::sql::{bump_epoch, key_column, next_revision};
use super::{from_ref, keys_of, quote, KeyParam, SqlResult, SqlValue, SqliteStore};
use crate::graph::{Graph, TableId};
use crate::storage::{Read, RecordedRead, Revision};
use crate::value::{Key, Value};
use rusqlite::{params, Connection, OptionalExtension};

/// The tables of recorded reads and tombstones (created with the database,
/// or by the first write open of an older one).
pub(super) const READS_DDL: &str = "
    CREATE TABLE IF NOT EXISTS rederive_read_tables(
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    ) STRICT;
    CREATE TABLE IF NOT EXISTS rederive_reads(
        tbl INTEGER NOT NULL,
        key ANY NOT NULL,
        reader INTEGER NOT NULL,
        reader_key ANY NOT NULL,
        PRIMARY KEY (tbl, key, reader, reader_key)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS rederive_reader_reads(
        reader INTEGER NOT NULL,
        reader_key ANY NOT NULL,
        reads BLOB NOT NULL,
        PRIMARY KEY (reader, reader_key)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS rederive_reads_pending(
        reader INTEGER NOT NULL,
        reader_key ANY NOT NULL,
        PRIMARY KEY (reader, reader_key)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS rederive_tombstones(
        tbl TEXT NOT NULL,
        key ANY NOT NULL,
        deleted_at INTEGER NOT NULL,
        PRIMARY KEY (tbl, key)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS rederive_tombstones_by_revision ON rederive_tombstones(tbl, deleted_at);";

/// SQL for the id of the table named by parameter `p` (NULL when it has
/// none: then no read names it).
fn id_of(p: &str) -> String {
    format!("(SELECT id FROM rederive_read_tables WHERE name = {p})")
}

/// The id of a table in the recorded reads, given one if it has none yet
/// (in the caller's write transaction).
fn table_id(tx: &Connection, name: &str) -> SqlResult<i64> {
    let found: Option<i64> = tx
        .prepare_cached("SELECT id FROM rederive_read_tables WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    tx.prepare_cached("INSERT INTO rederive_read_tables(name) VALUES (?1)")?
        .execute([name])?;
    Ok(tx.last_insert_rowid())
}

/// How many reads a batch of new rows records at least for their index
/// entries to be left to one sorted pass (see the module docs): below it,
/// a batch writes its own, sorted.
const DEFER_AT_LEAST: usize = 256;

/// How many pending rows one multi-row insert lists (2 parameters each).
const PENDING_PER_INSERT: usize = 400;

/// How many reads one multi-row insert records (4 parameters each).
const READS_PER_INSERT: usize = 250;

/// How many readers one multi-row insert of packed reads writes (3
/// parameters each).
const READERS_PER_INSERT: usize = 300;

/// One read as packed in `rederive_reader_reads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoredRead {
    /// The table read, by its id in `rederive_read_tables`.
    pub table: i64,
    pub key: Key,
    pub seen: Option<i64>,
}

/// Packs one reader's reads: for each run of reads of one table, the
/// table's id and the number of reads in the run (varints); then each
/// read: its key (tag 0 and 8 bytes of an integer, little endian, or tag
/// 1, a varint length and the UTF-8 bytes of a text) and what it saw (tag
/// 0: no row; tag 1 and 8 bytes of a revision).
fn pack<'a>(reads: impl Iterator<Item = (i64, &'a Key, Option<i64>)>) -> Vec<u8> {
    let reads: Vec<_> = reads.collect();
    let mut out = Vec::with_capacity(reads.len() * 19 + 8);
    let mut rest = &reads[..];
    while let Some(first) = rest.first() {
        let run = rest
            .iter()
            .position(|r| r.0 != first.0)
            .unwrap_or(rest.len());
        push_varint(&mut out, first.0 as u64);
        push_varint(&mut out, run as u64);
        for &(_, key, seen) in &rest[..run] {
            match key {
                Key::Int(i) => {
                    out.push(0);
                    out.extend_from_slice(&i.to_le_bytes());
                }
                Key::Text(t) => {
                    out.push(1);
                    push_varint(&mut out, t.len() as u64);
                    out.extend_from_slice(t.as_bytes());
                }
            }
            match seen {
                None => out.push(0),
                Some(s) => {
                    out.push(1);
                    out.extend_from_slice(&s.to_le_bytes());
                }
            }
        }
        rest = &rest[run..];
    }
    out
}

/// The reads [`pack`] packed; `None` for bytes it did not write.
pub(super) fn unpack(bytes: &[u8]) -> Option<Vec<StoredRead>> {
    let mut out = Vec::new();
    let mut at = bytes;
    while !at.is_empty() {
        let table = i64::try_from(take_varint(&mut at)?).ok()?;
        let run = take_varint(&mut at)?;
        for _ in 0..run {
            let key = match take(&mut at, 1)?[0] {
                0 => Key::Int(i64::from_le_bytes(take(&mut at, 8)?.try_into().ok()?)),
                1 => {
                    let len = usize::try_from(take_varint(&mut at)?).ok()?;
                    Key::Text(std::str::from_utf8(take(&mut at, len)?).ok()?.to_owned())
                }
                _ => return None,
            };
            let seen = match take(&mut at, 1)?[0] {
                0 => None,
                1 => Some(i64::from_le_bytes(take(&mut at, 8)?.try_into().ok()?)),
                _ => return None,
            };
            out.push(StoredRead { table, key, seen });
        }
    }
    Some(out)
}

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn take_varint(at: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let b = take(at, 1)?[0];
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(n);
        }
    }
    None
}

fn take<'a>(at: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if at.len() < n {
        return None;
    }
    let (head, rest) = at.split_at(n);
    *at = rest;
    Some(head)
}

/// A multi-row `INSERT OR REPLACE` of `rows` rows of `width` parameters,
/// the first of which (`?1`) every row shares.
fn insert_sql(head: &str, rows: usize, width: usize) -> String {
    let mut sql = String::from(head);
    for i in 0..rows {
        sql.push_str(if i == 0 { " VALUES (?1" } else { ", (?1" });
        for c in 1..width {
            sql.push_str(&format!(", ?{}", 2 + (width - 1) * i + c - 1));
        }
        sql.push(')');
    }
    sql
}

/// Runs `head` (see [`insert_sql`]) over `rows`, many rows a statement.
fn insert_many<const W: usize>(
    tx: &Connection,
    head: &str,
    shared: &dyn rusqlite::ToSql,
    rows: &[[&dyn rusqlite::ToSql; W]],
    per_insert: usize,
) -> SqlResult<()> {
    let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(1 + W * per_insert);
    // Full statements, then the rest in powers of two: few distinct
    // statements to prepare, each prepared once; each statement's text
    // built once a call (it is the key of the cache of prepared
    // statements).
    let mut texts: Vec<(usize, String)> = Vec::new();
    let mut rest = rows;
    while !rest.is_empty() {
        let n = if rest.len() >= per_insert {
            per_insert
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, after) = rest.split_at(n);
        rest = after;
        let text = match texts.iter().position(|(m, _)| *m == n) {
            Some(i) => &texts[i].1,
            None => {
                texts.push((n, insert_sql(head, n, W + 1)));
                &texts[texts.len() - 1].1
            }
        };
        let mut insert = tx.prepare_cached(text)?;
        params.clear();
        params.push(shared);
        for row in chunk {
            params.extend_from_slice(row);
        }
        insert.execute(&params[..])?;
    }
    Ok(())
}

/// Records the reads of the rows a batch wrote, replacing what each row
/// recorded before: `(key, reads, new)`, where a `new` row did not exist
/// before this batch (so had no reads to forget). Each read is one entry
/// of the index by row read, inserted in that index's order (fewer pages
/// visited), and each row's reads one packed value.
pub(super) fn record_reads<'a>(
    tx: &Connection,
    graph: &Graph,
    reader: &str,
    rows: impl Iterator<Item = (&'a Key, &'a [Read], bool)>,
) -> SqlResult<()> {
    let reader_id = table_id(tx, reader)?;
    let rows: Vec<(&Key, &[Read], bool)> = rows.collect();
    let all_new = rows.iter().all(|(_, _, new)| *new);
    if !all_new {
        // Rows recorded again: their old entries must be in the index to
        // be removed.
        complete_pending(tx)?;
    }
    let defer = all_new && rows.iter().map(|(_, r, _)| r.len()).sum::<usize>() >= DEFER_AT_LEAST;
    let mut ids: Vec<(TableId, i64)> = Vec::new();
    let mut entries: Vec<(i64, &Key, &Key)> = Vec::new();
    let mut packed: Vec<(&Key, Vec<u8>)> = Vec::new();
    for (key, reads, new) in rows {
        if !new {
            forget_reader(tx, reader_id, key)?;
        }
        if reads.is_empty() {
            continue;
        }
        let mut named = Vec::with_capacity(reads.len());
        for r in reads {
            let id = match ids.iter().find(|(t, _)| *t == r.table) {
                Some(&(_, id)) => id,
                None => {
                    let id = table_id(tx, graph.table(r.table).info.name)?;
                    ids.push((r.table, id));
                    id
                }
            };
            named.push((id, &r.key, r.seen.map(Revision::get)));
            entries.push((id, &r.key, key));
        }
        packed.push((key, pack(named.into_iter())));
    }
    if defer {
        // Listed as pending, in key order (a build writes in key order):
        // the index entries come in one sorted pass later.
        let keys: Vec<KeyParam> = packed.iter().map(|(k, _)| KeyParam(k)).collect();
        let bound: Vec<[&dyn rusqlite::ToSql; 1]> =
            keys.iter().map(|k| [k as &dyn rusqlite::ToSql]).collect();
        insert_many(
            tx,
            "INSERT OR REPLACE INTO rederive_reads_pending(reader, reader_key)",
            &reader_id,
            &bound,
            PENDING_PER_INSERT,
        )?;
        entries.clear();
    }
    entries.sort_unstable();
    let keys: Vec<[KeyParam; 2]> = entries
        .iter()
        .map(|(_, k, rk)| [KeyParam(k), KeyParam(rk)])
        .collect();
    let bound: Vec<[&dyn rusqlite::ToSql; 3]> = entries
        .iter()
        .zip(&keys)
        .map(|((t, _, _), [k, rk])| [t as &dyn rusqlite::ToSql, k, rk])
        .collect();
    insert_many(
        tx,
        "INSERT OR REPLACE INTO rederive_reads(reader, tbl, key, reader_key)",
        &reader_id,
        &bound,
        READS_PER_INSERT,
    )?;
    let keys: Vec<KeyParam> = packed.iter().map(|(k, _)| KeyParam(k)).collect();
    let bound: Vec<[&dyn rusqlite::ToSql; 2]> = packed
        .iter()
        .zip(&keys)
        .map(|((_, blob), k)| [k as &dyn rusqlite::ToSql, blob])
        .collect();
    insert_many(
        tx,
        "INSERT OR REPLACE INTO rederive_reader_reads(reader, reader_key, reads)",
        &reader_id,
        &bound,
        READERS_PER_INSERT,
    )
}

/// Whether rows wait for their index entries (see the module docs).
pub(super) fn any_pending(c: &Connection) -> SqlResult<bool> {
    Ok(
        c.prepare_cached("SELECT EXISTS(SELECT 1 FROM rederive_reads_pending)")?
            .query_row([], |r| r.get(0))?,
    )
}

/// Inserts the index entries of every pending row, in one pass sorted in
/// the index's order, and empties the list (in the caller's write
/// transaction). Does nothing, at the cost of one lookup, when no row is
/// pending.
pub(super) fn complete_pending(tx: &Connection) -> SqlResult<()> {
    if !any_pending(tx)? {
        return Ok(());
    }
    // (reader, table read, key read, reader key), from the packed reads.
    let mut entries: Vec<(i64, i64, Key, Key)> = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT p.reader, p.reader_key, r.reads FROM rederive_reads_pending p              JOIN rederive_reader_reads r ON r.reader = p.reader AND r.reader_key = p.reader_key",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let reader: i64 = row.get(0)?;
            let Some(reader_key) = Key::from_value(&from_ref(row.get_ref(1)?)) else {
                continue;
            };
            let packed = row.get_ref(2)?.as_blob()?;
            for r in unpack(packed).unwrap_or_default() {
                entries.push((reader, r.table, r.key, reader_key.clone()));
            }
        }
    }
    // One reader at a time (the statements share it), each in the index's
    // order (keys order as stored values do: integers before texts).
    entries.sort_unstable();
    let mut rest = &entries[..];
    while let Some(first) = rest.first() {
        let reader = first.0;
        let n = rest
            .iter()
            .position(|e| e.0 != reader)
            .unwrap_or(rest.len());
        let (group, after) = rest.split_at(n);
        rest = after;
        let keys: Vec<(KeyParam, KeyParam)> = group
            .iter()
            .map(|(_, _, k, rk)| (KeyParam(k), KeyParam(rk)))
            .collect();
        let bound: Vec<[&dyn rusqlite::ToSql; 3]> = group
            .iter()
            .zip(&keys)
            .map(|((_, t, _, _), (k, rk))| [t as &dyn rusqlite::ToSql, k, rk])
            .collect();
        insert_many(
            tx,
            "INSERT OR REPLACE INTO rederive_reads(reader, tbl, key, reader_key)",
            &reader,
            &bound,
            READS_PER_INSERT,
        )?;
    }
    tx.prepare_cached("DELETE FROM rederive_reads_pending")?
        .execute([])?;
    Ok(())
}

/// Removes the entries of the index by row read that one reader row's
/// packed reads name.
fn unindex(tx: &Connection, reader: i64, reader_key: &Value, packed: &[u8]) -> SqlResult<()> {
    let mut delete = tx.prepare_cached(
        "DELETE FROM rederive_reads WHERE tbl = ?1 AND key = ?2 AND reader = ?3 AND reader_key = ?4",
    )?;
    for r in unpack(packed).unwrap_or_default() {
        delete.execute(params![
            r.table,
            KeyParam(&r.key),
            reader,
            SqlValue(reader_key)
        ])?;
    }
    Ok(())
}

/// Removes the reads recorded by one derived row (which is gone, or is
/// recorded again).
fn forget_reader(tx: &Connection, reader: i64, key: &Key) -> SqlResult<()> {
    let packed: Option<Vec<u8>> = tx
        .prepare_cached(
            "DELETE FROM rederive_reader_reads WHERE reader = ?1 AND reader_key = ?2 RETURNING reads",
        )?
        .query_row(params![reader, KeyParam(key)], |r| r.get(0))
        .optional()?;
    if let Some(packed) = packed {
        unindex(tx, reader, &key.to_value(), &packed)?;
    }
    Ok(())
}

/// Records, at `rev`, that the row `(table, key)` was deleted, if any row
/// read it.
pub(super) fn tombstone(tx: &Connection, table: &str, key: &Key, rev: Revision) -> SqlResult<()> {
    complete_pending(tx)?;
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO rederive_tombstones(tbl, key, deleted_at) \
         SELECT ?1, ?2, ?3 WHERE EXISTS \
         (SELECT 1 FROM rederive_reads WHERE tbl = {} AND key = ?2)",
        id_of("?1")
    ))?
    .execute(params![table, KeyParam(key), rev])?;
    Ok(())
}

/// A deleted or derived row `(table, key)` is gone: its readers are told,
/// and its own reads forgotten.
pub(super) fn row_gone(tx: &Connection, table: &str, key: &Key, rev: Revision) -> SqlResult<()> {
    tombstone(tx, table, key, rev)?;
    let id: Option<i64> = tx
        .prepare_cached("SELECT id FROM rederive_read_tables WHERE name = ?1")?
        .query_row([table], |r| r.get(0))
        .optional()?;
    match id {
        Some(id) => forget_reader(tx, id, key),
        None => Ok(()),
    }
}

/// Every row of `table` is gone (the table was rebuilt or dropped): its
/// readers are told under a new revision, and its rows' reads forgotten.
pub(super) fn table_gone(tx: &Connection, table: &str) -> SqlResult<()> {
    let id: Option<i64> = tx
        .prepare_cached("SELECT id FROM rederive_read_tables WHERE name = ?1")?
        .query_row([table], |r| r.get(0))
        .optional()?;
    let Some(id) = id else {
        // Never read, and never a reader.
        return Ok(());
    };
    complete_pending(tx)?;
    let read: bool = tx
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM rederive_reads WHERE tbl = ?1)")?
        .query_row([id], |r| r.get(0))?;
    if read {
        let rev = next_revision(tx)?;
        bump_epoch(tx)?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO rederive_tombstones(tbl, key, deleted_at) \
             SELECT DISTINCT ?1, key, ?2 FROM rederive_reads WHERE tbl = ?3",
        )?
        .execute(params![table, rev, id])?;
    }
    let gone: Vec<(Value, Vec<u8>)> = tx
        .prepare_cached(
            "DELETE FROM rederive_reader_reads WHERE reader = ?1 RETURNING reader_key, reads",
        )?
        .query_map([id], |r| Ok((from_ref(r.get_ref(0)?), r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (key, packed) in gone {
        unindex(tx, id, &key, &packed)?;
    }
    Ok(())
}

/// Converts the recorded reads of a database of storage format 1 (each
/// read a row keyed by its reader, with table names, and an index by row
/// read) to this layout, in the caller's write transaction: no read is
/// lost.
pub(super) fn migrate_from_format_1(tx: &Connection) -> SqlResult<()> {
    let old: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rederive_reads') \
         AND NOT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rederive_reader_reads')",
        [],
        |r| r.get(0),
    )?;
    if old {
        tx.execute_batch(
            "DROP INDEX IF EXISTS rederive_reads_by_row;
             ALTER TABLE rederive_reads RENAME TO rederive_reads_format_1;",
        )?;
    }
    tx.execute_batch(READS_DDL)?;
    if !old {
        return Ok(());
    }
    tx.execute_batch(
        "INSERT OR IGNORE INTO rederive_read_tables(name) \
           SELECT reader FROM rederive_reads_format_1 UNION SELECT tbl FROM rederive_reads_format_1; \
         INSERT INTO rederive_reads(tbl, key, reader, reader_key) \
           SELECT t.id, r.key, u.id, r.reader_key FROM rederive_reads_format_1 r \
           JOIN rederive_read_tables t ON t.name = r.tbl \
           JOIN rederive_read_tables u ON u.name = r.reader;",
    )?;
    // Each reader's reads, packed: read in reader order, one run a reader.
    let mut select = tx.prepare(
        "SELECT u.id, r.reader_key, t.id, r.key, r.seen FROM rederive_reads_format_1 r \
         JOIN rederive_read_tables t ON t.name = r.tbl \
         JOIN rederive_read_tables u ON u.name = r.reader \
         ORDER BY u.id, r.reader_key, t.id, r.key",
    )?;
    let mut insert = tx.prepare(
        "INSERT INTO rederive_reader_reads(reader, reader_key, reads) VALUES (?1, ?2, ?3)",
    )?;
    let mut rows = select.query([])?;
    let mut current: Option<(i64, Value)> = None;
    let mut reads: Vec<(i64, Key, Option<i64>)> = Vec::new();
    let mut flush = |reader: &Option<(i64, Value)>, reads: &mut Vec<(i64, Key, Option<i64>)>| {
        if let Some((id, key)) = reader {
            if !reads.is_empty() {
                let packed = pack(reads.iter().map(|(t, k, s)| (*t, k, *s)));
                insert.execute(params![id, SqlValue(key), packed])?;
            }
        }
        reads.clear();
        SqlResult::Ok(())
    };
    while let Some(r) = rows.next()? {
        let reader: i64 = r.get(0)?;
        let reader_key = from_ref(r.get_ref(1)?);
        if current.as_ref().map(|(id, k)| (*id, k)) != Some((reader, &reader_key)) {
            flush(&current, &mut reads)?;
            current = Some((reader, reader_key));
        }
        if let Some(key) = Key::from_value(&from_ref(r.get_ref(3)?)) {
            reads.push((r.get(2)?, key, r.get(4)?));
        }
    }
    flush(&current, &mut reads)?;
    drop(rows);
    drop(select);
    tx.execute_batch("DROP TABLE rederive_reads_format_1")?;
    Ok(())
}

impl SqliteStore {
    /// Completes the index by row read ([`complete_pending`]) before it is
    /// asked, in a write transaction of its own when rows are pending.
    fn complete_pending_now(&self) -> SqlResult<()> {
        if !any_pending(&self.conn)? {
            return Ok(());
        }
        let tx = self.write()?;
        complete_pending(&tx)?;
        tx.commit()?;
        Ok(())
    }

    pub(super) fn reads_of_row(
        &self,
        graph: &Graph,
        id: TableId,
        key: &Key,
    ) -> SqlResult<Vec<RecordedRead>> {
        let reader = graph.table(id).info.name;
        let packed: Option<Vec<u8>> = self
            .conn
            .prepare_cached(&format!(
                "SELECT reads FROM rederive_reader_reads WHERE reader = {} AND reader_key = ?2",
                id_of("?1")
            ))?
            .query_row(params![reader, KeyParam(key)], |r| r.get(0))
            .optional()?;
        let Some(packed) = packed else {
            return Ok(Vec::new());
        };
        // The tables it declares, by their ids: reads of tables it no
        // longer declares are not its reads.
        let mut declared = Vec::new();
        for &t in &graph.table(id).reads {
            let found: Option<i64> = self
                .conn
                .prepare_cached("SELECT id FROM rederive_read_tables WHERE name = ?1")?
                .query_row([graph.table(t).info.name], |r| r.get(0))
                .optional()?;
            declared.extend(found.map(|n| (n, t)));
        }
        let mut out = Vec::new();
        for r in unpack(&packed).unwrap_or_default() {
            let Some(&(_, t)) = declared.iter().find(|(n, _)| *n == r.table) else {
                continue;
            };
            let info = graph.table(t).info;
            let sql = format!(
                "SELECT __changed_at FROM {x} WHERE {k} = ?1",
                x = quote(info.name),
                k = key_column(info),
            );
            let now: Option<i64> = self
                .conn
                .prepare_cached(&sql)?
                .query_row([KeyParam(&r.key)], |r| r.get(0))
                .optional()?;
            out.push(RecordedRead {
                read: Read {
                    table: t,
                    key: r.key,
                    seen: r.seen.map(Revision::new),
                },
                now: now.map(Revision::new),
            });
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
        // Asked without writing (`stale_from` of a read-only program):
        // rows whose entries are pending are found from their packed reads.
        let mut out = self.pending_readers_of(graph, table, key)?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT t.name, r.reader_key FROM rederive_reads r \
             JOIN rederive_read_tables t ON t.id = r.reader \
             WHERE r.tbl = {} AND r.key = ?2 ORDER BY t.name, r.reader_key",
            id_of("?1")
        ))?;
        let mut rows = stmt.query(params![graph.table(table).info.name, KeyParam(key)])?;
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
        out.sort_by(|a, b| {
            (graph.table(a.0).info.name, &a.1).cmp(&(graph.table(b.0).info.name, &b.1))
        });
        out.dedup();
        Ok(out)
    }

    /// The rows whose index entries are pending (see the module docs) that
    /// read `(table, key)`, from their packed reads.
    fn pending_readers_of(
        &self,
        graph: &Graph,
        table: TableId,
        key: &Key,
    ) -> SqlResult<Vec<(TableId, Key)>> {
        if !any_pending(&self.conn)? {
            return Ok(Vec::new());
        }
        let Some(read_id) = self
            .conn
            .prepare_cached("SELECT id FROM rederive_read_tables WHERE name = ?1")?
            .query_row([graph.table(table).info.name], |r| r.get::<_, i64>(0))
            .optional()?
        else {
            return Ok(Vec::new());
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT t.name, p.reader_key, r.reads FROM rederive_reads_pending p \
             JOIN rederive_reader_reads r ON r.reader = p.reader AND r.reader_key = p.reader_key \
             JOIN rederive_read_tables t ON t.id = p.reader",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let reads = unpack(r.get_ref(2)?.as_blob()?).unwrap_or_default();
            if !reads.iter().any(|x| x.table == read_id && &x.key == key) {
                continue;
            }
            let name: String = r.get(0)?;
            if let (Ok(reader), Some(k)) = (
                graph.table_id(&name),
                Key::from_value(&from_ref(r.get_ref(1)?)),
            ) {
                out.push((reader, k));
            }
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
        self.complete_pending_now()?;
        let name = t.info.name.replace('\'', "''");
        let parts: Vec<String> = t
            .reads
            .iter()
            .map(|&x| {
                let info = graph.table(x).info;
                let lit = info.name.replace('\'', "''");
                format!(
                    "SELECT r.reader_key AS k FROM {x} x CROSS JOIN rederive_reads r \
                       ON r.tbl = {tbl} AND r.key = +x.{key} AND r.reader = {me} \
                     WHERE x.__changed_at > ?1 \
                     UNION SELECT r.reader_key FROM rederive_tombstones d CROSS JOIN rederive_reads r \
                       ON r.tbl = {tbl} AND r.key = d.key AND r.reader = {me} \
                     WHERE d.tbl = '{lit}' AND d.deleted_at > ?1",
                    x = quote(info.name),
                    key = key_column(info),
                    tbl = id_of(&format!("'{lit}'")),
                    me = id_of(&format!("'{name}'")),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(reads: &[(i64, Key, Option<i64>)]) -> Vec<u8> {
        pack(reads.iter().map(|(t, k, s)| (*t, k, *s)))
    }

    #[test]
    fn packed_reads_come_back_as_written() {
        let reads = vec![
            (1, Key::Int(-3), Some(7)),
            (1, Key::Int(i64::MAX), None),
            (300, Key::Text("é".repeat(100)), Some(1 << 40)),
            (300, Key::Text(String::new()), None),
            (1, Key::Int(0), None),
        ];
        let back: Vec<(i64, Key, Option<i64>)> = unpack(&packed(&reads))
            .unwrap()
            .into_iter()
            .map(|r| (r.table, r.key, r.seen))
            .collect();
        assert_eq!(back, reads);
        assert_eq!(unpack(&[]), Some(Vec::new()));
    }

    #[test]
    fn bytes_not_packed_by_us_are_refused_without_a_panic() {
        let bytes = packed(&[(2, Key::Text("k".into()), Some(1))]);
        for cut in 1..bytes.len() {
            assert_eq!(unpack(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(unpack(&[1, 1, 9]), None);
        assert_eq!(unpack(&[0xff; 12]), None);
    }
}
