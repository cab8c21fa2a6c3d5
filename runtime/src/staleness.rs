//! What `explain` and `stale_from` tell the user. (What `refresh`,
//! `status` and `errors` tell is in [`crate::report`].)

use crate::value::Key;
use serde::Serialize;
use std::fmt;

/// Whether a row is fresh, and if not, why. Returned by `Db::explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Staleness {
    /// Stored, computed from the current inputs with the current code.
    Fresh,
    /// Never computed (or deleted since).
    Missing,
    /// An input row changed since the row was computed.
    InputChanged {
        /// The input table.
        table: String,
        /// The input row's key.
        key: Key,
    },
    /// A row the function read through its `ctx` changed since the row was
    /// computed (or appeared, having been read as absent, or was deleted).
    ReadChanged {
        /// The table read.
        table: String,
        /// The key read.
        key: Key,
    },
    /// The function's code version changed (its tokens, `version`, or `files`).
    CodeChanged {
        /// The function.
        node: String,
    },
    /// A derived row it is computed from or read is itself stale, so this
    /// row will be recomputed after it (unless early cutoff stops the
    /// change).
    UpstreamStale {
        /// The stale input table.
        table: String,
        /// Its key.
        key: Key,
    },
    /// The function returned an error or panicked; retried when an input or
    /// the code changes, or on request (`retry`).
    Failed {
        /// The stored message.
        message: String,
    },
    /// Not computed because a row it depends on failed.
    Blocked {
        /// The failed table.
        table: String,
        /// The failed row's key.
        key: Key,
    },
}

impl Staleness {
    /// True when the row needs no recomputation (fresh, or failed/blocked on
    /// unchanged inputs).
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            Staleness::Fresh | Staleness::Failed { .. } | Staleness::Blocked { .. }
        )
    }
}

impl fmt::Display for Staleness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Staleness::Fresh => write!(f, "fresh"),
            Staleness::Missing => write!(f, "missing: never computed"),
            Staleness::InputChanged { table, key } => {
                write!(f, "stale: input `{table}` {key} changed")
            }
            Staleness::ReadChanged { table, key } => {
                write!(f, "stale: `{table}` {key}, which it read, changed")
            }
            Staleness::CodeChanged { node } => write!(f, "stale: the code of `{node}` changed"),
            Staleness::UpstreamStale { table, key } => {
                write!(f, "stale: `{table}` {key}, which it depends on, is stale")
            }
            Staleness::Failed { message } => write!(f, "failed: {message}"),
            Staleness::Blocked { table, key } => write!(f, "blocked: `{table}` {key} failed"),
        }
    }
}

/// A derived row that an input change made stale (from `Db::stale_from`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleRow {
    /// The derived table.
    pub table: String,
    /// The row's key.
    pub key: Key,
    /// Why it is stale.
    pub cause: Staleness,
}

pub use crate::report::{FailedRow, Report, TableReport, TableStatus};
