//! The catalog and the DDL: creating, rebuilding and migrating tables as
//! [`crate::catalog::plan`] decides.

use super::{quote, run, SqlResult, SqliteStore};
use crate::catalog::{fingerprint, plan, SchemaChange, StoredTable};
use crate::error::Result;
use crate::graph::{Graph, TableId};
use crate::row::ColumnDef;
use crate::storage::Catalog;
use rusqlite::{params, Connection};

fn column_sql(c: &ColumnDef, force_nullable: bool) -> String {
    let null = if c.nullable || force_nullable {
        ""
    } else {
        " NOT NULL"
    };
    format!("{} {}{null}", quote(c.name), c.ty.sql())
}

fn create_table(tx: &Connection, graph: &Graph, id: TableId) -> SqlResult<()> {
    let t = graph.table(id);
    let name = quote(t.info.name);
    let mut cols = Vec::new();
    if t.info.input {
        for (i, c) in t.info.columns.iter().enumerate() {
            if t.info.key == Some(i) {
                cols.push(format!(
                    "{} {} NOT NULL PRIMARY KEY",
                    quote(c.name),
                    c.ty.sql()
                ));
            } else {
                cols.push(column_sql(c, false));
            }
        }
        cols.push("__changed_at INTEGER NOT NULL".into());
        cols.push("__changed_ms INTEGER NOT NULL".into());
    } else {
        cols.push(format!(
            "__key {} NOT NULL PRIMARY KEY",
            graph.key_type(id).sql()
        ));
        // Value columns are nullable: failed and blocked rows have no value.
        for c in t.info.columns {
            cols.push(column_sql(c, true));
        }
        cols.push("__status INTEGER NOT NULL".into());
        cols.push("__error TEXT".into());
        cols.push("__origin_key ANY".into());
        // An id in `rederive_codes`.
        cols.push("__code INTEGER NOT NULL".into());
        cols.push("__changed_at INTEGER NOT NULL".into());
        for j in 0..t.inputs.len() {
            cols.push(format!("__in_{j} INTEGER NOT NULL"));
        }
    }
    tx.execute_batch(&format!(
        "CREATE TABLE {name}({}) STRICT;
         CREATE INDEX {} ON {name}(__changed_at);",
        cols.join(", "),
        quote(&format!("{}__changed_at", t.info.name)),
    ))?;
    if !t.info.input {
        tx.execute_batch(&format!(
            "CREATE INDEX {} ON {name}(__status) WHERE __status != 0;",
            quote(&format!("{}__status", t.info.name))
        ))?;
    }
    Ok(())
}

fn read_catalog(conn: &Connection) -> SqlResult<Vec<StoredTable>> {
    let mut stmt = conn
        .prepare_cached("SELECT name, input, columns, code FROM rederive_tables ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(StoredTable {
            name: r.get(0)?,
            input: r.get::<_, i64>(1)? != 0,
            columns: r.get(2)?,
            code: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn apply(
    tx: &Connection,
    graph: &Graph,
    codes: &[Option<String>],
    change: &SchemaChange,
) -> SqlResult<()> {
    match *change {
        SchemaChange::Create(id) => {
            let t = graph.table(id);
            create_table(tx, graph, id)?;
            tx.execute(
                "INSERT INTO rederive_tables(name, input, columns, code, watermark) VALUES (?1, ?2, ?3, ?4, 0)",
                params![t.info.name, t.info.input as i64, fingerprint(graph, id), codes[id.index()]],
            )?;
        }
        SchemaChange::Replace(id) => {
            let t = graph.table(id);
            super::reads::table_gone(tx, t.info.name)?;
            tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote(t.info.name)))?;
            create_table(tx, graph, id)?;
            tx.execute(
                "UPDATE rederive_tables SET input = ?2, columns = ?3, code = ?4, watermark = 0, epoch_mark = 0 WHERE name = ?1",
                params![t.info.name, t.info.input as i64, fingerprint(graph, id), codes[id.index()]],
            )?;
        }
        SchemaChange::AddColumns { table, from } => {
            let info = graph.table(table).info;
            for c in &info.columns[from..] {
                tx.execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN {}",
                    quote(info.name),
                    column_sql(c, false)
                ))?;
            }
            tx.execute(
                "UPDATE rederive_tables SET input = 1, columns = ?2, code = NULL WHERE name = ?1",
                params![info.name, fingerprint(graph, table)],
            )?;
        }
        SchemaChange::NewCode(id) => {
            tx.execute(
                "UPDATE rederive_tables SET code = ?2, watermark = 0, epoch_mark = 0 WHERE name = ?1",
                params![graph.table(id).info.name, codes[id.index()]],
            )?;
        }
    }
    Ok(())
}

impl Catalog for SqliteStore {
    fn stored_tables(&self) -> Result<Vec<StoredTable>> {
        run(|| read_catalog(&self.conn))
    }

    fn apply_schema(&self, graph: &Graph, codes: &[Option<String>]) -> Result<()> {
        run(|| {
            let tx = self.write()?;
            // Older databases lack the tables of recorded reads.
            tx.execute_batch(super::reads::READS_DDL)?;
            let stored = read_catalog(&tx)?;
            for change in plan(&stored, graph, codes)? {
                apply(&tx, graph, codes, &change)?;
            }
            // Derived rows name their code version by a small id: every
            // current version has one from the start.
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS rederive_codes(
                     id INTEGER PRIMARY KEY,
                     code TEXT NOT NULL UNIQUE
                 ) STRICT",
            )?;
            for code in codes.iter().flatten() {
                tx.prepare_cached("INSERT OR IGNORE INTO rederive_codes(code) VALUES (?1)")?
                    .execute([code])?;
            }
            // On a replica, derived tables created or rebuilt above feed
            // the stream of derived rows that syncs offer.
            super::replicas::ensure_derived_stream(&tx, graph)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn drop_table(&self, name: &str) -> Result<bool> {
        run(|| {
            let tx = self.write()?;
            let n = tx.execute("DELETE FROM rederive_tables WHERE name = ?1", [name])?;
            if n > 0 {
                super::reads::table_gone(&tx, name)?;
                tx.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote(name)))?;
                tx.execute("DELETE FROM rederive_leases WHERE tbl = ?1", [name])?;
                tx.execute("DELETE FROM rederive_table_leases WHERE tbl = ?1", [name])?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
    }
}
