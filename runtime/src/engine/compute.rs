//! Running user functions: a batch's work, in parallel when it pays off,
//! with panics caught and stored as errors.

use crate::node::NodeDef;
use crate::storage::{Outcome, OutcomeKind, Revision};
use crate::value::{Key, Value};
use rayon::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// A stale row's work.
pub(crate) enum Work {
    /// Compute from these input rows.
    Compute {
        ins: Vec<Revision>,
        inputs: Vec<Vec<Value>>,
    },
    /// Store as blocked by this failed row.
    Block {
        ins: Vec<Revision>,
        table: String,
        key: Key,
    },
}

/// Runs a batch's work: the first row alone, timed, and the rest on the
/// thread pool only when they are slow enough for parallelism to pay off
/// (for trivial functions, handing rows to other threads costs more than
/// the calls themselves).
pub(crate) fn compute_all(node: &NodeDef, batch: Vec<(Key, Work)>) -> Vec<Outcome> {
    const PARALLEL_ABOVE: Duration = Duration::from_micros(20);
    let mut rest = batch.into_iter();
    let Some((key, work)) = rest.next() else {
        return Vec::new();
    };
    let started = Instant::now();
    let first = run(node, key, work);
    let slow = started.elapsed() > PARALLEL_ABOVE;
    let mut outcomes = vec![first];
    if slow {
        outcomes.par_extend(
            rest.collect::<Vec<_>>()
                .into_par_iter()
                .map(|(k, w)| run(node, k, w)),
        );
    } else {
        outcomes.extend(rest.map(|(k, w)| run(node, k, w)));
    }
    outcomes
}

/// Does one row's work: calls the function (catching panics) or records the block.
fn run(node: &NodeDef, key: Key, work: Work) -> Outcome {
    match work {
        Work::Compute { ins, inputs } => {
            let kind = match catch_unwind(AssertUnwindSafe(|| (node.compute)(inputs))) {
                Ok(Ok(values)) => OutcomeKind::Ok(values),
                Ok(Err(message)) => OutcomeKind::Error(message),
                Err(payload) => {
                    OutcomeKind::Error(format!("panicked: {}", panic_message(&payload)))
                }
            };
            Outcome { key, ins, kind }
        }
        Work::Block {
            ins,
            table,
            key: origin,
        } => Outcome {
            key,
            ins,
            kind: OutcomeKind::Blocked { table, key: origin },
        },
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
