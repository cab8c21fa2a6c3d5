//! The SQLite schema of a graph: the DDL of each table, the fingerprint
//! stored to notice changes, and the migration of input tables.

use crate::error::{Error, Result};
use crate::graph::{Graph, TableId};
use crate::row::{ColumnDef, TableInfo};
use crate::store::{key_type, quote};
use rusqlite::Connection;

/// The description of a table stored in `rederive_tables.columns`, compared
/// at open to notice schema changes.
pub(crate) fn fingerprint(graph: &Graph, id: TableId) -> String {
    let t = graph.table(id);
    if t.info.input {
        t.info.fingerprint()
    } else {
        format!(
            "{} | key {} | inputs {}",
            t.info.fingerprint(),
            key_type(graph, id),
            t.inputs.len()
        )
    }
}

pub(crate) fn column_sql(c: &ColumnDef, force_nullable: bool) -> String {
    let null = if c.nullable || force_nullable {
        ""
    } else {
        " NOT NULL"
    };
    format!("{} {}{null}", quote(c.name), c.ty.sql())
}

pub(crate) fn create_table(tx: &Connection, graph: &Graph, id: TableId) -> Result<()> {
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
            key_type(graph, id).sql()
        ));
        // Value columns are nullable: failed and blocked rows have no value.
        for c in t.info.columns {
            cols.push(column_sql(c, true));
        }
        cols.push("__status INTEGER NOT NULL".into());
        cols.push("__error TEXT".into());
        cols.push("__origin_key ANY".into());
        cols.push("__code TEXT NOT NULL".into());
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

/// An input table may gain nullable columns at the end; anything else would
/// need a decision about existing rows that only the user can make.
pub(crate) fn migrate_input(tx: &Connection, info: &TableInfo, old_fp: &str) -> Result<()> {
    let old: Vec<&str> = if old_fp.is_empty() {
        Vec::new()
    } else {
        old_fp.split(',').collect()
    };
    let new_fp = info.fingerprint();
    let new: Vec<&str> = new_fp.split(',').collect();
    let prefix_kept = old.len() <= new.len() && old.iter().zip(&new).all(|(a, b)| a == b);
    let added = &info.columns[old.len().min(info.columns.len())..];
    if prefix_kept && added.iter().all(|c| c.nullable) {
        for c in added {
            tx.execute_batch(&format!(
                "ALTER TABLE {} ADD COLUMN {}",
                quote(info.name),
                column_sql(c, false)
            ))?;
        }
        return Ok(());
    }
    let removed: Vec<&str> = old.iter().filter(|c| !new.contains(c)).copied().collect();
    let new_cols: Vec<&str> = new.iter().filter(|c| !old.contains(c)).copied().collect();
    let mut detail = format!(
        "stored columns [{}], row type now [{}]",
        old.join(", "),
        new.join(", ")
    );
    if !removed.is_empty() {
        detail.push_str(&format!(
            "; no longer in the row type: {}",
            removed.join(", ")
        ));
    }
    if !new_cols.is_empty() {
        detail.push_str(&format!("; new or changed: {}", new_cols.join(", ")));
    }
    if removed.is_empty() && prefix_kept {
        detail.push_str("; only nullable (Option) columns can be added automatically");
    } else if removed.is_empty() {
        detail.push_str("; new nullable columns must come after the existing ones");
    }
    Err(Error::SchemaChanged {
        table: info.name.to_owned(),
        detail,
    })
}
