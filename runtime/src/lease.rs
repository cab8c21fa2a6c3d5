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

/// What a batch did: its report, and the rows whose computation stopped
/// (given back, not written).
pub(crate) struct Executed {
    pub report: TableReport,
    pub stopped: Vec<Stopped>,
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
/// through its own connection to the database.
pub(crate) fn start_heartbeat(
    connection: Box<dyn Backend>,
    worker: String,
    ttl: Arc<AtomicI64>,
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
        let (batch, fence, read_at) = if self.leasing.load(Ordering::Relaxed) {
            self.claim_batch(id, batch, mode, &mut report)?
        } else {
            (batch, Fence::Unfenced, mode.read_at())
        };
        self.alone
            .store(!matches!(fence, Fence::Rows { .. }), Ordering::Relaxed);
        let Some(node) = self.graph().producer(id) else {
            return Ok(Executed { report, stopped });
        };
        let env = Env {
            db: self,
            session,
            table: id,
            node,
            stack,
        };
        let done =
            self.compute_and_write(env, batch, mode, &fence, read_at, &mut report, &mut stopped);
        if matches!(fence, Fence::Table { .. }) {
            // The batch is over (written, or abandoned): give the table back.
            self.store()
                .release(self.graph().table(id).info.name, &fence, &[])?;
        }
        done.map(|()| Executed { report, stopped })
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
            if let Some(error) = failed {
                let keys: Vec<&Key> = pending
                    .iter()
                    .map(|o| &o.key)
                    .chain(rest.iter().map(|(k, _)| k))
                    .collect();
                self.store().release(name, fence, &keys)?;
                return Err(error);
            }
            if self.cancel.load(Ordering::SeqCst) {
                // Abandon what is not written: give its rows back.
                let keys: Vec<&Key> = pending
                    .iter()
                    .map(|o| &o.key)
                    .chain(rest.iter().map(|(k, _)| k))
                    .collect();
                self.store().release(name, fence, &keys)?;
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
                )?;
                last_write = std::time::Instant::now();
            }
            Ok(())
        })
    }

    /// Writes computed results and counts what happened to them.
    /// Rows written are settled in the session; a changed value
    /// unsettles what depends on it.
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
                (Written::Rejected, _) => report.skipped += 1,
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
    /// computed the usual way. Returns those rows and the claim's fence.
    pub(crate) fn write_ahead(
        &self,
        session: &Session,
        id: TableId,
        outcomes: Vec<Outcome>,
        mode: Mode,
        report: &mut TableReport,
    ) -> Result<(Vec<(Key, Work)>, Fence)> {
        let name = self.graph().table(id).info.name;
        let keys: Vec<&Key> = outcomes.iter().map(|o| &o.key).collect();
        let claim = self.claim_keys(name, &keys)?;
        self.alone.store(
            !matches!(claim.fence, Fence::Rows { .. }),
            Ordering::Relaxed,
        );
        let holds = matches!(claim.fence, Fence::Table { .. })
            && self.plan_still_holds(id, mode, &claim, &keys)?;
        drop(keys);
        let mut again = Vec::new();
        let write = if holds {
            outcomes
        } else {
            let mut write = Vec::with_capacity(outcomes.len());
            let mut unneeded = Vec::new();
            for (o, got) in outcomes.into_iter().zip(claim.granted) {
                if !got {
                    report.skipped += 1;
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
            self.write(session, id, &write, mode, &claim.fence, read_at, report)?;
        }
        Ok((again, claim.fence))
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
        self.store()
            .release(self.graph().table(id).info.name, fence, &[])
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
    ) -> Result<Claimed> {
        let name = self.graph().table(id).info.name;
        let keys: Vec<&Key> = batch.iter().map(|(k, _)| k).collect();
        let claim = self.claim_keys(name, &keys)?;
        let mut kept = Vec::with_capacity(batch.len());
        let mut unneeded = Vec::new();
        let holds = self.plan_still_holds(id, mode, &claim, &keys)?;
        for ((key, work), got) in batch.into_iter().zip(claim.granted) {
            if !got {
                report.skipped += 1;
                continue;
            }
            // A row stored as failed on a cycle of reads is not planned:
            // it is what the resolver found.
            if holds || matches!(work.kind, WorkKind::Fail { .. }) {
                kept.push((key, work));
                continue;
            }
            // Something was written since the plan (perhaps this very row,
            // by the worker that held it): plan again.
            match self.plan_row(id, &key, mode)? {
                Plan::Work(work) => kept.push((key, work)),
                Plan::Fresh => unneeded.push(key),
                Plan::Wait | Plan::Settling => {
                    report.skipped += 1;
                    unneeded.push(key)
                }
            }
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
}
