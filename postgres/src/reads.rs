//! Recorded reads: which rows a derived row read through its `ctx`, and
//! tombstones of deleted rows that were read.
//!
//! Keys are stored in their tagged form (`sql::encode_key`); joins with a
//! table's key column convert one side in SQL, on the side that keeps the
//! join seeking in an index.

use crate::conn::{Conn, PgResult};
use crate::progress::next_revision;
use crate::sql::{decode_key_sql, encode_key, encode_key_sql, key_column, key_type, quote};
use crate::sql::{placeholders, stored_key_at};
use rederive_runtime::graph::{Graph, TableId};
use rederive_runtime::storage::{Read, RecordedRead, Revision};
use rederive_runtime::value::Key;
use std::collections::BTreeMap;

/// A recorded read's identity: the reader's stored key, the table read,
/// the stored key read.
type ReadId<'a> = (&'a Vec<u8>, &'a str, Vec<u8>);

/// Replaces the reads recorded for derived rows of `reader`, each with its
/// new reads (a key given twice keeps its last reads).
pub(crate) fn replace_reads(
    c: &mut Conn,
    graph: &Graph,
    reader: &str,
    rows: &[(&Key, &[Read])],
) -> PgResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut last: BTreeMap<Vec<u8>, &[Read]> = BTreeMap::new();
    for (key, reads) in rows {
        last.insert(encode_key(key), reads);
    }
    let reader_keys: Vec<&Vec<u8>> = last.keys().collect();
    c.execute(
        "DELETE FROM rederive_reads WHERE reader = $1 AND reader_key = ANY($2::bytea[])",
        &[&reader, &reader_keys],
    )?;
    // One row per (reader key, table, key): the last read of it wins.
    let mut unique: BTreeMap<ReadId<'_>, Option<i64>> = BTreeMap::new();
    for (reader_key, reads) in &last {
        for r in reads.iter() {
            let table = graph.table(r.table).info.name;
            unique.insert(
                (reader_key, table, encode_key(&r.key)),
                r.seen.map(Revision::get),
            );
        }
    }
    if unique.is_empty() {
        return Ok(());
    }
    let mut rk = Vec::with_capacity(unique.len());
    let mut tbl = Vec::with_capacity(unique.len());
    let mut key = Vec::with_capacity(unique.len());
    let mut seen = Vec::with_capacity(unique.len());
    for ((r, t, k), s) in unique {
        rk.push(r);
        tbl.push(t);
        key.push(k);
        seen.push(s);
    }
    c.execute(
        "INSERT INTO rederive_reads(reader, reader_key, tbl, key, seen) \
         SELECT $1, u.rk, u.t, u.k, u.s FROM unnest($2::bytea[], $3::text[], $4::bytea[], $5::bigint[]) \
           AS u(rk, t, k, s)",
        &[&reader, &rk, &tbl, &key, &seen],
    )?;
    Ok(())
}

/// Removes the reads recorded by one derived row (which is gone).
pub(crate) fn forget_reader(c: &mut Conn, reader: &str, key: &Key) -> PgResult<()> {
    c.execute(
        "DELETE FROM rederive_reads WHERE reader = $1 AND reader_key = $2",
        &[&reader, &encode_key(key)],
    )?;
    Ok(())
}

/// Records, at `rev`, that the row `(table, key)` was deleted, if any row
/// read it.
pub(crate) fn tombstone(c: &mut Conn, table: &str, key: &Key, rev: Revision) -> PgResult<()> {
    c.execute(
        "INSERT INTO rederive_tombstones(tbl, key, deleted_at) \
         SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM rederive_reads WHERE tbl = $1 AND key = $2) \
         ON CONFLICT (tbl, key) DO UPDATE SET deleted_at = excluded.deleted_at",
        &[&table, &encode_key(key), &rev.get()],
    )?;
    Ok(())
}

/// A deleted or derived row `(table, key)` is gone: its readers are told,
/// and its own reads forgotten.
pub(crate) fn row_gone(c: &mut Conn, table: &str, key: &Key, rev: Revision) -> PgResult<()> {
    tombstone(c, table, key, rev)?;
    forget_reader(c, table, key)
}

/// Every row of `table` is gone (the table was rebuilt or dropped): its
/// readers are told under a new revision, and its rows' reads forgotten.
pub(crate) fn table_gone(c: &mut Conn, table: &str) -> PgResult<()> {
    let read: bool = c
        .query_one(
            "SELECT EXISTS(SELECT 1 FROM rederive_reads WHERE tbl = $1)",
            &[&table],
        )?
        .try_get(0)?;
    if read {
        let rev = next_revision(c, true, false)?.0;
        c.execute(
            "INSERT INTO rederive_tombstones(tbl, key, deleted_at) \
             SELECT DISTINCT tbl, key, $2::bigint FROM rederive_reads WHERE tbl = $1 \
             ON CONFLICT (tbl, key) DO UPDATE SET deleted_at = excluded.deleted_at",
            &[&table, &rev.get()],
        )?;
    }
    c.execute("DELETE FROM rederive_reads WHERE reader = $1", &[&table])?;
    Ok(())
}

/// The reads recorded for one derived row, with the read rows'
/// `changed_at` now, in `(table, key)` order.
pub(crate) fn reads_of(
    c: &mut Conn,
    graph: &Graph,
    id: TableId,
    key: &Key,
) -> PgResult<Vec<RecordedRead>> {
    let t = graph.table(id);
    if t.reads.is_empty() {
        return Ok(Vec::new());
    }
    // One statement (one snapshot): a part per table the reader may read,
    // each joined to the table read through its key column's index.
    let parts: Vec<String> = t
        .reads
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let info = graph.table(x).info;
            format!(
                "SELECT {i} AS n, r.key, r.seen, x.__changed_at FROM rederive_reads r \
                 LEFT JOIN {x} x ON x.{k} = {decoded} \
                 WHERE r.reader = $1 AND r.reader_key = $2 AND r.tbl = ${p}",
                x = quote(info.name),
                k = key_column(info),
                decoded = decode_key_sql("r.key", key_type(graph, x)),
                p = i + 3,
            )
        })
        .collect();
    let sql = parts.join(" UNION ALL ");
    let reader = t.info.name;
    let encoded = encode_key(key);
    let names: Vec<&str> = t.reads.iter().map(|&x| graph.table(x).info.name).collect();
    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&reader, &encoded];
    params.extend(
        names
            .iter()
            .map(|n| n as &(dyn postgres::types::ToSql + Sync)),
    );
    let rows = c.query(&sql, &params)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let n: i32 = r.try_get(0)?;
        let Some(read_key) = stored_key_at(r, 1)? else {
            continue;
        };
        let seen: Option<i64> = r.try_get(2)?;
        let now: Option<i64> = r.try_get(3)?;
        out.push(RecordedRead {
            read: Read {
                table: t.reads[n as usize],
                key: read_key,
                seen: seen.map(Revision::new),
            },
            now: now.map(Revision::new),
        });
    }
    out.sort_by(|a, b| a.read.cmp(&b.read));
    Ok(out)
}

/// The derived rows that recorded a read of `(table, key)`, in order.
pub(crate) fn readers_of(
    c: &mut Conn,
    graph: &Graph,
    table: TableId,
    key: &Key,
) -> PgResult<Vec<(TableId, Key)>> {
    let rows = c.query(
        "SELECT reader, reader_key FROM rederive_reads WHERE tbl = $1 AND key = $2 \
         ORDER BY reader, reader_key",
        &[&graph.table(table).info.name, &encode_key(key)],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let name: String = r.try_get(0)?;
        let (Ok(reader), Some(k)) = (graph.table_id(&name), stored_key_at(r, 1)?) else {
            continue;
        };
        out.push((reader, k));
    }
    Ok(out)
}

/// Up to `limit` keys of `reader`'s rows after `after`, in key order, that
/// recorded a read of a row changed, created or deleted after `since`.
pub(crate) fn readers_changed(
    c: &mut Conn,
    graph: &Graph,
    reader: TableId,
    since: Revision,
    after: Option<&Key>,
    limit: usize,
) -> PgResult<Vec<Key>> {
    let t = graph.table(reader);
    if t.reads.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    // Driven by the rows changed since (few, found through the index on
    // `__changed_at`), each looked up among the recorded reads by its
    // stored key; never by every recorded read.
    let names = placeholders(5, t.reads.len());
    let parts: Vec<String> = t
        .reads
        .iter()
        .zip(&names)
        .map(|(&x, name)| {
            let info = graph.table(x).info;
            format!(
                "SELECT r.reader_key AS k FROM {x} x JOIN rederive_reads r \
                   ON r.tbl = {name} AND r.key = {encoded} AND r.reader = $4 \
                 WHERE x.__changed_at > $1 \
                 UNION SELECT r.reader_key FROM rederive_tombstones d JOIN rederive_reads r \
                   ON r.tbl = d.tbl AND r.key = d.key AND r.reader = $4 \
                 WHERE d.tbl = {name} AND d.deleted_at > $1",
                x = quote(info.name),
                encoded = encode_key_sql(&format!("x.{}", key_column(info)), key_type(graph, x)),
            )
        })
        .collect();
    let sql = format!(
        "SELECT DISTINCT k FROM ({}) s WHERE $2::bytea IS NULL OR k > $2::bytea ORDER BY k LIMIT $3",
        parts.join(" UNION ")
    );
    let after = after.map(encode_key);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let reader_name = t.info.name;
    let read_names: Vec<&str> = t.reads.iter().map(|&x| graph.table(x).info.name).collect();
    let since = since.get();
    let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> =
        vec![&since, &after, &limit, &reader_name];
    params.extend(
        read_names
            .iter()
            .map(|n| n as &(dyn postgres::types::ToSql + Sync)),
    );
    let rows = c.query(&sql, &params)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        if let Some(k) = stored_key_at(r, 0)? {
            out.push(k);
        }
    }
    Ok(out)
}
