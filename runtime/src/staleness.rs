//! What `explain`, `stale_from` and `refresh` tell the user.

use crate::value::Key;
use serde::Serialize;
use std::collections::BTreeMap;
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
    /// The function's code version changed (its tokens, `version`, or `files`).
    CodeChanged {
        /// The function.
        node: String,
    },
    /// A derived input row is itself stale, so this row will be recomputed
    /// after it (unless early cutoff stops the change).
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
            Staleness::CodeChanged { node } => write!(f, "stale: the code of `{node}` changed"),
            Staleness::UpstreamStale { table, key } => {
                write!(f, "stale: its input `{table}` {key} is stale")
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

/// Counts for one table in a [`Report`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TableReport {
    /// Function calls whose result was stored with a new value.
    pub computed: u64,
    /// Function calls that gave the stored value again (early cutoff).
    pub unchanged: u64,
    /// Function calls that returned an error or panicked.
    pub failed: u64,
    /// Rows not computed because an input failed.
    pub blocked: u64,
    /// Results not stored because a newer result was already there (write guard)
    /// or another worker held the row.
    pub skipped: u64,
    /// Stale rows left for later because their root row changed less than
    /// `settle` ago.
    pub settling: u64,
}

impl TableReport {
    pub(crate) fn add(&mut self, o: &TableReport) {
        self.computed += o.computed;
        self.unchanged += o.unchanged;
        self.failed += o.failed;
        self.blocked += o.blocked;
        self.skipped += o.skipped;
        self.settling += o.settling;
    }
}

/// What a refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Function calls whose result was stored with a new value.
    pub computed: u64,
    /// Function calls that gave the stored value again (early cutoff).
    pub unchanged: u64,
    /// Function calls that returned an error or panicked.
    pub failed: u64,
    /// Rows not computed because an input failed.
    pub blocked: u64,
    /// Rows left for later: a newer result was already stored, or another
    /// worker held the row.
    pub skipped: u64,
    /// Stale rows waiting for their root row to settle.
    pub settling: u64,
    /// The same counts per table.
    pub tables: BTreeMap<String, TableReport>,
}

impl Report {
    pub(crate) fn record(&mut self, table: &str, r: TableReport) {
        self.computed += r.computed;
        self.unchanged += r.unchanged;
        self.failed += r.failed;
        self.blocked += r.blocked;
        self.skipped += r.skipped;
        self.settling += r.settling;
        self.tables.entry(table.to_owned()).or_default().add(&r);
    }

    /// Total function calls (`computed + unchanged + failed`).
    pub fn calls(&self) -> u64 {
        self.computed + self.unchanged + self.failed
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} computed, {} unchanged, {} failed, {} blocked",
            self.computed, self.unchanged, self.failed, self.blocked
        )?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        if self.settling > 0 {
            write!(f, ", {} settling", self.settling)?;
        }
        Ok(())
    }
}

/// Row counts of one table by state (from `Db::status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableStatus {
    /// The table.
    pub table: String,
    /// Whether it is an input table.
    pub input: bool,
    /// Rows stored.
    pub rows: u64,
    /// Rows computed from the current rows of their inputs with the current
    /// code. (An input row may itself be stale: `status` looks one step
    /// upstream; `explain` follows the whole way.)
    pub fresh: u64,
    /// Rows whose input rows or code changed since they were computed.
    pub stale: u64,
    /// Root rows with no row here yet.
    pub missing: u64,
    /// Rows whose function failed.
    pub failed: u64,
    /// Rows blocked by a failed upstream row.
    pub blocked: u64,
    /// Rows being computed by a worker now.
    pub running: u64,
    /// Stale or missing rows waiting for their root row to settle.
    pub settling: u64,
    /// The workers holding leases in this table now.
    pub workers: Vec<String>,
}

/// A failed row and the rows it blocks (from `Db::errors`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedRow {
    /// The table.
    pub table: String,
    /// The key.
    pub key: Key,
    /// The stored message.
    pub message: String,
    /// The rows (table, key) blocked by this failure.
    pub blocks: Vec<(String, Key)>,
}
