//! Replicas in SQLite: this replica's identity (`rederive_replica`), the
//! versions of input rows (`rederive_versions`: one row per current
//! version, the values encoded, the revision it was stored at, and the
//! peer it came from when that peer sent exactly it), the keys in conflict
//! (`rederive_conflicts`), what each peer sent so far (`rederive_peers`),
//! and the retired replicas whose clock id was taken in
//! (`rederive_absorbed`).
//!
//! Derived rows have a stream of their own (`rederive_derived_stream`, an
//! entry per row ever written, moved to the end at each write): triggers
//! on every derived table that can travel give a row the next position
//! each time it is written with a value, whatever wrote it (a refresh,
//! `get`, an offer stored), so that a sync offers the rows written since
//! the two replicas last met, whichever sync brought their inputs.
//! `rederive_derived_peers` keeps, per peer, how far this replica is in
//! the peer's stream (moved once the offered rows are stored).
//!
//! `rederive_meta`'s `versions` entry says how far a database went: absent
//! (no tables: it never deleted a row nor forked), 1 (tombstones of
//! deletions only), 2 (a replica: every input write records a version).

use super::rows::delete_input;
use super::sql::{bump_epoch, key_column, next_revision};
use super::{from_ref, quote, run, KeyParam, SqlError, SqlResult, SqlValue, SqliteStore};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::replica::codec::{decode_values, encode_values};
use crate::replica::shared::travels;
use crate::replica::version::{
    event_bytes, event_from_bytes, genesis, id_bytes, id_from_bytes, merge, next_event, sort,
    winner, Version,
};
use crate::row::TableInfo;
use crate::storage::{
    Applied, Changes, DerivedChanges, ReplicaMeta, Replicas, Revision, Status, SyncCursor,
};
use crate::value::{Key, Value};
use rederive_itc::Id;
use rusqlite::{params, CachedStatement, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::path::Path;

const DDL: &str = "
CREATE TABLE IF NOT EXISTS rederive_replica(key TEXT PRIMARY KEY, value ANY NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS rederive_versions(
    tbl TEXT NOT NULL,
    key ANY NOT NULL,
    event BLOB NOT NULL,
    vals BLOB,
    seq INTEGER NOT NULL,
    src TEXT,
    PRIMARY KEY (tbl, key, event)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rederive_versions_seq ON rederive_versions(seq, tbl, key, event);
CREATE TABLE IF NOT EXISTS rederive_conflicts(
    tbl TEXT NOT NULL,
    key ANY NOT NULL,
    PRIMARY KEY (tbl, key)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rederive_peers(
    peer TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    tbl TEXT NOT NULL,
    key ANY NOT NULL,
    event BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS rederive_absorbed(name TEXT PRIMARY KEY) STRICT;
CREATE TABLE IF NOT EXISTS rederive_derived_stream(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tbl TEXT NOT NULL,
    key ANY NOT NULL,
    src TEXT
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS rederive_derived_stream_row
    ON rederive_derived_stream(tbl, key);
CREATE TABLE IF NOT EXISTS rederive_derived_peers(
    peer TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) STRICT;
";

/// How far a database went (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    None,
    Tombstones,
    Replica,
}

fn mode(c: &Connection) -> SqlResult<Mode> {
    let v: Option<i64> = c
        .prepare_cached("SELECT value FROM rederive_meta WHERE key = 'versions'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(match v {
        None => Mode::None,
        Some(1) => Mode::Tombstones,
        Some(_) => Mode::Replica,
    })
}

/// Creates the tables (if missing) and raises the mode to `to`.
fn raise_mode(c: &Connection, to: Mode) -> SqlResult<()> {
    if mode(c)? < to {
        c.execute_batch(DDL)?;
        let n = if to == Mode::Replica { 2 } else { 1 };
        c.execute(
            "INSERT INTO rederive_meta VALUES ('versions', ?1) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [n],
        )?;
    }
    Ok(())
}

/// The statement that gives a row (table, key: SQL expressions) the next
/// position in the stream of derived rows: one past the last position
/// (entries are moved, never deleted, so positions only grow; `max` of the
/// primary key is one index seek). An upsert, not `INSERT OR REPLACE`:
/// inside a trigger, the conflict clause of the statement that fired it
/// would override the trigger's own. (`DELETE` then `INSERT` in a trigger
/// scanned the whole stream: refreshes went 300 times slower.)
fn stream_upsert(table: &str, key: &str) -> String {
    format!(
        "INSERT INTO rederive_derived_stream(seq, tbl, key) VALUES \
         ((SELECT coalesce(max(seq), 0) + 1 FROM rederive_derived_stream), {table}, {key}) \
         ON CONFLICT(tbl, key) DO UPDATE SET seq = excluded.seq, src = NULL"
    )
}

/// On a replica, makes sure that the stream of derived rows exists and
/// that every derived table of `graph` that can travel feeds it (inside
/// the caller's transaction; a table created or rebuilt since gets its
/// triggers here). Elsewhere, does nothing: only replicas pay for it.
pub(super) fn ensure_derived_stream(c: &Connection, graph: &Graph) -> SqlResult<()> {
    if mode(c)? < Mode::Replica {
        return Ok(());
    }
    // A replica made by an older version lacks the stream's tables.
    c.execute_batch(DDL)?;
    for id in graph.derived_in_order() {
        if !travels(graph, id) {
            continue;
        }
        let name = graph.table(id).info.name;
        let t = quote(name);
        let literal = format!("'{}'", name.replace('\'', "''"));
        let trigger = |what: &str| quote(&format!("rederive_stream_{what}_{name}"));
        let (ins, upd) = (trigger("ins"), trigger("upd"));
        let write = stream_upsert(&literal, "NEW.__key");
        let ok = Status::Ok.code();
        // A deleted row's entry stays (its offer finds no row): positions
        // must never be given twice.
        c.execute_batch(&format!(
            "CREATE TRIGGER IF NOT EXISTS {ins} AFTER INSERT ON {t} WHEN NEW.__status = {ok} \
                 BEGIN {write}; END;
             CREATE TRIGGER IF NOT EXISTS {upd} AFTER UPDATE ON {t} WHEN NEW.__status = {ok} \
                 BEGIN {write}; END;"
        ))?;
    }
    Ok(())
}

fn bad(reason: impl Into<String>) -> SqlError {
    SqlError::Ours(Error::Replica {
        replica: "this database".into(),
        reason: reason.into(),
    })
}

fn read_meta(c: &Connection) -> SqlResult<Option<ReplicaMeta>> {
    if mode(c)? < Mode::Replica {
        return Ok(None);
    }
    let mut family = None;
    let mut name = None;
    let mut id = None;
    let mut retired = false;
    let mut stmt = c.prepare_cached("SELECT key, value FROM rederive_replica")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        let value = from_ref(row.get_ref(1)?);
        match (key.as_str(), value) {
            ("family", Value::Text(t)) => family = Some(t),
            ("name", Value::Text(t)) => name = Some(t),
            ("id", Value::Blob(b)) => id = Some(id_from_bytes(&b).map_err(bad)?),
            ("retired", Value::Integer(i)) => retired = i != 0,
            _ => {}
        }
    }
    match (family, name, id) {
        (Some(family), Some(name), Some(id)) => Ok(Some(ReplicaMeta {
            family,
            name,
            id,
            retired,
        })),
        _ => Err(bad(
            "rederive_replica is incomplete (no family, name or id)",
        )),
    }
}

fn write_meta(c: &Connection, meta: &ReplicaMeta) -> SqlResult<()> {
    raise_mode(c, Mode::Replica)?;
    let mut stmt = c.prepare_cached("INSERT OR REPLACE INTO rederive_replica VALUES (?1, ?2)")?;
    stmt.execute(params!["family", meta.family])?;
    stmt.execute(params!["name", meta.name])?;
    stmt.execute(params!["id", id_bytes(&meta.id)])?;
    stmt.execute(params!["retired", i64::from(meta.retired)])?;
    Ok(())
}

/// The replica's identity, for a write: an error once it retired.
fn writer(c: &Connection) -> SqlResult<ReplicaMeta> {
    match read_meta(c)? {
        Some(m) if m.retired => Err(SqlError::Ours(Error::Replica {
            replica: format!("this database (replica `{}`)", m.name),
            reason: "this replica retired (its clock id was handed to another replica): \
                     it takes no more writes; write on a live replica"
                .into(),
        })),
        Some(m) => Ok(m),
        None => Err(bad("not a replica")),
    }
}

/// The statement that reads an input row of `info` by key.
fn input_statement<'c>(c: &'c Connection, info: &TableInfo) -> SqlResult<CachedStatement<'c>> {
    let cols: Vec<String> = info.columns.iter().map(|c| quote(c.name)).collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = ?1",
        cols.join(", "),
        quote(info.name),
        key_column(info)
    );
    Ok(c.prepare_cached(&sql)?)
}

/// The input row's values, by key (through [`input_statement`]).
fn input_row(
    stmt: &mut CachedStatement<'_>,
    info: &TableInfo,
    key: &Key,
) -> SqlResult<Option<Vec<Value>>> {
    let n = info.columns.len();
    Ok(stmt
        .query_row([KeyParam(key)], |r| {
            Ok((0..n)
                .map(|i| r.get_ref(i).map(from_ref))
                .collect::<rusqlite::Result<Vec<_>>>())
        })
        .optional()?
        .transpose()?)
}

/// The statements that read and replace a key's versions, prepared once
/// for all the keys of a write (or of one table in a sync's batch).
/// The version statements are prepared when first used: a database that
/// never forked has no version table until its first deletion.
struct KeyStatements<'c> {
    c: &'c Connection,
    input: CachedStatement<'c>,
    stored: Option<CachedStatement<'c>>,
    delete: Option<CachedStatement<'c>>,
    insert: Option<CachedStatement<'c>>,
}

impl<'c> KeyStatements<'c> {
    fn new(c: &'c Connection, info: &TableInfo) -> SqlResult<KeyStatements<'c>> {
        Ok(KeyStatements {
            c,
            input: input_statement(c, info)?,
            stored: None,
            delete: None,
            insert: None,
        })
    }
}

/// The statement in `slot`, prepared from `sql` on first use.
fn prepared<'a, 'c>(
    c: &'c Connection,
    slot: &'a mut Option<CachedStatement<'c>>,
    sql: &str,
) -> SqlResult<&'a mut CachedStatement<'c>> {
    let stmt = match slot.take() {
        Some(stmt) => stmt,
        None => c.prepare_cached(sql)?,
    };
    Ok(slot.insert(stmt))
}

const STORED: &str = "SELECT event, vals FROM rederive_versions WHERE tbl = ?1 AND key = ?2";
const DELETE_VERSION: &str =
    "DELETE FROM rederive_versions WHERE tbl = ?1 AND key = ?2 AND event = ?3";
const INSERT_VERSION: &str =
    "INSERT INTO rederive_versions(tbl, key, event, vals, seq, src) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// The stored versions of a key (none while it holds its genesis version).
fn stored(stmt: &mut CachedStatement<'_>, table: &str, key: &Key) -> SqlResult<Vec<Version>> {
    let mut rows = stmt.query(params![table, KeyParam(key)])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let event = event_from_bytes(row.get_ref(0)?.as_blob()?).map_err(bad)?;
        let values = match row.get_ref(1)?.as_blob_or_null()? {
            Some(b) => Some(decode_values(b).map_err(|e| bad(format!("a stored version: {e}")))?),
            None => None,
        };
        out.push(Version {
            table: table.to_owned(),
            key: key.clone(),
            event,
            values,
        });
    }
    Ok(out)
}

/// The current versions of a key: the stored ones, or its genesis version
/// (the input row, if there is one); and how many of them are stored
/// (none for the genesis version, read from the input table).
fn current_and_stored(
    stmts: &mut KeyStatements<'_>,
    info: &TableInfo,
    key: &Key,
    m: Mode,
) -> SqlResult<(Vec<Version>, usize)> {
    if m > Mode::None {
        let versions = stored(
            prepared(stmts.c, &mut stmts.stored, STORED)?,
            info.name,
            key,
        )?;
        if !versions.is_empty() {
            let n = versions.len();
            return Ok((versions, n));
        }
    }
    let row = input_row(&mut stmts.input, info, key)?;
    Ok((genesis_of(info, key, row), 0))
}

/// A key's genesis version: its input row, if there is one (no version
/// when there is none).
fn genesis_of(info: &TableInfo, key: &Key, row: Option<Vec<Value>>) -> Vec<Version> {
    row.map(|values| Version {
        table: info.name.to_owned(),
        key: key.clone(),
        event: genesis(),
        values: Some(values),
    })
    .into_iter()
    .collect()
}

/// Replaces a key's stored versions: `before` are its current ones (the
/// first `stored_before` of them stored, none when it holds its genesis
/// version). Versions kept keep their place in the stream; new ones are
/// stored at `seq`, and `src` names the peer that sent the versions it
/// received (which are then not sent back to it).
#[allow(clippy::too_many_arguments)]
fn replace(
    stmts: &mut KeyStatements<'_>,
    table: &str,
    key: &Key,
    before: &[Version],
    stored_before: usize,
    versions: &[Version],
    seq: Revision,
    src: Option<(&str, &[Version])>,
) -> SqlResult<()> {
    let stored = if stored_before > 0 { before } else { &[] };
    for old in stored {
        if !versions.iter().any(|v| v.event == old.event) {
            prepared(stmts.c, &mut stmts.delete, DELETE_VERSION)?.execute(params![
                table,
                KeyParam(key),
                event_bytes(&old.event)
            ])?;
        }
    }
    for v in versions {
        if stored.iter().any(|old| old.event == v.event) {
            continue;
        }
        let from =
            src.and_then(|(peer, sent)| sent.iter().any(|s| s.event == v.event).then_some(peer));
        prepared(stmts.c, &mut stmts.insert, INSERT_VERSION)?.execute(params![
            table,
            KeyParam(key),
            event_bytes(&v.event),
            v.values.as_deref().map(encode_values),
            seq,
            from
        ])?;
    }
    if versions.len() > 1 {
        stmts
            .c
            .prepare_cached("INSERT OR IGNORE INTO rederive_conflicts VALUES (?1, ?2)")?
            .execute(params![table, KeyParam(key)])?;
    } else if stored_before > 1 {
        stmts
            .c
            .prepare_cached("DELETE FROM rederive_conflicts WHERE tbl = ?1 AND key = ?2")?
            .execute(params![table, KeyParam(key)])?;
    }
    Ok(())
}

/// Records input writes (inside the write's transaction, before the rows
/// are written): on a replica, a new version for each key whose row
/// changes or that is in conflict; elsewhere, a write clears the key's
/// tombstone.
pub(super) fn record_puts(
    c: &Connection,
    info: &TableInfo,
    rows: &[Vec<Value>],
    rev: Revision,
) -> SqlResult<()> {
    let m = mode(c)?;
    let Some(key_at) = info.key else {
        return Ok(());
    };
    let keys = rows
        .iter()
        .filter_map(|r| r.get(key_at).and_then(Key::from_value));
    match m {
        Mode::None => Ok(()),
        Mode::Tombstones => {
            let any: bool = c
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM rederive_versions WHERE tbl = ?1)")?
                .query_row([info.name], |r| r.get(0))?;
            if any {
                let mut stmt =
                    c.prepare_cached("DELETE FROM rederive_versions WHERE tbl = ?1 AND key = ?2")?;
                for key in keys {
                    stmt.execute(params![info.name, KeyParam(&key)])?;
                }
            }
            Ok(())
        }
        Mode::Replica => {
            let me = writer(c)?;
            let mut stmts = KeyStatements::new(c, info)?;
            for row in rows {
                let Some(key) = row.get(key_at).and_then(Key::from_value) else {
                    continue; // the row's own write reports the bad key
                };
                let (now, stored_before) = current_and_stored(&mut stmts, info, &key, m)?;
                if now.len() == 1 && now[0].values.as_ref() == Some(row) {
                    continue;
                }
                let event = next_event(&me.id, &now).map_err(bad)?;
                let v = Version {
                    table: info.name.to_owned(),
                    key: key.clone(),
                    event,
                    values: Some(row.clone()),
                };
                replace(
                    &mut stmts,
                    info.name,
                    &key,
                    &now,
                    stored_before,
                    &[v],
                    rev,
                    None,
                )?;
            }
            Ok(())
        }
    }
}

/// Records the deletion of an input row (inside the delete's transaction,
/// before the row goes): a tombstone (on a replica, with this replica's
/// clock), unless the key holds no row and no conflict.
pub(super) fn record_delete(
    c: &Connection,
    info: &TableInfo,
    key: &Key,
    rev: Revision,
) -> SqlResult<()> {
    let m = mode(c)?;
    let mut stmts = KeyStatements::new(c, info)?;
    let (now, stored_before) = current_and_stored(&mut stmts, info, key, m)?;
    let gone = now.iter().all(|v| v.values.is_none());
    if now.len() <= 1 && gone {
        return Ok(()); // nothing to delete, or deleted already
    }
    let event = if m == Mode::Replica {
        next_event(&writer(c)?.id, &now).map_err(bad)?
    } else {
        raise_mode(c, Mode::Tombstones)?;
        genesis()
    };
    let tombstone = Version {
        table: info.name.to_owned(),
        key: key.clone(),
        event,
        values: None,
    };
    replace(
        &mut stmts,
        info.name,
        key,
        &now,
        stored_before,
        &[tombstone],
        rev,
        None,
    )
}

fn cursor_params(c: &SyncCursor) -> (i64, &str, KeyParam<'_>, &[u8]) {
    (c.seq, &c.table, KeyParam(&c.key), &c.event)
}

impl Replicas for SqliteStore {
    fn replica(&self) -> Result<Option<ReplicaMeta>> {
        run(|| read_meta(&self.conn))
    }

    fn set_replica(&self, meta: &ReplicaMeta) -> Result<()> {
        run(|| {
            let tx = self.write()?;
            write_meta(&tx, meta)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn fork_id(&self, first: &ReplicaMeta) -> Result<(ReplicaMeta, Id)> {
        run(|| {
            let tx = self.write()?;
            let mut me = match read_meta(&tx)? {
                Some(_) => writer(&tx)?,
                None => first.clone(),
            };
            let (keep, give) = me.id.split();
            me.id = keep;
            write_meta(&tx, &me)?;
            tx.commit()?;
            Ok((me, give))
        })
    }

    fn copy_to(&self, path: &Path) -> Result<()> {
        run(|| {
            if path.exists() {
                return Err(bad(format!("{} exists already", path.display())));
            }
            self.end_snapshot_now()?;
            let target = path
                .to_str()
                .ok_or_else(|| bad(format!("{} is not valid UTF-8", path.display())))?;
            self.conn.execute("VACUUM INTO ?1", [target])?;
            let copy = Connection::open(path)?;
            copy.execute_batch(
                "PRAGMA journal_mode = WAL;
                 BEGIN IMMEDIATE;
                 DELETE FROM rederive_leases;
                 DELETE FROM rederive_table_leases;
                 DELETE FROM rederive_workers;
                 COMMIT;",
            )?;
            Ok(())
        })
    }

    fn versions(&self, info: &TableInfo, key: &Key) -> Result<Vec<Version>> {
        run(|| {
            let mut stmts = KeyStatements::new(&self.conn, info)?;
            let (mut v, _) = current_and_stored(&mut stmts, info, key, mode(&self.conn)?)?;
            sort(&mut v);
            Ok(v)
        })
    }

    fn conflicts(&self, after: Option<(&str, &Key)>, limit: usize) -> Result<Vec<(String, Key)>> {
        run(|| {
            if mode(&self.conn)? < Mode::Tombstones {
                return Ok(Vec::new());
            }
            let (table, key) = after.unwrap_or(("", &Key::Int(i64::MIN)));
            let mut stmt = self.conn.prepare_cached(
                "SELECT tbl, key FROM rederive_conflicts WHERE (tbl, key) > (?1, ?2) \
                 ORDER BY tbl, key LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![table, KeyParam(key), limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, from_ref(r.get_ref(1)?)))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (t, k) = row?;
                if let Some(k) = Key::from_value(&k) {
                    out.push((t, k));
                }
            }
            Ok(out)
        })
    }

    fn changes_after(&self, to: &str, after: &SyncCursor, limit: usize) -> Result<Changes> {
        run(|| {
            let mut out = Changes {
                versions: Vec::new(),
                next: after.clone(),
                more: false,
            };
            if mode(&self.conn)? < Mode::Tombstones {
                return Ok(out);
            }
            let (seq, table, key, event) = cursor_params(after);
            let mut stmt = self.conn.prepare_cached(
                "SELECT seq, tbl, key, event, vals, src FROM rederive_versions \
                 WHERE (seq, tbl, key, event) > (?1, ?2, ?3, ?4) \
                 ORDER BY seq, tbl, key, event LIMIT ?5",
            )?;
            let mut rows = stmt.query(params![seq, table, key, event, limit as i64])?;
            let mut n = 0;
            while let Some(row) = rows.next()? {
                n += 1;
                let key = Key::from_value(&from_ref(row.get_ref(2)?))
                    .ok_or_else(|| bad("a stored version has no valid key"))?;
                let event: Vec<u8> = row.get(3)?;
                out.next = SyncCursor {
                    seq: row.get(0)?,
                    table: row.get(1)?,
                    key,
                    event,
                };
                let src: Option<String> = row.get(5)?;
                if src.as_deref() == Some(to) {
                    continue; // the peer sent exactly this
                }
                let values = match row.get_ref(4)?.as_blob_or_null()? {
                    Some(b) => {
                        Some(decode_values(b).map_err(|e| bad(format!("a stored version: {e}")))?)
                    }
                    None => None,
                };
                out.versions.push(Version {
                    table: out.next.table.clone(),
                    key: out.next.key.clone(),
                    event: event_from_bytes(&out.next.event).map_err(bad)?,
                    values,
                });
            }
            out.more = n == limit;
            Ok(out)
        })
    }

    fn checkpoint(&self, peer: &str) -> Result<SyncCursor> {
        run(|| {
            if mode(&self.conn)? < Mode::Tombstones {
                return Ok(SyncCursor::start());
            }
            let found = self
                .conn
                .prepare_cached("SELECT seq, tbl, key, event FROM rederive_peers WHERE peer = ?1")?
                .query_row([peer], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        from_ref(r.get_ref(2)?),
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                })
                .optional()?;
            Ok(match found {
                Some((seq, table, key, event)) => SyncCursor {
                    seq,
                    table,
                    key: Key::from_value(&key).unwrap_or(Key::Int(i64::MIN)),
                    event,
                },
                None => SyncCursor::start(),
            })
        })
    }

    fn apply(
        &self,
        graph: &Graph,
        peer: &str,
        versions: &[Version],
        upto: &SyncCursor,
    ) -> Result<Applied> {
        run(|| {
            let tx = self.write()?;
            writer(&tx)?;
            ensure_derived_stream(&tx, graph)?;
            let mut applied = Applied::default();
            let mut groups: BTreeMap<(&str, &Key), Vec<Version>> = BTreeMap::new();
            for v in versions {
                groups
                    .entry((v.table.as_str(), &v.key))
                    .or_default()
                    .push(v.clone());
            }
            let mut rev = None;
            // The statements of the table at hand (groups come table by
            // table), prepared once for its keys.
            let mut stmts: Option<(&str, KeyStatements<'_>, CachedStatement<'_>)> = None;
            for ((table, key), received) in groups {
                let id = graph.table_id(table).map_err(|_| {
                    bad(format!(
                        "the peer sent rows of `{table}`, a table this program does not have"
                    ))
                })?;
                let info = graph.table(id).info;
                if !info.input {
                    return Err(bad(format!(
                        "the peer sent rows of `{table}`, a derived table"
                    )));
                }
                for v in &received {
                    if let Some(values) = &v.values {
                        let key_ok = info
                            .key
                            .and_then(|i| values.get(i))
                            .and_then(Key::from_value)
                            .is_some_and(|k| &k == key);
                        if values.len() != info.columns.len() || !key_ok {
                            return Err(bad(format!(
                                "the peer sent a `{table}` row {key} whose values do not fit the table"
                            )));
                        }
                    }
                }
                if stmts.as_ref().is_none_or(|(t, _, _)| *t != table) {
                    let upsert = tx.prepare_cached(&self.cache.upsert_input_sql(info, 1))?;
                    stmts = Some((table, KeyStatements::new(&tx, info)?, upsert));
                }
                let Some((_, key_stmts, upsert)) = stmts.as_mut() else {
                    continue;
                };
                let (now, stored_before) = current_and_stored(key_stmts, info, key, Mode::Replica)?;
                let merged = merge(&now, &received);
                let same = |a: &[Version], b: &[Version]| {
                    a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| x.event == y.event))
                };
                if same(&now, &merged) {
                    applied.ignored += received.len() as u64;
                    continue;
                }
                let seq = match rev {
                    Some(r) => r,
                    None => {
                        let r = next_revision(&tx)?;
                        bump_epoch(&tx)?;
                        rev = Some(r);
                        r
                    }
                };
                applied.changed += 1;
                if merged.len() > 1 {
                    applied.conflicts += 1;
                }
                replace(
                    key_stmts,
                    table,
                    key,
                    &now,
                    stored_before,
                    &merged,
                    seq,
                    Some((peer, &received)),
                )?;
                let old = winner(&now).and_then(|v| v.values.as_ref());
                let new = winner(&merged).and_then(|v| v.values.as_ref());
                if old != new {
                    match new {
                        Some(values) => {
                            let stamps = [Value::Integer(seq.get()), Value::Integer(self.now_ms())];
                            let params = values.iter().chain(&stamps).map(SqlValue);
                            upsert.execute(rusqlite::params_from_iter(params))?;
                        }
                        None => {
                            delete_input(&tx, graph, id, key, seq)?;
                        }
                    }
                } else if new.is_some() {
                    // The key's versions changed, its value did not: the
                    // derived rows here stay fresh, while the peer's may
                    // have gone stale (a value changed there and back), so
                    // the key's rows are offered again.
                    tx.prepare_cached(&stream_upsert("?1", "?2"))?
                        .execute(params![table, KeyParam(key)])?;
                }
            }
            drop(stmts);
            let (seq, table, key, event) = cursor_params(upto);
            tx.prepare_cached("INSERT OR REPLACE INTO rederive_peers VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![peer, seq, table, key, event])?;
            tx.commit()?;
            Ok(applied)
        })
    }

    fn absorb(&self, from: &str, id: &Id) -> Result<()> {
        run(|| {
            let tx = self.write()?;
            let mut me = writer(&tx)?;
            let done: bool = tx
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM rederive_absorbed WHERE name = ?1)")?
                .query_row([from], |r| r.get(0))?;
            if !done {
                me.id = me.id.sum(id).map_err(|e| {
                    bad(format!(
                        "cannot take the clock id of `{from}`: {e} (it overlaps this replica's)"
                    ))
                })?;
                write_meta(&tx, &me)?;
                tx.execute("INSERT INTO rederive_absorbed VALUES (?1)", [from])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn derived_head(&self) -> Result<i64> {
        run(|| {
            if mode(&self.conn)? < Mode::Replica {
                return Ok(0);
            }
            Ok(self
                .conn
                .prepare_cached("SELECT coalesce(max(seq), 0) FROM rederive_derived_stream")?
                .query_row([], |r| r.get(0))?)
        })
    }

    fn derived_after(
        &self,
        to: &str,
        after: i64,
        limit: usize,
        siblings: &dyn Fn(&str) -> Vec<&'static str>,
    ) -> Result<DerivedChanges> {
        run(|| {
            let mut out = DerivedChanges {
                rows: Vec::new(),
                next: after,
                more: false,
            };
            if mode(&self.conn)? < Mode::Replica {
                return Ok(out);
            }
            let mut stmt = self.conn.prepare_cached(
                "SELECT seq, tbl, key, src FROM rederive_derived_stream WHERE seq > ?1 \
                 ORDER BY seq LIMIT ?2",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut later = self.conn.prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM rederive_derived_stream WHERE tbl = ?1 AND key = ?2 \
                 AND seq > ?3 AND (src IS NULL OR src <> ?4))",
            )?;
            let mut rows = stmt.query(params![after, limit])?;
            let mut n = 0;
            while let Some(row) = rows.next()? {
                n += 1;
                let seq: i64 = row.get(0)?;
                out.next = seq;
                let src: Option<String> = row.get(3)?;
                if src.as_deref() == Some(to) {
                    continue; // the peer offered exactly this
                }
                let table: String = row.get(1)?;
                let key = from_ref(row.get_ref(2)?);
                // The root's rows go at its last position instead.
                let mut offered_later = false;
                for sibling in siblings(&table) {
                    offered_later |= later
                        .query_row(params![sibling, SqlValue(&key), seq, to], |r| {
                            r.get::<_, bool>(0)
                        })?;
                    if offered_later {
                        break;
                    }
                }
                if offered_later {
                    continue;
                }
                if let Some(key) = Key::from_value(&key) {
                    out.rows.push((table, key));
                }
            }
            out.more = n == limit;
            Ok(out)
        })
    }

    fn derived_checkpoint(&self, peer: &str) -> Result<i64> {
        run(|| {
            if mode(&self.conn)? < Mode::Replica {
                return Ok(0);
            }
            Ok(self
                .conn
                .prepare_cached("SELECT seq FROM rederive_derived_peers WHERE peer = ?1")?
                .query_row([peer], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
    }

    fn derived_received(
        &self,
        peer: &str,
        since: i64,
        rows: &[(String, Key)],
        upto: i64,
    ) -> Result<()> {
        run(|| {
            let tx = self.write()?;
            if mode(&tx)? < Mode::Replica {
                return Err(bad("not a replica"));
            }
            {
                let mut mark = tx.prepare_cached(
                    "UPDATE rederive_derived_stream SET src = ?1 \
                     WHERE tbl = ?2 AND key = ?3 AND seq > ?4",
                )?;
                for (table, key) in rows {
                    mark.execute(params![peer, table, KeyParam(key), since])?;
                }
            }
            tx.prepare_cached(
                "INSERT INTO rederive_derived_peers VALUES (?1, ?2) \
                 ON CONFLICT(peer) DO UPDATE SET seq = max(seq, excluded.seq)",
            )?
            .execute(params![peer, upto])?;
            tx.commit()?;
            Ok(())
        })
    }
}
