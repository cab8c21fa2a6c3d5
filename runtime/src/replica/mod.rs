//! Replicas: copies of a database that take input writes independently
//! and sync later, pairwise, in any order (section 5 of the design).
//!
//! Every input row carries an Interval Tree Clock history ([`version`]).
//! A replica owns part of the clock's id space: [`Db::fork_replica`] gives
//! half of it to a new file, [`Db::retire_into`] hands it back to a live
//! replica. [`Db::sync_with`] exchanges, both ways, the versions each side
//! stored since the two last met (each keeps a checkpoint per peer, moved in
//! the same transaction as the versions it covers, so a sync cut short
//! resumes where it stopped). Concurrent versions are kept side by side
//! and listed by [`Db::conflicts`]; the input table holds a deterministic
//! winner, the same on every replica, and derived rows are computed from
//! it. After the versions, each side offers the other the fresh derived
//! rows it wrote since the two last met (a stream and a checkpoint per
//! peer, as for versions), and the other stores those its own code would
//! compute from its own rows ([`shared`]), rather than computing them.
//!
//! # How a machine joins, and what not to do
//!
//! A new machine joins by forking from any live replica
//! (`db.fork_replica("laptop.db")`, or the CLI's `fork PATH`) and moving
//! the new file there. Never copy a replica's file by hand to make another
//! one: the copy would own the same part of the id space, and two replicas
//! recording events with one id cannot tell their writes apart, so
//! concurrent edits could be lost. A sync between a file and its copy is
//! refused (they have the same name); a replica that retired refuses
//! writes.
pub mod codec;
pub mod net;
pub mod shared;
pub mod version;

use crate::engine::Db;
use crate::error::{Error, Result};
use crate::row::Input;
use crate::storage::{Applied, Changes, ReplicaMeta, Replicas, SyncCursor};
use crate::value::Key;
use rederive_itc::Id;
use serde::Serialize;
use shared::{SharedPage, SharedRow};
use std::path::Path;
use version::Version;

/// How many versions one sync message carries.
pub const SYNC_BATCH: usize = 2_000;

/// How many written derived rows (each offered with the rows of its root
/// key) one request asks for.
pub const SHARE_BATCH: usize = 500;

/// What [`Db::sync_with`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Versions sent to the other replica.
    pub sent: u64,
    /// Versions received from it.
    pub received: u64,
    /// Keys whose versions changed here.
    pub changed_here: u64,
    /// Keys whose versions changed there.
    pub changed_there: u64,
    /// Keys in conflict here after the sync (both replicas list the same
    /// ones once nothing else was written meanwhile).
    pub conflicts: u64,
    /// Derived rows the other replica computed that were stored here
    /// instead of being computed again (see [`shared`]).
    pub reused_here: u64,
    /// Derived rows of this replica stored there.
    pub reused_there: u64,
}

impl std::fmt::Display for SyncReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sent, {} received, {} rows changed here, {} there, {} in conflict, \
             {} derived rows reused here, {} there",
            self.sent,
            self.received,
            self.changed_here,
            self.changed_there,
            self.conflicts,
            self.reused_here,
            self.reused_there
        )
    }
}

/// An input row with concurrent versions (from [`Db::conflicts`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    /// The input table.
    pub table: String,
    /// The row's key.
    pub key: Key,
    /// How many versions it has (deletions count).
    pub versions: usize,
    /// Whether the winner (what the input table holds meanwhile) is a
    /// deletion.
    pub winner_deleted: bool,
}

/// A replica as a sync peer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Where it is (a file or a URL), for messages.
    pub location: String,
    /// Its identity; `None` for a database that never forked.
    pub meta: Option<ReplicaMeta>,
}

/// The other side of a sync: a database opened here, or one served over
/// the network. Each method is one request.
pub trait Peer {
    /// Who the peer is.
    fn describe(&self) -> Result<PeerInfo>;
    /// Where the peer is in the stream of the replica named `of`.
    fn checkpoint(&self, of: &str) -> Result<SyncCursor>;
    /// The peer's stored versions after `after`, for the replica `to`.
    fn changes_after(&self, to: &str, after: &SyncCursor, limit: usize) -> Result<Changes>;
    /// Merges versions from the replica `from` into the peer.
    fn apply(&self, from: &str, versions: &[Version], upto: &SyncCursor) -> Result<Applied>;
    /// Hands the retiring replica `from`'s clock id to the peer.
    fn absorb(&self, from: &str, id: &Id) -> Result<()>;
    /// Where the peer is in the stream of derived rows of the replica
    /// named `of` (see [`shared`]). The default is the start.
    fn shared_checkpoint(&self, of: &str) -> Result<i64> {
        let _ = of;
        Ok(0)
    }
    /// The derived rows the peer wrote after `after` in its stream, offered
    /// to the replica `to` (see [`shared`]). The default offers none.
    fn shared_after(&self, to: &str, after: i64, limit: usize) -> Result<SharedPage> {
        let _ = (to, limit);
        Ok(SharedPage {
            rows: Vec::new(),
            next: after,
            more: false,
        })
    }
    /// Stores the derived rows offered by the replica `from` that the peer
    /// would compute itself, then moves the peer's checkpoint in `from`'s
    /// stream to `upto`; returns how many rows it stored. The default
    /// stores none and keeps no checkpoint.
    fn adopt(&self, from: &str, rows: &[SharedRow], upto: i64) -> Result<u64> {
        let _ = (from, rows, upto);
        Ok(0)
    }
}

impl Db {
    /// The replica storage of this database's backend.
    fn replicas_op<T>(&self, op: impl FnOnce(&dyn Replicas) -> Result<T>) -> Result<T> {
        let store = self.store();
        match store.replicas() {
            Some(r) => op(r),
            None => Err(Error::Replica {
                replica: self.location(),
                reason: "this backend keeps no replicas (replicas are SQLite files)".into(),
            }),
        }
    }

    /// Where this database is, for messages.
    pub fn location(&self) -> String {
        self.store()
            .connector()
            .map(|c| c.location())
            .unwrap_or_else(|| ":memory:".into())
    }

    /// Creates a new replica at `path` (a file that must not exist): a
    /// copy of this database's rows, input and derived, owning half of
    /// this replica's clock id, and opens it with this `Db`'s graph.
    ///
    /// ```no_run
    /// # fn main() -> rederive_runtime::error::Result<()> {
    /// let desktop = rederive_runtime::Db::open("desktop.db")?;
    /// let laptop = desktop.fork_replica("laptop.db")?;
    /// // ... writes on either ...
    /// let report = laptop.sync_with(&desktop)?;
    /// println!("{report}");
    /// # Ok(()) }
    /// ```
    pub fn fork_replica(&self, path: impl AsRef<Path>) -> Result<Db> {
        let path = path.as_ref();
        let refuse = |reason: String| Error::Replica {
            replica: path.display().to_string(),
            reason,
        };
        if path
            .to_str()
            .is_some_and(|p| crate::storage::url::url_scheme(p).is_some())
        {
            return Err(refuse("a replica is a file: give a path".into()));
        }
        if path.exists() {
            return Err(refuse(
                "the file exists already; a fork makes a new file".into(),
            ));
        }
        let first = ReplicaMeta {
            family: random_name("family"),
            name: random_name("replica"),
            id: Id::one(),
            retired: false,
        };
        let (me, given) = self.replicas_op(|r| r.fork_id(&first))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".forking");
        let tmp = std::path::PathBuf::from(tmp);
        // A file left by a fork that crashed was never used: start over.
        for suffix in ["", "-wal", "-shm"] {
            let mut p = tmp.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        self.replicas_op(|r| r.copy_to(&tmp))?;
        {
            let child = crate::sqlite::SqliteStore::open(&tmp)?;
            let revision = crate::storage::Progress::revision(&child)?;
            // Each side has what the other stored up to the copy.
            let upto = SyncCursor {
                seq: revision.get() + 1,
                ..SyncCursor::start()
            };
            let child_meta = ReplicaMeta {
                family: me.family.clone(),
                name: random_name("replica"),
                id: given,
                retired: false,
            };
            child.set_replica(&child_meta)?;
            child.apply(self.graph(), &me.name, &[], &upto)?;
            self.replicas_op(|r| r.apply(self.graph(), &child_meta.name, &[], &upto))?;
            // Each side holds the derived rows the other wrote up to the
            // copy, too.
            let head = child.derived_head()?;
            child.derived_received(&me.name, 0, &[], head)?;
            self.replicas_op(|r| r.derived_received(&child_meta.name, 0, &[], head))?;
        }
        if path.exists() {
            let _ = std::fs::remove_file(&tmp);
            return Err(refuse(
                "the file appeared while forking; it was left alone".into(),
            ));
        }
        std::fs::rename(&tmp, path)
            .map_err(|e| refuse(format!("cannot move the fork into place: {e}")))?;
        Db::open_with(path, self.graph().clone())
    }

    /// This replica's identity, or `None` while it never forked.
    pub fn replica_meta(&self) -> Result<Option<ReplicaMeta>> {
        self.replicas_op(|r| r.replica())
    }

    /// Syncs with another replica both ways: each receives the versions
    /// the other stored since they last met.
    pub fn sync_with(&self, other: &Db) -> Result<SyncReport> {
        sync(self, other)
    }

    /// Retires this replica into `other`: sends it every version this
    /// replica holds that it lacks, then hands it this replica's clock id.
    /// Writes here are errors from then on. Running it again after a crash
    /// finishes what was left.
    pub fn retire_into(&self, other: &Db) -> Result<()> {
        retire(self, other)
    }

    /// Input rows with concurrent versions, by table and key.
    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        let mut out = Vec::new();
        let mut after: Option<(String, Key)> = None;
        loop {
            let page = self
                .replicas_op(|r| r.conflicts(after.as_ref().map(|(t, k)| (t.as_str(), k)), 1000))?;
            let done = page.len() < 1000;
            for (table, key) in page {
                let id = self.graph().table_id(&table)?;
                let info = self.graph().table(id).info;
                let versions = self.replicas_op(|r| r.versions(info, &key))?;
                out.push(Conflict {
                    table: table.clone(),
                    key: key.clone(),
                    versions: versions.len(),
                    winner_deleted: version::winner(&versions).is_some_and(|v| v.values.is_none()),
                });
                after = Some((table, key));
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// The current versions of an input row, the winner first: one
    /// normally, several in conflict, `None` for a deletion; empty for a
    /// key never written.
    pub fn versions<T: Input>(&self, key: impl Into<Key>) -> Result<Vec<Option<T>>> {
        let id = self.id_of::<T>()?;
        let key = self.coerce_key(id, key.into())?;
        let versions = self.replicas_op(|r| r.versions(&T::TABLE, &key))?;
        versions
            .into_iter()
            .map(|v| match v.values {
                None => Ok(None),
                Some(values) => T::decode(values)
                    .map(Some)
                    .map_err(|message| Error::Decode {
                        table: T::TABLE.name.to_owned(),
                        key: key.clone(),
                        message,
                    }),
            })
            .collect()
    }
}

impl Db {
    /// The current versions of any input row, as stored (with their clock
    /// histories), the winner first: what [`Db::versions`] decodes.
    pub fn stored_versions(&self, table: &str, key: impl Into<Key>) -> Result<Vec<Version>> {
        let id = self.graph().table_id(table)?;
        let key = self.coerce_key(id, key.into())?;
        let info = self.graph().table(id).info;
        if !info.input {
            return Err(Error::NotAnInput(table.to_owned()));
        }
        self.replicas_op(|r| r.versions(info, &key))
    }
}

impl Peer for Db {
    fn describe(&self) -> Result<PeerInfo> {
        Ok(PeerInfo {
            location: self.location(),
            meta: self.replica_meta()?,
        })
    }

    fn checkpoint(&self, of: &str) -> Result<SyncCursor> {
        self.replicas_op(|r| r.checkpoint(of))
    }

    fn changes_after(&self, to: &str, after: &SyncCursor, limit: usize) -> Result<Changes> {
        self.replicas_op(|r| r.changes_after(to, after, limit))
    }

    fn apply(&self, from: &str, versions: &[Version], upto: &SyncCursor) -> Result<Applied> {
        self.replicas_op(|r| r.apply(self.graph(), from, versions, upto))
    }

    fn absorb(&self, from: &str, id: &Id) -> Result<()> {
        self.replicas_op(|r| r.absorb(from, id))
    }

    fn shared_checkpoint(&self, of: &str) -> Result<i64> {
        self.replicas_op(|r| r.derived_checkpoint(of))
    }

    fn shared_after(&self, to: &str, after: i64, limit: usize) -> Result<SharedPage> {
        Db::shared_after(self, to, after, limit)
    }

    fn adopt(&self, from: &str, rows: &[SharedRow], upto: i64) -> Result<u64> {
        self.adopt_from(from, rows, upto)
    }
}

/// A fresh name: hex of a hash of the time, the process and a counter.
fn random_name(kind: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(kind.as_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(&now.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.finalize().to_hex()[..24].to_owned()
}

/// Both replicas' identities, checked: same family, different names,
/// disjoint ids, neither retired (`local_may_retire`: the local one may be
/// retiring).
fn check_pair(
    local: &PeerInfo,
    remote: &PeerInfo,
    local_may_retire: bool,
) -> Result<(ReplicaMeta, ReplicaMeta)> {
    let refuse = |reason: String| Error::Replica {
        replica: local.location.clone(),
        reason,
    };
    let never = |p: &PeerInfo| {
        refuse(format!(
            "{} never forked, so no other database is its replica; a new machine joins by \
             forking from a live replica (`fork PATH`)",
            p.location
        ))
    };
    let me = local.meta.clone().ok_or_else(|| never(local))?;
    let them = remote.meta.clone().ok_or_else(|| never(remote))?;
    if me.family != them.family {
        return Err(refuse(format!(
            "{} is not a replica of this one (they were never forked from one another); \
             a new machine joins by forking from a live replica (`fork PATH`)",
            remote.location
        )));
    }
    if me.name == them.name {
        return Err(refuse(format!(
            "{} is the same replica (`{}`): one file is a copy of the other made by hand. \
             A copy must not be used as a second replica (both would record writes with one \
             clock id); keep one, and fork new replicas from it",
            remote.location, me.name
        )));
    }
    if them.retired {
        return Err(refuse(format!(
            "{} retired; sync with a live replica",
            remote.location
        )));
    }
    if me.retired && !local_may_retire {
        return Err(refuse(
            "this replica retired; sync with a live replica".into(),
        ));
    }
    if !me.id.is_disjoint(&them.id) {
        return Err(refuse(format!(
            "{} owns part of this replica's clock id: one file was copied from the other (or \
             from an older copy) by hand; keep one, and fork new replicas from it",
            remote.location
        )));
    }
    Ok((me, them))
}

/// What one direction of a sync did.
#[derive(Default)]
struct Sent {
    versions: u64,
    changed: u64,
}

/// Sends what `from` stored since `to` last received from it.
fn send(from: &dyn Peer, from_name: &str, to: &dyn Peer, to_name: &str) -> Result<Sent> {
    let mut cursor = to.checkpoint(from_name)?;
    let mut sent = Sent::default();
    loop {
        let page = from.changes_after(to_name, &cursor, SYNC_BATCH)?;
        if page.next == cursor && page.versions.is_empty() {
            return Ok(sent);
        }
        let applied = to.apply(from_name, &page.versions, &page.next)?;
        sent.versions += page.versions.len() as u64;
        sent.changed += applied.changed;
        cursor = page.next;
        if !page.more {
            return Ok(sent);
        }
    }
}

/// Offers `to` the derived rows `from` wrote since `to` last stored its
/// offers, page by page; `to` moves its checkpoint after storing each
/// page. Returns how many rows `to` stored.
fn share(from: &dyn Peer, from_name: &str, to: &dyn Peer, to_name: &str) -> Result<u64> {
    let mut cursor = to.shared_checkpoint(from_name)?;
    let mut adopted = 0;
    loop {
        let page = from.shared_after(to_name, cursor, SHARE_BATCH)?;
        if page.next == cursor && page.rows.is_empty() {
            return Ok(adopted);
        }
        adopted += to.adopt(from_name, &page.rows, page.next)?;
        cursor = page.next;
        if !page.more {
            return Ok(adopted);
        }
    }
}

/// Syncs `local` with `remote`, both ways.
pub fn sync(local: &Db, remote: &dyn Peer) -> Result<SyncReport> {
    let (me, them) = check_pair(&local.describe()?, &remote.describe()?, false)?;
    let here = send(remote, &them.name, local, &me.name)?;
    let there = send(local, &me.name, remote, &them.name)?;
    // Input rows first, both ways, so that each side judges the offered
    // derived rows against inputs that agree. Rows stored here from the
    // remote's offer are not offered back to it.
    let reused_here = share(remote, &them.name, local, &me.name)?;
    let reused_there = share(local, &me.name, remote, &them.name)?;
    let conflicts = local
        .replicas_op(|r| r.conflicts(None, usize::MAX >> 1))?
        .len() as u64;
    Ok(SyncReport {
        sent: there.versions,
        received: here.versions,
        changed_here: here.changed,
        changed_there: there.changed,
        conflicts,
        reused_here,
        reused_there,
    })
}

/// Retires `local` into `remote` (see [`Db::retire_into`]).
pub fn retire(local: &Db, remote: &dyn Peer) -> Result<()> {
    let info = local.describe()?;
    let me = match &info.meta {
        Some(m) if m.retired && m.id.is_zero() => {
            return Err(Error::Replica {
                replica: info.location.clone(),
                reason: "this replica retired already".into(),
            })
        }
        Some(m) => m.clone(),
        None => {
            return Err(Error::Replica {
                replica: info.location.clone(),
                reason: "this database never forked: it has no replica to retire into".into(),
            })
        }
    };
    let (_, them) = check_pair(&info, &remote.describe()?, true)?;
    // From here on, writes here are refused.
    let retiring = ReplicaMeta {
        retired: true,
        ..me.clone()
    };
    local.replicas_op(|r| r.set_replica(&retiring))?;
    send(local, &me.name, remote, &them.name)?;
    // What this replica computed need not be computed there.
    share(local, &me.name, remote, &them.name)?;
    remote.absorb(&me.name, &me.id)?;
    let retired = ReplicaMeta {
        id: Id::zero(),
        ..retiring
    };
    local.replicas_op(|r| r.set_replica(&retired))
}
