//! Cases on building a table: emptiness, ordered scans, new rows written
//! without comparing, and orphans after a delete.

use super::{int, ok, run, text, Harness, CODE};
use crate::storage::{Fence, Outcome, Pass, Revision, Values, Written};
use crate::value::{Key, Value};

/// A result planned as new (no stored row when planned).
fn new(o: Outcome) -> Outcome {
    Outcome { new: true, ..o }
}

/// `is_empty` tells whether a stored table holds a row.
pub fn is_empty_tells(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        assert!(db.is_empty("Src")? && db.is_empty("Len")?, "a new database");
        let r1 = fx.put(&[(1, "a")])?;
        assert!(!db.is_empty("Src")?, "after a put");
        assert!(db.is_empty("Len")?, "a derived table nobody wrote");
        fx.write(fx.len, &[ok(1, &[r1], vec![int(1)])])?;
        assert!(!db.is_empty("Len")?, "after a result");
        db.delete_row(&fx.g, fx.src, &Key::Int(1))?;
        assert!(
            db.is_empty("Src")? && db.is_empty("Len")?,
            "after the delete"
        );
        Ok(())
    })
}

/// `scan_page` pages through the first table's keys in key order, each
/// key exactly once, with the key's state in every table asked for
/// (`None` where a table has no row).
pub fn scan_page_in_key_order(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        // Written out of key order, over several revisions.
        fx.put(&[(5, "e"), (1, "a")])?;
        let r = fx.put(&[(3, "c"), (2, "b"), (4, "d")])?;
        fx.write(fx.len, &[ok(3, &[r], vec![int(1)])])?;
        let tables = [fx.src, fx.len];
        let mut seen = Vec::new();
        let mut after: Option<Key> = None;
        loop {
            let page = db.scan_page(&fx.g, &tables, after.as_ref(), 2, Values::All)?;
            assert!(page.len() <= 2, "at most `limit` rows");
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for row in page {
                assert_eq!(row.states.len(), 2, "one state per table");
                let src = row.states[0].as_ref().expect("the first table's row");
                assert_eq!(src.values[1], text(["a", "b", "c", "d", "e"][seen.len()]));
                assert_eq!(
                    row.states[1].is_some(),
                    row.key == Key::Int(3),
                    "only key 3 has a `Len` row"
                );
                seen.push(row.key);
            }
        }
        assert_eq!(seen, (1..=5).map(Key::Int).collect::<Vec<_>>());
        // Text keys, the empty one first.
        fx.put_tags(&[("b", None, 1.0), ("", None, 2.0), ("a", None, 3.0)])?;
        let page = db.scan_page(&fx.g, &[fx.tag], None, 10, Values::All)?;
        let keys: Vec<Key> = page.into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["", "a", "b"].map(Key::from));
        Ok(())
    })
}

/// `changed_in_range` tells whether a row with a key in a range (both
/// ends included) was written after a revision.
pub fn changed_in_range_tells(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        let len = fx.g.table(fx.len).info;
        let r1 = fx.put(&[(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")])?;
        let (k2, k3, k4) = (Key::Int(2), Key::Int(3), Key::Int(4));
        assert!(!db.changed_in_range(len, &Key::Int(1), &Key::Int(5), Revision::ZERO)?);
        fx.write(fx.len, &[new(ok(3, &[r1], vec![int(1)]))])?;
        let written = db.revision()?;
        assert!(
            db.changed_in_range(len, &k2, &k4, r1)?,
            "3 written after r1"
        );
        assert!(
            db.changed_in_range(len, &k3, &k3, r1)?,
            "both ends included"
        );
        assert!(
            !db.changed_in_range(len, &k4, &Key::Int(5), r1)?,
            "another range"
        );
        assert!(
            !db.changed_in_range(len, &k2, &k4, written)?,
            "not after it"
        );
        // An input table: its rows were put at r1.
        assert!(db.changed_in_range(fx.g.table(fx.src).info, &k2, &k2, Revision::ZERO)?);
        assert!(!db.changed_in_range(fx.g.table(fx.src).info, &k2, &k2, r1)?);
        Ok(())
    })
}

/// A result planned as new is stored as `Changed`; if a row of its key
/// was written meanwhile, it goes through the guard and early cutoff
/// like any other result.
pub fn new_rows_fall_back_to_the_guard(h: &Harness) {
    run(h, |fx| {
        let r1 = fx.put(&[(1, "a"), (2, "b"), (3, "c")])?;
        let w = fx.write(
            fx.len,
            &[
                new(ok(1, &[r1], vec![int(1)])),
                new(ok(2, &[r1], vec![int(2)])),
            ],
        )?;
        assert_eq!(w, [Written::Changed, Written::Changed]);
        let r2 = fx.put(&[(1, "aa")])?;
        let first = fx.must(fx.len, 2)?.changed_at;
        let w = fx.write(
            fx.len,
            &[
                new(ok(1, &[r2], vec![int(7)])), // newer inputs: written
                new(ok(2, &[r1], vec![int(2)])), // equal: early cutoff
                new(ok(3, &[r1], vec![int(3)])), // really new
            ],
        )?;
        assert_eq!(w, [Written::Changed, Written::Unchanged, Written::Changed]);
        assert_eq!(fx.must(fx.len, 1)?.values, [int(7)]);
        assert_eq!(
            fx.must(fx.len, 2)?.changed_at,
            first,
            "cutoff kept changed_at"
        );
        let w = fx.write(fx.len, &[new(ok(1, &[r1], vec![int(9)]))])?;
        assert_eq!(w, [Written::Rejected], "older inputs than the stored row");
        assert_eq!(fx.must(fx.len, 1)?.values, [int(7)]);
        Ok(())
    })
}

/// Results read before a root row was deleted are not kept for it,
/// whatever `read_at` says about when they were read.
pub fn orphans_after_a_delete(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        let r1 = fx.put(&[(1, "a"), (2, "b")])?;
        let read_at = db.revision()?;
        db.delete_row(&fx.g, fx.src, &Key::Int(2))?;
        let write = |outcomes: &[Outcome], read_at: Revision| {
            db.write_outcomes(
                &fx.g,
                fx.len,
                CODE,
                outcomes,
                Pass::Refresh,
                &Fence::Unfenced,
                read_at,
            )
        };
        let w = write(
            &[
                new(ok(1, &[r1], vec![int(1)])),
                new(ok(2, &[r1], vec![int(2)])),
            ],
            read_at,
        )?;
        assert_eq!(w, [Written::Changed, Written::Rejected]);
        assert_eq!(fx.state(fx.len, 2)?, None, "no row for a deleted root");
        assert_eq!(db.row_count("Len")?, 1);
        let later = db.revision()?;
        let w = write(&[ok(1, &[r1], vec![Value::Integer(5)])], later)?;
        assert_eq!(w, [Written::Changed], "read after the delete");
        Ok(())
    })
}
