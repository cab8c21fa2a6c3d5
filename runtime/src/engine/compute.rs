//! Running user functions: a batch's work, in parallel when it pays off,
//! with panics caught and stored as errors.

use super::deps::{RowId, RowReader, Session, Stop};
use super::Db;
use crate::ctx::Ctx;
use crate::graph::TableId;
use crate::node::NodeDef;
use crate::storage::{Outcome, OutcomeKind, Read, Revision};
use crate::value::{Key, Value};
use rayon::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A stale row's work.
pub(crate) struct Work {
    /// The `changed_at` of each input it is computed from.
    pub ins: Vec<Revision>,
    /// Whether no row was stored when it was planned.
    pub new: bool,
    /// What to do.
    pub kind: WorkKind,
    /// The derived rows its last computation read (its recorded reads):
    /// they are settled before the function is called (see
    /// [`RowReader::settle_read_before`]). Empty for a table without reads.
    pub read_before: Vec<RowId>,
}

/// Compute, or record a block.
pub(crate) enum WorkKind {
    /// Compute from these input rows.
    Compute(Vec<Vec<Value>>),
    /// Store as blocked by this failed row.
    Block { table: String, key: Key },
    /// Store as failed with this message and these reads, without calling
    /// the function (a row on a cycle of reads).
    Fail { message: String, reads: Vec<Read> },
}

/// Where a batch's rows are computed: the database (for their reads), the
/// operation's session, the table, its function, and the rows whose
/// computation waits on this batch's (for cycles of reads).
#[derive(Clone, Copy)]
pub(crate) struct Env<'a> {
    pub db: &'a Db,
    pub session: &'a Session,
    pub table: TableId,
    pub node: &'a NodeDef,
    pub stack: &'a [(TableId, Key)],
}

/// A row whose computation stopped before it gave a result to store: it
/// read a row that must be computed first, or closed a cycle of reads, or
/// could not read the database.
pub(crate) struct Stopped {
    /// The row's key.
    pub key: Key,
    /// Why it stopped.
    pub stop: Stop,
    /// What it had read until then.
    pub reads: Vec<Read>,
}

/// How long computed results may wait in memory before they are written
/// (what a killed worker loses at most, about).
pub(crate) const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// Rows slower than this run on the thread pool (for trivial functions,
/// handing rows to other threads costs more than the calls themselves).
pub(crate) const PARALLEL_ABOVE: Duration = Duration::from_micros(20);

/// Computes a batch's work a chunk at a time: the first row alone, timed;
/// then, for slow functions, chunks that keep every core busy for about a
/// tenth of [`COMMIT_EVERY`]; for fast ones, the rest at once. Calls
/// `each(outcomes of the chunk, rows stopped in it, more to come)` after
/// every chunk; an error from it stops the computation.
pub(crate) fn compute_in_chunks(
    env: Env<'_>,
    batch: Vec<(Key, Work)>,
    mut each: impl FnMut(Vec<Outcome>, Vec<Stopped>, &[(Key, Work)]) -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    let threads = rayon::current_num_threads().max(1);
    let reads = !env.db.graph().table(env.table).reads.is_empty();
    // Taken a chunk at a time from the front: the rest is never copied.
    let mut rest = batch.into_iter();
    let mut chunk = 1;
    let mut parallel = false;
    while rest.len() > 0 {
        let started = Instant::now();
        // A function that reads other rows: one snapshot for the chunk's
        // reads.
        let snapshot = reads && env.db.store().begin_snapshot().is_ok();
        let mut outcomes = Vec::with_capacity(chunk.min(rest.len()));
        let mut stopped = Vec::new();
        let mut keep = |r: Result<Outcome, Box<Stopped>>| match r {
            Ok(o) => outcomes.push(o),
            Err(s) => stopped.push(*s),
        };
        if parallel {
            let taken: Vec<(Key, Work)> = rest.by_ref().take(chunk).collect();
            let ran: Vec<Result<Outcome, Box<Stopped>>> =
                taken.into_par_iter().map(|(k, w)| run(env, k, w)).collect();
            ran.into_iter().for_each(&mut keep);
        } else {
            rest.by_ref()
                .take(chunk)
                .for_each(|(k, w)| keep(run(env, k, w)));
        }
        if snapshot {
            env.db.store().end_snapshot()?;
        }
        let ran = outcomes.len() + stopped.len();
        let per_row = started.elapsed() / ran.max(1) as u32;
        let per_row = if parallel {
            per_row * threads as u32
        } else {
            per_row
        };
        env.db.compute_ns[env.table.index()]
            .store((per_row.as_nanos() as u64).max(1), Ordering::Relaxed);
        each(outcomes, stopped, rest.as_slice())?;
        parallel = per_row > PARALLEL_ABOVE;
        chunk = if parallel {
            let budget = COMMIT_EVERY / 10;
            let rows = budget.as_nanos() / per_row.as_nanos().max(1);
            (rows as usize * threads).max(threads)
        } else {
            usize::MAX
        };
    }
    Ok(())
}

/// Computes the rows of `batch` on this thread, one after the other, before
/// they are claimed (a build's scanning thread does this for cheap
/// functions while its worker is alone; see `Db::write_ahead`). Returns the
/// outcomes, and whether every row gave one (a row whose computation
/// stopped is left out).
pub(crate) fn compute_ahead(env: Env<'_>, batch: Vec<(Key, Work)>) -> (Vec<Outcome>, bool) {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut all = true;
    let rows = batch.len();
    let started = Instant::now();
    for (key, work) in batch {
        match run(env, key, work) {
            Ok(o) => outcomes.push(o),
            Err(_) => all = false,
        }
    }
    if rows > 0 {
        let per_row = started.elapsed().as_nanos() as u64 / rows as u64;
        env.db.compute_ns[env.table.index()].store(per_row.max(1), Ordering::Relaxed);
    }
    (outcomes, all)
}

/// Does one row's work: calls the function (catching panics) with a
/// context that records its reads, or records the block or failure.
fn run(env: Env<'_>, key: Key, work: Work) -> Result<Outcome, Box<Stopped>> {
    let (kind, reads) = match work.kind {
        WorkKind::Compute(inputs) => {
            let reader = RowReader::new(env, &key);
            if let Some(stop) = reader.settle_read_before(&work.read_before) {
                return Err(Box::new(Stopped {
                    key,
                    stop,
                    reads: Vec::new(),
                }));
            }
            let ctx = Ctx::new(&reader);
            let result = catch_unwind(AssertUnwindSafe(|| {
                match env.db.graph().closure(env.table) {
                    Some(closure) => (closure.0)(&ctx, inputs),
                    None => (env.node.compute)(&ctx, inputs),
                }
            }));
            let (reads, stop, undeclared) = reader.finish();
            if let Some(stop) = stop {
                return Err(Box::new(Stopped { key, stop, reads }));
            }
            let kind = match (undeclared, result) {
                (Some(message), _) => OutcomeKind::Error(message),
                (None, Ok(Ok(values))) => OutcomeKind::Ok(values),
                (None, Ok(Err(message))) => OutcomeKind::Error(message),
                (None, Err(payload)) => {
                    OutcomeKind::Error(format!("panicked: {}", panic_message(&payload)))
                }
            };
            (kind, reads)
        }
        WorkKind::Block { table, key } => (OutcomeKind::Blocked { table, key }, Vec::new()),
        WorkKind::Fail { message, reads } => (OutcomeKind::Error(message), reads),
    };
    Ok(Outcome {
        key,
        new: work.new,
        ins: work.ins,
        reads,
        kind,
    })
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
