//! Running user functions: a batch's work, in parallel when it pays off,
//! with panics caught and stored as errors.

use crate::node::NodeDef;
use crate::storage::{Outcome, OutcomeKind, Revision};
use crate::value::{Key, Value};
use rayon::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// A stale row's work.
pub(crate) struct Work {
    /// The `changed_at` of each input it is computed from.
    pub ins: Vec<Revision>,
    /// Whether no row was stored when it was planned.
    pub new: bool,
    /// What to do.
    pub kind: WorkKind,
}

/// Compute, or record a block.
pub(crate) enum WorkKind {
    /// Compute from these input rows.
    Compute(Vec<Vec<Value>>),
    /// Store as blocked by this failed row.
    Block { table: String, key: Key },
}

/// How long computed results may wait in memory before they are written
/// (what a killed worker loses at most, about).
pub(crate) const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// Rows slower than this run on the thread pool (for trivial functions,
/// handing rows to other threads costs more than the calls themselves).
const PARALLEL_ABOVE: Duration = Duration::from_micros(20);

/// Computes a batch's work a chunk at a time: the first row alone, timed;
/// then, for slow functions, chunks that keep every core busy for about a
/// tenth of [`COMMIT_EVERY`]; for fast ones, the rest at once. Calls
/// `each(outcomes of the chunk, more to come)` after every chunk; an error
/// from it stops the computation.
pub(crate) fn compute_in_chunks(
    node: &NodeDef,
    batch: Vec<(Key, Work)>,
    mut each: impl FnMut(Vec<Outcome>, &[(Key, Work)]) -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    let threads = rayon::current_num_threads().max(1);
    let mut rest = batch;
    let mut chunk = 1;
    let mut parallel = false;
    while !rest.is_empty() {
        let tail = rest.split_off(chunk.min(rest.len()));
        let started = Instant::now();
        let outcomes: Vec<Outcome> = if parallel {
            rest.into_par_iter().map(|(k, w)| run(node, k, w)).collect()
        } else {
            rest.into_iter().map(|(k, w)| run(node, k, w)).collect()
        };
        let per_row = started.elapsed() / outcomes.len().max(1) as u32;
        let per_row = if parallel {
            per_row * threads as u32
        } else {
            per_row
        };
        rest = tail;
        each(outcomes, &rest)?;
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

/// Does one row's work: calls the function (catching panics) or records the block.
fn run(node: &NodeDef, key: Key, work: Work) -> Outcome {
    let kind = match work.kind {
        WorkKind::Compute(inputs) => {
            match catch_unwind(AssertUnwindSafe(|| (node.compute)(inputs))) {
                Ok(Ok(values)) => OutcomeKind::Ok(values),
                Ok(Err(message)) => OutcomeKind::Error(message),
                Err(payload) => {
                    OutcomeKind::Error(format!("panicked: {}", panic_message(&payload)))
                }
            }
        }
        WorkKind::Block { table, key } => OutcomeKind::Blocked { table, key },
    };
    Outcome {
        key,
        new: work.new,
        ins: work.ins,
        reads: Vec::new(),
        kind,
    }
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
