//! Leases: how workers (threads and processes) share one database without
//! computing a row twice, and the pipeline every batch goes through:
//! **claim → re-plan → compute → commit**.
//!
//! A worker claims rows before computing them (or, when it is the only live
//! worker, the whole table for one batch), extends its leases from a
//! heartbeat thread while its functions run, and writes a result only while
//! it still holds the lease: the claim's fence is checked in the write
//! transaction. A crashed worker's leases expire and its rows are taken
//! over. The storage side of claims and fences is [`crate::storage::Leases`].

use crate::engine::compute::{compute_in_chunks, Env, Stopped, Work, WorkKind, COMMIT_EVERY};
use crate::engine::deps::{Session, Stop};
use crate::engine::refresh::Plan;
use crate::engine::Db;
use crate::error::{Error, Result};
use crate::graph::TableId;
use crate::report::TableReport;
use crate::storage::{
    Backend, Claim, ClaimMode, Fence, Outcome, OutcomeKind, Pass, Revision, Written,
};
use crate::value::Key;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What a batch did: its report, the rows whose computation stopped
/// (given back, not written), and the rows left to other workers.
pub(crate) struct Executed {
    pub report: TableReport,
    pub stopped: Vec<Stopped>,
    /// Rows not done here: another worker held them at the claim, or the
    /// write found a newer result or this worker's lease taken over. The
    /// caller looks at them again until they are done, by whoever holds
    /// them or, once their lease expires, by this worker.
    pub held: HeldRows,
}

/// Rows left to other workers (see [`Executed::held`]), to look at again.
#[derive(Default)]
pub(crate) struct HeldRows {
    /// Each row, with its plan when it was never claimed (`None`: plan it
    /// again).
    rows: Vec<(Key, Option<Work>)>,
    /// A revision at or before the one at which those plans were read.
    seen: Option<Revision>,
}

impl HeldRows {
    /// A row planned (as `mode` says) whose claim was refused.
    pub(crate) fn push_planned(&mut self, key: Key, work: Work, mode: Mode) {
        let read_at = mode.read_at();
        self.seen = Some(self.seen.map_or(read_at, |s| s.min(read_at)));
        self.rows.push((key, Some(work)));
    }

    /// A row to plan again.
    pub(crate) fn push_key(&mut self, key: Key) {
        self.rows.push((key, None));
    }

    pub(crate) fn extend(&mut self, other: HeldRows) {
        if let Some(seen) = other.seen {
            self.seen = Some(self.seen.map_or(seen, |s| s.min(seen)));
        }
        self.rows.extend(other.rows);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// How many rows.
    pub(crate) fn count(&self) -> usize {
        self.rows.len()
    }

    /// The rows, and a mode under which their plans may be executed:
    /// planned at a revision no later than every plan's (so that the
    /// claim plans again whatever a write since may have changed).
    /// A row held twice (planned by a build page, then by the walk of the
    /// changes made during the build) is taken once: a batch that claims
    /// a key twice would compute it twice.
    pub(crate) fn take(&mut self) -> (Vec<(Key, Option<Work>)>, Mode) {
        let seen = self.seen.take().unwrap_or(Revision::ZERO);
        let mut rows = std::mem::take(&mut self.rows);
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.dedup_by(|a, b| a.0 == b.0);
        (rows, Mode::Refresh { seen })
    }
}

/// Leases a worker failed to give back (its connection was lost): the
/// heartbeat gives them back once the database answers again, so that
/// other workers need not wait for them to expire (and the heartbeat does
/// not keep them alive meanwhile).
#[derive(Default)]
pub(crate) struct Orphans {
    leases: std::sync::Mutex<Vec<Orphan>>,
}

/// A table's leases to give back: the table lease, or rows.
struct Orphan {
    table: String,
    fence: Fence,
    keys: Vec<Key>,
}

impl Orphans {
    fn push(&self, table: &str, fence: &Fence, keys: Vec<Key>) {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Orphan {
                table: table.to_owned(),
                fence: fence.clone(),
                keys,
            });
    }

    /// Gives back what it can through `store`; keeps the rest.
    fn give_back(&self, store: &dyn Backend) {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if leases.is_empty() {
            return;
        }
        leases.retain(|o| {
            let keys: Vec<&Key> = o.keys.iter().collect();
            store.release(&o.table, &o.fence, &keys).is_err()
        });
    }
}

/// About how long a worker's threads compute the rows of one claim: slow
/// rows are claimed a few at a time, fast ones a whole batch at once.
pub(crate) const CLAIM_SLICE: Duration = Duration::from_millis(250);

/// How long a lease lasts unless extended.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// A claimed batch: the rows still to do, the claim's fence, and a
/// revision at or before the one at which their inputs were read.
type Claimed = (Vec<(Key, Work)>, Fence, Revision);

/// Why a batch is being computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A refresh pass, which planned the batch from states read when the
    /// database was at revision `seen`.
    Refresh { seen: Revision },
    /// A build pass, which planned the batch from a scan read at revision
    /// `seen` while its earlier pages were being written: its plan holds
    /// when this worker gets the table to itself.
    Build { seen: Revision },
    /// `get` or `refresh_from`: a row needed now.
    OnDemand,
    /// `retry`: failed rows computed again although nothing changed.
    Retry,
}

impl Mode {
    fn pass(self) -> Pass {
        match self {
            Mode::Refresh { .. } | Mode::Build { .. } => Pass::Refresh,
            Mode::OnDemand | Mode::Retry => Pass::OnDemand,
        }
    }

    /// A revision at or before the one at which the batch's inputs were
    /// read, when no claim tells (zero: unknown).
    fn read_at(self) -> Revision {
        match self {
            Mode::Refresh { seen } | Mode::Build { seen } => seen,
            Mode::OnDemand | Mode::Retry => Revision::ZERO,
        }
    }
}

/// Whether a build's scanning thread may compute rows before they are
/// claimed: only while its worker holds the whole table between pages
/// (taken by [`Db::hold_table`]), so that no other worker can claim, and
/// compute, a row meanwhile. The scanning thread computes under the read
/// lock; the writing thread forbids it under the write lock (waiting for a
/// computation in progress to end) and gives the table back only once the
/// pages computed ahead are written.
#[derive(Default)]
pub(crate) struct AheadLease {
    allowed: std::sync::RwLock<bool>,
}

impl AheadLease {
    /// Runs `f` if computing ahead is allowed, and keeps it allowed until
    /// `f` returns.
    pub(crate) fn compute<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let allowed = self.allowed.read().unwrap_or_else(|e| e.into_inner());
        allowed.then(f)
    }

    /// Allows or forbids computing ahead (forbidding waits for a
    /// computation in progress).
    pub(crate) fn allow(&self, allowed: bool) {
        *self.allowed.write().unwrap_or_else(|e| e.into_inner()) = allowed;
    }
}

/// The keys of a claim that were granted (to give back should the batch
/// fail).
fn granted_keys(keys: &[&Key], claim: &Claim) -> Vec<Key> {
    keys.iter()
        .zip(&claim.granted)
        .filter(|(_, got)| **got)
        .map(|(k, _)| (*k).clone())
        .collect()
}

/// A thread that extends this worker's leases while its functions run.
pub(crate) struct Heartbeat {
    stopping: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A worker id unique across machines, processes and `Db`s: host, process,
/// a time nonce and a counter.
pub(crate) fn new_worker_id(now_ms: i64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let nonce = now_ms % 1_000_000;
    format!(
        "{host}:{}:{nonce}:{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts a thread that extends `worker`'s leases every third of the TTL,
/// through its own connection to the database, after giving back the
/// `orphans` it can.
pub(crate) fn start_heartbeat(
    connection: Box<dyn Backend>,
    worker: String,
    ttl: Arc<AtomicI64>,
    orphans: Arc<Orphans>,
) -> Option<Heartbeat> {
    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    let thread = std::thread::Builder::new()
        .name("rederive-heartbeat".into())
        .spawn(move || {
            let mut last = std::time::Instant::now();
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                let ttl_ms = ttl.load(Ordering::Relaxed).max(1);
                if last.elapsed() >= Duration::from_millis((ttl_ms / 3).max(1) as u64) {
                    orphans.give_back(&*connection);
                    let _ = connection.heartbeat(&worker, Duration::from_millis(ttl_ms as u64));
                    last = std::time::Instant::now();
                }
            }
        })
        .ok()?;
    Some(Heartbeat {
        stopping,
        thread: Some(thread),
    })
}

impl Heartbeat {
    /// Stops the thread and waits for it.
    pub(crate) fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Db {
    /// Claims the planned rows, plans again those that may have changed
    /// since, computes them (in parallel, outside any transaction) and
    /// stores the results, fenced by the claim: at the end, and at least
    /// every [`COMMIT_EVERY`] while slow functions run, so that a killed
    /// worker loses little. A cancel between chunks abandons what is not
    /// written yet and gives its rows back.
    ///
    /// Rows whose computation stopped (a read of a row to compute first, a
    /// cycle of reads) are given back and returned, for the caller to
    /// resolve; `stack` are the rows waiting on this batch's, for cycles.
    pub(crate) fn execute(
        &self,
        session: &Session,
        id: TableId,
        batch: Vec<(Key, Work)>,
        mode: Mode,
        stack: &[(TableId, Key)],
    ) -> Result<Executed> {
        if !self.leasing.load(Ordering::Relaxed) {
            return self.execute_slice(session, id, batch, mode, stack);
        }
        // Slow rows are claimed a slice at a time, so that workers arriving
        // meanwhile find rows to share instead of one worker holding all.
        let mut rest = batch.into_iter();
        let mut out = Executed {
            report: TableReport::default(),
            stopped: Vec::new(),
            held: HeldRows::default(),
        };
        loop {
            let slice: Vec<_> = rest.by_ref().take(self.slice_len(id)).collect();
            if slice.is_empty() {
                return Ok(out);
            }
            let rows = slice.len() as u64;
            let started = std::time::Instant::now();
            let done = self.execute_slice(session, id, slice, mode, stack)?;
            let computed = done.report.calls();
            if computed > 0 {
                self.note_row_cost(id, started.elapsed(), computed.min(rows));
            }
            out.report.add(&done.report);
            out.stopped.extend(done.stopped);
            out.held.extend(done.held);
        }
    }

    /// How many rows of a batch to claim at once: what this worker's threads
    /// compute in about [`CLAIM_SLICE`], from what rows of the table took
    /// lately; one per thread until that is known.
    fn slice_len(&self, id: TableId) -> usize {
        let threads = rayon::current_num_threads().max(1);
        let ns = self.row_cost_ns[id.index()].load(Ordering::Relaxed);
        if ns == 0 {
            return threads;
        }
        let per_thread = (CLAIM_SLICE.as_nanos() as u64 / ns).max(1) as usize;
        per_thread.saturating_mul(threads)
    }

    /// Folds a slice's time per row into the table's running estimate.
    fn note_row_cost(&self, id: TableId, took: Duration, rows: u64) {
        let threads = rayon::current_num_threads().max(1) as u64;
        // Wall time of the slice, times the threads that shared it.
        let measured = (took.as_nanos() as u64).saturating_mul(threads) / rows.max(1);
        let cost = &self.row_cost_ns[id.index()];
        let old = cost.load(Ordering::Relaxed);
        let new = if old == 0 {
            measured
        } else {
            (old + measured) / 2
        };
        cost.store(new.max(1), Ordering::Relaxed);
    }

    /// [`Db::execute`] for one claim.
    fn execute_slice(
        &self,
        session: &Session,
        id: TableId,
        batch: Vec<(Key, Work)>,
        mode: Mode,
        stack: &[(TableId, Key)],
    ) -> Result<Executed> {
        let mut report = TableReport::default();
        let mut stopped = Vec::new();
        let mut held = HeldRows::default();
        let name = self.graph().table(id).info.name;
        let (batch, fence, read_at) = if self.leasing.load(Ordering::Relaxed) {
            self.claim_batch(id, batch, mode, &mut report, &mut held)?
        } else {
            (batch, Fence::Unfenced, mode.read_at())
        };
        self.alone
            .store(!matches!(fence, Fence::Rows { .. }), Ordering::Relaxed);
        // The rows claimed, to give back should the batch fail.
        let claimed: Vec<Key> = match fence {
            Fence::Rows { .. } => batch.iter().map(|(k, _)| k.clone()).collect(),
            _ => Vec::new(),
        };
        let Some(node) = self.graph().producer(id) else {
            let _ = self.give_back(name, &fence, claimed);
            return Ok(Executed {
                report,
                stopped,
                held,
            });
        };
        let env = Env {
            db: self,
            session,
            table: id,
            node,
            stack,
        };
        let done = self.compute_and_write(
            env,
            batch,
            mode,
            &fence,
            read_at,
            &mut report,
            &mut stopped,
            &mut held,
        );
        let released = match (&done, &fence) {
            // The batch is over (written, or abandoned): give the table back.
            (_, Fence::Table { .. }) => self.give_back(name, &fence, Vec::new()),
            // Abandoned: give its rows back (those written are no longer
            // held), so that no other worker waits for them to expire.
            (Err(_), Fence::Rows { .. }) => self.give_back(name, &fence, claimed),
            _ => Ok(()),
        };
        done.and(released).map(|()| Executed {
            report,
            stopped,
            held,
        })
    }

    /// Gives leases back; when the database cannot be reached, leaves them
    /// to the heartbeat, which gives them back once it can.
    pub(crate) fn give_back(&self, table: &str, fence: &Fence, keys: Vec<Key>) -> Result<()> {
        if matches!(fence, Fence::Unfenced)
            || (matches!(fence, Fence::Rows { .. }) && keys.is_empty())
        {
            return Ok(());
        }
        let refs: Vec<&Key> = keys.iter().collect();
        let released = self.store().release(table, fence, &refs);
        drop(refs);
        if released.is_err() {
            self.orphans.push(table, fence, keys);
        }
        released
    }

    #[allow(clippy::too_many_arguments)]
    fn compute_and_write(
        &self,
        env: Env<'_>,
        batch: Vec<(Key, Work)>,
        mode: Mode,
        fence: &Fence,
        read_at: Revision,
        report: &mut TableReport,
        stopped: &mut Vec<Stopped>,
        held: &mut HeldRows,
    ) -> Result<()> {
        let id = env.table;
        let name = self.graph().table(id).info.name;
        let mut pending: Vec<Outcome> = Vec::new();
        let mut last_write = std::time::Instant::now();
        compute_in_chunks(env, batch, |outcomes, stops, rest| {
            if pending.is_empty() {
                pending = outcomes;
            } else {
                pending.extend(outcomes);
            }
            // Rows that stopped are given back at once: the caller computes
            // what they wait on (perhaps in another worker) first.
            if !stops.is_empty() {
                let keys: Vec<&Key> = stops.iter().map(|s| &s.key).collect();
                if matches!(fence, Fence::Rows { .. }) {
                    self.store().release(name, fence, &keys)?;
                }
            }
            let mut failed = None;
            for s in stops {
                match s.stop {
                    Stop::Storage(e) => failed = failed.or(Some(e)),
                    _ => stopped.push(s),
                }
            }
            // Either abandons what is not written; the caller gives its
            // rows back.
            if let Some(error) = failed {
                return Err(error);
            }
            if self.cancel.load(Ordering::SeqCst) {
                return Err(Error::Cancelled);
            }
            if rest.is_empty() || last_write.elapsed() >= COMMIT_EVERY {
                self.write(
                    env.session,
                    id,
                    &std::mem::take(&mut pending),
                    mode,
                    fence,
                    read_at,
                    report,
                    held,
                )?;
                last_write = std::time::Instant::now();
            }
            Ok(())
        })
    }

    /// Writes computed results and counts what happened to them.
    /// Rows written are settled in the session; a changed value
    /// unsettles what depends on it. Rows whose write was refused (a newer
    /// result, or this worker's lease taken over) go to `held`.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        session: &Session,
        id: TableId,
        outcomes: &[Outcome],
        mode: Mode,
        fence: &Fence,
        read_at: Revision,
        report: &mut TableReport,
        held: &mut HeldRows,
    ) -> Result<()> {
        let code = self.code(id).unwrap_or_default();
        // A table that is read by one refreshed before it (or by itself):
        // its rows change behind that table's back, so the epoch moves.
        let pass = if self.graph().read_backwards(id) {
            Pass::OnDemand
        } else {
            mode.pass()
        };
        let written =
            self.store()
                .write_outcomes(self.graph(), id, code, outcomes, pass, fence, read_at)?;
        let tracks = self.reads_upstream(id) || self.graph().readers_of(id).next().is_some();
        for (o, w) in outcomes.iter().zip(&written) {
            if tracks && *w != Written::Rejected {
                if *w == Written::Changed {
                    self.unsettle_dependents(session, (id, o.key.clone()))?;
                }
                session.settle((id, o.key.clone()));
            }
        }
        for (o, w) in outcomes.iter().zip(written) {
            match (w, &o.kind) {
                (Written::Rejected, _) => held.push_key(o.key.clone()),
                (_, OutcomeKind::Blocked { .. }) => report.blocked += 1,
                (_, OutcomeKind::Error(_)) => report.failed += 1,
                (Written::Changed, OutcomeKind::Ok(_)) => report.computed += 1,
                (Written::Unchanged, OutcomeKind::Ok(_)) => report.unchanged += 1,
            }
        }
        Ok(())
    }

    /// Whether a plan made before the claim still holds: in a refresh
    /// pass, only if nothing was written between the plan's read and the
    /// claim. In a build pass, when the claim is the whole table and no
    /// row of the batch's keys was written since the scan: the rows written
    /// since are this pass's own earlier pages (of other keys), unless
    /// other workers computed some of these before they left (the scanner
    /// plans pages ahead, and this worker may have been alone only since).
    fn plan_still_holds(
        &self,
        id: TableId,
        mode: Mode,
        claim: &Claim,
        keys: &[&Key],
    ) -> Result<bool> {
        Ok(match mode {
            Mode::Refresh { seen } => seen == claim.revision,
            Mode::Build { seen } => match (keys.iter().min(), keys.iter().max()) {
                (Some(first), Some(last)) if matches!(claim.fence, Fence::Table { .. }) => {
                    seen == claim.revision
                        || !self.store().changed_in_range(
                            self.graph().table(id).info,
                            first,
                            last,
                            seen,
                        )?
                }
                _ => false,
            },
            Mode::OnDemand | Mode::Retry => false,
        })
    }

    /// Claims `keys` of the table `name` for this worker (the whole table
    /// when it is alone), registering the worker on its first claim.
    fn claim_keys(&self, name: &str, keys: &[&Key]) -> Result<Claim> {
        let owner = self.lease_owner();
        let ttl = self.lease_ttl();
        // Leases a failed batch left are given back before this worker
        // claims again: given back later, they could be its new claims.
        self.orphans.give_back(&**self.store());
        if !self.registered.swap(true, Ordering::SeqCst) {
            self.store().register_worker(&self.worker, ttl)?;
        }
        self.store().claim(
            name,
            keys,
            &self.worker,
            &owner,
            ttl,
            ClaimMode::TableIfAlone,
        )
    }

    /// Writes results computed before their rows were claimed (by a build's
    /// scanning thread, for cheap functions, under the table lease that
    /// [`AheadLease`] keeps, so that no other worker could claim them
    /// meanwhile). They are claimed again (which renews that lease); if the
    /// claim is the whole table and their plan still holds, they are
    /// written. Otherwise (other workers showed up), each row is planned
    /// again: a result computed from the inputs it would be computed from
    /// now is written all the same, and the other rows are returned, to be
    /// computed the usual way. Returns those rows and the claim's fence;
    /// rows another worker holds go to `held`.
    pub(crate) fn write_ahead(
        &self,
        session: &Session,
        id: TableId,
        outcomes: Vec<Outcome>,
        mode: Mode,
        report: &mut TableReport,
        held: &mut HeldRows,
    ) -> Result<(Vec<(Key, Work)>, Fence)> {
        let name = self.graph().table(id).info.name;
        let keys: Vec<&Key> = outcomes.iter().map(|o| &o.key).collect();
        let claim = self.claim_keys(name, &keys)?;
        self.alone.store(
            !matches!(claim.fence, Fence::Rows { .. }),
            Ordering::Relaxed,
        );
        let granted: Vec<Key> = match claim.fence {
            Fence::Rows { .. } => granted_keys(&keys, &claim),
            _ => Vec::new(),
        };
        let holds = if matches!(claim.fence, Fence::Table { .. }) {
            self.plan_still_holds(id, mode, &claim, &keys)
        } else {
            Ok(false)
        };
        drop(keys);
        let planned = holds.and_then(|holds| {
            self.write_ahead_claimed(session, id, outcomes, mode, report, held, &claim, holds)
        });
        match planned {
            Ok(again) => Ok((again, claim.fence)),
            Err(e) => {
                let _ = self.give_back(name, &claim.fence, granted);
                Err(e)
            }
        }
    }

    /// [`Db::write_ahead`] once its rows are claimed.
    #[allow(clippy::too_many_arguments)]
    fn write_ahead_claimed(
        &self,
        session: &Session,
        id: TableId,
        outcomes: Vec<Outcome>,
        mode: Mode,
        report: &mut TableReport,
        held: &mut HeldRows,
        claim: &Claim,
        holds: bool,
    ) -> Result<Vec<(Key, Work)>> {
        let name = self.graph().table(id).info.name;
        let mut again = Vec::new();
        let write = if holds {
            outcomes
        } else {
            let mut write = Vec::with_capacity(outcomes.len());
            let mut unneeded = Vec::new();
            for (o, &got) in outcomes.into_iter().zip(&claim.granted) {
                if !got {
                    held.push_key(o.key);
                    continue;
                }
                match self.plan_row(id, &o.key, mode)? {
                    Plan::Work(w) if matches!(w.kind, WorkKind::Compute(_)) && w.ins == o.ins => {
                        write.push(Outcome { new: w.new, ..o })
                    }
                    Plan::Work(w) => again.push((o.key, w)),
                    Plan::Fresh => unneeded.push(o.key),
                    Plan::Wait | Plan::Settling => {
                        report.skipped += 1;
                        unneeded.push(o.key)
                    }
                }
            }
            if !unneeded.is_empty() && matches!(claim.fence, Fence::Rows { .. }) {
                let refs: Vec<&Key> = unneeded.iter().collect();
                self.store().release(name, &claim.fence, &refs)?;
            }
            write
        };
        let read_at = mode.read_at().min(claim.revision);
        if !write.is_empty() {
            self.write(
                session,
                id,
                &write,
                mode,
                &claim.fence,
                read_at,
                report,
                held,
            )?;
        }
        Ok(again)
    }

    /// Takes the whole table for this worker, if it is alone, to compute
    /// ahead under it (see [`AheadLease`]); `None` when it is not.
    pub(crate) fn hold_table(&self, id: TableId) -> Result<Option<Fence>> {
        let name = self.graph().table(id).info.name;
        let claim = self.claim_keys(name, &[])?;
        match claim.fence {
            Fence::Table { .. } => Ok(Some(claim.fence)),
            other => {
                self.store().release(name, &other, &[])?;
                Ok(None)
            }
        }
    }

    /// Gives back a table lease taken by [`Db::hold_table`].
    pub(crate) fn release_table(&self, id: TableId, fence: &Fence) -> Result<()> {
        self.give_back(self.graph().table(id).info.name, fence, Vec::new())
    }

    /// Claims a batch's rows (the whole table when this worker is alone)
    /// and keeps those still to be done: a row another worker holds is
    /// skipped; a row whose state may have changed since it was planned is
    /// planned again under its lease, and given back if it is now fresh.
    fn claim_batch(
        &self,
        id: TableId,
        batch: Vec<(Key, Work)>,
        mode: Mode,
        report: &mut TableReport,
        held: &mut HeldRows,
    ) -> Result<Claimed> {
        let name = self.graph().table(id).info.name;
        let keys: Vec<&Key> = batch.iter().map(|(k, _)| k).collect();
        let claim = self.claim_keys(name, &keys)?;
        let holds = match self.plan_still_holds(id, mode, &claim, &keys) {
            Ok(holds) => holds,
            Err(e) => {
                let _ = self.give_back(name, &claim.fence, granted_keys(&keys, &claim));
                return Err(e);
            }
        };
        drop(keys);
        let mut kept = Vec::with_capacity(batch.len());
        let mut unneeded = Vec::new();
        let mut batch = batch.into_iter().zip(claim.granted);
        let replanned = self.replan_claimed(
            id,
            &mut batch,
            mode,
            holds,
            report,
            held,
            &mut kept,
            &mut unneeded,
        );
        if let Err(e) = replanned {
            // Give back every row granted and not yet given back.
            let granted = kept
                .into_iter()
                .map(|(k, _)| k)
                .chain(unneeded)
                .chain(batch.filter(|(_, got)| *got).map(|((k, _), _)| k))
                .collect();
            let _ = self.give_back(name, &claim.fence, granted);
            return Err(e);
        }
        // Under a table lease, rows found fresh need no giving back: the
        // table is given back when the batch is over (see `execute`).
        if !unneeded.is_empty() && matches!(claim.fence, Fence::Rows { .. }) {
            let refs: Vec<&Key> = unneeded.iter().collect();
            self.store().release(name, &claim.fence, &refs)?;
        }
        // Kept rows were read at the plan's revision, re-planned ones after
        // the claim.
        let read_at = match mode {
            Mode::Refresh { seen } | Mode::Build { seen } => seen.min(claim.revision),
            Mode::OnDemand | Mode::Retry => claim.revision,
        };
        Ok((kept, claim.fence, read_at))
    }

    /// Sorts the rows of a claim: rows another worker holds go to `held`;
    /// rows granted are kept with their plan when it `holds`, and are
    /// planned again otherwise (kept, or `unneeded` when found settled).
    #[allow(clippy::too_many_arguments)]
    fn replan_claimed(
        &self,
        id: TableId,
        batch: &mut impl Iterator<Item = ((Key, Work), bool)>,
        mode: Mode,
        holds: bool,
        report: &mut TableReport,
        held: &mut HeldRows,
        kept: &mut Vec<(Key, Work)>,
        unneeded: &mut Vec<Key>,
    ) -> Result<()> {
        for ((key, work), got) in batch {
            if !got {
                held.push_planned(key, work, mode);
                continue;
            }
            // A row stored as failed on a cycle of reads is not planned:
            // it is what the resolver found.
            if holds || matches!(work.kind, WorkKind::Fail { .. }) {
                kept.push((key, work));
                continue;
            }
            // Something was written since the plan (perhaps this very row,
            // by the worker that held it): plan again. A row whose input
            // is gone, or whose root row changed again, is left for later
            // (counted, so that the pass knows it is not complete).
            match self.plan_row(id, &key, mode)? {
                Plan::Work(work) => kept.push((key, work)),
                Plan::Fresh => unneeded.push(key),
                Plan::Wait => {
                    report.skipped += 1;
                    unneeded.push(key)
                }
                Plan::Settling => {
                    report.settling += 1;
                    unneeded.push(key)
                }
            }
        }
        Ok(())
    }
}
