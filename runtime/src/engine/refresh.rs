//! Refreshing: planning each row through the judge, whole refresh passes
//! in topological order, `refresh_from`, `retry`, and bringing one row up
//! to date on demand.

use super::compute::{compute_ahead, Env, Work, WorkKind, PARALLEL_ABOVE};
use super::deps::{RowId, Session};
use super::{Db, BATCH};
use crate::error::{Error, Result};
use crate::graph::TableId;
use crate::judge::{input_revisions, judge_with_reads, InputView, Settle, Verdict};
use crate::lease::{AheadLease, HeldRows, Mode};
use crate::report::{Report, TableReport};
use crate::row::Input;
use crate::storage::{
    Backend, ChangeCursor, Fence, Outcome, RecordedRead, Revision, RowState, RowStatus, Status,
    Values,
};
use crate::value::Key;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What to do about one derived row.
pub(crate) enum Plan {
    /// Nothing: settled (fresh, or failed or blocked on unchanged inputs).
    Fresh,
    /// Compute it, or record that it is blocked.
    Work(Work),
    /// An input row is missing (not computed yet, or deleted meanwhile).
    Wait,
    /// Stale, but its root row changed less than `settle` ago.
    Settling,
}

impl Db {
    /// A derived table followed by its inputs: the tables whose state
    /// decides what to do about one of its rows.
    pub(crate) fn with_inputs(&self, id: TableId) -> Vec<TableId> {
        let t = self.graph.table(id);
        let mut tables = Vec::with_capacity(1 + t.inputs.len());
        tables.push(id);
        tables.extend(&t.inputs);
        tables
    }

    pub(crate) fn load_with_inputs(&self, id: TableId, key: &Key) -> Result<Vec<Option<RowState>>> {
        self.store()
            .load(&self.graph, &self.with_inputs(id), key, Values::All)
    }

    /// Decides what to do about one row, given its state and its inputs'
    /// (`states[0]` and then one per input, in parameter order). The inputs
    /// are taken as settled: their tables were refreshed (or their rows
    /// brought up to date) first. In [`Mode::Retry`], a settled row is
    /// computed again.
    pub(crate) fn plan(
        &self,
        id: TableId,
        key: &Key,
        mut states: Vec<Option<RowState>>,
        reads: &[RecordedRead],
        settle: Option<Settle>,
        mode: Mode,
    ) -> Plan {
        let t = self.graph.table(id);
        let n = t.inputs.len();
        states.truncate(1 + n);
        let new = states[0].is_none();
        let (ins, block) = {
            // Most functions have few inputs: no allocation for their views.
            let inputs: smallvec::SmallVec<[InputView<'_>; 4]> = states[1..]
                .iter()
                .map(|s| InputView {
                    state: s.as_ref(),
                    settled: true,
                })
                .collect();
            let Some(ins) = input_revisions(&inputs) else {
                return Plan::Wait;
            };
            let verdict =
                judge_with_reads(states[0].as_ref(), &inputs, reads, self.code(id), settle);
            if verdict.is_settled() && mode != Mode::Retry {
                return Plan::Fresh;
            }
            if matches!(verdict, Verdict::Settling(_)) {
                return Plan::Settling;
            }
            let block =
                inputs
                    .iter()
                    .enumerate()
                    .find_map(|(j, s)| match s.state.map(|s| &s.status) {
                        Some(RowStatus::Failed { .. }) => Some(WorkKind::Block {
                            table: self.name(t.inputs[j]).to_owned(),
                            key: key.clone(),
                        }),
                        Some(RowStatus::Blocked { table, key }) => Some(WorkKind::Block {
                            table: table.clone(),
                            key: key.clone(),
                        }),
                        _ => None,
                    });
            (ins, block)
        };
        let kind = block.unwrap_or_else(|| {
            WorkKind::Compute(
                states
                    .drain(1..)
                    .map(|s| s.map(|s| s.values).unwrap_or_default())
                    .collect(),
            )
        });
        let read_before = match kind {
            WorkKind::Compute(_) => self.derived_reads(reads),
            _ => Vec::new(),
        };
        Plan::Work(Work {
            ins,
            new,
            kind,
            read_before,
        })
    }

    /// Computes every missing and stale row, table by table in topological
    /// order, functions in parallel.
    pub fn refresh(&self) -> Result<Report> {
        self.refresh_with_progress(|_, _| {})
    }

    /// Like [`Db::refresh`], calling `progress(table, report so far)` after
    /// every batch written, and once more when the table's pass ends.
    pub fn refresh_with_progress(
        &self,
        mut progress: impl FnMut(&str, &TableReport),
    ) -> Result<Report> {
        let mut report = Report::default();
        let session = Session::new();
        loop {
            // Whether a row was changed that a table refreshed before it in
            // this round read: then another round.
            let mut again = false;
            let mut passed: Vec<TableId> = Vec::new();
            let changed = |r: &TableReport| r.computed + r.failed + r.blocked > 0;
            for id in self.graph.derived_in_order().collect::<Vec<_>>() {
                let name = self.name(id);
                let mut elsewhere = Report::default();
                let r =
                    self.refresh_table(&session, id, &mut elsewhere, &mut |r| progress(name, r))?;
                let read_by_passed =
                    |t: TableId| self.graph.readers_of(t).any(|x| passed.contains(&x));
                again |= changed(&r) && read_by_passed(id);
                for (t, other) in elsewhere.tables {
                    again |= changed(&other) && read_by_passed(self.graph.table_id(&t)?);
                    report.record(&t, other);
                }
                report.record(name, r);
                passed.push(id);
            }
            if !again {
                return Ok(report);
            }
        }
    }

    /// Recomputes the rows whose function failed, even though their inputs
    /// and code did not change, then refreshes what they unblock.
    pub fn retry(&self) -> Result<Report> {
        let mut report = Report::default();
        for id in self.graph.derived_in_order().collect::<Vec<_>>() {
            let info = self.graph.table(id).info;
            self.for_each_page(
                |after| {
                    self.store()
                        .keys_with_status(info, Status::Error, after, BATCH)
                },
                |keys| {
                    let mut batch = Vec::new();
                    for key in keys {
                        let states = self.load_with_inputs(id, &key)?;
                        if let Plan::Work(work) =
                            self.plan(id, &key, states, &[], None, Mode::Retry)
                        {
                            batch.push((key, work));
                        }
                    }
                    if !batch.is_empty() {
                        let mut elsewhere = Report::default();
                        // Rows another worker holds are being computed
                        // again already.
                        let (r, _held) = self.run_and_resolve(
                            &Session::new(),
                            id,
                            batch,
                            Mode::Retry,
                            &mut elsewhere,
                        )?;
                        report.record(info.name, r);
                        for (t, r) in elsewhere.tables {
                            report.record(&t, r);
                        }
                    }
                    Ok(())
                },
            )?;
        }
        let rest = self.refresh()?;
        for (t, r) in rest.tables {
            report.record(&t, r);
        }
        Ok(report)
    }

    /// Recomputes just the rows derived from one input row.
    pub fn refresh_from<T: Input>(&self, key: impl Into<Key>) -> Result<Report> {
        let id = self.id_of::<T>()?;
        let key = self.coerce_key(id, key.into())?;
        self.refresh_from_id(id, &key)
    }

    /// Like [`Db::refresh_from`], by table id.
    pub fn refresh_from_id(&self, root: TableId, key: &Key) -> Result<Report> {
        if !self.graph.table(root).info.input {
            return Err(Error::NotAnInput(self.name(root).to_owned()));
        }
        if self.load_one(root, key)?.is_none() {
            return Err(self.not_found(root, key));
        }
        let mut report = Report::default();
        let session = Session::new();
        // The rows that may change: stale ones, and the rows that read them
        // (transitively), listed before any is computed.
        let readers: Vec<RowId> = if self.graph.has_reads() {
            self.stale_rows_from(root, key, &session)?
                .into_iter()
                .map(|(row, _)| row)
                .filter(|(t, k)| self.graph.table(*t).root != root || k != key)
                .collect()
        } else {
            Vec::new()
        };
        for id in self.graph.derived_from_root(root).collect::<Vec<_>>() {
            self.ensure(&session, id, key, &mut report)?;
        }
        for row in readers {
            self.resolve(&session, vec![row], &mut report)?;
        }
        Ok(report)
    }

    /// Brings one derived row up to date, its derived inputs first.
    pub(crate) fn ensure(
        &self,
        session: &Session,
        id: TableId,
        key: &Key,
        report: &mut Report,
    ) -> Result<()> {
        if self.reads_upstream(id) {
            return self.resolve(session, vec![(id, key.clone())], report);
        }
        let t = self.graph.table(id);
        for &input in &t.inputs {
            if !self.graph.table(input).info.input {
                self.ensure(session, input, key, report)?;
            }
        }
        loop {
            let states = self.load_with_inputs(id, key)?;
            match self.plan(id, key, states, &[], None, Mode::OnDemand) {
                Plan::Fresh => return Ok(()),
                Plan::Wait | Plan::Settling => return Err(self.not_found(id, key)),
                Plan::Work(work) => {
                    let done =
                        self.execute(session, id, vec![(key.clone(), work)], Mode::OnDemand, &[])?;
                    report.record(t.info.name, done.report);
                    if done.held.is_empty() {
                        return Ok(());
                    }
                    // Another worker holds the row: wait for its result (or
                    // for its lease to expire), then look again.
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Refreshes one derived table: every row whose inputs changed since the
    /// table's watermark, or all rows after a code change.
    ///
    /// A table that records reads also recomputes the rows that read a row
    /// changed (or created, or deleted) since its watermark, and, when it
    /// reads itself, goes on until no row it read changes any more. Rows
    /// computed for others' reads are counted in `elsewhere`.
    fn refresh_table(
        &self,
        session: &Session,
        id: TableId,
        elsewhere: &mut Report,
        progress: &mut dyn FnMut(&TableReport),
    ) -> Result<TableReport> {
        let t = self.graph.table(id);
        let ((start, epoch), watermark) = {
            let store = self.store();
            (store.snapshot()?, store.watermark(t.info.name)?)
        };
        let mut report = TableReport::default();
        let mut complete = true;
        let mut drivers = t.inputs.clone();
        drivers.sort();
        drivers.dedup();
        let mut tables = self.with_inputs(id);
        // With `settle`, the root row's last change time decides too.
        let settles = self.graph.producer(id).is_some_and(|n| n.settle_ms > 0);
        let root_pos = settles.then(|| {
            tables.iter().position(|&x| x == t.root).unwrap_or_else(|| {
                tables.push(t.root);
                tables.len() - 1
            })
        });
        // A table that no refresh has filled yet is built by one ordered
        // scan of its inputs rather than a walk over their changes.
        let building = root_pos.is_none()
            && watermark == Revision::ZERO
            && self.store().is_empty(t.info.name)?;
        // After a build, only the input rows written while it ran are left
        // to walk.
        let mut walk_from = watermark;
        let mut pass = Pass {
            session,
            id,
            report: &mut report,
            elsewhere,
            progress,
            held: HeldRows::default(),
        };
        if building {
            complete &= self.build_table(&mut pass)?;
            walk_from = start;
        }
        let reads = !t.reads.is_empty();
        // The revision up to which every change was walked (for a table
        // that records reads: its walk of readers is not done again).
        let mut walked = Revision::new(i64::MAX);
        for driver in drivers {
            let mut cursor = ChangeCursor::after(walk_from);
            loop {
                self.check_cancel()?;
                let seen = self.store().revision()?;
                let mode = Mode::Refresh { seen };
                let page = self.store().changed_page(
                    &self.graph,
                    driver,
                    &tables,
                    &cursor,
                    BATCH,
                    Values::All,
                )?;
                let Some(last) = page.last() else {
                    walked = walked.min(seen);
                    break;
                };
                cursor = last.cursor.clone();
                let mut batch = Vec::new();
                let now = self.now_ms();
                for row in page {
                    let settle = root_pos
                        .and_then(|p| row.states[p].as_ref())
                        .and_then(|root| self.settle_window(id, root, now));
                    let recorded = if reads {
                        self.reads_for_plan(id, &row.key, &row.states)?
                    } else {
                        Vec::new()
                    };
                    match self.plan(id, &row.key, row.states, &recorded, settle, mode) {
                        Plan::Fresh => {}
                        Plan::Wait => complete = false,
                        Plan::Settling => {
                            pass.report.settling += 1;
                            complete = false;
                        }
                        Plan::Work(work) => batch.push((row.key, work)),
                    }
                }
                complete &= self.run_batch(&mut pass, batch, mode)?;
            }
        }
        complete &= self.wait_for_held(&mut pass)?;
        if reads {
            // The rows that read a row changed since: the first time, since
            // the watermark; then, while rows changed, since the last time.
            let mut since = walk_from;
            loop {
                let began = self.store().revision()?;
                let mut worked = false;
                // One query (paging it would compute the union of readers
                // again for every page), then pages in memory.
                let keys =
                    self.store()
                        .readers_changed_since(&self.graph, id, since, None, usize::MAX)?;
                for keys in keys.chunks(BATCH) {
                    self.check_cancel()?;
                    let mode = Mode::Refresh {
                        seen: self.store().revision()?,
                    };
                    let mut batch = Vec::new();
                    for key in keys {
                        match self.plan_row(id, key, mode)? {
                            Plan::Fresh => {}
                            Plan::Wait | Plan::Settling => complete = false,
                            Plan::Work(work) => batch.push((key.clone(), work)),
                        }
                    }
                    worked |= !batch.is_empty();
                    complete &= self.run_batch(&mut pass, batch, mode)?;
                }
                complete &= self.wait_for_held(&mut pass)?;
                if !worked {
                    walked = walked.min(began);
                    break;
                }
                since = began;
            }
        }
        // The table's pass is over (what it did after its last batch, such
        // as completing the index of reads, included).
        (pass.progress)(pass.report);
        if complete {
            // A table that records reads walked every change up to
            // `walked`: the next pass need not walk its readers again.
            let upto = if reads { walked.max(start) } else { start };
            self.store().mark_processed(t.info.name, upto, epoch)?;
            // Every row of the table is settled, unless it depends on
            // tables refreshed after it.
            let deps = self.dependencies(id);
            if deps[..deps.len() - 1]
                .iter()
                .all(|&d| d == id || self.graph.table(d).info.input || session.is_trusted(d))
            {
                session.trust(id);
            }
        }
        Ok(report)
    }

    /// Computes and writes a batch, then resolves the rows whose
    /// computation stopped on a read (computing what they read first).
    /// Returns the batch's table's report and the rows left to other
    /// workers; rows of other tables computed meanwhile are counted in
    /// `elsewhere`.
    pub(crate) fn run_and_resolve(
        &self,
        session: &Session,
        id: TableId,
        batch: Vec<(Key, Work)>,
        mode: Mode,
        elsewhere: &mut Report,
    ) -> Result<(TableReport, HeldRows)> {
        let done = self.execute(session, id, batch, mode, &[])?;
        let mut report = done.report;
        let mut held = done.held;
        let name = self.name(id);
        let mut stopped = done.stopped;
        // Rows that waited on a row this batch wrote go again, together,
        // while that makes progress (rows of one batch reading each other:
        // a layer at a time); the rest are resolved one by one.
        loop {
            let (ready, waiting): (Vec<_>, Vec<_>) = stopped
                .into_iter()
                .partition(|s| s.stop.waits_on().is_some_and(|r| session.is_settled(&r)));
            stopped = waiting;
            if ready.is_empty() {
                break;
            }
            self.check_cancel()?;
            let mode = Mode::Refresh {
                seen: self.store().revision()?,
            };
            let mut again = Vec::new();
            for s in ready {
                if let Plan::Work(work) = self.plan_row(id, &s.key, mode)? {
                    again.push((s.key, work));
                }
            }
            let done = self.execute(session, id, again, mode, &[])?;
            report.add(&done.report);
            stopped.extend(done.stopped);
            held.extend(done.held);
        }
        for stopped in stopped {
            let mut resolved = Report::default();
            self.resolve_stopped(session, id, stopped, &mut resolved)?;
            for (t, r) in resolved.tables {
                if t == name {
                    report.add(&r);
                } else {
                    elsewhere.record(&t, r);
                }
            }
        }
        Ok((report, held))
    }

    /// Builds a table that was empty when the pass began: its inputs' rows
    /// in key order, a page at a time, with the rows written meanwhile (by
    /// this pass or other workers). Returns whether every row was done.
    ///
    /// With a second connection to the database, the next page is scanned
    /// and planned on another thread while this one computes and writes
    /// the last, so that both cores are busy even for trivial functions.
    fn build_table(&self, pass: &mut Pass<'_>) -> Result<bool> {
        let id = pass.id;
        let connector = self.store().connector();
        let mut complete = true;
        let Some(connector) = connector else {
            // One connection: scan a page, then build it, in turn.
            let mut failed = None;
            self.scan_for_build(id, None, &mut |page| {
                match self.run_page(pass, page, None) {
                    Ok(done) => complete &= done,
                    Err(e) => failed = Some(e),
                }
                failed.is_none()
            })?;
            return failed.map_or(Ok(complete), Err);
        };
        let scanner = connector.connect()?;
        let ahead = AheadLease::default();
        let mut held = Held::default();
        let built = std::thread::scope(|scope| {
            let (send, pages) = std::sync::mpsc::sync_channel::<BuildPage>(1);
            let session = pass.session;
            let ahead = &ahead;
            // Named, for debuggers, profilers and the tests that check
            // which rows it computed ahead.
            let scanning = std::thread::Builder::new()
                .name(SCAN_THREAD.into())
                .spawn_scoped(scope, move || {
                    self.scan_for_build(id, Some((&*scanner, session, ahead)), &mut |page| {
                        send.send(page).is_ok()
                    })
                })
                .map_err(|e| {
                    Error::Storage(format!("cannot start the scanning thread: {e}").into())
                })?;
            let mut built = Ok(());
            for page in pages.iter() {
                match self.run_page(pass, page, Some((ahead, &mut held))) {
                    Ok(done) => complete &= done,
                    Err(e) => {
                        built = Err(e);
                        break;
                    }
                }
            }
            // Stops the scanner, if it is still going.
            ahead.allow(false);
            drop(pages);
            let scanned = scanning
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            built.and(scanned).map(|()| complete)
        });
        // The table is given back whatever happened.
        let released = match held.fence {
            Some(fence) => self.release_table(id, &fence),
            None => Ok(()),
        };
        built.and_then(|complete| released.map(|()| complete))
    }

    /// Computes and writes one planned page of a build pass.
    ///
    /// With `ahead` (a scanning thread of its own): while this worker holds
    /// the whole table between pages (`held`), the scanning thread computes
    /// the pages' rows before they are claimed, and this thread only
    /// writes them ([`Db::write_ahead`]); rows of a page planned before the
    /// table was held are computed here, under it. When other workers show
    /// up, computing ahead stops, and the table is given back with the
    /// first page that was not computed ahead. After a page of cheap rows,
    /// a lone worker takes the table (see [`Db::computes_ahead`]).
    fn run_page(
        &self,
        pass: &mut Pass<'_>,
        page: BuildPage,
        ahead: Option<(&AheadLease, &mut Held)>,
    ) -> Result<bool> {
        let id = pass.id;
        let mut complete = page.complete;
        let Some((lease, held)) = ahead else {
            let done = self.run_batch(pass, page.batch, page.mode)?;
            return Ok(complete && done);
        };
        let mut outcomes = page.ahead;
        let mut batch = page.batch;
        if held.fence.is_some() && !held.stopping && !batch.is_empty() {
            if let Some(node) = self.graph.producer(id) {
                let env = Env {
                    db: self,
                    session: pass.session,
                    table: id,
                    node,
                    stack: &[],
                };
                let (more, all) = compute_ahead(env, std::mem::take(&mut batch));
                outcomes.extend(more);
                complete &= all;
            }
        }
        if !outcomes.is_empty() {
            let mut report = TableReport::default();
            let before = pass.held.count();
            let (again, fence) = self.write_ahead(
                pass.session,
                id,
                outcomes,
                page.mode,
                &mut report,
                &mut pass.held,
            )?;
            report.skipped += (pass.held.count() - before) as u64;
            pass.report.add(&report);
            (pass.progress)(pass.report);
            if !matches!(fence, Fence::Table { .. }) {
                // Others showed up: no more rows computed ahead; the table
                // stays held until those computed already are written.
                lease.allow(false);
                held.stopping = true;
            }
            // Rows whose inputs changed since: computed the usual way.
            if !again.is_empty() {
                let mode = Mode::Refresh {
                    seen: self.store().revision()?,
                };
                complete &= self.run_batch(pass, again, mode)?;
            }
        }
        if !batch.is_empty() {
            if let Some(fence) = held.fence.take() {
                lease.allow(false);
                held.stopping = false;
                self.release_table(id, &fence)?;
            }
            complete &= self.run_batch(pass, batch, page.mode)?;
        }
        if held.fence.is_none() && self.computes_ahead(id) {
            if let Some(fence) = self.hold_table(id)? {
                held.fence = Some(fence);
                held.stopping = false;
                lease.allow(true);
            }
        }
        Ok(complete)
    }

    /// Whether a build's scanning thread computes the rows of `id` itself,
    /// before they are claimed: when this worker was alone at its last
    /// claim, the function reads no other rows, and its rows are known to
    /// be cheap (so that the scanning thread, not the thread pool, is the
    /// right place; the writing thread then only claims and writes).
    fn computes_ahead(&self, id: TableId) -> bool {
        let ns = self.compute_ns[id.index()].load(Ordering::Relaxed);
        self.alone.load(Ordering::Relaxed)
            && self.graph.table(id).reads.is_empty()
            && ns != 0
            && u128::from(ns) < PARALLEL_ABOVE.as_nanos()
    }

    /// Computes and writes one page of planned work (of a refresh or a
    /// build pass), adding to the pass's report; returns whether every row
    /// of it was done or is waited for (none found waiting for an input
    /// row or settling). Rows left to other workers go to the pass's
    /// `held`, for [`Db::wait_for_held`], and are counted as skipped (once:
    /// not again while waited for).
    fn run_batch(&self, pass: &mut Pass<'_>, batch: Vec<(Key, Work)>, mode: Mode) -> Result<bool> {
        let before = pass.held.count();
        let done = self.run_held_batch(pass, batch, mode)?;
        pass.report.skipped += (pass.held.count() - before) as u64;
        Ok(done)
    }

    /// [`Db::run_batch`], without counting the rows held.
    fn run_held_batch(
        &self,
        pass: &mut Pass<'_>,
        batch: Vec<(Key, Work)>,
        mode: Mode,
    ) -> Result<bool> {
        if batch.is_empty() {
            return Ok(true);
        }
        let (r, held) = self.run_and_resolve(pass.session, pass.id, batch, mode, pass.elsewhere)?;
        pass.held.extend(held);
        pass.report.add(&r);
        (pass.progress)(pass.report);
        Ok(r.skipped == 0 && r.settling == 0)
    }

    /// Waits until the rows of a pass that other workers held are done:
    /// by those workers, or, once their leases expire (a worker that died,
    /// or lost its connection), by this one. Looks again at growing
    /// intervals, up to a tenth of the lease time. Returns whether every
    /// one was done (none found waiting for an input row or settling).
    ///
    /// This is what makes a refresh beside other workers complete: when
    /// it returns, no row it found stale is left stale, whoever computed
    /// it.
    fn wait_for_held(&self, pass: &mut Pass<'_>) -> Result<bool> {
        let mut complete = true;
        let longest = (self.lease_ttl() / 10).clamp(Duration::from_millis(10), HELD_POLL);
        let mut pause = Duration::from_millis(2);
        while !pass.held.is_empty() {
            self.check_cancel()?;
            std::thread::sleep(pause);
            pause = (pause * 2).min(longest);
            let (rows, mode) = pass.held.take();
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                self.check_cancel()?;
                let mut batch = Vec::with_capacity(BATCH);
                for (key, work) in rows.by_ref().take(BATCH) {
                    match work {
                        Some(work) => batch.push((key, work)),
                        None => match self.plan_row(pass.id, &key, mode)? {
                            Plan::Fresh => {}
                            Plan::Wait => complete = false,
                            Plan::Settling => {
                                pass.report.settling += 1;
                                complete = false;
                            }
                            Plan::Work(work) => batch.push((key, work)),
                        },
                    }
                }
                complete &= self.run_held_batch(pass, batch, mode)?;
            }
        }
        Ok(complete)
    }

    /// Scans a table's inputs (and the table) in key order through `conn`
    /// (or this `Db`'s own connection), plans every row, and hands each
    /// page's work to `each` until it returns false or the keys run out.
    /// On a connection of its own (another thread), it also computes cheap
    /// rows ahead of their claim ([`Db::write_ahead`]) for the pass of
    /// `session`.
    fn scan_for_build(
        &self,
        id: TableId,
        conn: Option<(&dyn Backend, &Session, &AheadLease)>,
        each: &mut dyn FnMut(BuildPage) -> bool,
    ) -> Result<()> {
        let with = |f: &mut dyn FnMut(&dyn Backend) -> Result<()>| match conn {
            Some((c, _, _)) => f(c),
            None => f(&**self.store()),
        };
        // The inputs, then the table itself: a row another worker wrote
        // meanwhile is seen (and not computed again).
        let mut tables = self.graph.table(id).inputs.clone();
        tables.push(id);
        let mut after: Option<Key> = None;
        // Pages grow while the worker stays alone (fewer, larger
        // transactions), and shrink back when others arrive to share.
        let mut limit = BATCH;
        loop {
            self.check_cancel()?;
            let mut seen = Revision::ZERO;
            let mut page = Vec::new();
            with(&mut |c| {
                seen = c.revision()?;
                page = c.scan_page(
                    &self.graph,
                    &tables,
                    after.as_ref(),
                    limit,
                    Values::AllButLast,
                )?;
                Ok(())
            })?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.key.clone());
            let mode = Mode::Build { seen };
            let mut planned = BuildPage {
                mode,
                batch: Vec::with_capacity(page.len()),
                ahead: Vec::new(),
                complete: true,
            };
            for row in page {
                let mut states = row.states;
                states.rotate_right(1);
                match self.plan(id, &row.key, states, &[], None, mode) {
                    Plan::Fresh => {}
                    Plan::Wait | Plan::Settling => planned.complete = false,
                    Plan::Work(work) => planned.batch.push((row.key, work)),
                }
            }
            if let (Some((_, session, lease)), Some(node)) = (conn, self.graph.producer(id)) {
                if self.computes_ahead(id) {
                    let env = Env {
                        db: self,
                        session,
                        table: id,
                        node,
                        stack: &[],
                    };
                    let batch = &mut planned.batch;
                    let done = lease.compute(|| compute_ahead(env, std::mem::take(batch)));
                    if let Some((ahead, all)) = done {
                        planned.ahead = ahead;
                        planned.complete &= all;
                    }
                }
            }
            if !each(planned) {
                return Ok(());
            }
            limit = if self.alone.load(Ordering::Relaxed) {
                (limit * 2).min(BUILD_BATCH)
            } else {
                BATCH
            };
        }
    }
}

/// One refresh pass over a table: where its counts go.
struct Pass<'a> {
    session: &'a Session,
    id: TableId,
    report: &'a mut TableReport,
    elsewhere: &'a mut Report,
    progress: &'a mut dyn FnMut(&TableReport),
    /// Rows other workers held when this pass came to them: waited for
    /// before the pass ends ([`Db::wait_for_held`]).
    held: HeldRows,
}

/// How often a pass looks again, at most, at rows other workers hold.
const HELD_POLL: Duration = Duration::from_millis(200);

/// The table a lone worker's build holds between pages, to compute ahead
/// (see [`Db::run_page`]).
#[derive(Default)]
struct Held {
    /// The table lease, while held.
    fence: Option<Fence>,
    /// Computing ahead was stopped (other workers showed up): the table is
    /// given back with the first page not computed ahead.
    stopping: bool,
}

/// One planned page of a build pass.
struct BuildPage {
    /// How it was planned.
    mode: Mode,
    /// The rows to compute or block.
    batch: Vec<(Key, Work)>,
    /// Rows computed ahead of their claim, by the scanning thread.
    ahead: Vec<Outcome>,
    /// Whether every row of the page could be planned.
    complete: bool,
}

/// How many rows a build pass reads, computes and writes together at most,
/// when the worker stays alone (results are also written at least every
/// [`super::compute::COMMIT_EVERY`]). With other workers about, pages of
/// [`BATCH`] rows share the work out.
const BUILD_BATCH: usize = 8192;

/// The name of a build's scanning thread (which also computes rows ahead).
const SCAN_THREAD: &str = "rederive-scan";
