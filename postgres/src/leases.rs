//! Leases: claims on rows or whole tables, heartbeats, and releases.
//!
//! A claim never waits for a lock another transaction holds on a lease
//! (see the [crate docs](crate#claims)): lease rows are locked with
//! `FOR UPDATE SKIP LOCKED` (a row locked by someone else is in use, and
//! counts as held), and the table's advisory lock with
//! `pg_try_advisory_xact_lock` (exclusive for a whole-table claim, shared
//! for row claims), so that the two kinds of claims of one table are never
//! in progress together.

use crate::conn::{Conn, PgResult};
use crate::progress::current_revision;
use crate::sql::encode_key;
use crate::PgStore;
use rederive_runtime::error::Result;
use rederive_runtime::storage::{Claim, ClaimMode, Fence, Leases, RunningWork};
use rederive_runtime::value::Key;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The class of the tables' advisory locks (two-key form: this class, and
/// the hash of the table's name).
const TABLE_LOCK_CLASS: i32 = 1_919_186_551;

/// Milliseconds of a duration, saturating, at least 1 (as the runtime
/// counts a lease's time to live).
fn millis(d: Duration) -> i64 {
    d.as_millis().clamp(1, i64::MAX as u128) as i64
}

/// Tries the table's advisory lock for this transaction, shared (row
/// claims; a whole-table claim takes it exclusive, see `claim_table`).
/// Never waits.
fn try_shared_table_lock(c: &mut Conn, table: &str) -> PgResult<bool> {
    Ok(c.query_one(
        "SELECT pg_try_advisory_xact_lock_shared($1, hashtext($2))",
        &[&TABLE_LOCK_CLASS, &table],
    )?
    .try_get(0)?)
}

/// The table lease of a table, as a claim finds it.
enum TableLease {
    /// There is none.
    Free,
    /// Locked by this transaction (`FOR UPDATE`): its owner and expiry.
    Locked { owner: String, expires: i64 },
    /// Another owner's, locked by another transaction: a write under it,
    /// a heartbeat, a takeover or a release is in progress. In use.
    Busy,
}

/// Locks the table lease of `table` for this claim, without waiting for
/// another owner's: a lease another transaction has locked is in use.
/// The claimant's own lease can only be locked by its worker's heartbeat,
/// for a moment: that one is waited for.
fn lock_table_lease(c: &mut Conn, table: &str, owner: &str) -> PgResult<TableLease> {
    let locked = |r: &postgres::Row| -> PgResult<TableLease> {
        Ok(TableLease::Locked {
            owner: r.try_get(0)?,
            expires: r.try_get(1)?,
        })
    };
    if let Some(r) = c.query_opt(
        "SELECT owner, expires_ms FROM rederive_table_leases WHERE tbl = $1 FOR UPDATE SKIP LOCKED",
        &[&table],
    )? {
        return locked(&r);
    }
    let held_by: Option<String> = c
        .query_opt(
            "SELECT owner FROM rederive_table_leases WHERE tbl = $1",
            &[&table],
        )?
        .map(|r| r.try_get(0))
        .transpose()?;
    match held_by {
        None => Ok(TableLease::Free),
        Some(o) if o == owner => {
            match c.query_opt(
                "SELECT owner, expires_ms FROM rederive_table_leases WHERE tbl = $1 AND owner = $2 \
                 FOR UPDATE",
                &[&table, &owner],
            )? {
                Some(r) => locked(&r),
                // Taken over or given back meanwhile.
                None => Ok(TableLease::Busy),
            }
        }
        Some(_) => Ok(TableLease::Busy),
    }
}

/// What a claim needs to know about time and its claimant.
struct Claimant<'a> {
    table: &'a str,
    worker: &'a str,
    owner: &'a str,
    now: i64,
    until: i64,
}

/// The whole table for `owner`, when its worker is the only live worker
/// and no other owner holds a lease in it (all inside the claim's
/// transaction; `false` leaves the claim to row leases).
fn claim_table(c: &mut Conn, who: &Claimant<'_>, rows: usize) -> PgResult<bool> {
    let Claimant {
        table,
        worker,
        owner,
        now,
        until,
    } = *who;
    // Whether other workers live, and if not the table's advisory lock,
    // exclusive, in one round trip: a worker among others takes no
    // exclusive lock, which would refuse every row claim of the table
    // made meanwhile (rows no one would come back to, but for a refresh
    // that waits for them). CASE evaluates the lock only when alone. A
    // worker registering just after this leaves the table alone: it finds
    // the table lease.
    let alone_and_locked: bool = c
        .query_one(
            "SELECT CASE WHEN EXISTS(SELECT 1 FROM rederive_workers WHERE worker <> $1 AND expires_ms >= $2) \
               THEN false ELSE pg_try_advisory_xact_lock($3, hashtext($4)) END",
            &[&worker, &now, &TABLE_LOCK_CLASS, &table],
        )?
        .try_get(0)?;
    if !alone_and_locked {
        // Not alone, or another claim of this table is in progress.
        return Ok(false);
    }
    // Other owners' row leases: all must be expired, and free to take
    // (a locked one is being written under or given back: in use).
    let locked = c.query(
        "SELECT expires_ms FROM rederive_leases WHERE tbl = $1 AND owner <> $2 \
         FOR UPDATE SKIP LOCKED",
        &[&table, &owner],
    )?;
    let mut live = false;
    for r in &locked {
        live |= r.try_get::<_, i64>(0)? >= now;
    }
    if live {
        return Ok(false);
    }
    let all: i64 = c
        .query_one(
            "SELECT count(*) FROM rederive_leases WHERE tbl = $1 AND owner <> $2",
            &[&table, &owner],
        )?
        .try_get(0)?;
    if all != locked.len() as i64 {
        return Ok(false);
    }
    // The table lease: new, expired, or already this owner's.
    let rows = rows as i64;
    match lock_table_lease(c, table, owner)? {
        TableLease::Locked {
            owner: held_by,
            expires,
        } => {
            if held_by != owner && expires >= now {
                return Ok(false);
            }
            c.execute(
                "UPDATE rederive_table_leases SET worker = $2, owner = $3, rows = $4, expires_ms = $5 \
                 WHERE tbl = $1",
                &[&table, &worker, &owner, &rows, &until],
            )?;
        }
        TableLease::Busy => return Ok(false),
        TableLease::Free => {
            // No other transaction inserts a table lease while this one
            // holds the table's advisory lock exclusively.
            c.execute(
                "INSERT INTO rederive_table_leases(tbl, worker, owner, rows, expires_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[&table, &worker, &owner, &rows, &until],
            )?;
        }
    }
    // The row leases left in the table are expired (checked above): drop
    // them, so that their owners' fences fail should they come back.
    c.execute(
        "DELETE FROM rederive_leases WHERE tbl = $1 AND owner <> $2",
        &[&table, &owner],
    )?;
    Ok(true)
}

/// Claims `keys` row by row (inside the claim's transaction): each is
/// granted unless another owner holds an unexpired lease on it, or on the
/// whole table, or its lease row is in use by another transaction.
fn claim_rows(c: &mut Conn, who: &Claimant<'_>, keys: &[&Key]) -> PgResult<Vec<bool>> {
    let Claimant {
        table,
        worker,
        owner,
        now,
        until,
    } = *who;
    let none = vec![false; keys.len()];
    if !try_shared_table_lock(c, table)? {
        // A whole-table claim is in progress.
        return Ok(none);
    }
    match lock_table_lease(c, table, owner)? {
        TableLease::Locked {
            owner: held_by,
            expires,
        } => {
            if expires < now {
                // An expired table lease is taken over row by row: remove
                // it, so that its owner's fence fails should it come back.
                c.execute(
                    "DELETE FROM rederive_table_leases WHERE tbl = $1",
                    &[&table],
                )?;
            } else if held_by != owner {
                // Another worker holds the whole table for a batch.
                return Ok(none);
            }
        }
        TableLease::Busy => return Ok(none),
        TableLease::Free => {}
    }
    let encoded: Vec<Vec<u8>> = keys.iter().map(|k| encode_key(k)).collect();
    let mut wanted: Vec<&Vec<u8>> = encoded.iter().collect();
    wanted.sort();
    wanted.dedup();
    // Which keys have a lease row at all (and whose), and which of those
    // this claim may take (its owner's, or expired) and could lock.
    let mut existing: HashMap<Vec<u8>, String> = HashMap::new();
    for r in c.query(
        "SELECT key, owner FROM rederive_leases WHERE tbl = $1 AND key = ANY($2::bytea[])",
        &[&table, &wanted],
    )? {
        existing.insert(r.try_get(0)?, r.try_get(1)?);
    }
    let mut takeable: Vec<Vec<u8>> = c
        .query(
            "SELECT key FROM rederive_leases WHERE tbl = $1 AND key = ANY($2::bytea[]) \
             AND (owner = $3 OR expires_ms < $4) ORDER BY key FOR UPDATE SKIP LOCKED",
            &[&table, &wanted, &owner, &now],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    // The claimant's own leases that another transaction has locked: its
    // worker's heartbeat, for a moment (or a takeover of an expired one,
    // after which they are no longer its own). Waited for.
    let locked: HashSet<&Vec<u8>> = takeable.iter().collect();
    let own_busy: Vec<&Vec<u8>> = existing
        .iter()
        .filter(|(k, o)| *o == owner && !locked.contains(k))
        .map(|(k, _)| k)
        .collect();
    if !own_busy.is_empty() {
        let waited = c.query(
            "SELECT key FROM rederive_leases WHERE tbl = $1 AND key = ANY($2::bytea[]) \
             AND owner = $3 ORDER BY key FOR UPDATE",
            &[&table, &own_busy, &owner],
        )?;
        for r in &waited {
            takeable.push(r.try_get(0)?);
        }
    }
    let mut granted: HashSet<Vec<u8>> = HashSet::new();
    if !takeable.is_empty() {
        c.execute(
            "UPDATE rederive_leases SET worker = $3, owner = $4, expires_ms = $5 \
             WHERE tbl = $1 AND key = ANY($2::bytea[])",
            &[&table, &takeable, &worker, &owner, &until],
        )?;
    }
    let takeable: HashSet<Vec<u8>> = takeable.into_iter().collect();
    let absent: Vec<&Vec<u8>> = wanted
        .iter()
        .copied()
        .filter(|k| !existing.contains_key(*k) && !takeable.contains(*k))
        .collect();
    granted.extend(takeable);
    if !absent.is_empty() {
        // In key order, so that two claims inserting the same keys never
        // wait for each other in opposite orders.
        let inserted = c.query(
            "INSERT INTO rederive_leases(tbl, key, worker, owner, expires_ms) \
             SELECT $1, u.k, $3, $4, $5 FROM unnest($2::bytea[]) AS u(k) ORDER BY u.k \
             ON CONFLICT (tbl, key) DO NOTHING RETURNING key",
            &[&table, &absent, &worker, &owner, &until],
        )?;
        for r in &inserted {
            granted.insert(r.try_get(0)?);
        }
    }
    Ok(encoded.iter().map(|k| granted.contains(k)).collect())
}

impl Leases for PgStore {
    fn register_worker(&self, worker: &str, ttl: Duration) -> Result<()> {
        let until = self.now_ms().saturating_add(millis(ttl));
        self.write_one(|c| {
            c.execute(
                "INSERT INTO rederive_workers(worker, expires_ms) VALUES ($1, $2) \
                 ON CONFLICT (worker) DO UPDATE SET expires_ms = excluded.expires_ms",
                &[&worker, &until],
            )?;
            Ok(())
        })
    }

    fn heartbeat(&self, worker: &str, ttl: Duration) -> Result<()> {
        let until = self.now_ms().saturating_add(millis(ttl));
        self.write(|c| {
            c.execute(
                "UPDATE rederive_table_leases SET expires_ms = $2 WHERE worker = $1",
                &[&worker, &until],
            )?;
            // A row lease locked by another transaction is being given
            // back or taken over: extending it would be undone.
            c.execute(
                "UPDATE rederive_leases l SET expires_ms = $2 FROM \
                   (SELECT tbl, key FROM rederive_leases WHERE worker = $1 FOR UPDATE SKIP LOCKED) s \
                 WHERE l.tbl = s.tbl AND l.key = s.key",
                &[&worker, &until],
            )?;
            c.execute(
                "UPDATE rederive_workers SET expires_ms = $2 WHERE worker = $1",
                &[&worker, &until],
            )?;
            Ok(())
        })
    }

    fn claim(
        &self,
        table: &str,
        keys: &[&Key],
        worker: &str,
        owner: &str,
        ttl: Duration,
        mode: ClaimMode,
    ) -> Result<Claim> {
        let now = self.now_ms();
        let who = Claimant {
            table,
            worker,
            owner,
            now,
            until: now.saturating_add(millis(ttl)),
        };
        self.write(|c| {
            if mode == ClaimMode::TableIfAlone && claim_table(c, &who, keys.len())? {
                return Ok(Claim {
                    fence: Fence::Table {
                        owner: owner.to_owned(),
                    },
                    granted: vec![true; keys.len()],
                    revision: current_revision(c)?,
                });
            }
            let granted = claim_rows(c, &who, keys)?;
            Ok(Claim {
                fence: Fence::Rows {
                    owner: owner.to_owned(),
                },
                granted,
                revision: current_revision(c)?,
            })
        })
    }

    fn release(&self, table: &str, fence: &Fence, keys: &[&Key]) -> Result<()> {
        match fence {
            Fence::Unfenced => self.write_one(|_| Ok(())),
            Fence::Table { owner } => self.write_one(|c| {
                c.execute(
                    "DELETE FROM rederive_table_leases WHERE tbl = $1 AND owner = $2",
                    &[&table, owner],
                )?;
                Ok(())
            }),
            Fence::Rows { owner } => {
                let keys: Vec<Vec<u8>> = keys.iter().map(|k| encode_key(k)).collect();
                self.write_one(|c| {
                    c.execute(
                        "DELETE FROM rederive_leases WHERE tbl = $1 AND owner = $2 \
                         AND key = ANY($3::bytea[])",
                        &[&table, owner, &keys],
                    )?;
                    Ok(())
                })
            }
        }
    }

    fn release_worker(&self, worker: &str) -> Result<()> {
        self.write(|c| {
            c.execute("DELETE FROM rederive_leases WHERE worker = $1", &[&worker])?;
            c.execute(
                "DELETE FROM rederive_table_leases WHERE worker = $1",
                &[&worker],
            )?;
            c.execute("DELETE FROM rederive_workers WHERE worker = $1", &[&worker])?;
            Ok(())
        })
    }

    fn running(&self, table: &str) -> Result<Vec<RunningWork>> {
        let now = self.now_ms();
        self.read(|c| {
            let rows = c.query(
                "SELECT worker, sum(n)::bigint FROM ( \
                   SELECT worker, count(*) AS n FROM rederive_leases \
                     WHERE tbl = $1 AND expires_ms >= $2 GROUP BY worker \
                   UNION ALL \
                   SELECT worker, rows FROM rederive_table_leases WHERE tbl = $1 AND expires_ms >= $2 \
                 ) s GROUP BY worker ORDER BY worker",
                &[&table, &now],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let worker: String = r.try_get(0)?;
                let n: i64 = r.try_get(1)?;
                out.push(RunningWork {
                    worker,
                    rows: n.max(0) as u64,
                });
            }
            Ok(out)
        })
    }
}
