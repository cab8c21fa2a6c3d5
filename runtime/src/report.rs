//! What `refresh`, `status` and `errors` tell the user.

use crate::value::Key;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

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
    /// Rows this run did not compute: another worker held them, or
    /// stored a newer result first (the write guard), or an input row
    /// they are computed from was gone when they were claimed. A refresh
    /// waits for the rows others hold until they are done, by that worker
    /// or, once its lease expires, by this one.
    pub skipped: u64,
    /// Stale rows left for later because their root row changed less than
    /// `settle` ago.
    pub settling: u64,
}

impl TableReport {
    /// Function calls (`computed + unchanged + failed`).
    pub fn calls(&self) -> u64 {
        self.computed + self.unchanged + self.failed
    }

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
    /// Rows this run did not compute: another worker held them (waited
    /// for until done), a newer result was stored first, or an input row
    /// was gone when they were claimed.
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

    /// The counts of one table (zero when the run did nothing there).
    pub fn table(&self, name: &str) -> TableReport {
        self.tables.get(name).copied().unwrap_or_default()
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
    /// Rows that `explain` calls fresh: computed from the current rows of
    /// their inputs, each of them settled, with the current code.
    pub fresh: u64,
    /// Rows whose input rows or code changed since they were computed, or
    /// whose input rows are stale themselves (`explain` says which).
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
    /// The workers holding leases in this table now, each with how many
    /// rows it is computing, sorted by worker.
    pub workers: Vec<crate::storage::RunningWork>,
    /// Rows with concurrent versions from replicas (input tables only;
    /// `conflicts` lists them, and a new write of a row resolves it).
    pub conflicts: u64,
    /// A table that this program no longer has (left by a function or row
    /// type that was removed): only `rows` is counted. `prune` drops it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub leftover: bool,
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
