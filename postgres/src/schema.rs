//! rederive's own tables, the catalog, and the DDL: creating, rebuilding
//! and migrating tables as [`rederive_runtime::catalog::plan`] decides.
//!
//! Schema changes (and the creation of rederive's own tables) run under a
//! transaction-level advisory lock, so that processes opening one
//! database at once apply them one after the other: the later one reads
//! the catalog after the first committed, and finds nothing left to do.

use crate::conn::{invalid, Begin, Conn, PgResult};
use crate::reads;
use crate::sql::{check_identifier, column_sql, column_type, key_column, quote};
use crate::{PgStore, FORMAT};
use rederive_runtime::catalog::{fingerprint, plan, SchemaChange, StoredTable};
use rederive_runtime::error::{Error, Result};
use rederive_runtime::graph::{Graph, TableId};
use rederive_runtime::storage::Catalog;

/// The advisory lock (two-key form: this class, key 0) that schema
/// changes take.
pub(crate) const SCHEMA_LOCK: &str = "SELECT pg_advisory_xact_lock(1919186550, 0)";

/// rederive's own tables.
const OWN_TABLES: &str = r#"
    CREATE TABLE IF NOT EXISTS rederive_meta(
        one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
        format BIGINT NOT NULL,
        revision BIGINT NOT NULL,
        epoch BIGINT NOT NULL,
        last_delete BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS rederive_tables(
        name TEXT COLLATE "C" PRIMARY KEY,
        input BOOLEAN NOT NULL,
        columns TEXT NOT NULL,
        code TEXT,
        watermark BIGINT NOT NULL DEFAULT 0,
        epoch_mark BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS rederive_codes(
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        code TEXT NOT NULL UNIQUE
    );
    CREATE TABLE IF NOT EXISTS rederive_leases(
        tbl TEXT COLLATE "C" NOT NULL,
        key BYTEA NOT NULL,
        worker TEXT COLLATE "C" NOT NULL,
        owner TEXT COLLATE "C" NOT NULL,
        expires_ms BIGINT NOT NULL,
        PRIMARY KEY (tbl, key)
    );
    CREATE INDEX IF NOT EXISTS rederive_leases_by_worker ON rederive_leases(worker);
    CREATE TABLE IF NOT EXISTS rederive_table_leases(
        tbl TEXT COLLATE "C" PRIMARY KEY,
        worker TEXT COLLATE "C" NOT NULL,
        owner TEXT COLLATE "C" NOT NULL,
        rows BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS rederive_workers(
        worker TEXT COLLATE "C" PRIMARY KEY,
        expires_ms BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS rederive_reads(
        reader TEXT COLLATE "C" NOT NULL,
        reader_key BYTEA NOT NULL,
        tbl TEXT COLLATE "C" NOT NULL,
        key BYTEA NOT NULL,
        seen BIGINT,
        PRIMARY KEY (reader, reader_key, tbl, key)
    );
    CREATE INDEX IF NOT EXISTS rederive_reads_by_row
        ON rederive_reads(tbl, key, reader, reader_key);
    CREATE TABLE IF NOT EXISTS rederive_tombstones(
        tbl TEXT COLLATE "C" NOT NULL,
        key BYTEA NOT NULL,
        deleted_at BIGINT NOT NULL,
        PRIMARY KEY (tbl, key)
    );
    CREATE INDEX IF NOT EXISTS rederive_tombstones_by_revision
        ON rederive_tombstones(tbl, deleted_at);
"#;

/// Creates rederive's own tables if the database lacks them, and checks
/// the format of a database that has them.
pub(crate) fn init(conn: &mut Conn, location: &str) -> PgResult<()> {
    let ours: bool = conn
        .query_one("SELECT to_regclass('rederive_meta') IS NOT NULL", &[])?
        .try_get(0)?;
    if !ours {
        conn.transaction(Begin::Write, |c| {
            c.batch(SCHEMA_LOCK)?;
            c.batch(OWN_TABLES)?;
            c.execute(
                "INSERT INTO rederive_meta(format, revision, epoch, last_delete) \
                 VALUES ($1, 0, 0, 0) ON CONFLICT DO NOTHING",
                &[&FORMAT],
            )?;
            Ok(())
        })?;
    }
    let format = conn
        .query_opt("SELECT format FROM rederive_meta", &[])
        .map_err(|_| Error::NotADatabase {
            path: location.into(),
            reason: "its table `rederive_meta` is not rederive's".into(),
        })?;
    match format {
        Some(row) => {
            let found: i64 = row.try_get(0)?;
            if found > FORMAT {
                return Err(Error::NewerFormat {
                    found,
                    supported: FORMAT,
                }
                .into());
            }
            Ok(())
        }
        None => Err(Error::NotADatabase {
            path: location.into(),
            reason: "rederive_meta holds no format version".into(),
        }
        .into()),
    }
}

fn read_catalog(conn: &mut Conn) -> PgResult<Vec<StoredTable>> {
    let rows = conn.query(
        "SELECT name, input, columns, code FROM rederive_tables ORDER BY name",
        &[],
    )?;
    rows.iter()
        .map(|r| {
            Ok(StoredTable {
                name: r.try_get(0)?,
                input: r.try_get(1)?,
                columns: r.try_get(2)?,
                code: r.try_get(3)?,
            })
        })
        .collect()
}

/// Creates a table of the graph with its indexes.
fn create_table(c: &mut Conn, graph: &Graph, id: TableId, location: &str) -> PgResult<()> {
    let t = graph.table(id);
    let name = quote(t.info.name);
    check_identifier(t.info.name, t.info.name)?;
    for col in t.info.columns {
        check_identifier(t.info.name, col.name)?;
    }
    // A table of that name that the catalog does not list belongs to
    // someone else: never take it over.
    let taken: bool = c
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])?
        .try_get(0)?;
    if taken {
        return Err(Error::NotADatabase {
            path: location.into(),
            reason: format!(
                "it has a table `{}` that rederive did not create; use another database or schema",
                t.info.name
            ),
        }
        .into());
    }
    let mut cols = Vec::new();
    if t.info.input {
        for (i, col) in t.info.columns.iter().enumerate() {
            if t.info.key == Some(i) {
                cols.push(format!(
                    "{} {} NOT NULL PRIMARY KEY",
                    quote(col.name),
                    column_type(col.ty)
                ));
            } else {
                cols.push(column_sql(col, false));
            }
        }
        cols.push("__changed_at BIGINT NOT NULL".into());
        cols.push("__changed_ms BIGINT NOT NULL".into());
    } else {
        cols.push(format!(
            "__key {} NOT NULL PRIMARY KEY",
            column_type(graph.key_type(id))
        ));
        // Value columns are nullable: failed and blocked rows have no value.
        cols.extend(t.info.columns.iter().map(|col| column_sql(col, true)));
        cols.push("__status SMALLINT NOT NULL".into());
        cols.push("__error TEXT".into());
        cols.push("__origin_key BYTEA".into());
        // An id in `rederive_codes`.
        cols.push("__code BIGINT NOT NULL".into());
        cols.push("__changed_at BIGINT NOT NULL".into());
        cols.extend((0..t.inputs.len()).map(|j| format!("__in_{j} BIGINT NOT NULL")));
    }
    // Indexes are named by PostgreSQL (a name made of the table's could
    // pass the identifier limit).
    let mut ddl = format!(
        "CREATE TABLE {name}({}); CREATE INDEX ON {name}(__changed_at, {});",
        cols.join(", "),
        key_column(t.info)
    );
    if !t.info.input {
        ddl.push_str(&format!(
            "CREATE INDEX ON {name}(__status, __key) WHERE __status <> 0;"
        ));
    }
    c.batch(&ddl)
}

fn apply(
    c: &mut Conn,
    graph: &Graph,
    codes: &[Option<String>],
    change: &SchemaChange,
    location: &str,
) -> PgResult<()> {
    match *change {
        SchemaChange::Create(id) => {
            let t = graph.table(id);
            create_table(c, graph, id, location)?;
            c.execute(
                "INSERT INTO rederive_tables(name, input, columns, code) VALUES ($1, $2, $3, $4)",
                &[
                    &t.info.name,
                    &t.info.input,
                    &fingerprint(graph, id),
                    &codes[id.index()],
                ],
            )?;
        }
        SchemaChange::Replace(id) => {
            let t = graph.table(id);
            reads::table_gone(c, t.info.name)?;
            c.batch(&format!("DROP TABLE IF EXISTS {}", quote(t.info.name)))?;
            create_table(c, graph, id, location)?;
            c.execute(
                "UPDATE rederive_tables SET input = $2, columns = $3, code = $4, \
                 watermark = 0, epoch_mark = 0 WHERE name = $1",
                &[
                    &t.info.name,
                    &t.info.input,
                    &fingerprint(graph, id),
                    &codes[id.index()],
                ],
            )?;
        }
        SchemaChange::AddColumns { table, from } => {
            let info = graph.table(table).info;
            for col in &info.columns[from..] {
                check_identifier(info.name, col.name)?;
                c.batch(&format!(
                    "ALTER TABLE {} ADD COLUMN {}",
                    quote(info.name),
                    column_sql(col, false)
                ))?;
            }
            c.execute(
                "UPDATE rederive_tables SET input = true, columns = $2, code = NULL WHERE name = $1",
                &[&info.name, &fingerprint(graph, table)],
            )?;
        }
        SchemaChange::NewCode(id) => {
            c.execute(
                "UPDATE rederive_tables SET code = $2, watermark = 0, epoch_mark = 0 WHERE name = $1",
                &[&graph.table(id).info.name, &codes[id.index()]],
            )?;
        }
    }
    Ok(())
}

/// Takes the schema lock, then the revision counter's row lock (as every
/// write takes it first), so that a schema change and a write never wait
/// for each other's locks in opposite orders.
fn lock_schema(c: &mut Conn) -> PgResult<()> {
    c.batch(SCHEMA_LOCK)?;
    c.query_one("SELECT revision FROM rederive_meta FOR UPDATE", &[])?;
    Ok(())
}

impl Catalog for PgStore {
    fn stored_tables(&self) -> Result<Vec<StoredTable>> {
        self.read(read_catalog)
    }

    fn apply_schema(&self, graph: &Graph, codes: &[Option<String>]) -> Result<()> {
        if codes.len() != graph.tables().len() {
            return Err(invalid(format!(
                "{} code versions for {} tables",
                codes.len(),
                graph.tables().len()
            )));
        }
        let location = self.location.clone();
        let out = self.write(|c| {
            lock_schema(c)?;
            let stored = read_catalog(c)?;
            for change in plan(&stored, graph, codes)? {
                apply(c, graph, codes, &change, &location)?;
            }
            // Derived rows name their code version by a small id: every
            // current version has one from the start.
            let current: Vec<&String> = codes.iter().flatten().collect();
            c.execute(
                "INSERT INTO rederive_codes(code) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                &[&current],
            )?;
            Ok(())
        });
        // Tables may have changed under this connection's statements.
        self.lock()?.forget_statements();
        out
    }

    fn drop_table(&self, name: &str) -> Result<bool> {
        let out = self.write(|c| {
            lock_schema(c)?;
            let n = c.execute("DELETE FROM rederive_tables WHERE name = $1", &[&name])?;
            if n > 0 {
                reads::table_gone(c, name)?;
                c.batch(&format!("DROP TABLE IF EXISTS {}", quote(name)))?;
                c.execute("DELETE FROM rederive_leases WHERE tbl = $1", &[&name])?;
                c.execute("DELETE FROM rederive_table_leases WHERE tbl = $1", &[&name])?;
            }
            Ok(n > 0)
        });
        self.lock()?.forget_statements();
        out
    }
}
