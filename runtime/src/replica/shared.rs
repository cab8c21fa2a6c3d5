//! Derived rows travel: after a sync has exchanged input versions, each
//! side offers the other the derived rows it wrote since the two last met
//! (its stream of derived rows, read from the other's checkpoint, see
//! [`crate::storage::Replicas::derived_after`]), whatever sync brought
//! their inputs and in whatever order refreshes and syncs happened; the
//! other keeps those it would have computed itself, then moves its
//! checkpoint, so that a sync cut short before the offers offers them
//! at the next one.
//!
//! A row written is offered with every row of its root key in the tables
//! that can travel (one page holds a pipeline's rows whole, upstream
//! first, and a downstream row that early cutoff left in place travels
//! with the upstream row that was rewritten). Rows a peer offered, and
//! that nothing rewrote since, are not offered back to it.
//!
//! A derived row is offered with a digest of what it was computed from:
//! the table's name and columns, the code version of its function, and
//! the values of its inputs at its key (input rows, or upstream derived
//! rows). The receiver computes the same digest from its own code and its
//! own rows: when they match, the offered value is what its function would
//! return, so it is stored as if computed here (through the write guard,
//! like any result). Rows computed from other inputs or another code
//! version do not match, and are computed locally by the next refresh.
//!
//! Only rows whose function succeeded are offered, and only of tables that
//! declare no reads of other rows (what those read is not at their key:
//! their rows are computed locally). Upstream tables are adopted first, so
//! that a pipeline's rows are reused along its whole length.

use super::codec::Writer;
use crate::engine::compute::{Work, WorkKind};
use crate::engine::refresh::Plan;
use crate::engine::Db;
use crate::error::{Error, Result};
use crate::graph::{Graph, TableId};
use crate::lease::Mode;
use crate::row::{ColumnDef, TableInfo};
use crate::storage::{Fence, Outcome, OutcomeKind, Pass, RowState, RowStatus, Values, Written};
use crate::value::{Key, SqlType, Value};
use std::collections::{BTreeMap, BTreeSet};

/// A derived row offered to another replica.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedRow {
    /// The derived table.
    pub table: String,
    /// The row's key (its root key).
    pub key: Key,
    /// What it was computed from (see the [module docs](self)).
    pub digest: [u8; 32],
    /// Its value columns.
    pub values: Vec<Value>,
}

/// A row, by table and key.
pub type RowKey = (String, Key);

/// The digest of a derived row of `info` computed by `code` from `inputs`
/// (each input's values, empty for a missing one).
fn digest(info: &TableInfo, code: &str, inputs: &[Vec<Value>]) -> [u8; 32] {
    let mut w = Writer::default();
    w.text(info.name);
    w.text(code);
    w.uint(info.columns.len() as u64);
    for c in info.columns {
        w.text(c.name);
        w.text(c.ty.sql());
        w.uint(u64::from(c.nullable));
    }
    w.uint(inputs.len() as u64);
    for values in inputs {
        w.values(values);
    }
    blake3::hash(&w.bytes).into()
}

/// Whether `values` fit the value columns `columns`.
fn fits(values: &[Value], columns: &[ColumnDef]) -> bool {
    values.len() == columns.len()
        && values.iter().zip(columns).all(|(v, c)| match v {
            Value::Null => c.nullable,
            Value::Integer(_) => c.ty == SqlType::Integer,
            Value::Real(_) => c.ty == SqlType::Real,
            Value::Text(_) => c.ty == SqlType::Text,
            Value::Blob(_) => c.ty == SqlType::Blob,
        })
}

/// The values of a row's inputs, as its function receives them.
fn input_values(states: &[Option<RowState>]) -> Vec<Vec<Value>> {
    states[1..]
        .iter()
        .map(|s| s.as_ref().map(|s| s.values.clone()).unwrap_or_default())
        .collect()
}

/// A page of the derived rows a replica offers a peer (see
/// [`Db::shared_after`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedPage {
    /// The rows offered: fresh and successful, each with its digest.
    pub rows: Vec<SharedRow>,
    /// Where the page ends in the offering replica's stream of derived
    /// rows: the receiver's checkpoint once it stored the rows.
    pub next: i64,
    /// Whether more rows follow.
    pub more: bool,
}

/// Whether rows of `id` can travel between replicas: a derived table that
/// reads no other rows (what those read is not at their key).
pub(crate) fn travels(graph: &Graph, id: TableId) -> bool {
    let t = graph.table(id);
    !t.info.input && t.reads.is_empty()
}

impl Db {
    /// Whether rows of `id` can travel: a derived table of this program
    /// that reads no other rows.
    fn shares(&self, id: TableId) -> bool {
        travels(self.graph(), id) && self.code(id).is_some()
    }

    /// The derived rows this replica wrote after position `after` of its
    /// stream, as offered to the peer named `to` (at most `limit` rows
    /// written, with the rows of their root keys; see the
    /// [module docs](self)).
    pub fn shared_after(&self, to: &str, after: i64, limit: usize) -> Result<SharedPage> {
        // The other tables of a row's root that travel.
        let siblings = |table: &str| -> Vec<&'static str> {
            let Ok(id) = self.graph().table_id(table) else {
                return Vec::new();
            };
            let root = self.graph().table(id).root;
            self.graph()
                .derived_from_root(root)
                .filter(|&t| t != id && self.shares(t))
                .map(|t| self.graph().table(t).info.name)
                .collect()
        };
        let page = self.replicas_op(|r| r.derived_after(to, after, limit, &siblings))?;
        Ok(SharedPage {
            rows: self.shared_rows(&page.rows)?,
            next: page.next,
            more: page.more,
        })
    }

    /// Stores the offered rows of the peer named `from` that this replica
    /// would compute itself (see [`Db::adopt`]), then moves this replica's
    /// checkpoint in that peer's stream of derived rows to `upto`; returns
    /// how many rows it stored.
    pub fn adopt_from(&self, from: &str, rows: &[SharedRow], upto: i64) -> Result<u64> {
        let since = self.replicas_op(|r| r.derived_head())?;
        let stored = self.adopt_rows(rows)?;
        self.replicas_op(|r| r.derived_received(from, since, &stored, upto))?;
        Ok(stored.len() as u64)
    }

    /// This replica's fresh, successful derived rows at the root keys of
    /// the rows `keys` (input or derived rows), of every table that can
    /// travel.
    pub fn shared_rows(&self, keys: &[RowKey]) -> Result<Vec<SharedRow>> {
        let mut roots = BTreeSet::new();
        for (table, key) in keys {
            // A table this program does not have: nothing derived from it.
            if let Ok(id) = self.graph().table_id(table) {
                roots.insert((self.graph().table(id).root, key));
            }
        }
        let mut out = Vec::new();
        for (root, key) in roots {
            // Every table of the root that is involved, read in one go.
            let shared: Vec<TableId> = self
                .graph()
                .derived_from_root(root)
                .filter(|&id| self.shares(id))
                .collect();
            let mut tables: Vec<TableId> = Vec::new();
            for &id in &shared {
                for &t in std::iter::once(&id).chain(&self.graph().table(id).inputs) {
                    if !tables.contains(&t) {
                        tables.push(t);
                    }
                }
            }
            if tables.is_empty() {
                continue;
            }
            let all = self.store().load(self.graph(), &tables, key, Values::All)?;
            let state = |t: &TableId| {
                let i = tables.iter().position(|x| x == t);
                i.and_then(|i| all.get(i)).cloned().flatten()
            };
            for id in shared {
                let states: Vec<Option<RowState>> = std::iter::once(&id)
                    .chain(&self.graph().table(id).inputs)
                    .map(state)
                    .collect();
                let row = match &states[0] {
                    Some(row) if row.status == RowStatus::Ok => row.values.clone(),
                    _ => continue,
                };
                let inputs = input_values(&states);
                if !matches!(
                    self.plan(id, key, states, &[], None, Mode::OnDemand),
                    Plan::Fresh
                ) {
                    continue;
                }
                let info = self.graph().table(id).info;
                out.push(SharedRow {
                    table: info.name.to_owned(),
                    key: key.clone(),
                    digest: digest(info, self.code(id).unwrap_or_default(), &inputs),
                    values: row,
                });
            }
        }
        Ok(out)
    }

    /// Stores the offered rows that this replica would compute itself
    /// (stale or missing here, computed by the same code from the same
    /// input values), upstream tables first; returns how many it stored.
    /// An offer whose values do not fit its table is refused.
    pub fn adopt(&self, rows: &[SharedRow]) -> Result<u64> {
        Ok(self.adopt_rows(rows)?.len() as u64)
    }

    /// [`Db::adopt`], returning the rows stored, by table and key.
    fn adopt_rows(&self, rows: &[SharedRow]) -> Result<Vec<RowKey>> {
        let mut by_table: BTreeMap<TableId, Vec<&SharedRow>> = BTreeMap::new();
        for row in rows {
            if let Ok(id) = self.graph().table_id(&row.table) {
                if self.shares(id) {
                    by_table.entry(id).or_default().push(row);
                }
            }
        }
        let mut adopted = Vec::new();
        for id in self.graph().derived_in_order() {
            let Some(offers) = by_table.remove(&id) else {
                continue;
            };
            let info = self.graph().table(id).info;
            let code = self.code(id).unwrap_or_default();
            let read_at = self.store().revision()?;
            let mut outcomes = Vec::new();
            for offer in offers {
                if !fits(&offer.values, info.columns) {
                    return Err(Error::Replica {
                        replica: self.location(),
                        reason: format!(
                            "the peer offered a `{}` row {} whose values do not fit the table",
                            offer.table, offer.key
                        ),
                    });
                }
                let Ok(key) = self.coerce_key(id, offer.key.clone()) else {
                    continue;
                };
                let states = self.load_with_inputs(id, &key)?;
                let inputs = input_values(&states);
                let Plan::Work(Work {
                    ins,
                    new,
                    kind: WorkKind::Compute(_),
                    ..
                }) = self.plan(id, &key, states, &[], None, Mode::OnDemand)
                else {
                    continue;
                };
                if digest(info, code, &inputs) != offer.digest {
                    continue;
                }
                outcomes.push(Outcome {
                    key,
                    new,
                    ins,
                    reads: Vec::new(),
                    kind: OutcomeKind::Ok(offer.values.clone()),
                });
            }
            if outcomes.is_empty() {
                continue;
            }
            let written = self.store().write_outcomes(
                self.graph(),
                id,
                code,
                &outcomes,
                Pass::OnDemand,
                &Fence::Unfenced,
                read_at,
            )?;
            adopted.extend(
                outcomes
                    .iter()
                    .zip(&written)
                    .filter(|(_, w)| **w != Written::Rejected)
                    .map(|(o, _)| (info.name.to_owned(), o.key.clone())),
            );
        }
        Ok(adopted)
    }
}
