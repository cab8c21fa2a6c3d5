//! Cases on derived results: the write guard, early cutoff, deleted roots,
//! and deletes.

use super::{blocked, failed, int, ok, run, text, Harness, CODE};
use crate::storage::{Fence, Pass, Revision, RowStatus, Values, Written};
use crate::value::{Key, Value};

/// A result computed from older inputs than the stored row's (any one of
/// them older) is rejected and the stored row kept; equal or newer inputs
/// are written.
pub fn write_guard(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        let r1 = fx.put(&[(1, "a"), (2, "b")])?;
        let r2 = fx.put(&[(1, "ab")])?;
        assert_eq!(
            fx.write(fx.len, &[ok(1, &[r2], vec![int(2)])])?,
            [Written::Changed]
        );
        let stored = fx.must(fx.len, 1)?;

        let late = [ok(1, &[r1], vec![int(1)])];
        assert_eq!(
            fx.write(fx.len, &late)?,
            [Written::Rejected],
            "a result from older inputs"
        );
        assert_eq!(
            fx.must(fx.len, 1)?,
            stored,
            "a rejected result leaves the row as it was"
        );
        let w = db.write_outcomes(
            &fx.g,
            fx.len,
            "code-2",
            &late,
            Pass::OnDemand,
            &Fence::Unfenced,
            Revision::ZERO,
        )?;
        assert_eq!(
            w,
            [Written::Rejected],
            "a result from older inputs, with other code"
        );
        assert_eq!(
            fx.must(fx.len, 1)?,
            stored,
            "a rejected result leaves the code as it was"
        );
        let w = fx.write(fx.len, &[failed(1, &[r1], "late failure")])?;
        assert_eq!(w, [Written::Rejected], "failures are guarded too");
        assert_eq!(fx.must(fx.len, 1)?, stored);

        let w = fx.write(fx.len, &[ok(1, &[r2], vec![int(5)])])?;
        assert_eq!(
            w,
            [Written::Changed],
            "a result from the same inputs is written"
        );
        assert_eq!(fx.must(fx.len, 1)?.values, [int(5)]);
        let r3 = fx.put(&[(1, "abc")])?;
        let w = fx.write(
            fx.len,
            &[ok(1, &[r3], vec![int(3)]), ok(2, &[r1], vec![int(1)])],
        )?;
        assert_eq!(
            w,
            [Written::Changed, Written::Changed],
            "newer inputs, and a new row"
        );

        // Two inputs: every one must be at least the stored one.
        let rl = fx.must(fx.len, 1)?.changed_at;
        assert!(rl > r3);
        let pair =
            |ins: &[_], s: &str| fx.write(fx.pair, &[ok(1, ins, vec![text(s), Value::Null])]);
        assert_eq!(pair(&[r3, rl], "first")?, [Written::Changed]);
        assert_eq!(
            pair(&[rl, r1], "newer first input, older second")?,
            [Written::Rejected],
            "each input is compared on its own (not as a tuple)"
        );
        assert_eq!(pair(&[r1, rl], "older first input")?, [Written::Rejected]);
        assert_eq!(fx.must(fx.pair, 1)?.values, [text("first"), Value::Null]);
        assert_eq!(fx.must(fx.pair, 1)?.ins, [r3, rl]);
        assert_eq!(pair(&[rl, rl], "both newer or equal")?, [Written::Changed]);

        // A batch: each outcome on its own, in order.
        let w = fx.write(
            fx.len,
            &[ok(2, &[r1], vec![int(9)]), ok(1, &[r2], vec![int(9)])],
        )?;
        assert_eq!(w, [Written::Changed, Written::Rejected]);
        assert_eq!(fx.must(fx.len, 1)?.values, [int(3)]);
        assert_eq!(fx.must(fx.len, 2)?.values, [int(9)]);
        Ok(())
    })
}

/// A result equal to the stored one (values and status) is `Unchanged`:
/// its `changed_at` is kept, its inputs and code are recorded; a different
/// value, or a different status or failure, is `Changed` at the batch's
/// revision.
pub fn early_cutoff(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        let r1 = fx.put(&[(1, "abc"), (2, "x")])?;
        let w = fx.write(
            fx.len,
            &[ok(1, &[r1], vec![int(3)]), ok(2, &[r1], vec![int(1)])],
        )?;
        assert_eq!(
            w,
            [Written::Changed, Written::Changed],
            "new rows are changes"
        );
        let c1 = fx.must(fx.len, 1)?.changed_at;

        let r2 = fx.put(&[(1, "cba")])?;
        let w = db.write_outcomes(
            &fx.g,
            fx.len,
            "code-2",
            &[ok(1, &[r2], vec![int(3)])],
            Pass::Refresh,
            &Fence::Unfenced,
            Revision::ZERO,
        )?;
        assert_eq!(w, [Written::Unchanged], "an equal value");
        let s = fx.must(fx.len, 1)?;
        assert_eq!(s.changed_at, c1, "an equal value keeps changed_at");
        assert_eq!(
            (s.ins, s.code.as_deref(), s.values),
            (vec![r2], Some("code-2"), vec![int(3)]),
            "an unchanged result is stored: its inputs and code are recorded"
        );
        assert!(
            db.revision()? > r2,
            "the batch took a revision all the same"
        );

        // A mixed batch, and the revision a change gets.
        let w = fx.write(
            fx.len,
            &[ok(2, &[r1], vec![int(1)]), ok(1, &[r2], vec![int(4)])],
        )?;
        assert_eq!(w, [Written::Unchanged, Written::Changed]);
        assert_eq!(
            fx.must(fx.len, 1)?.changed_at,
            db.revision()?,
            "a change takes the batch's revision"
        );

        // Status changes are changes; equal failures are not.
        let twice = |outcome, expected: Written, what: &str| -> crate::error::Result<()> {
            let before = fx.state(fx.twice, 1)?.map(|s| s.changed_at);
            assert_eq!(fx.write(fx.twice, &[outcome])?, [expected], "{what}");
            let after = fx.must(fx.twice, 1)?.changed_at;
            if expected == Written::Unchanged {
                assert_eq!(Some(after), before, "{what}: changed_at kept");
            } else {
                assert_eq!(
                    after,
                    db.revision()?,
                    "{what}: changed at the batch's revision"
                );
            }
            Ok(())
        };
        let ins = [fx.must(fx.len, 1)?.changed_at];
        twice(ok(1, &ins, vec![int(6)]), Written::Changed, "a new row")?;
        twice(
            ok(1, &ins, vec![int(6)]),
            Written::Unchanged,
            "the same value",
        )?;
        twice(failed(1, &ins, "e1"), Written::Changed, "ok to failed")?;
        twice(
            failed(1, &ins, "e1"),
            Written::Unchanged,
            "the same failure",
        )?;
        twice(failed(1, &ins, "e2"), Written::Changed, "another message")?;
        twice(
            blocked(1, &ins, "Len", 1),
            Written::Changed,
            "failed to blocked",
        )?;
        twice(
            blocked(1, &ins, "Len", 1),
            Written::Unchanged,
            "blocked by the same row",
        )?;
        twice(
            blocked(1, &ins, "Len", 2),
            Written::Changed,
            "blocked by another key",
        )?;
        twice(
            blocked(1, &ins, "Pair", 2),
            Written::Changed,
            "blocked by another table",
        )?;
        twice(ok(1, &ins, vec![int(6)]), Written::Changed, "blocked to ok")?;
        assert_eq!(fx.must(fx.twice, 1)?.status, RowStatus::Ok);
        assert_eq!(fx.must(fx.twice, 1)?.values, [int(6)]);

        // NULL equals NULL.
        let pair =
            |extra: Value| fx.write(fx.pair, &[ok(1, &[r2, ins[0]], vec![text("s"), extra])]);
        assert_eq!(pair(Value::Null)?, [Written::Changed]);
        assert_eq!(pair(Value::Null)?, [Written::Unchanged], "NULL over NULL");
        assert_eq!(pair(int(0))?, [Written::Changed], "NULL to a value");
        assert_eq!(pair(Value::Null)?, [Written::Changed], "a value to NULL");
        Ok(())
    })
}

/// A result whose root row does not exist (never did, or was deleted while
/// it was computed) is rejected and not stored.
pub fn deleted_root_is_rejected(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        let r1 = fx.put(&[(1, "a"), (2, "b"), (3, "c")])?;
        let w = fx.write(
            fx.len,
            &[ok(1, &[r1], vec![int(1)]), ok(42, &[r1], vec![int(9)])],
        )?;
        assert_eq!(w, [Written::Changed, Written::Rejected], "no root row 42");
        assert_eq!(fx.state(fx.len, 42)?, None);
        assert_eq!(db.row_count("Len")?, 1);

        assert!(db.delete_row(&fx.g, fx.src, &Key::Int(2))?);
        let w = fx.write(fx.len, &[ok(2, &[r1], vec![int(1)])])?;
        assert_eq!(
            w,
            [Written::Rejected],
            "a root deleted while its row was computed"
        );
        let w = fx.write_as(
            db,
            fx.len,
            &[failed(2, &[r1], "x")],
            Pass::OnDemand,
            &Fence::Unfenced,
        )?;
        assert_eq!(w, [Written::Rejected], "a failure of a deleted root");
        assert_eq!(fx.state(fx.len, 2)?, None);
        let w = fx.write(fx.twice, &[ok(2, &[r1], vec![int(1)])])?;
        assert_eq!(w, [Written::Rejected], "downstream of a deleted root");
        assert_eq!(fx.state(fx.twice, 2)?, None);

        // Under a row lease.
        db.register_worker("w1", super::TTL)?;
        let keys = super::ints(&[3]);
        let claim = db.claim(
            "Len",
            &super::refs(&keys),
            "w1",
            "o1",
            super::TTL,
            crate::storage::ClaimMode::Rows,
        )?;
        assert_eq!(claim.granted, [true]);
        assert!(db.delete_row(&fx.g, fx.src, &Key::Int(3))?);
        let w = fx.write_as(
            db,
            fx.len,
            &[ok(3, &[r1], vec![int(1)])],
            Pass::Refresh,
            &claim.fence,
        )?;
        assert_eq!(w, [Written::Rejected], "a fenced result of a deleted root");
        assert_eq!(fx.state(fx.len, 3)?, None);

        // A text root.
        let w = fx.write(fx.tag_len, &[ok("nope", &[r1], vec![int(1)])])?;
        assert_eq!(w, [Written::Rejected]);
        assert_eq!(db.row_count("Len")?, 1);
        assert_eq!(db.row_count("TagLen")?, 0);
        Ok(())
    })
}

/// `delete_row` deletes the input row and every derived row of its key
/// (of any status), and nothing else; it returns whether the input row
/// existed.
pub fn delete_cascades(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        let r = fx.put(&[(1, "a"), (2, "b"), (3, "c")])?;
        let rt = fx.put_tags(&[("t", None, 1.0)])?;
        fx.write(
            fx.len,
            &[
                ok(1, &[r], vec![int(1)]),
                ok(2, &[r], vec![int(1)]),
                failed(3, &[r], "x"),
            ],
        )?;
        let rl = fx.must(fx.len, 1)?.changed_at;
        fx.write(
            fx.twice,
            &[
                ok(1, &[rl], vec![int(2)]),
                ok(2, &[rl], vec![int(2)]),
                blocked(3, &[rl], "Len", 3),
            ],
        )?;
        let pair = |k: i64| ok(k, &[r, rl], vec![text("p"), Value::Null]);
        fx.write(fx.pair, &[pair(1), pair(2)])?;
        fx.write(fx.tag_len, &[ok("t", &[rt], vec![int(1)])])?;

        let tables = [fx.src, fx.len, fx.twice, fx.pair];
        let load = |k: i64| db.load(&fx.g, &tables, &Key::Int(k), Values::None);
        assert!(
            db.delete_row(&fx.g, fx.src, &Key::Int(1))?,
            "the row existed"
        );
        assert_eq!(
            load(1)?,
            vec![None; 4],
            "the input row and its derived rows are gone"
        );
        assert!(
            load(2)?.iter().all(Option::is_some),
            "other keys are untouched"
        );
        assert!(db.delete_row(&fx.g, fx.src, &Key::Int(3))?);
        assert_eq!(load(3)?, vec![None; 4], "failed and blocked rows go too");
        for (table, n) in [
            ("Src", 1),
            ("Len", 1),
            ("Twice", 1),
            ("Pair", 1),
            ("Tag", 1),
            ("TagLen", 1),
        ] {
            assert_eq!(db.row_count(table)?, n, "rows left in {table}");
        }
        assert!(
            !db.delete_row(&fx.g, fx.src, &Key::Int(1))?,
            "a second delete finds nothing"
        );
        assert!(
            !db.delete_row(&fx.g, fx.src, &Key::Int(99))?,
            "a key never written"
        );

        assert!(db.delete_row(&fx.g, fx.tag, &Key::from("t"))?);
        assert_eq!(fx.state(fx.tag_len, "t")?, None);
        assert_eq!((db.row_count("Tag")?, db.row_count("TagLen")?), (0, 0));
        assert_eq!(db.row_count("Len")?, 1, "another root's rows are untouched");

        // Written again, the key starts over: no derived row comes back.
        let r2 = fx.put(&[(1, "a")])?;
        assert_eq!(fx.must(fx.src, 1)?.changed_at, r2);
        assert_eq!(fx.state(fx.len, 1)?, None);
        assert_eq!(fx.must(fx.len, 2)?.code.as_deref(), Some(CODE));
        Ok(())
    })
}
