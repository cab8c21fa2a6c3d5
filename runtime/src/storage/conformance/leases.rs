//! Cases on claims, fences, heartbeats and releases. The second worker
//! works through [`Fx::other`]: a second connection for shared backends.

use super::{int, ints, ok, refs, run, Fx, Harness, SEC, TTL};
use crate::error::Result;
use crate::storage::{Backend, Claim, ClaimMode, Fence, Outcome, Pass, RunningWork, Written};
use crate::value::Value;
use std::time::Duration;

/// Claims `keys` of `Len`.
fn claim(
    db: &dyn Backend,
    keys: &[i64],
    worker: &str,
    owner: &str,
    mode: ClaimMode,
) -> Result<Claim> {
    claim_in(db, "Len", keys, worker, owner, TTL, mode)
}

fn claim_in(
    db: &dyn Backend,
    table: &str,
    keys: &[i64],
    worker: &str,
    owner: &str,
    ttl: Duration,
    mode: ClaimMode,
) -> Result<Claim> {
    let keys = ints(keys);
    db.claim(table, &refs(&keys), worker, owner, ttl, mode)
}

/// Writes `Len` results through `db` under `fence`.
fn write(fx: &Fx, db: &dyn Backend, outcomes: &[Outcome], fence: &Fence) -> Result<Vec<Written>> {
    fx.write_as(db, fx.len, outcomes, Pass::Refresh, fence)
}

fn rows(owner: &str) -> Fence {
    Fence::Rows {
        owner: owner.to_owned(),
    }
}

fn table(owner: &str) -> Fence {
    Fence::Table {
        owner: owner.to_owned(),
    }
}

fn running(worker: &str, rows: u64) -> RunningWork {
    RunningWork {
        worker: worker.to_owned(),
        rows,
    }
}

/// Row fences: only the owner holding a row's lease writes it, and the
/// write gives the lease back; an expired lease is claimed by another
/// owner, after which the old owner's result is rejected even when it was
/// computed from the same inputs.
pub fn row_fence(h: &Harness) {
    run(h, |fx| {
        let (a, b) = (&*fx.db, fx.other());
        let r1 = fx.put(&[(1, "a"), (2, "b"), (3, "c")])?;
        a.register_worker("w1", TTL)?;
        b.register_worker("w2", TTL)?;
        let c1 = claim(a, &[1, 2], "w1", "o1", ClaimMode::Rows)?;
        assert_eq!(
            (&c1.fence, c1.granted.as_slice()),
            (&rows("o1"), &[true, true][..])
        );
        assert_eq!(c1.revision, r1, "a claim reports the current revision");
        let again = claim(a, &[2], "w1", "o1", ClaimMode::Rows)?;
        assert_eq!(
            again.granted,
            [true],
            "an owner may claim its own row again"
        );
        let c2 = claim(b, &[2, 3], "w2", "o2", ClaimMode::Rows)?;
        assert_eq!(
            c2.granted,
            [false, true],
            "a row held by another owner is refused"
        );
        let c3 = claim(a, &[1], "w1", "o1b", ClaimMode::Rows)?;
        assert_eq!(
            c3.granted,
            [false],
            "another owner of the same worker is refused too"
        );
        let elsewhere = claim_in(b, "Twice", &[1, 2], "w2", "o2", TTL, ClaimMode::Rows)?;
        assert_eq!(elsewhere.granted, [true, true], "leases are per table");

        let w = write(fx, b, &[ok(1, &[r1], vec![int(1)])], &rows("o2"))?;
        assert_eq!(w, [Written::Rejected], "a row another owner holds");
        assert_eq!(fx.state(fx.len, 1)?, None);
        let w = write(
            fx,
            a,
            &[ok(1, &[r1], vec![int(1)]), ok(3, &[r1], vec![int(3)])],
            &rows("o1"),
        )?;
        assert_eq!(
            w,
            [Written::Changed, Written::Rejected],
            "each row's own lease decides"
        );
        assert_eq!(fx.state(fx.len, 3)?, None);
        let w = write(fx, a, &[ok(1, &[r1], vec![int(5)])], &rows("o1"))?;
        assert_eq!(w, [Written::Rejected], "the write gave the lease back");
        assert_eq!(
            claim(b, &[1], "w2", "o2", ClaimMode::Rows)?.granted,
            [true],
            "a row whose result was written can be claimed at once"
        );

        // o1 still holds 2: refused until its lease expires.
        fx.clock.advance(TTL - SEC);
        assert_eq!(
            claim(b, &[2], "w2", "o2", ClaimMode::Rows)?.granted,
            [false],
            "before expiry"
        );
        fx.clock.advance(2 * SEC);
        assert_eq!(
            claim(b, &[2], "w2", "o2", ClaimMode::Rows)?.granted,
            [true],
            "after expiry"
        );
        let late = [ok(2, &[r1], vec![int(1)])];
        assert_eq!(
            write(fx, a, &late, &rows("o1"))?,
            [Written::Rejected],
            "an expired lease claimed by another owner: the old owner's result is rejected"
        );
        assert_eq!(fx.state(fx.len, 2)?, None);
        assert_eq!(write(fx, b, &late, &rows("o2"))?, [Written::Changed]);
        assert_eq!(
            write(fx, a, &late, &rows("o1"))?,
            [Written::Rejected],
            "the same inputs and value: only the fence can reject it"
        );
        Ok(())
    })
}

/// Table fences: a worker alone (no other live worker, no other owner's
/// lease in the table) claims the whole table with one lease, which
/// refuses every other owner's row claim until it expires or is given
/// back (writes keep it: a batch may be written in parts); after it expired and another owner claimed a row,
/// the table owner's whole batch is rejected. A whole-table takeover
/// removes expired row leases, so that their owners' results are rejected.
pub fn table_fence(h: &Harness) {
    run(h, |fx| {
        let (a, b) = (&*fx.db, fx.other());
        let r1 = fx.put(&[(1, "a"), (2, "b"), (3, "c")])?;
        let one = |k, v| ok(k, &[r1], vec![int(v)]);
        a.register_worker("w1", TTL)?;
        let t = claim(a, &[1, 2], "w1", "o1", ClaimMode::TableIfAlone)?;
        assert_eq!(t.fence, table("o1"), "a worker alone gets the whole table");
        assert_eq!((t.granted.as_slice(), t.revision), (&[true, true][..], r1));

        b.register_worker("w2", TTL)?;
        let c = claim(b, &[1, 3], "w2", "o2", ClaimMode::Rows)?;
        assert_eq!(
            c.granted,
            [false, false],
            "a table lease holds every row, in the batch or not"
        );
        let c = claim(b, &[3], "w2", "o2", ClaimMode::TableIfAlone)?;
        assert_eq!(
            (c.fence, c.granted),
            (rows("o2"), vec![false]),
            "not alone, and the table is held"
        );
        let c = claim_in(b, "Twice", &[1], "w2", "o2", TTL, ClaimMode::Rows)?;
        assert_eq!(c.granted, [true], "a table lease holds one table");
        b.release("Twice", &c.fence, &refs(&ints(&[1])))?;

        let w = write(fx, a, &[one(1, 1)], &t.fence)?;
        assert_eq!(w, [Written::Changed]);
        let c = claim(b, &[3], "w2", "o2", ClaimMode::Rows)?;
        assert_eq!(c.granted, [false], "the write keeps the table lease");
        let w = write(fx, a, &[one(2, 1)], &t.fence)?;
        assert_eq!(w, [Written::Changed], "a batch written in two parts");
        a.release("Len", &t.fence, &[])?;
        let c = claim(b, &[3], "w2", "o2", ClaimMode::Rows)?;
        assert_eq!(c.granted, [true], "the table lease was given back");
        let w = write(fx, a, &[one(1, 5)], &t.fence)?;
        assert_eq!(
            w,
            [Written::Rejected],
            "a table lease given back fences nothing"
        );
        assert_eq!(fx.must(fx.len, 1)?.values, [int(1)]);
        b.release("Len", &c.fence, &refs(&ints(&[3])))?;

        // Two live workers: row leases.
        let t2 = claim(a, &[1], "w1", "o1", ClaimMode::TableIfAlone)?;
        assert_eq!(
            (t2.fence.clone(), t2.granted),
            (rows("o1"), vec![true]),
            "another worker is live"
        );
        a.release("Len", &t2.fence, &refs(&ints(&[1])))?;
        // Alone, but another owner (of a worker that never registered)
        // holds a row of the table: row leases.
        b.release_worker("w2")?;
        let c9 = claim(b, &[3], "w9", "o9", ClaimMode::Rows)?;
        assert_eq!(c9.granted, [true]);
        let t3 = claim(a, &[1], "w1", "o1", ClaimMode::TableIfAlone)?;
        assert_eq!(
            t3.fence,
            rows("o1"),
            "another owner (o9) holds a row lease in the table"
        );
        a.release("Len", &t3.fence, &refs(&ints(&[1])))?;
        b.release("Len", &c9.fence, &refs(&ints(&[3])))?;
        let t3 = claim(a, &[1], "w1", "o1b", ClaimMode::Rows)?;
        let t4 = claim(a, &[2], "w1", "o1", ClaimMode::TableIfAlone)?;
        assert_eq!(
            t4.fence,
            rows("o1"),
            "another owner of the same worker holds a row lease"
        );
        a.release("Len", &t3.fence, &refs(&ints(&[1])))?;
        a.release("Len", &t4.fence, &refs(&ints(&[2])))?;

        // A worker whose registration expired is not live.
        b.register_worker("w2", SEC)?;
        fx.clock.advance(2 * SEC);
        a.heartbeat("w1", TTL)?;
        let t5 = claim(a, &[1, 2], "w1", "o1", ClaimMode::TableIfAlone)?;
        assert_eq!(
            t5.fence,
            table("o1"),
            "w2's registration expired: w1 is alone"
        );

        // The table lease expires; another owner claims a row; the whole
        // batch of the table owner is rejected.
        fx.clock.advance(TTL - SEC);
        b.register_worker("w2", TTL)?;
        assert_eq!(
            claim(b, &[2], "w2", "o2", ClaimMode::Rows)?.granted,
            [false],
            "before expiry"
        );
        fx.clock.advance(2 * SEC);
        assert_eq!(
            claim(b, &[2], "w2", "o2", ClaimMode::Rows)?.granted,
            [true],
            "after expiry"
        );
        let w = write(fx, a, &[one(1, 7), one(2, 7)], &t5.fence)?;
        assert_eq!(
            w,
            [Written::Rejected, Written::Rejected],
            "an expired table lease taken over"
        );
        assert_eq!(
            fx.must(fx.len, 1)?.values,
            [int(1)],
            "nothing of the batch is written"
        );
        b.release_worker("w2")?;

        // A whole-table takeover removes expired row leases.
        a.register_worker("w1", TTL)?;
        let old = claim(a, &[3], "w1", "o1", ClaimMode::Rows)?;
        assert_eq!(old.granted, [true]);
        fx.clock.advance(TTL + SEC);
        b.register_worker("w3", TTL)?;
        let t6 = claim(b, &[1], "w3", "o3", ClaimMode::TableIfAlone)?;
        assert_eq!(
            t6.fence,
            table("o3"),
            "w1 and its row lease expired: w3 is alone"
        );
        let w = write(fx, a, &[one(3, 3)], &old.fence)?;
        assert_eq!(
            w,
            [Written::Rejected],
            "the takeover removed the expired row lease"
        );
        assert_eq!(fx.state(fx.len, 3)?, None);
        let w = write(fx, b, &[one(1, 9), one(3, 9)], &t6.fence)?;
        assert_eq!(w, [Written::Changed, Written::Changed]);
        Ok(())
    })
}

/// A heartbeat extends every lease (row and table) and the registration
/// of its worker, and of no other worker.
pub fn heartbeat_extends_one_worker(h: &Harness) {
    run(h, |fx| {
        let (a, b) = (&*fx.db, fx.other());
        let r1 = fx.put(&[(1, "a"), (2, "b")])?;
        a.register_worker("w1", TTL)?;
        let t = claim_in(a, "Twice", &[1], "w1", "o1", TTL, ClaimMode::TableIfAlone)?;
        assert_eq!(t.fence, table("o1"));
        b.register_worker("w2", TTL)?;
        let l1 = claim(a, &[1], "w1", "o1", ClaimMode::Rows)?;
        let l2 = claim(b, &[2], "w2", "o2", ClaimMode::Rows)?;
        assert_eq!((l1.granted, l2.granted), (vec![true], vec![true]));

        fx.clock.advance(TTL * 2 / 3);
        // From another connection, as the engine's heartbeat thread does.
        b.heartbeat("w1", TTL)?;
        fx.clock.advance(TTL / 2); // past the first expiry, before the new one
        let c = claim(b, &[1, 2], "w3", "o3", ClaimMode::Rows)?;
        assert_eq!(
            c.granted,
            [false, true],
            "w1's lease was extended, w2's was not"
        );
        let c = claim_in(b, "Twice", &[2], "w3", "o3", TTL, ClaimMode::Rows)?;
        assert_eq!(c.granted, [false], "w1's table lease was extended");
        b.register_worker("w3", TTL)?;
        let c = claim_in(b, "Pair", &[1], "w3", "o3", TTL, ClaimMode::TableIfAlone)?;
        assert_eq!(
            c.fence,
            rows("o3"),
            "w1's registration was extended: w3 is not alone"
        );
        b.release("Pair", &c.fence, &refs(&ints(&[1])))?;

        let w = write(fx, a, &[ok(1, &[r1], vec![int(1)])], &l1.fence)?;
        assert_eq!(w, [Written::Changed], "an extended row lease still fences");
        let ins = [fx.must(fx.len, 1)?.changed_at];
        let w = fx.write_as(
            a,
            fx.twice,
            &[ok(1, &ins, vec![int(2)])],
            Pass::Refresh,
            &t.fence,
        )?;
        assert_eq!(
            w,
            [Written::Changed],
            "an extended table lease still fences"
        );
        let w = write(fx, b, &[ok(2, &[r1], vec![int(1)])], &l2.fence)?;
        assert_eq!(w, [Written::Rejected], "w2's lease expired and was taken");
        Ok(())
    })
}

/// `release` gives back the fence owner's leases of some rows, or its
/// table lease; `release_worker` gives back all of a worker's leases and
/// unregisters it; `running` counts unexpired leases by worker, sorted.
pub fn release_and_running(h: &Harness) {
    run(h, |fx| {
        let (a, b) = (&*fx.db, fx.other());
        let r1 = fx.put(&[(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e"), (6, "f")])?;
        a.register_worker("wb", TTL)?;
        b.register_worker("wa", TTL)?;
        assert_eq!(a.running("Len")?, [], "no leases yet");
        let cb = claim(a, &[1, 2, 3], "wb", "ob1", ClaimMode::Rows)?;
        let cb2 = claim(a, &[4], "wb", "ob2", ClaimMode::Rows)?;
        let ca = claim(b, &[5], "wa", "oa", ClaimMode::Rows)?;
        assert!([&cb, &cb2, &ca]
            .iter()
            .all(|c| c.granted.iter().all(|&g| g)));
        assert_eq!(
            a.running("Len")?,
            [running("wa", 1), running("wb", 4)],
            "by worker, sorted"
        );
        assert_eq!(
            b.running("Len")?,
            [running("wa", 1), running("wb", 4)],
            "seen from any connection"
        );
        assert_eq!(a.running("Twice")?, [], "per table");

        a.release("Len", &cb.fence, &refs(&ints(&[1, 2])))?;
        assert_eq!(a.running("Len")?, [running("wa", 1), running("wb", 2)]);
        assert_eq!(
            claim(b, &[1, 2], "wa", "oa", ClaimMode::Rows)?.granted,
            [true, true],
            "released rows"
        );
        b.release("Len", &ca.fence, &refs(&ints(&[3, 4])))?;
        assert_eq!(
            claim(b, &[3, 4], "wa", "oa2", ClaimMode::Rows)?.granted,
            [false, false],
            "a fence releases only its owner's leases"
        );
        assert_eq!(a.running("Len")?, [running("wa", 3), running("wb", 2)]);

        let short = claim_in(b, "Len", &[6], "wa", "oa", SEC, ClaimMode::Rows)?;
        assert_eq!(short.granted, [true]);
        assert_eq!(a.running("Len")?, [running("wa", 4), running("wb", 2)]);
        fx.clock.advance(2 * SEC);
        assert_eq!(
            a.running("Len")?,
            [running("wa", 3), running("wb", 2)],
            "expired leases are not counted"
        );

        b.release_worker("wa")?;
        assert_eq!(
            a.running("Len")?,
            [running("wb", 2)],
            "release_worker gives every lease back"
        );
        let t = claim_in(
            a,
            "Pair",
            &[1, 2, 3],
            "wb",
            "ob1",
            TTL,
            ClaimMode::TableIfAlone,
        )?;
        assert_eq!(t.fence, table("ob1"), "wa is unregistered: wb is alone");
        assert_eq!(
            a.running("Pair")?,
            [running("wb", 3)],
            "a table lease counts its claim's rows"
        );
        a.release("Pair", &t.fence, &[])?;
        assert_eq!(a.running("Pair")?, [], "the table lease was given back");
        let c = claim_in(b, "Pair", &[1], "wa", "oa", TTL, ClaimMode::Rows)?;
        assert_eq!(c.granted, [true]);
        let w = fx.write_as(
            a,
            fx.pair,
            &[ok(1, &[r1, r1], vec![super::text("p"), Value::Null])],
            Pass::Refresh,
            &t.fence,
        )?;
        assert_eq!(
            w,
            [Written::Rejected],
            "a released table lease fences nothing"
        );

        a.release_worker("wb")?;
        assert_eq!(a.running("Len")?, []);
        assert_eq!(claim(b, &[3], "wa", "oa", ClaimMode::Rows)?.granted, [true]);
        let w = write(fx, a, &[ok(4, &[r1], vec![int(1)])], &cb2.fence)?;
        assert_eq!(
            w,
            [Written::Rejected],
            "after release_worker, the worker's fences fail"
        );
        assert_eq!(fx.state(fx.len, 4)?, None);
        Ok(())
    })
}
