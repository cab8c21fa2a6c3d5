//! Leases: claims on rows or whole tables, heartbeats, and releases.

use super::sql::current_revision;
use super::{run, SqlValue, SqliteStore};
use crate::clock::millis;
use crate::error::Result;
use crate::storage::{Claim, ClaimMode, Fence, Leases, RunningWork};
use crate::value::Key;
use rusqlite::{params, OptionalExtension};
use std::time::Duration;

impl SqliteStore {
    /// Claims the whole table when `worker` is the only live worker and
    /// no other owner holds a lease in it. Inside the claim's transaction.
    fn claim_table(
        tx: &rusqlite::Connection,
        table: &str,
        worker: &str,
        owner: &str,
        rows: usize,
        now: i64,
        until: i64,
    ) -> rusqlite::Result<bool> {
        let others: bool = tx
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM rederive_workers WHERE worker != ?1 AND expires_ms >= ?2)
                     OR EXISTS(SELECT 1 FROM rederive_leases WHERE tbl = ?3 AND owner != ?4 AND expires_ms >= ?2)",
            )?
            .query_row(params![worker, now, table, owner], |r| r.get(0))?;
        if others {
            return Ok(false);
        }
        // A worker that starts later registers first, then finds this lease
        // and leaves the table alone until the batch is written.
        let got = tx
            .prepare_cached(
                "INSERT INTO rederive_table_leases(tbl, worker, owner, rows, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(tbl) DO UPDATE SET worker = excluded.worker, owner = excluded.owner,
                   rows = excluded.rows, expires_ms = excluded.expires_ms
                 WHERE expires_ms < ?6 OR owner = excluded.owner
                 RETURNING 1",
            )?
            .query_row(params![table, worker, owner, rows as i64, until, now], |_| Ok(()))
            .optional()?
            .is_some();
        if got {
            // Row leases left in the table are expired (checked above): drop
            // them, so that their owners' fences fail should they come back.
            tx.prepare_cached("DELETE FROM rederive_leases WHERE tbl = ?1 AND owner != ?2")?
                .execute(params![table, owner])?;
        }
        Ok(got)
    }
}

impl Leases for SqliteStore {
    fn register_worker(&self, worker: &str, ttl: Duration) -> Result<()> {
        run(|| self.end_snapshot_now())?;
        run(|| {
            self.conn.execute(
                "INSERT INTO rederive_workers(worker, expires_ms) VALUES (?1, ?2)
                 ON CONFLICT(worker) DO UPDATE SET expires_ms = excluded.expires_ms",
                params![worker, self.now_ms() + millis(ttl)],
            )?;
            Ok(())
        })
    }

    fn heartbeat(&self, worker: &str, ttl: Duration) -> Result<()> {
        run(|| self.end_snapshot_now())?;
        run(|| {
            let until = self.now_ms() + millis(ttl);
            let tx = self.write()?;
            for sql in [
                "UPDATE rederive_leases SET expires_ms = ?2 WHERE worker = ?1",
                "UPDATE rederive_table_leases SET expires_ms = ?2 WHERE worker = ?1",
                "UPDATE rederive_workers SET expires_ms = ?2 WHERE worker = ?1",
            ] {
                tx.prepare_cached(sql)?.execute(params![worker, until])?;
            }
            tx.commit()?;
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
        run(|| self.end_snapshot_now())?;
        run(|| {
            let tx = self.write()?;
            let now = self.now_ms();
            let until = now + millis(ttl);
            if mode == ClaimMode::TableIfAlone
                && Self::claim_table(&tx, table, worker, owner, keys.len(), now, until)?
            {
                let revision = current_revision(&tx)?;
                tx.commit()?;
                return Ok(Claim {
                    fence: Fence::Table {
                        owner: owner.to_owned(),
                    },
                    granted: vec![true; keys.len()],
                    revision,
                });
            }
            let fence = Fence::Rows {
                owner: owner.to_owned(),
            };
            let table_held: bool = tx
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM rederive_table_leases WHERE tbl = ?1 AND owner != ?2 AND expires_ms >= ?3)",
                )?
                .query_row(params![table, owner, now], |r| r.get(0))?;
            if table_held {
                // Another worker holds the whole table for a batch.
                let revision = current_revision(&tx)?;
                return Ok(Claim {
                    fence,
                    granted: vec![false; keys.len()],
                    revision,
                });
            }
            // An expired table lease is taken over row by row: remove it, so
            // that its owner's fence fails should it come back.
            tx.prepare_cached(
                "DELETE FROM rederive_table_leases WHERE tbl = ?1 AND expires_ms < ?2",
            )?
            .execute(params![table, now])?;
            let mut granted = Vec::with_capacity(keys.len());
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO rederive_leases(tbl, key, worker, owner, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(tbl, key) DO UPDATE SET worker = excluded.worker, owner = excluded.owner,
                       expires_ms = excluded.expires_ms
                     WHERE expires_ms < ?6 OR owner = excluded.owner
                     RETURNING 1",
                )?;
                for key in keys {
                    let k = key.to_value();
                    let got = stmt
                        .query_row(
                            params![table, SqlValue(&k), worker, owner, until, now],
                            |_| Ok(()),
                        )
                        .optional()?
                        .is_some();
                    granted.push(got);
                }
            }
            let revision = current_revision(&tx)?;
            tx.commit()?;
            Ok(Claim {
                fence,
                granted,
                revision,
            })
        })
    }

    fn release(&self, table: &str, fence: &Fence, keys: &[&Key]) -> Result<()> {
        run(|| self.end_snapshot_now())?;
        run(|| {
            match fence {
                Fence::Unfenced => {}
                Fence::Table { owner } => {
                    self.conn.execute(
                        "DELETE FROM rederive_table_leases WHERE tbl = ?1 AND owner = ?2",
                        params![table, owner],
                    )?;
                }
                Fence::Rows { owner } => {
                    let tx = self.write()?;
                    {
                        let mut stmt = tx.prepare_cached(
                            "DELETE FROM rederive_leases WHERE tbl = ?1 AND key = ?2 AND owner = ?3",
                        )?;
                        for key in keys {
                            stmt.execute(params![table, SqlValue(&key.to_value()), owner])?;
                        }
                    }
                    tx.commit()?;
                }
            }
            Ok(())
        })
    }

    fn release_worker(&self, worker: &str) -> Result<()> {
        run(|| self.end_snapshot_now())?;
        run(|| {
            let tx = self.write()?;
            tx.execute("DELETE FROM rederive_leases WHERE worker = ?1", [worker])?;
            tx.execute(
                "DELETE FROM rederive_table_leases WHERE worker = ?1",
                [worker],
            )?;
            tx.execute("DELETE FROM rederive_workers WHERE worker = ?1", [worker])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn running(&self, table: &str) -> Result<Vec<RunningWork>> {
        run(|| {
            let mut stmt = self.conn.prepare_cached(
                "SELECT worker, sum(n) FROM (
                     SELECT worker, count(*) AS n FROM rederive_leases WHERE tbl = ?1 AND expires_ms >= ?2 GROUP BY worker
                     UNION ALL
                     SELECT worker, rows FROM rederive_table_leases WHERE tbl = ?1 AND expires_ms >= ?2)
                 GROUP BY worker ORDER BY worker",
            )?;
            let rows = stmt.query_map(params![table, self.now_ms()], |r| {
                Ok(RunningWork {
                    worker: r.get(0)?,
                    rows: r.get::<_, i64>(1)? as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }
}
