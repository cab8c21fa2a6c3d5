//! Cases on revisions, input writes, reads and change pages.

use super::{blocked, failed, int, ints, ok, run, text, Fx, Harness, CODE, SEC, START_MS, TAG};
use super::{LEN, SRC};
use crate::error::Result;
use crate::graph::TableId;
use crate::storage::{
    ChangeCursor, ChangedRow, ClaimMode, Fence, Pass, Revision, RowState, RowStatus, Status,
    Values, Written,
};
use crate::value::{Key, Value};
use std::collections::BTreeMap;

/// Every write transaction (`put_rows`, `delete_row`, `write_outcomes`)
/// takes a new revision, later than every one before, which `revision()`
/// and `snapshot()` report; input writes, deletes and [`Pass::OnDemand`]
/// results move the epoch, [`Pass::Refresh`] results do not; reads, marks
/// and leases take no revision and leave the epoch.
pub fn revisions_and_epochs(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        let (r0, e0) = db.snapshot()?;
        assert_eq!(db.revision()?, r0, "revision() and snapshot() agree");

        let r1 = fx.put(&[(1, "a"), (2, "bb")])?;
        assert!(r1 > r0, "put_rows takes a new revision ({r1} after {r0})");
        let (s1, e1) = db.snapshot()?;
        assert_eq!(
            (db.revision()?, s1),
            (r1, r1),
            "revision() and snapshot() report the revision put_rows returned"
        );
        assert!(e1 > e0, "an input write moves the epoch");

        let w = fx.write(fx.len, &[ok(1, &[r1], vec![int(1)])])?;
        assert_eq!(w, [Written::Changed]);
        let (r2, e2) = db.snapshot()?;
        assert!(r2 > r1, "a batch of results takes a new revision");
        assert_eq!(db.revision()?, r2);
        assert_eq!(e2, e1, "Pass::Refresh results do not move the epoch");
        assert_eq!(
            fx.must(fx.len, 1)?.changed_at,
            r2,
            "a new derived row changes at its batch's revision"
        );

        let on_demand = [ok(1, &[r2], vec![int(2)])];
        let w = fx.write_as(db, fx.twice, &on_demand, Pass::OnDemand, &Fence::Unfenced)?;
        assert_eq!(w, [Written::Changed]);
        let (r3, e3) = db.snapshot()?;
        assert!(r3 > r2, "a batch of results takes a new revision");
        assert!(e3 > e2, "Pass::OnDemand results move the epoch");
        assert_eq!(fx.must(fx.twice, 1)?.changed_at, r3);

        // An input write that changes nothing is still a write transaction
        // (whether it moves the epoch is the backend's choice).
        let r4 = fx.put(&[(1, "a")])?;
        let (s4, e4) = db.snapshot()?;
        assert!(r4 > r3 && s4 == r4, "every put_rows takes a new revision");
        assert!(e4 >= e3, "the epoch never goes back");
        assert_eq!(fx.must(fx.src, 1)?.changed_at, r1);

        assert!(db.delete_row(&fx.g, fx.src, &Key::Int(2))?);
        let (r5, e5) = db.snapshot()?;
        assert!(r5 > r4, "delete_row takes a new revision");
        assert!(e5 > e4, "delete_row moves the epoch");

        // Reads, marks and leases are no write transactions of the model.
        db.load(&fx.g, &[fx.src, fx.len], &Key::Int(1), Values::All)?;
        db.mark_processed("Len", r5, e5)?;
        db.register_worker("w1", super::TTL)?;
        let keys = ints(&[1]);
        let claim = db.claim(
            "Len",
            &super::refs(&keys),
            "w1",
            "o1",
            super::TTL,
            ClaimMode::Rows,
        )?;
        assert_eq!(claim.revision, r5, "a claim reports the current revision");
        db.heartbeat("w1", super::TTL)?;
        db.running("Len")?;
        db.release("Len", &claim.fence, &super::refs(&keys))?;
        db.release_worker("w1")?;
        assert_eq!(
            db.snapshot()?,
            (r5, e5),
            "reads, marks, claims, heartbeats and releases take no revision and keep the epoch"
        );
        Ok(())
    })
}

/// An input row written again with an equal value keeps its `changed_at`
/// and `changed_ms`; a changed value gets the new revision and the clock's
/// time; a key given twice in one `put_rows` ends with the last value;
/// NULL equals NULL.
pub fn equal_puts_keep_changed_at(h: &Harness) {
    run(h, |fx| {
        let r1 = fx.put(&[(1, "a"), (2, "b")])?;
        let s = fx.must(fx.src, 1)?;
        let expected = RowState {
            changed_at: r1,
            status: RowStatus::Ok,
            code: None,
            ins: vec![],
            values: vec![int(1), text("a")],
            changed_ms: START_MS,
        };
        assert_eq!(
            s, expected,
            "an input row as written, stamped with the clock"
        );

        fx.clock.advance(5 * SEC);
        let r2 = fx.put(&[(1, "a"), (2, "c")])?;
        assert_eq!(
            fx.must(fx.src, 1)?,
            expected,
            "an equal value keeps changed_at and changed_ms"
        );
        let s = fx.must(fx.src, 2)?;
        assert_eq!(
            (s.changed_at, s.changed_ms, s.values),
            (r2, START_MS + 5_000, vec![int(2), text("c")]),
            "a changed value takes the new revision and the clock's time"
        );

        fx.clock.advance(SEC);
        let r3 = fx.put(&[(3, "x"), (2, "d"), (3, "y"), (2, "e")])?;
        for (key, body) in [(3, "y"), (2, "e")] {
            let s = fx.must(fx.src, key)?;
            assert_eq!(
                (s.changed_at, s.changed_ms, s.values),
                (r3, START_MS + 6_000, vec![int(key), text(body)]),
                "a key given twice in one put_rows ends with the last value"
            );
        }
        assert_eq!(fx.db.row_count("Src")?, 3);

        // Nullable columns: NULL is equal to NULL, and differs from a value.
        let r4 = fx.put_tags(&[("k", None, 0.5)])?;
        let tag = |fx: &Fx| fx.must(fx.tag, "k");
        assert_eq!(tag(fx)?.values, super::tag_row("k", None, 0.5));
        fx.put_tags(&[("k", None, 0.5)])?;
        assert_eq!(
            tag(fx)?.changed_at,
            r4,
            "NULL written over NULL is no change"
        );
        let r6 = fx.put_tags(&[("k", Some("n"), 0.5)])?;
        assert_eq!(tag(fx)?.changed_at, r6, "NULL to a value is a change");
        let r7 = fx.put_tags(&[("k", None, 0.5)])?;
        assert_eq!(tag(fx)?.changed_at, r7, "a value to NULL is a change");
        assert_eq!(tag(fx)?.values, super::tag_row("k", None, 0.5));
        let r8 = fx.put_tags(&[("k", None, 0.75)])?;
        assert_eq!(
            tag(fx)?.changed_at,
            r8,
            "a REAL column's change is a change"
        );
        assert_eq!(tag(fx)?.values, super::tag_row("k", None, 0.75));
        Ok(())
    })
}

/// `load` reads the state of a key in several tables at once, in the order
/// asked, with all values, the last table's, or none; missing rows are
/// `None`; failed and blocked rows keep their message, table and key, and
/// have no values.
pub fn load_values_and_statuses(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        let r1 = fx.put(&[(1, "abc"), (2, "de"), (3, "f")])?;
        let message = "it's \"bad\" — ünïcode\nline two";
        fx.write(
            fx.len,
            &[
                ok(1, &[r1], vec![int(3)]),
                failed(2, &[r1], message),
                ok(3, &[r1], vec![int(1)]),
            ],
        )?;
        let rl = fx.must(fx.len, 1)?.changed_at;
        fx.write(
            fx.twice,
            &[ok(1, &[rl], vec![int(6)]), blocked(2, &[rl], "Len", 2)],
        )?;
        let rt = fx.must(fx.twice, 1)?.changed_at;
        fx.write(
            fx.pair,
            &[ok(1, &[r1, rl], vec![text("abc3"), Value::Null])],
        )?;
        let rp = fx.must(fx.pair, 1)?.changed_at;

        let tables = [fx.src, fx.len, fx.twice, fx.pair];
        let all = db.load(&fx.g, &tables, &Key::Int(1), Values::All)?;
        let derived = |changed_at, ins: &[Revision], values| {
            Some(RowState {
                changed_at,
                status: RowStatus::Ok,
                code: Some(CODE.into()),
                ins: ins.to_vec(),
                values,
                changed_ms: 0,
            })
        };
        let expected = vec![
            Some(RowState {
                changed_at: r1,
                status: RowStatus::Ok,
                code: None,
                ins: vec![],
                values: vec![int(1), text("abc")],
                changed_ms: START_MS,
            }),
            derived(rl, &[r1], vec![int(3)]),
            derived(rt, &[rl], vec![int(6)]),
            derived(rp, &[r1, rl], vec![text("abc3"), Value::Null]),
        ];
        assert_eq!(all, expected, "load with Values::All");

        let without = |states: &[Option<RowState>], keep: Option<usize>| {
            let mut states = states.to_vec();
            for (i, s) in states.iter_mut().enumerate() {
                if let Some(s) = s.as_mut().filter(|_| Some(i) != keep) {
                    s.values.clear();
                }
            }
            states
        };
        let last = db.load(&fx.g, &tables, &Key::Int(1), Values::Last)?;
        assert_eq!(
            last,
            without(&all, Some(3)),
            "Values::Last: the last table's values only"
        );
        let none = db.load(&fx.g, &tables, &Key::Int(1), Values::None)?;
        assert_eq!(none, without(&all, None), "Values::None: provenance only");

        let reversed = db.load(&fx.g, &[fx.pair, fx.src], &Key::Int(1), Values::All)?;
        assert_eq!(
            reversed,
            vec![expected[3].clone(), expected[0].clone()],
            "states come in the order of the tables asked for"
        );

        let missing = db.load(&fx.g, &tables, &Key::Int(99), Values::All)?;
        assert_eq!(missing, vec![None; 4], "a key without rows");

        let two = db.load(&fx.g, &tables, &Key::Int(2), Values::All)?;
        assert!(two[0].is_some() && two[3].is_none(), "{two:?}");
        let len2 = two[1].clone().expect("the failed row is stored");
        assert_eq!(
            (len2.status, len2.ins, len2.code.as_deref()),
            (
                RowStatus::Failed {
                    message: message.to_owned()
                },
                vec![r1],
                Some(CODE)
            ),
            "a failed row keeps its message and provenance"
        );
        assert!(
            len2.values.is_empty(),
            "a failed row has no values, got {:?}",
            len2.values
        );
        let twice2 = two[2].clone().expect("the blocked row is stored");
        assert_eq!(
            twice2.status,
            RowStatus::Blocked {
                table: "Len".into(),
                key: Key::Int(2)
            }
        );
        assert!(
            twice2.values.is_empty(),
            "a blocked row has no values, got {:?}",
            twice2.values
        );
        assert_eq!(fx.must(fx.len, 3)?.values, [int(1)]);

        // A blocked row whose failed row has a text key.
        let r = fx.put_tags(&[("t", None, 1.0)])?;
        fx.write(fx.tag_len, &[blocked("t", &[r], "Tag", "t-origin")])?;
        assert_eq!(
            fx.must(fx.tag_len, "t")?.status,
            RowStatus::Blocked {
                table: "Tag".into(),
                key: Key::Text("t-origin".into())
            }
        );
        Ok(())
    })
}

/// Pages through a driver's changed rows from `after` with `limit`,
/// checking each page's size.
fn walk(
    fx: &Fx,
    driver: TableId,
    tables: &[TableId],
    after: Revision,
    limit: usize,
    values: Values,
) -> Result<Vec<ChangedRow>> {
    let mut cursor = ChangeCursor::after(after);
    let mut out = Vec::new();
    for _ in 0..100 {
        let page = fx
            .db
            .changed_page(&fx.g, driver, tables, &cursor, limit, values)?;
        assert!(
            page.len() <= limit,
            "a page of {} rows, limit {limit}",
            page.len()
        );
        let Some(last) = page.last() else {
            return Ok(out);
        };
        cursor = last.cursor.clone();
        out.extend(page);
    }
    panic!("changed_page never ran out of rows (the cursor does not move forward)");
}

/// The keys of a walk.
fn keys(rows: &[ChangedRow]) -> Vec<Key> {
    rows.iter().map(|r| r.key.clone()).collect()
}

/// Checks that a walk visits exactly `expected` (key to `changed_at`), in
/// `changed_at` order, each row's cursor at its revision.
fn check_walk(rows: &[ChangedRow], expected: &BTreeMap<Key, Revision>, what: &str) {
    let mut seen: Vec<Key> = keys(rows);
    seen.sort();
    let want: Vec<Key> = expected.keys().cloned().collect();
    assert_eq!(seen, want, "{what}: every changed row exactly once");
    let mut last = Revision::ZERO;
    for row in rows {
        let at = expected[&row.key];
        assert_eq!(
            row.cursor.revision(),
            at,
            "{what}: the cursor of {} is at its changed_at",
            row.key
        );
        assert!(
            at >= last,
            "{what}: rows come in changed_at order ({at} after {last})"
        );
        last = at;
    }
}

/// `changed_page` pages through the rows of a driver table changed after a
/// cursor, with small limits, exactly once and in `changed_at` order, with
/// their states in several tables; a walk from `ChangeCursor::after(rev)`
/// skips the rows changed at or before `rev`.
pub fn changed_page_visits_each_row_once(h: &Harness) {
    run(h, |fx| {
        let r1 = fx.put(&[(1, "a"), (2, "b")])?;
        let r2 = fx.put(&[(3, "c"), (4, "d"), (5, "e"), (6, "f"), (7, "g")])?;
        let r3 = fx.put(&[(2, "B")])?;
        fx.put(&[(1, "a")])?; // equal: key 1 stays at r1
        fx.write(
            fx.len,
            &[ok(1, &[r1], vec![int(1)]), ok(3, &[r2], vec![int(1)])],
        )?;

        let at = |pairs: &[(i64, Revision)]| -> BTreeMap<Key, Revision> {
            pairs.iter().map(|&(k, r)| (Key::Int(k), r)).collect()
        };
        let everything = at(&[
            (1, r1),
            (2, r3),
            (3, r2),
            (4, r2),
            (5, r2),
            (6, r2),
            (7, r2),
        ]);
        let tables = [fx.src, fx.len];
        for limit in [1, 2, 3, 100] {
            let rows = walk(fx, fx.src, &tables, Revision::ZERO, limit, Values::All)?;
            check_walk(
                &rows,
                &everything,
                &format!("from the start, limit {limit}"),
            );
            for row in &rows {
                let Key::Int(k) = row.key else { unreachable!() };
                assert_eq!(row.states.len(), 2, "one state per table asked for");
                let src = row.states[0].as_ref().expect("the driver's row");
                assert_eq!(src.changed_at, everything[&row.key]);
                assert_eq!(src.values[0], int(k), "values with Values::All");
                let len = row.states[1].as_ref();
                assert_eq!(len.is_some(), k == 1 || k == 3, "Len of {k}: {len:?}");
                if let Some(len) = len {
                    assert_eq!(len.values, [int(1)]);
                }
            }
        }
        let after_r1 = at(&[(2, r3), (3, r2), (4, r2), (5, r2), (6, r2), (7, r2)]);
        let rows = walk(fx, fx.src, &tables, r1, 2, Values::All)?;
        check_walk(&rows, &after_r1, "after r1");
        let rows = walk(fx, fx.src, &tables, r2, 2, Values::All)?;
        check_walk(&rows, &at(&[(2, r3)]), "after r2");
        assert!(walk(fx, fx.src, &tables, r3, 2, Values::All)?.is_empty());

        // Which values come back.
        for (values, kept) in [
            (Values::Last, [false, true]),
            (Values::None, [false, false]),
        ] {
            for row in walk(fx, fx.src, &tables, Revision::ZERO, 3, values)? {
                for (state, kept) in row.states.iter().zip(kept) {
                    if let Some(s) = state {
                        assert_eq!(!s.values.is_empty(), kept, "{values:?}: {s:?}");
                    }
                }
            }
        }

        // A derived driver, read with a table it does not appear in.
        let rl = fx.must(fx.len, 1)?.changed_at;
        fx.write(fx.len, &[ok(1, &[r1], vec![int(2)])])?;
        let rl2 = fx.must(fx.len, 1)?.changed_at;
        fx.write(fx.twice, &[ok(3, &[rl], vec![int(2)])])?;
        let rows = walk(fx, fx.len, &[fx.twice], Revision::ZERO, 1, Values::All)?;
        check_walk(&rows, &at(&[(3, rl), (1, rl2)]), "Len as the driver");
        assert_eq!(keys(&rows), ints(&[3, 1]), "Len's rows in changed_at order");
        assert!(rows[0].states[0].is_some() && rows[1].states[0].is_none());

        // Text keys.
        let rt = fx.put_tags(&[("b", None, 1.0), ("a", None, 1.0), ("c", None, 1.0)])?;
        let expected: BTreeMap<Key, Revision> = ["a", "b", "c"].map(|k| (Key::from(k), rt)).into();
        let rows = walk(
            fx,
            fx.tag,
            &[fx.tag, fx.tag_len],
            Revision::ZERO,
            1,
            Values::All,
        )?;
        check_walk(&rows, &expected, "text keys");
        Ok(())
    })
}

/// `row_count` counts rows of every status; `keys_after` pages through
/// keys in key order (integers numerically, text byte by byte);
/// `keys_with_status` pages through the keys of one status.
pub fn keys_and_counts(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        for t in fx.g.tables() {
            assert_eq!(db.row_count(t.info.name)?, 0, "a new table is empty");
        }
        let r = fx.put(&[(5, "a"), (-3, "b"), (10, "c"), (0, "d"), (7, "e")])?;
        assert_eq!(db.row_count("Src")?, 5);
        let after = |k: Option<i64>, limit| db.keys_after(&SRC, k.map(Key::Int).as_ref(), limit);
        assert_eq!(after(None, 2)?, ints(&[-3, 0]));
        assert_eq!(after(Some(0), 2)?, ints(&[5, 7]));
        assert_eq!(after(Some(7), 2)?, ints(&[10]));
        assert_eq!(after(Some(10), 2)?, ints(&[]));
        assert_eq!(
            after(Some(1), 10)?,
            ints(&[5, 7, 10]),
            "after a key that is not stored"
        );
        assert_eq!(after(None, 100)?, ints(&[-3, 0, 5, 7, 10]));
        assert_eq!(after(None, 0)?, ints(&[]), "limit 0");

        let names = ["b", "B", "a", "_", "ab", "é", "a b", "Z"];
        let rows: Vec<_> = names.iter().map(|n| (*n, None, 1.0)).collect();
        fx.put_tags(&rows)?;
        let mut sorted: Vec<Key> = names.iter().map(|&n| Key::from(n)).collect();
        sorted.sort();
        assert_eq!(
            db.keys_after(&TAG, None, 100)?,
            sorted,
            "text keys in byte order (as Rust sorts them, not by a locale)"
        );
        let mut paged = Vec::new();
        let mut last: Option<Key> = None;
        loop {
            let page = db.keys_after(&TAG, last.as_ref(), 3)?;
            let Some(l) = page.last() else { break };
            last = Some(l.clone());
            paged.extend(page);
            assert!(
                paged.len() <= sorted.len(),
                "paging with keys_after does not end"
            );
        }
        assert_eq!(paged, sorted, "paging through text keys");

        fx.write(
            fx.len,
            &[
                ok(10, &[r], vec![int(1)]),
                failed(-3, &[r], "x"),
                failed(5, &[r], "y"),
                blocked(0, &[r], "Src", 0),
                ok(7, &[r], vec![int(1)]),
            ],
        )?;
        assert_eq!(db.row_count("Len")?, 5, "rows of every status are counted");
        assert_eq!(
            db.keys_after(&LEN, None, 10)?,
            ints(&[-3, 0, 5, 7, 10]),
            "a derived table's keys"
        );
        let with = |s, k: Option<i64>, limit| {
            db.keys_with_status(&LEN, s, k.map(Key::Int).as_ref(), limit)
        };
        assert_eq!(with(Status::Error, None, 1)?, ints(&[-3]));
        assert_eq!(with(Status::Error, Some(-3), 10)?, ints(&[5]));
        assert_eq!(with(Status::Error, Some(5), 10)?, ints(&[]));
        assert_eq!(with(Status::Blocked, None, 10)?, ints(&[0]));
        assert_eq!(with(Status::Ok, None, 10)?, ints(&[7, 10]));
        assert_eq!(with(Status::Ok, Some(7), 10)?, ints(&[10]));
        fx.write(fx.len, &[ok(-3, &[r], vec![int(2)])])?;
        assert_eq!(
            with(Status::Error, None, 10)?,
            ints(&[5]),
            "a row that recovered"
        );

        assert!(db.delete_row(&fx.g, fx.src, &Key::Int(5))?);
        assert_eq!(db.row_count("Src")?, 4);
        assert_eq!(db.row_count("Len")?, 4);
        Ok(())
    })
}
