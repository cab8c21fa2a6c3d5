//! Catalog rules: what may be done to the tables a database already holds
//! when a program opens it. Shared by every backend, so that each applies
//! the same rules (see [`plan`]).
//!
//! - A new table is created.
//! - A derived table whose row type changed is rebuilt: derived data can
//!   always be computed again.
//! - An input table may gain nullable columns at its end; any other change
//!   would need a decision about existing rows that only the user can make,
//!   and is refused with an error naming the columns. Input rows are never
//!   dropped.
//! - A derived table whose code version changed keeps its rows (each row
//!   knows the code it was computed with) and is processed again.
//! - A database whose rederive tables all belong to another program is
//!   refused: two unrelated graphs must not share one file.
//! - Tables the graph no longer has are left alone ([`leftovers`]); only an
//!   explicit command drops them.

use crate::error::{Error, Result};
use crate::graph::{Graph, TableId};

/// A table as a database's catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTable {
    /// The table's name.
    pub name: String,
    /// Whether users write it.
    pub input: bool,
    /// Its columns as [`fingerprint`] described them when it was created.
    pub columns: String,
    /// The code version it was last processed with (derived tables).
    pub code: Option<String>,
}

/// One change that brings a stored table in line with the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaChange {
    /// The table is new: create it and its catalog entry.
    Create(TableId),
    /// Drop the stored table (derived data) and create it anew, with its
    /// catalog entry (watermark and epoch mark back to zero).
    Replace(TableId),
    /// Add the input table's columns from this position on (all nullable),
    /// and record its new fingerprint.
    AddColumns {
        /// The input table.
        table: TableId,
        /// The first new column.
        from: usize,
    },
    /// Record the derived table's new code version, and reset its
    /// watermark and epoch mark so that every row is checked again.
    NewCode(TableId),
}

impl SchemaChange {
    /// Whether the change alters a stored table (rather than only the
    /// catalog's bookkeeping).
    pub fn alters_tables(&self) -> bool {
        !matches!(self, SchemaChange::NewCode(_))
    }
}

/// The version of how backends store a derived row's provenance. A
/// derived table stored under another version is rebuilt (derived rows can
/// always be computed again): 2 names code versions by a small id.
pub const DERIVED_LAYOUT: u32 = 2;

/// The description of a table stored in the catalog, compared at open to
/// notice schema changes.
pub fn fingerprint(graph: &Graph, id: TableId) -> String {
    let t = graph.table(id);
    if t.info.input {
        t.info.fingerprint()
    } else {
        format!(
            "{} | key {} | inputs {} | layout {DERIVED_LAYOUT}",
            t.info.fingerprint(),
            graph.key_type(id),
            t.inputs.len()
        )
    }
}

/// The changes that bring `stored` in line with `graph`, in topological
/// order, or the error that forbids them. Empty when the database is in
/// sync.
pub fn plan(
    stored: &[StoredTable],
    graph: &Graph,
    codes: &[Option<String>],
) -> Result<Vec<SchemaChange>> {
    let ours = |s: &StoredTable| graph.table_id(&s.name).is_ok();
    if !stored.is_empty() && !stored.iter().any(ours) {
        return Err(Error::OtherGraph {
            tables: stored.iter().map(|s| s.name.clone()).collect(),
            expected: graph
                .tables()
                .iter()
                .map(|t| t.info.name.to_owned())
                .collect(),
        });
    }
    let mut changes = Vec::new();
    for &id in graph.topological() {
        let t = graph.table(id);
        let name = t.info.name;
        let fp = fingerprint(graph, id);
        let code = codes[id.index()].clone();
        let Some(old) = stored.iter().find(|s| s.name == name) else {
            changes.push(SchemaChange::Create(id));
            continue;
        };
        match (old.input, t.info.input) {
            (true, false) => {
                return Err(Error::SchemaChanged {
                    table: name.to_owned(),
                    detail: "it was an input table and is now derived; dropping it would lose input rows".into(),
                });
            }
            // A derived table became an input table: nobody computes its
            // rows now, and they are derived data, so they may go.
            (false, true) => changes.push(SchemaChange::Replace(id)),
            (true, true) if old.columns != fp => changes.push(SchemaChange::AddColumns {
                table: id,
                from: added_input_columns(graph, id, &old.columns)?,
            }),
            (false, false) if old.columns != fp => changes.push(SchemaChange::Replace(id)),
            (false, false) if old.code != code => changes.push(SchemaChange::NewCode(id)),
            _ => {}
        }
    }
    Ok(changes)
}

/// The stored tables that the graph does not have (left by functions or
/// row types that no longer exist).
pub fn leftovers<'a>(stored: &'a [StoredTable], graph: &Graph) -> Vec<&'a StoredTable> {
    stored
        .iter()
        .filter(|s| graph.table_id(&s.name).is_err())
        .collect()
}

/// Where the new columns of an input table start, if the change only adds
/// nullable columns at the end; else the error that names the difference.
fn added_input_columns(graph: &Graph, id: TableId, old_fp: &str) -> Result<usize> {
    let info = graph.table(id).info;
    let old: Vec<&str> = if old_fp.is_empty() {
        Vec::new()
    } else {
        old_fp.split(',').collect()
    };
    let new_fp = info.fingerprint();
    let new: Vec<&str> = new_fp.split(',').collect();
    let prefix_kept = old.len() <= new.len() && old.iter().zip(&new).all(|(a, b)| a == b);
    let from = old.len().min(info.columns.len());
    if prefix_kept && info.columns[from..].iter().all(|c| c.nullable) {
        return Ok(from);
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
