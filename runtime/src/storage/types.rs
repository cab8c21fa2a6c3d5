//! The values that cross the storage interface.

use crate::value::{Key, Value};
use std::fmt;

pub use crate::catalog::{SchemaChange, StoredTable};

/// A revision of the database: the counter that every write transaction
/// moves forward. Zero is "before anything was written".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(i64);

impl Revision {
    /// Before any write.
    pub const ZERO: Revision = Revision(0);

    /// A revision from its stored number.
    pub const fn new(n: i64) -> Revision {
        Revision(n)
    }

    /// The stored number.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// The epoch: moved by every write that can make derived rows stale outside
/// a refresh pass (see the [module docs](super)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epoch(i64);

impl Epoch {
    /// An epoch from its stored number.
    pub const fn new(n: i64) -> Epoch {
        Epoch(n)
    }

    /// The stored number.
    pub const fn get(self) -> i64 {
        self.0
    }
}

/// Where a walk over changed rows stands: the revision of the last row
/// seen, and a position among the rows of that revision that only the
/// backend interprets (the engine passes cursors back unchanged).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeCursor {
    revision: Revision,
    position: Value,
}

impl ChangeCursor {
    /// Before every row changed after `revision`.
    pub fn after(revision: Revision) -> ChangeCursor {
        ChangeCursor {
            revision,
            position: Value::Null,
        }
    }

    /// A cursor at a row (for backends): its `changed_at` and position.
    pub fn at(revision: Revision, position: Value) -> ChangeCursor {
        ChangeCursor { revision, position }
    }

    /// The revision of the last row seen.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The backend's position among that revision's rows (`Null` before
    /// the first).
    pub fn position(&self) -> &Value {
        &self.position
    }
}

/// Changes whenever another connection commits (see
/// [`super::Progress::change_token`]); only equality means anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeToken(pub i64);

/// A derived row's status, as stored (see [`RowStatus`] for the details).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Computed successfully (always, for input rows).
    Ok = 0,
    /// The function failed.
    Error = 1,
    /// An input failed.
    Blocked = 2,
}

impl Status {
    /// The stored code of a status.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The status of a stored code (unknown codes read as `Ok`).
    pub fn from_code(i: i64) -> Status {
        match i {
            1 => Status::Error,
            2 => Status::Blocked,
            _ => Status::Ok,
        }
    }
}

/// A stored row's status, with what a failure left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowStatus {
    /// Computed successfully (always, for input rows).
    Ok,
    /// The function returned an error or panicked.
    Failed {
        /// The message.
        message: String,
    },
    /// Not computed: a row it depends on failed.
    Blocked {
        /// The failed row's table.
        table: String,
        /// The failed row's key.
        key: Key,
    },
}

impl RowStatus {
    /// The status without its details.
    pub fn status(&self) -> Status {
        match self {
            RowStatus::Ok => Status::Ok,
            RowStatus::Failed { .. } => Status::Error,
            RowStatus::Blocked { .. } => Status::Blocked,
        }
    }
}

/// What is stored about one row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowState {
    /// The revision at which the row's value last changed.
    pub changed_at: Revision,
    /// Ok, failed or blocked.
    pub status: RowStatus,
    /// The code version it was computed with (derived rows).
    pub code: Option<std::sync::Arc<str>>,
    /// The `changed_at` of each input when it was computed (derived rows).
    pub ins: Vec<Revision>,
    /// The value columns (empty when not asked for, or when the row failed
    /// or is blocked).
    pub values: Vec<Value>,
    /// Wall-clock time of the last change, in ms since the epoch (input rows).
    pub changed_ms: i64,
}

/// Which tables' values a [`super::Rows::load`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Values {
    /// Every table's.
    All,
    /// The last table's only (the others' provenance is enough).
    Last,
    /// Every table's but the last's (whose provenance is enough).
    AllButLast,
    /// None: provenance only.
    None,
}

impl Values {
    /// Whether the `i`-th of `n` tables' values are read.
    pub fn of(self, i: usize, n: usize) -> bool {
        match self {
            Values::All => true,
            Values::Last => i + 1 == n,
            Values::AllButLast => i + 1 < n,
            Values::None => false,
        }
    }
}

/// One row of a [`super::Rows::scan_page`]: a key and its states.
#[derive(Debug, Clone)]
pub struct ScannedRow {
    /// The key.
    pub key: Key,
    /// The key's state in each table asked for.
    pub states: Vec<Option<RowState>>,
}

/// One row of a [`super::Rows::changed_page`].
#[derive(Debug, Clone)]
pub struct ChangedRow {
    /// The driver row's key.
    pub key: Key,
    /// Where the walk stands after this row.
    pub cursor: ChangeCursor,
    /// The key's state in each table asked for.
    pub states: Vec<Option<RowState>>,
}

/// A result to store for one derived row.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The row's key.
    pub key: Key,
    /// Whether the planner found no stored row: the backend may insert it
    /// without comparing, as long as a row that appeared meanwhile still
    /// gets the guarded write.
    pub new: bool,
    /// The `changed_at` of each input it was computed from.
    pub ins: Vec<Revision>,
    /// The rows its function read through its `ctx`: they replace the
    /// row's recorded reads when it is written (tables without declared
    /// reads record none).
    pub reads: Vec<Read>,
    /// Value, error or block.
    pub kind: OutcomeKind,
}

/// One row a derived row's function read through its `ctx`, as it was then.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Read {
    /// The table read.
    pub table: crate::graph::TableId,
    /// The key read.
    pub key: Key,
    /// The read row's `changed_at` when it was read; `None` when no row of
    /// that key existed (the reader is stale once one does).
    pub seen: Option<Revision>,
}

/// A recorded [`Read`] with the read row's `changed_at` now (`None`: no row
/// of that key exists now). The read holds while the two agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRead {
    /// The read as recorded.
    pub read: Read,
    /// The read row's `changed_at` now.
    pub now: Option<Revision>,
}

/// The result of computing one row.
#[derive(Debug, Clone)]
pub enum OutcomeKind {
    /// The encoded row.
    Ok(Vec<Value>),
    /// The function's error message.
    Error(String),
    /// Not computed: this upstream row failed.
    Blocked {
        /// The failed table.
        table: String,
        /// The failed key.
        key: Key,
    },
}

/// What happened to one stored outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored, and the value differs from before (or is new).
    Changed,
    /// Stored; the value equals the previous one, whose `changed_at` is kept.
    Unchanged,
    /// Not stored: the fence failed, the stored row was computed from newer
    /// inputs, or the root row is gone.
    Rejected,
}

/// Who writes a batch of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// A refresh pass over the table: what it writes is accounted for by
    /// the pass's own marks.
    Refresh,
    /// `get`, `refresh_from` or `retry`: rows written behind a refresh
    /// pass's back, so the epoch moves.
    OnDemand,
}

/// How a batch's results prove that their writer still holds the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// No leases (a private database, or leases turned off).
    Unfenced,
    /// Each row's lease, held by this owner.
    Rows {
        /// The lease owner.
        owner: String,
    },
    /// The table lease of a worker that was alone, held by this owner.
    Table {
        /// The lease owner.
        owner: String,
    },
}

/// How to claim a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimMode {
    /// Row by row.
    Rows,
    /// The whole table when the worker is alone, else row by row.
    TableIfAlone,
}

/// What a claim got: its fence, which rows, and the revision it saw.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Present the fence when writing the batch's results.
    pub fence: Fence,
    /// Whether each key asked for was claimed.
    pub granted: Vec<bool>,
    /// The revision when the claim was made (anything written after the
    /// caller's plan means the plan must be checked again).
    pub revision: Revision,
}

/// Leases held by one worker in one table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunningWork {
    /// The worker.
    pub worker: String,
    /// How many rows it is computing.
    pub rows: u64,
}
