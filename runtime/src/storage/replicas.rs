//! What a backend stores for replicas (section 5 of the design): this
//! replica's identity and clock id, every input row's current versions,
//! and what it received from each peer. The rules that decide between
//! versions are in [`crate::replica::version`]; a backend applies them
//! inside its transactions.

use crate::error::Result;
use crate::graph::Graph;
use crate::replica::version::Version;
use crate::row::TableInfo;
use crate::value::Key;
use rederive_itc::Id;
use std::path::Path;

/// A replica's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaMeta {
    /// The family: every replica forked, directly or not, from one first
    /// database shares it. Replicas of two families never sync.
    pub family: String,
    /// This replica's own name, unique in its family (checkpoints of its
    /// peers are kept by it).
    pub name: String,
    /// The part of the clock's id space this replica owns: its writes are
    /// recorded there. `0` once retired.
    pub id: Id,
    /// Whether the replica is retiring or retired: its writes are refused.
    pub retired: bool,
}

/// A position in a replica's stream of stored versions: the revision
/// (sequence) at which a version was stored, then its table, key and
/// encoded history, in that order. [`SyncCursor::start`] is before
/// everything.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncCursor {
    /// The local revision at which the version was stored.
    pub seq: i64,
    /// Its table.
    pub table: String,
    /// Its key.
    pub key: Key,
    /// Its encoded history.
    pub event: Vec<u8>,
}

impl SyncCursor {
    /// Before every version.
    pub fn start() -> SyncCursor {
        SyncCursor {
            seq: 0,
            table: String::new(),
            key: Key::Int(i64::MIN),
            event: Vec::new(),
        }
    }
}

/// A page of a replica's stored versions, for one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    /// The versions to send (those the peer sent this replica, and that
    /// nothing replaced since, are left out).
    pub versions: Vec<Version>,
    /// Where the page ends (past versions left out, too).
    pub next: SyncCursor,
    /// Whether more versions follow.
    pub more: bool,
}

/// What merging received versions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Keys whose versions changed.
    pub changed: u64,
    /// Received versions already seen (the same, or older than what is kept).
    pub ignored: u64,
    /// Keys in conflict after the merge, among those received.
    pub conflicts: u64,
}

/// A page of a replica's stream of derived rows (see
/// [`Replicas::derived_after`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedChanges {
    /// The rows written, by table and key, in the order they were last
    /// written (rows the peer sent, unchanged since, are left out).
    pub rows: Vec<(String, Key)>,
    /// Where the page ends (past rows left out, too).
    pub next: i64,
    /// Whether more rows follow.
    pub more: bool,
}

/// Replicas: the versions of input rows and the sync bookkeeping.
///
/// While a database has never forked, it is the first replica of itself
/// and keeps no clocks: each row's version is its genesis version
/// (implicit), and a deletion leaves a tombstone. From the first fork on,
/// every input write records a version with this replica's clock, in the
/// same transaction; a write on a retired replica is an error.
pub trait Replicas {
    /// This replica's identity; `None` while it never forked.
    fn replica(&self) -> Result<Option<ReplicaMeta>>;

    /// Stores this replica's identity (from then on, writes record
    /// versions), in one transaction.
    fn set_replica(&self, meta: &ReplicaMeta) -> Result<()>;

    /// Splits this replica's clock id for a fork, in one transaction: keeps
    /// one half and returns the identity kept and the half given away. A
    /// database that never forked becomes `first` (whose id must be the
    /// whole id space). A retired replica cannot fork.
    fn fork_id(&self, first: &ReplicaMeta) -> Result<(ReplicaMeta, Id)>;

    /// Copies the whole database into a new file at `path`, which must not
    /// exist: one consistent snapshot, holding no leases and no workers.
    fn copy_to(&self, path: &Path) -> Result<()>;

    /// The current versions of one key, the winner first; empty for a key
    /// never written.
    fn versions(&self, info: &TableInfo, key: &Key) -> Result<Vec<Version>>;

    /// Keys with concurrent versions, by table and key, after `after`.
    fn conflicts(&self, after: Option<(&str, &Key)>, limit: usize) -> Result<Vec<(String, Key)>>;

    /// The versions stored after `after`, in stream order, for the peer
    /// named `to`, at most `limit` of them.
    fn changes_after(&self, to: &str, after: &SyncCursor, limit: usize) -> Result<Changes>;

    /// Where this replica is in the stream of the peer named `peer`
    /// ([`SyncCursor::start`] for a peer never met).
    fn checkpoint(&self, peer: &str) -> Result<SyncCursor>;

    /// Merges versions received from the peer named `peer`, writes each
    /// changed key's winner into its input table (as an input write: rows
    /// derived from it become stale, or are deleted with it), and moves the
    /// peer's checkpoint to `upto`: all in one transaction, so that a sync
    /// cut short resumes from the last batch applied.
    fn apply(
        &self,
        graph: &Graph,
        peer: &str,
        versions: &[Version],
        upto: &SyncCursor,
    ) -> Result<Applied>;

    /// Adds a retiring replica's clock id to this replica's, once per
    /// retiring replica (by name): doing it again does nothing.
    fn absorb(&self, from: &str, id: &Id) -> Result<()>;

    /// Where this replica's stream of derived rows ends: every successful
    /// write of a derived row of a table that can travel (see
    /// [`crate::replica::shared`]) takes the next position, whatever
    /// wrote it (a refresh, `get`, or an offer stored). `0` when empty.
    fn derived_head(&self) -> Result<i64>;

    /// The derived rows written after position `after` of this replica's
    /// stream, for the peer named `to`, at most `limit` of them. A row is
    /// left out when a row of the same key in one of `siblings(table)`
    /// (the other tables of its root that travel) stands later in the
    /// stream and was not written from `to`'s offer: the root's rows are
    /// offered once, at that later position.
    fn derived_after(
        &self,
        to: &str,
        after: i64,
        limit: usize,
        siblings: &dyn Fn(&str) -> Vec<&'static str>,
    ) -> Result<DerivedChanges>;

    /// Where this replica is in the stream of derived rows of the peer
    /// named `peer` (`0` for a peer never met).
    fn derived_checkpoint(&self, peer: &str) -> Result<i64>;

    /// Records that `rows`, written here after position `since`, are what
    /// the peer named `peer` offered (they are not offered back to it
    /// while unchanged), and moves that peer's derived checkpoint to
    /// `upto` (never backwards), in one transaction.
    fn derived_received(
        &self,
        peer: &str,
        since: i64,
        rows: &[(String, Key)],
        upto: i64,
    ) -> Result<()>;
}
