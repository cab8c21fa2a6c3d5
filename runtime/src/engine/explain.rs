//! Telling the user where things stand: `explain`, `stale_from`, `status`
//! and `errors`, all through the one judge ([`crate::judge`]).

use super::deps::{Local, RowId, Session};
use super::{Db, BATCH};
use crate::error::Result;
use crate::graph::TableId;
use crate::judge::{judge, Cause, InputView, Settle, Verdict};
use crate::report::{FailedRow, TableStatus};
use crate::row::{Input, Row};
use crate::staleness::{StaleRow, Staleness};
use crate::storage::{ChangeCursor, RecordedRead, Revision, RowState, RowStatus, Status, Values};
use crate::value::Key;
use std::collections::{HashSet, VecDeque};

impl Db {
    /// The judge's verdict on every derived table of `tables` (in
    /// topological order, every table's inputs among them) for one key,
    /// from their stored states; `None` for input tables. With `now`, rows
    /// of functions with `settle` whose root changed recently are
    /// [`Verdict::Settling`].
    pub(crate) fn verdicts(
        &self,
        tables: &[TableId],
        states: &[Option<RowState>],
        now: Option<i64>,
    ) -> Vec<Option<Verdict>> {
        let mut out: Vec<Option<Verdict>> = Vec::with_capacity(tables.len());
        for (i, &t) in tables.iter().enumerate() {
            let node = self.graph.table(t);
            if node.info.input {
                out.push(None);
                continue;
            }
            let position = |x: TableId| tables.iter().position(|&y| y == x);
            let inputs: Vec<InputView<'_>> = node
                .inputs
                .iter()
                .map(|&input| {
                    let p = position(input);
                    InputView {
                        state: p.and_then(|p| states[p].as_ref()),
                        settled: p.is_some_and(|p| out[p].is_none_or(Verdict::is_settled)),
                    }
                })
                .collect();
            let settle = now.and_then(|now| {
                let root = states[position(node.root)?].as_ref()?;
                self.settle_window(t, root, now)
            });
            out.push(Some(judge(
                states[i].as_ref(),
                &inputs,
                self.code(t),
                settle,
            )));
        }
        out
    }

    /// The `settle` window of a table's function for a root row, if it has one.
    pub(crate) fn settle_window(&self, id: TableId, root: &RowState, now: i64) -> Option<Settle> {
        let settle_ms = self.graph.producer(id)?.settle_ms as i64;
        (settle_ms > 0).then_some(Settle {
            root_changed_ms: root.changed_ms,
            settle_ms,
            now_ms: now,
        })
    }

    /// What `explain` says about a row, given the judge's verdict (and the
    /// recorded reads it judged).
    pub(crate) fn staleness(
        &self,
        id: TableId,
        key: &Key,
        verdict: Verdict,
        row: Option<&RowState>,
        reads: &[RecordedRead],
    ) -> Staleness {
        let input = |n: usize| self.name(self.graph.table(id).inputs[n]).to_owned();
        match (verdict.cause(), row.map(|r| &r.status)) {
            (Some(Cause::Missing), _) => Staleness::Missing,
            (Some(Cause::UpstreamStale(n)), _) => Staleness::UpstreamStale {
                table: input(n),
                key: key.clone(),
            },
            (Some(Cause::InputChanged(n)), _) => Staleness::InputChanged {
                table: input(n),
                key: key.clone(),
            },
            (Some(Cause::ReadChanged(n)), _) => match reads.get(n) {
                Some(r) => Staleness::ReadChanged {
                    table: self.name(r.read.table).to_owned(),
                    key: r.read.key.clone(),
                },
                None => Staleness::Missing,
            },
            (Some(Cause::CodeChanged), _) => Staleness::CodeChanged {
                node: self
                    .graph
                    .producer(id)
                    .map(|n| n.name)
                    .unwrap_or_default()
                    .to_owned(),
            },
            (None, Some(RowStatus::Failed { message })) => Staleness::Failed {
                message: message.clone(),
            },
            (None, Some(RowStatus::Blocked { table, key })) => Staleness::Blocked {
                table: table.clone(),
                key: key.clone(),
            },
            (None, _) => Staleness::Fresh,
        }
    }

    /// Whether a row is fresh, and if not, the cause, naming the table and key.
    pub fn explain<T: Row>(&self, key: impl Into<Key>) -> Result<Staleness> {
        let id = self.id_of::<T>()?;
        let key = self.coerce_key(id, key.into())?;
        self.explain_id(id, &key)
    }

    /// Like [`Db::explain`], by table id.
    pub fn explain_id(&self, id: TableId, key: &Key) -> Result<Staleness> {
        if self.reads_upstream(id) {
            return self
                .explain_deep(&Session::new(), id, key)?
                .ok_or_else(|| self.not_found(id, key));
        }
        let t = self.graph.table(id);
        let tables = self.ancestry(id);
        let states = self.store().load(&self.graph, tables, key, Values::None)?;
        let root = tables.iter().position(|&x| x == t.root);
        if root.and_then(|p| states[p].as_ref()).is_none() {
            return Err(self.not_found(id, key));
        }
        let Some(Some(verdict)) = self.verdicts(tables, &states, None).pop() else {
            return Ok(Staleness::Fresh); // an input row
        };
        Ok(self.staleness(
            id,
            key,
            verdict,
            states.last().and_then(Option::as_ref),
            &[],
        ))
    }

    /// `explain` for a row that depends on recorded reads: the judge's
    /// cause if it does not settle the row, else the first row it depends
    /// on (through inputs or reads) that is not settled. `None` when its
    /// root row does not exist.
    fn explain_deep(&self, session: &Session, id: TableId, key: &Key) -> Result<Option<Staleness>> {
        let row = (id, key.clone());
        Ok(Some(match self.local(&row)? {
            Local::Absent => return Ok(None),
            Local::Unsettled {
                verdict,
                reads,
                first,
            } => match (verdict.cause(), first) {
                (Some(Cause::UpstreamStale(_)), Some((t, k))) => Staleness::UpstreamStale {
                    table: self.name(t).to_owned(),
                    key: k,
                },
                _ => self.staleness(id, key, verdict, None, &reads),
            },
            Local::Settled { verdict, .. } => match self.unsettled_path(session, &row)? {
                Some(path) if path.len() > 1 => Staleness::UpstreamStale {
                    table: self.name(path[1].0).to_owned(),
                    key: path[1].1.clone(),
                },
                _ => {
                    let state = self.load_one(id, key)?;
                    self.staleness(id, key, verdict, state.as_ref(), &[])
                }
            },
        }))
    }

    /// The derived rows that may change when an input row changed: the
    /// stale rows of its key and, transitively, the rows that read a stale
    /// row or the input row itself, each with its cause.
    pub(crate) fn stale_rows_from(
        &self,
        root: TableId,
        key: &Key,
        session: &Session,
    ) -> Result<Vec<(RowId, Staleness)>> {
        let mut out = Vec::new();
        let mut seen: HashSet<RowId> = HashSet::new();
        let mut todo: VecDeque<RowId> = self
            .graph
            .derived_from_root(root)
            .map(|t| (t, key.clone()))
            .collect();
        // Readers of the input row itself.
        let mut from = vec![(root, key.clone())];
        loop {
            for (t, k) in from.drain(..) {
                if self.graph.readers_of(t).next().is_some() {
                    todo.extend(self.store().readers_of(&self.graph, t, &k)?);
                }
            }
            let Some(row) = todo.pop_front() else { break };
            if !seen.insert(row.clone()) {
                continue;
            }
            let (t, k) = &row;
            let Some(cause) = self.explain_deep(session, *t, k)? else {
                continue;
            };
            if !cause.is_settled() {
                out.push((row.clone(), cause));
                // Rows computed from it, of its key, may change too.
                todo.extend(self.graph.readers(*t).map(|d| (d, k.clone())));
                from.push(row);
            }
        }
        Ok(out)
    }

    /// The derived rows that one input row makes stale (or that are missing),
    /// each with its cause, in topological order.
    pub fn stale_from<T: Input>(&self, key: impl Into<Key>) -> Result<Vec<StaleRow>> {
        let id = self.id_of::<T>()?;
        let key = self.coerce_key(id, key.into())?;
        self.stale_from_id(id, &key)
    }

    /// Like [`Db::stale_from`], by table id.
    pub fn stale_from_id(&self, root: TableId, key: &Key) -> Result<Vec<StaleRow>> {
        if self.graph.has_reads() {
            if self.load_one(root, key)?.is_none() {
                return Err(self.not_found(root, key));
            }
            return Ok(self
                .stale_rows_from(root, key, &Session::new())?
                .into_iter()
                .map(|((t, key), cause)| StaleRow {
                    table: self.name(t).to_owned(),
                    key,
                    cause,
                })
                .collect());
        }
        let tables = self.root_family(root);
        let states = self.store().load(&self.graph, &tables, key, Values::None)?;
        if states[0].is_none() {
            return Err(self.not_found(root, key));
        }
        let verdicts = self.verdicts(&tables, &states, None);
        let mut out = Vec::new();
        for (i, &id) in tables.iter().enumerate() {
            let Some(v) = verdicts[i] else { continue };
            if !v.is_settled() {
                out.push(StaleRow {
                    table: self.name(id).to_owned(),
                    key: key.clone(),
                    cause: self.staleness(id, key, v, states[i].as_ref(), &[]),
                });
            }
        }
        Ok(out)
    }

    /// An input table followed by every table derived from it, in
    /// topological order.
    fn root_family(&self, root: TableId) -> Vec<TableId> {
        std::iter::once(root)
            .chain(self.graph.derived_from_root(root))
            .collect()
    }

    /// Counts every table's rows by the judge's verdict (the same that
    /// `explain` gives for each row), and lists the tables this program no
    /// longer has (`leftover`). A report for humans: it reads every row of
    /// every root, a page at a time.
    pub fn status(&self) -> Result<Vec<TableStatus>> {
        let mut out: Vec<TableStatus> = Vec::new();
        for &id in self.graph.topological() {
            let t = self.graph.table(id);
            let rows = if t.info.input {
                self.store().row_count(t.info.name)?
            } else {
                0
            };
            out.push(TableStatus {
                table: t.info.name.to_owned(),
                input: t.info.input,
                rows,
                fresh: rows,
                ..TableStatus::default()
            });
        }
        let slot = |id: TableId| {
            self.graph
                .topological()
                .iter()
                .position(|&x| x == id)
                .unwrap_or_default()
        };
        let now = self.now_ms();
        let session = Session::new();
        for &root in self.graph.topological() {
            if !self.graph.table(root).info.input {
                continue;
            }
            let tables = self.root_family(root);
            if tables.len() == 1 {
                continue;
            }
            let slots: Vec<usize> = tables.iter().map(|&id| slot(id)).collect();
            let mut cursor = ChangeCursor::after(Revision::ZERO);
            loop {
                let page = self.store().changed_page(
                    &self.graph,
                    root,
                    &tables,
                    &cursor,
                    BATCH,
                    Values::None,
                )?;
                let Some(last) = page.last() else { break };
                cursor = last.cursor.clone();
                for row in &page {
                    let verdicts = self.verdicts(&tables, &row.states, Some(now));
                    for (i, &slot) in slots.iter().enumerate() {
                        let v = if self.reads_upstream(tables[i]) {
                            self.deep_verdict(&session, tables[i], &row.key)?
                        } else {
                            verdicts[i]
                        };
                        if let Some(v) = v {
                            count(&mut out[slot], v, row.states[i].is_some());
                        }
                    }
                }
            }
        }
        for st in out.iter_mut().filter(|s| !s.input) {
            st.workers = self.store().running(&st.table)?;
            st.running = st.workers.iter().map(|w| w.rows).sum();
        }
        // Replicas' conflicts, on a backend that keeps replicas.
        let replicas = self.store().replicas().is_some();
        if replicas {
            for c in self.conflicts()? {
                if let Some(st) = out.iter_mut().find(|s| s.table == c.table) {
                    st.conflicts += 1;
                }
            }
        }
        for t in self.leftover_tables()? {
            out.push(TableStatus {
                table: t.name,
                input: t.input,
                rows: t.rows,
                leftover: true,
                ..TableStatus::default()
            });
        }
        Ok(out)
    }

    /// Whether any row of any table is stored as failed.
    pub fn has_failures(&self) -> Result<bool> {
        for id in self.graph.derived_in_order() {
            let info = self.graph.table(id).info;
            if !self
                .store()
                .keys_with_status(info, Status::Error, None, 1)?
                .is_empty()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every failed row with its message and the rows it blocks.
    pub fn errors(&self) -> Result<Vec<FailedRow>> {
        let mut out = Vec::new();
        for id in self.graph.derived_in_order().collect::<Vec<_>>() {
            let info = self.graph.table(id).info;
            let downstream: Vec<TableId> = self
                .graph
                .derived_from_root(self.graph.table(id).root)
                .collect();
            self.for_each_page(
                |after| {
                    self.store()
                        .keys_with_status(info, Status::Error, after, BATCH)
                },
                |keys| {
                    for key in keys {
                        let states =
                            self.store()
                                .load(&self.graph, &downstream, &key, Values::None)?;
                        let mut message = String::new();
                        let mut blocks = Vec::new();
                        for (s, &t) in states.iter().zip(&downstream) {
                            match s.as_ref().map(|s| &s.status) {
                                Some(RowStatus::Failed { message: m }) if t == id => {
                                    message = m.clone()
                                }
                                Some(RowStatus::Blocked { table, key: k })
                                    if table == info.name && *k == key =>
                                {
                                    blocks.push((self.name(t).to_owned(), key.clone()))
                                }
                                _ => {}
                            }
                        }
                        out.push(FailedRow {
                            table: info.name.to_owned(),
                            key,
                            message,
                            blocks,
                        });
                    }
                    Ok(())
                },
            )?;
        }
        Ok(out)
    }
}

impl Db {
    /// The verdict on a row that depends on recorded reads, as `explain`
    /// gives it (a row that depends on a stale row is stale); `None` for
    /// an input table.
    fn deep_verdict(&self, session: &Session, id: TableId, key: &Key) -> Result<Option<Verdict>> {
        let row = (id, key.clone());
        Ok(match self.local(&row)? {
            Local::Absent => Some(Verdict::Stale(Cause::Missing)),
            Local::Unsettled { verdict, .. } => Some(verdict),
            Local::Settled { verdict, .. } => match self.unsettled_path(session, &row)? {
                Some(_) => Some(Verdict::Stale(Cause::UpstreamStale(0))),
                None => Some(verdict),
            },
        })
    }
}

/// Counts one row's verdict in its table's status.
fn count(st: &mut TableStatus, verdict: Verdict, stored: bool) {
    st.rows += u64::from(stored);
    match verdict {
        Verdict::Fresh => st.fresh += 1,
        Verdict::Failed => st.failed += 1,
        Verdict::Blocked => st.blocked += 1,
        Verdict::Stale(c) | Verdict::Settling(c) => {
            if c == Cause::Missing {
                st.missing += 1
            } else {
                st.stale += 1
            }
        }
    }
    st.settling += u64::from(matches!(verdict, Verdict::Settling(_)));
}
