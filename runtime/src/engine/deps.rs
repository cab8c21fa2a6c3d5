//! Cross-row dependencies: rows that read other rows through their `ctx`.
//!
//! A row is **settled** when the judge settles it (from its own state, its
//! inputs' and its recorded reads') and every derived row it is computed
//! from or read is settled too. Whether that holds is asked row by row,
//! depth first with an explicit stack (a 5,000-long chain of reads needs no
//! deeper native stack than one read), and remembered for the rest of the
//! operation in its [`Session`]. Rows on a cycle of reads that the judge
//! settles are settled together (a stored cycle error stays settled until
//! a row on it changes).
//!
//! A function never computes what it reads: a `ctx.get` of a row that is
//! not settled stops the computation ([`Stop::NotReady`]), whose result is
//! then discarded. [`Db::resolve`] keeps an explicit stack of the rows
//! waiting: it computes the row read, then the reader again. A read of a row
//! already on the stack closes a cycle: every row of the cycle is stored as
//! failed with one message naming them all, in an order that does not
//! depend on where the cycle was entered.
//!
//! **A reader runs once.** Before a row's function is called, the rows its
//! last computation read (its recorded reads) are settled, as salsa
//! verifies a query's previous dependencies before running it: when one is
//! not, the function is not called ([`Stop::ReadBefore`]) and that row is
//! settled first. So a function whose reads are the same rows as last time
//! is called once; only a read of a row it never read before stops it.
//! Such a wait is a guess (the function may not read that row this time):
//! a guess that leads back to a row waiting below it proves no cycle, so
//! it is given up, and the row that made it is computed without it; only
//! waits on rows actually read (or computed from) make a cycle.

use super::compute::{Env, Stopped, Work, WorkKind};
use super::refresh::Plan;
use super::Db;
use crate::ctx::{cycle_message, ReadError, ReadRows};
use crate::error::{Error, Result};
use crate::graph::TableId;
use crate::judge::{input_revisions, judge_with_reads, InputView, Verdict};
use crate::lease::Mode;
use crate::report::Report;
use crate::row::TableInfo;
use crate::storage::{Read, RecordedRead, RowState, RowStatus, Values};
use crate::value::{Key, Value};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// A row: its table and key.
pub(crate) type RowId = (TableId, Key);

/// What one operation (a refresh, a `get`) learnt about which rows are
/// settled. Rows written by the operation are settled; a row whose value
/// changed unsettles what it knew about the rows that depend on it.
#[derive(Default)]
pub(crate) struct Session {
    settled: Mutex<HashSet<RowId>>,
    /// Tables whose every row is settled (by their marks, or by a pass of
    /// this operation), or not.
    trusted: Mutex<HashMap<TableId, bool>>,
}

impl Session {
    pub(crate) fn new() -> Session {
        Session::default()
    }

    pub(crate) fn is_settled(&self, row: &RowId) -> bool {
        self.settled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(row)
    }

    pub(crate) fn settle(&self, row: RowId) {
        self.settled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(row);
    }

    /// Forgets that `row` was settled; returns whether it was known so.
    fn unsettle(&self, row: &RowId) -> bool {
        self.settled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(row)
    }

    /// Records that every row of a table is settled (a refresh pass did
    /// it in this operation).
    pub(crate) fn trust(&self, table: TableId) {
        self.trusted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(table, true);
    }

    /// Whether every row of a table is known settled.
    pub(crate) fn is_trusted(&self, table: TableId) -> bool {
        self.trusted(table) == Some(true)
    }

    fn trusted(&self, table: TableId) -> Option<bool> {
        self.trusted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&table)
            .copied()
    }

    fn set_trusted(&self, table: TableId, trusted: bool) {
        self.trusted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(table)
            .or_insert(trusted);
    }
}

/// Why a row's computation stopped without a result to store.
#[derive(Debug)]
pub(crate) enum Stop {
    /// It read a row that must be computed first.
    NotReady(TableId, Key),
    /// A row its last computation read is not settled: the function was
    /// not called; that row is settled first.
    ReadBefore(TableId, Key),
    /// It read a row that waits on it: the rows of the cycle are those of
    /// the stack from this position on, and the row itself.
    Cycle(usize),
    /// The database could not be read.
    Storage(Error),
}

impl Stop {
    /// The row to settle before the computation can go on, if any.
    pub(crate) fn waits_on(&self) -> Option<RowId> {
        match self {
            Stop::NotReady(t, k) | Stop::ReadBefore(t, k) => Some((*t, k.clone())),
            Stop::Cycle(_) | Stop::Storage(_) => None,
        }
    }
}

/// The reads of one computation: what its `ctx` goes through.
pub(crate) struct RowReader<'a> {
    env: Env<'a>,
    key: &'a Key,
    reads: RefCell<Vec<Read>>,
    stop: RefCell<Option<Stop>>,
    undeclared: RefCell<Option<String>>,
}

impl<'a> RowReader<'a> {
    pub(crate) fn new(env: Env<'a>, key: &'a Key) -> RowReader<'a> {
        RowReader {
            env,
            key,
            reads: RefCell::new(Vec::new()),
            stop: RefCell::new(None),
            undeclared: RefCell::new(None),
        }
    }

    /// The reads made (sorted, each row once), why the computation stopped
    /// if it did, and the message of a read of an undeclared table.
    pub(crate) fn finish(self) -> (Vec<Read>, Option<Stop>, Option<String>) {
        let mut reads = self.reads.into_inner();
        reads.sort();
        reads.dedup_by(|a, b| a.table == b.table && a.key == b.key);
        (reads, self.stop.into_inner(), self.undeclared.into_inner())
    }

    fn stop(&self, stop: Stop) {
        self.stop.borrow_mut().get_or_insert(stop);
    }

    /// Before the function is called: the first of `rows` (the derived rows
    /// its last computation read) that is not settled, as a stop, so that
    /// it is settled before the call rather than between two calls. A row
    /// that may close a cycle (the row itself, or one waiting on it) is
    /// left to the call: only a read makes a cycle.
    pub(crate) fn settle_read_before(&self, rows: &[RowId]) -> Option<Stop> {
        let db = self.env.db;
        for row in rows {
            let me = row.0 == self.env.table && &row.1 == self.key;
            if me || self.env.stack.contains(row) {
                continue;
            }
            match db.is_settled_now(self.env.session, row) {
                Ok(true) => {}
                Ok(false) => return Some(Stop::ReadBefore(row.0, row.1.clone())),
                Err(e) => return Some(Stop::Storage(e)),
            }
        }
        None
    }
}

impl ReadRows for RowReader<'_> {
    fn read(&self, info: &'static TableInfo, key: Key) -> Result<Option<Vec<Value>>, ReadError> {
        let db = self.env.db;
        let graph = db.graph();
        let not_ready = |key: Key| ReadError::NotReady {
            table: info.name.to_owned(),
            key,
        };
        if self.stop.borrow().is_some() {
            // The result is discarded anyway: read nothing more.
            return Err(not_ready(key));
        }
        let declared = graph.table_id(info.name).ok().filter(|&id| {
            graph.table(self.env.table).reads.contains(&id)
                && graph.table(id).info.type_path == info.type_path
        });
        let Some(id) = declared else {
            let e = ReadError::Undeclared {
                function: self.env.node.name.to_owned(),
                table: info.name.to_owned(),
            };
            self.undeclared.borrow_mut().get_or_insert(e.to_string());
            return Err(e);
        };
        let key = db
            .coerce_key(id, key.clone())
            .map_err(|_| ReadError::KeyType {
                table: info.name.to_owned(),
                key,
                expected: graph.key_type(id).to_string(),
            })?;
        let state = if info.input {
            db.load_one(id, &key)
        } else {
            let me = (self.env.table, self.key.clone());
            let row = (id, key.clone());
            let stack = self.env.stack;
            let at = if row == me {
                Some(stack.len())
            } else {
                stack.iter().position(|r| *r == row)
            };
            if let Some(p) = at {
                let mut rows = stack[p..].to_vec();
                rows.push(me);
                self.stop(Stop::Cycle(p));
                return Err(ReadError::Cycle {
                    rows: db.named(&canonical(db, rows)),
                });
            }
            match db.settled_for_read(self.env.session, &row) {
                Ok(Some(state)) => Ok(state),
                Ok(None) => {
                    self.stop(Stop::NotReady(id, key.clone()));
                    return Err(not_ready(key));
                }
                Err(e) => Err(e),
            }
        };
        let state = match state {
            Ok(state) => state,
            Err(e) => {
                let message = e.to_string();
                self.stop(Stop::Storage(e));
                return Err(ReadError::Storage {
                    table: info.name.to_owned(),
                    key,
                    message,
                });
            }
        };
        self.reads.borrow_mut().push(Read {
            table: id,
            key: key.clone(),
            seen: state.as_ref().map(|s| s.changed_at),
        });
        let Some(state) = state else {
            return Ok(None);
        };
        match state.status {
            RowStatus::Ok => Ok(Some(state.values)),
            RowStatus::Failed { message } => Err(ReadError::Failed {
                table: info.name.to_owned(),
                key,
                message,
            }),
            RowStatus::Blocked { table, key: origin } => Err(ReadError::Blocked {
                table: info.name.to_owned(),
                key,
                failed_table: table,
                failed_key: origin,
            }),
        }
    }
}

/// The rows of a cycle, starting from the least by table name and key,
/// so that the cycle reads the same wherever it was entered.
fn canonical(db: &Db, mut rows: Vec<RowId>) -> Vec<RowId> {
    let least = rows
        .iter()
        .enumerate()
        .min_by(|(_, a), (_, b)| (db.name(a.0), &a.1).cmp(&(db.name(b.0), &b.1)))
        .map_or(0, |(i, _)| i);
    rows.rotate_left(least);
    rows
}

/// The rows [`Db::resolve`] settles: each waits on the one above it, the
/// last is settled first.
struct Waiting {
    rows: Vec<RowId>,
    /// The positions (ascending) of rows put on the stack because the row
    /// below read them last time: a guess, since it may not read them this
    /// time. A cycle through one is not proven.
    guesses: Vec<usize>,
}

impl Waiting {
    fn new(rows: Vec<RowId>) -> Waiting {
        Waiting {
            rows,
            guesses: Vec::new(),
        }
    }

    /// Where the rows begin whose waits are all proven (each read, or is
    /// computed from, the one above it).
    fn proven_from(&self) -> usize {
        self.guesses.last().copied().unwrap_or(0)
    }

    fn position(&self, row: &RowId) -> Option<usize> {
        self.rows.iter().position(|r| r == row)
    }

    /// Puts a row on the stack on a guess (of the row on top: there is
    /// one).
    fn guess(&mut self, row: RowId) {
        self.guesses.push(self.rows.len());
        self.rows.push(row);
    }

    fn pop(&mut self) {
        self.truncate(self.rows.len().saturating_sub(1));
    }

    fn truncate(&mut self, len: usize) {
        self.rows.truncate(len);
        while self.guesses.last().is_some_and(|&g| g >= len) {
            self.guesses.pop();
        }
    }

    /// Gives the last guess up (it led back to a row waiting on it): the
    /// row that made it is computed without it.
    fn give_up(&mut self, given_up: &mut HashSet<(RowId, RowId)>) {
        let Some(&g) = self.guesses.last() else {
            return;
        };
        given_up.insert((self.rows[g - 1].clone(), self.rows[g].clone()));
        self.truncate(g);
    }
}

/// What the judge says about one row, alone.
pub(crate) enum Local {
    /// Its root row does not exist: there is no such row to compute.
    Absent,
    /// The judge settles it; it is settled if these rows are.
    Settled {
        verdict: Verdict,
        children: Vec<RowId>,
    },
    /// It needs computing (`first`: after this row it is computed from,
    /// which is missing).
    Unsettled {
        verdict: Verdict,
        reads: Vec<RecordedRead>,
        first: Option<RowId>,
    },
}

impl Db {
    /// The rows' names, for messages.
    pub(crate) fn named(&self, rows: &[RowId]) -> Vec<(String, Key)> {
        rows.iter()
            .map(|(t, k)| (self.name(*t).to_owned(), k.clone()))
            .collect()
    }

    /// Whether every row of a table is known settled in this session.
    fn trusted(&self, session: &Session, table: TableId) -> Result<bool> {
        if self.graph.table(table).info.input {
            return Ok(true);
        }
        if let Some(t) = session.trusted(table) {
            return Ok(t);
        }
        let t = self
            .store()
            .tables_settled(&self.graph, self.dependencies(table))?;
        session.set_trusted(table, t);
        Ok(t)
    }

    /// The judge's verdict on one row alone, from its state, its inputs'
    /// and its recorded reads'.
    pub(crate) fn local(&self, row: &RowId) -> Result<Local> {
        let (id, key) = row;
        let t = self.graph.table(*id);
        if t.info.input {
            return Ok(match self.load_one(*id, key)? {
                Some(_) => Local::Settled {
                    verdict: Verdict::Fresh,
                    children: Vec::new(),
                },
                None => Local::Absent,
            });
        }
        let mut tables = self.with_inputs(*id);
        let root = match tables.iter().position(|&x| x == t.root) {
            Some(p) => p,
            None => {
                tables.push(t.root);
                tables.len() - 1
            }
        };
        let states = self.store().load(&self.graph, &tables, key, Values::None)?;
        if states[root].is_none() {
            return Ok(Local::Absent);
        }
        let reads = if !t.reads.is_empty() && states[0].is_some() {
            self.store().reads_of(&self.graph, *id, key)?
        } else {
            Vec::new()
        };
        let inputs: Vec<InputView<'_>> = states[1..=t.inputs.len()]
            .iter()
            .map(|s| InputView {
                state: s.as_ref(),
                settled: true,
            })
            .collect();
        let verdict = judge_with_reads(states[0].as_ref(), &inputs, &reads, self.code(*id), None);
        if !verdict.is_settled() {
            // A derived input row that is missing is computed first.
            let first = t
                .inputs
                .iter()
                .zip(&states[1..=t.inputs.len()])
                .find(|(&input, state)| state.is_none() && !self.graph.table(input).info.input)
                .map(|(&input, _)| (input, key.clone()));
            return Ok(Local::Unsettled {
                verdict,
                reads,
                first,
            });
        }
        let mut children: Vec<RowId> = t
            .inputs
            .iter()
            .filter(|&&i| !self.graph.table(i).info.input)
            .map(|&i| (i, key.clone()))
            .collect();
        for r in reads {
            if self.graph.table(r.read.table).info.input {
                continue;
            }
            // A derived row read as absent whose root row exists now is
            // missing: it must be computed (and then the read changed).
            if r.now.is_some() || self.root_exists(r.read.table, &r.read.key)? {
                children.push((r.read.table, r.read.key));
            }
        }
        children.dedup();
        Ok(Local::Settled { verdict, children })
    }

    /// Whether the root row of a key of a table exists.
    fn root_exists(&self, table: TableId, key: &Key) -> Result<bool> {
        Ok(self.load_one(self.graph.table(table).root, key)?.is_some())
    }

    /// `None` when `start` is settled; else the path from `start` to the
    /// first row found that needs computing (which may be `start`). Rows
    /// found settled are remembered in the session.
    pub(crate) fn unsettled_path(
        &self,
        session: &Session,
        start: &RowId,
    ) -> Result<Option<Vec<RowId>>> {
        struct Frame {
            row: RowId,
            children: Vec<RowId>,
            next: usize,
            /// No row of its subtree was taken as settled because it was
            /// being checked (on a cycle): then it is settled on its own.
            clean: bool,
        }
        if session.is_settled(start) {
            return Ok(None);
        }
        let mut frames: Vec<Frame> = Vec::new();
        let mut on_path: HashSet<RowId> = HashSet::new();
        let mut provisional: Vec<RowId> = Vec::new();
        let mut provisional_set: HashSet<RowId> = HashSet::new();
        let path = |frames: &[Frame], last: &RowId, first: Option<RowId>| {
            let mut p: Vec<RowId> = frames.iter().map(|f| f.row.clone()).collect();
            if p.last() != Some(last) {
                p.push(last.clone());
            }
            p.extend(first);
            Some(p)
        };
        match self.local(start)? {
            Local::Absent => {
                session.settle(start.clone());
                return Ok(None);
            }
            Local::Unsettled { first, .. } => return Ok(path(&[], start, first)),
            Local::Settled { children, .. } => {
                on_path.insert(start.clone());
                frames.push(Frame {
                    row: start.clone(),
                    children,
                    next: 0,
                    clean: true,
                });
            }
        }
        while let Some(top) = frames.last_mut() {
            if top.next < top.children.len() {
                let child = top.children[top.next].clone();
                top.next += 1;
                if session.is_settled(&child) {
                    continue;
                }
                if on_path.contains(&child) || provisional_set.contains(&child) {
                    top.clean = false;
                    continue;
                }
                if self.trusted(session, child.0)? {
                    continue;
                }
                match self.local(&child)? {
                    Local::Absent => session.settle(child),
                    Local::Unsettled { first, .. } => return Ok(path(&frames, &child, first)),
                    Local::Settled { children, .. } => {
                        on_path.insert(child.clone());
                        frames.push(Frame {
                            row: child,
                            children,
                            next: 0,
                            clean: true,
                        });
                    }
                }
            } else {
                let done = frames.pop().expect("a frame is on the stack");
                on_path.remove(&done.row);
                if done.clean {
                    session.settle(done.row);
                } else {
                    if let Some(parent) = frames.last_mut() {
                        parent.clean = false;
                    }
                    provisional_set.insert(done.row.clone());
                    provisional.push(done.row);
                }
            }
        }
        // Every row visited is settled: those taken as settled while being
        // checked were, since nothing on their cycles needs computing.
        for row in provisional {
            session.settle(row);
        }
        Ok(None)
    }

    /// Whether a derived row is settled (found so now, if not known).
    fn is_settled_now(&self, session: &Session, row: &RowId) -> Result<bool> {
        Ok(session.is_settled(row)
            || self.trusted(session, row.0)?
            || self.unsettled_path(session, row)?.is_none())
    }

    /// The derived rows among recorded reads (rows of input tables are
    /// settled by definition).
    pub(crate) fn derived_reads(&self, reads: &[RecordedRead]) -> Vec<RowId> {
        reads
            .iter()
            .filter(|r| !self.graph.table(r.read.table).info.input)
            .map(|r| (r.read.table, r.read.key.clone()))
            .collect()
    }

    /// The state of a derived row for a read: `Some(state)` once it is
    /// settled (`Some(None)`: there is no such row), `None` when it must be
    /// computed first.
    fn settled_for_read(&self, session: &Session, row: &RowId) -> Result<Option<Option<RowState>>> {
        let settled = self.is_settled_now(session, row)?;
        Ok(if settled {
            Some(self.load_one(row.0, &row.1)?)
        } else {
            None
        })
    }

    /// After a row's value changed: the rows known settled that depend on
    /// it (read it, or are computed from it) are not any more.
    pub(crate) fn unsettle_dependents(&self, session: &Session, row: RowId) -> Result<()> {
        let mut todo = vec![row];
        while let Some((t, k)) = todo.pop() {
            for reader in self.graph.readers(t).collect::<Vec<_>>() {
                let r = (reader, k.clone());
                if session.unsettle(&r) {
                    todo.push(r);
                }
            }
            if self.graph.readers_of(t).next().is_some() {
                for r in self.store().readers_of(&self.graph, t, &k)? {
                    if session.unsettle(&r) {
                        todo.push(r);
                    }
                }
            }
        }
        Ok(())
    }

    /// What to do about one row, from its stored state, its inputs' and
    /// its recorded reads'.
    pub(crate) fn plan_row(&self, id: TableId, key: &Key, mode: Mode) -> Result<Plan> {
        let states = self.load_with_inputs(id, key)?;
        let reads = self.reads_for_plan(id, key, &states)?;
        Ok(self.plan(id, key, states, &reads, None, mode))
    }

    /// The recorded reads of a row, when its table records reads and the
    /// row exists.
    pub(crate) fn reads_for_plan(
        &self,
        id: TableId,
        key: &Key,
        states: &[Option<RowState>],
    ) -> Result<Vec<RecordedRead>> {
        if self.graph.table(id).reads.is_empty() || states.first().is_none_or(Option::is_none) {
            return Ok(Vec::new());
        }
        self.store().reads_of(&self.graph, id, key)
    }

    /// Settles the last row of `stack` (the rows below it wait on it, in
    /// order): computes, depth first, every row it depends on that needs
    /// it, and then the row. Rows another worker holds are waited for.
    pub(crate) fn resolve(
        &self,
        session: &Session,
        stack: Vec<RowId>,
        report: &mut Report,
    ) -> Result<()> {
        self.resolve_waiting(session, Waiting::new(stack), report)
    }

    /// Settles a row of table `id` whose computation in a batch stopped:
    /// what it waits on first, then the row.
    pub(crate) fn resolve_stopped(
        &self,
        session: &Session,
        id: TableId,
        stopped: Stopped,
        report: &mut Report,
    ) -> Result<()> {
        let mut waiting = Waiting::new(vec![(id, stopped.key)]);
        match stopped.stop {
            Stop::NotReady(t, k) => waiting.rows.push((t, k)),
            Stop::ReadBefore(t, k) => waiting.guess((t, k)),
            Stop::Cycle(_) | Stop::Storage(_) => {}
        }
        self.resolve_waiting(session, waiting, report)
    }

    /// [`Db::resolve`], from rows some of which wait on a guess.
    fn resolve_waiting(
        &self,
        session: &Session,
        mut waiting: Waiting,
        report: &mut Report,
    ) -> Result<()> {
        // The reads of each waiting row's last (stopped) computation.
        let mut reads_at: HashMap<RowId, Vec<Read>> = HashMap::new();
        // Guesses given up: (row, a row it read last time) whose settling
        // led back to a row waiting on it.
        let mut given_up: HashSet<(RowId, RowId)> = HashSet::new();
        'rows: while let Some(top) = waiting.rows.last().cloned() {
            self.check_cancel()?;
            if session.is_settled(&top) {
                waiting.pop();
                continue;
            }
            let Some(path) = self.unsettled_path(session, &top)? else {
                waiting.pop();
                continue;
            };
            if path.len() > 1 {
                // A row it depends on needs computing first.
                self.wait_on(
                    session,
                    &mut waiting,
                    &path[1..],
                    &mut given_up,
                    &reads_at,
                    report,
                )?;
                continue;
            }
            let (id, key) = top.clone();
            // Its derived inputs are settled first (the rows it is computed
            // from; what it reads, its computation asks for).
            for &input in &self.graph.table(id).inputs {
                if self.graph.table(input).info.input {
                    continue;
                }
                if let Some(path) = self.unsettled_path(session, &(input, key.clone()))? {
                    self.wait_on(
                        session,
                        &mut waiting,
                        &path,
                        &mut given_up,
                        &reads_at,
                        report,
                    )?;
                    continue 'rows;
                }
            }
            match self.plan_row(id, &key, Mode::OnDemand)? {
                Plan::Fresh | Plan::Wait | Plan::Settling => {
                    // Settled meanwhile, or cannot be computed (an input
                    // row is gone): the caller finds out which.
                    session.settle(top);
                    waiting.pop();
                }
                Plan::Work(mut work) => {
                    // No guess that leads straight back to a row waiting
                    // here, nor one given up.
                    work.read_before.retain(|r| {
                        !waiting.rows.contains(r) && !given_up.contains(&(top.clone(), r.clone()))
                    });
                    // Cycles are looked for among the rows above the last
                    // guess only: below it, a wait is not proven.
                    let proven = waiting.proven_from();
                    let below = &waiting.rows[proven..waiting.rows.len() - 1];
                    let done = self.execute(
                        session,
                        id,
                        vec![(key.clone(), work)],
                        Mode::OnDemand,
                        below,
                    )?;
                    let skipped = !done.held.is_empty();
                    report.record(self.name(id), done.report);
                    if let Some(stopped) = done.stopped.into_iter().next() {
                        reads_at.insert(top.clone(), stopped.reads);
                        match stopped.stop {
                            Stop::NotReady(t, k) => {
                                let row = (t, k);
                                match waiting.position(&row) {
                                    // It read a row waiting below a guess.
                                    Some(p) if p < proven => waiting.give_up(&mut given_up),
                                    Some(p) => {
                                        let cycle = waiting.rows[p..].to_vec();
                                        self.write_cycle(session, cycle, &reads_at, report)?;
                                        waiting.truncate(p);
                                    }
                                    None => waiting.rows.push(row),
                                }
                            }
                            Stop::ReadBefore(t, k) => {
                                let row = (t, k);
                                if waiting.position(&row).is_some() {
                                    given_up.insert((top, row));
                                } else {
                                    waiting.guess(row);
                                }
                            }
                            Stop::Cycle(p) => {
                                let p = proven + p;
                                let cycle = waiting.rows[p..].to_vec();
                                self.write_cycle(session, cycle, &reads_at, report)?;
                                waiting.truncate(p);
                            }
                            Stop::Storage(e) => return Err(e),
                        }
                    } else if skipped {
                        // Another worker holds the row: wait for its result
                        // (or for its lease to expire), then look again.
                        std::thread::sleep(Duration::from_millis(10));
                    } else {
                        waiting.pop();
                    }
                }
            }
        }
        Ok(())
    }

    /// The top of `waiting` waits on the rows of `path` (each depending on
    /// the next): they go on the stack, unless one of them is on it
    /// already, which closes a cycle (stored, and taken off the stack) when
    /// no guess is on the way round, and else gives the last guess up.
    fn wait_on(
        &self,
        session: &Session,
        waiting: &mut Waiting,
        path: &[RowId],
        given_up: &mut HashSet<(RowId, RowId)>,
        reads_at: &HashMap<RowId, Vec<Read>>,
        report: &mut Report,
    ) -> Result<()> {
        for (i, row) in path.iter().enumerate() {
            if let Some(p) = waiting.position(row) {
                if p < waiting.proven_from() {
                    waiting.give_up(given_up);
                    return Ok(());
                }
                let mut cycle = waiting.rows[p..].to_vec();
                cycle.extend(path[..i].iter().cloned());
                self.write_cycle(session, cycle, reads_at, report)?;
                waiting.truncate(p);
                return Ok(());
            }
        }
        waiting.rows.extend(path.iter().cloned());
        Ok(())
    }

    /// Stores every row of a cycle of reads as failed, with one message
    /// naming the rows, and the reads each made (`reads_at`, or for a row
    /// not computed, its recorded reads). A read of another row of the
    /// cycle records that row's `changed_at` as written here (so a second
    /// write follows the first when the message is new), so that the rows
    /// stay settled until a row on the cycle changes.
    fn write_cycle(
        &self,
        session: &Session,
        rows: Vec<RowId>,
        reads_at: &HashMap<RowId, Vec<Read>>,
        report: &mut Report,
    ) -> Result<()> {
        let rows = canonical(self, rows);
        let message = cycle_message(&self.named(&rows));
        let changed_at = |rows: &[RowId]| -> Result<Vec<_>> {
            rows.iter()
                .map(|(t, k)| Ok(self.load_one(*t, k)?.map(|s| s.changed_at)))
                .collect()
        };
        for phase in 0..2 {
            let before = changed_at(&rows)?;
            let mut batches: std::collections::BTreeMap<TableId, Vec<(Key, Work)>> =
                Default::default();
            for row in &rows {
                let (id, key) = row;
                let mut reads = match reads_at.get(row) {
                    Some(reads) => reads.clone(),
                    None => self
                        .store()
                        .reads_of(&self.graph, *id, key)?
                        .into_iter()
                        .map(|r| Read {
                            seen: r.now,
                            ..r.read
                        })
                        .collect(),
                };
                // Each row of the cycle reads the next (that read stopped
                // its computation, so it was not recorded with the others).
                let i = rows.iter().position(|x| x == row).unwrap_or_default();
                let next = &rows[(i + 1) % rows.len()];
                if !reads.iter().any(|r| r.table == next.0 && r.key == next.1) {
                    reads.push(Read {
                        table: next.0,
                        key: next.1.clone(),
                        seen: None,
                    });
                    reads.sort();
                }
                for r in &mut reads {
                    if let Some(p) = rows.iter().position(|x| x.0 == r.table && x.1 == r.key) {
                        r.seen = before[p];
                    }
                }
                let states = self.load_with_inputs(*id, key)?;
                let views: Vec<InputView<'_>> = states[1..]
                    .iter()
                    .map(|s| InputView {
                        state: s.as_ref(),
                        settled: true,
                    })
                    .collect();
                let Some(ins) = input_revisions(&views) else {
                    continue;
                };
                let work = Work {
                    ins,
                    new: states[0].is_none(),
                    kind: WorkKind::Fail {
                        message: message.clone(),
                        reads,
                    },
                    read_before: Vec::new(),
                };
                batches.entry(*id).or_default().push((key.clone(), work));
            }
            // One batch per table.
            for (id, batch) in batches {
                let done = self.execute(session, id, batch, Mode::OnDemand, &[])?;
                if phase == 0 {
                    report.record(self.name(id), done.report);
                }
            }
            if changed_at(&rows)? == before {
                break;
            }
        }
        for row in rows {
            session.settle(row);
        }
        Ok(())
    }
}
