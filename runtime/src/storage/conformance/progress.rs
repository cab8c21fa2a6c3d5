//! Cases on watermarks, epoch marks, settled reads, the change token, and
//! connections.

use super::{codes, int, ok, put_src, run, Harness, CODE, SEC, START_MS};
use crate::storage::{Epoch, Fence, Pass, Revision, Values};
use crate::value::Key;
use std::time::Duration;

/// A derived table's watermark is zero until marked, then the highest
/// revision ever marked: `mark_processed` never lowers it, and marks one
/// table only.
pub fn watermarks_never_lowered(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        for name in ["Len", "Twice", "Pair", "TagLen"] {
            assert_eq!(
                db.watermark(name)?,
                Revision::ZERO,
                "a new table's watermark"
            );
        }
        let r1 = fx.put(&[(1, "a")])?;
        let (_, e1) = db.snapshot()?;
        db.mark_processed("Len", r1, e1)?;
        assert_eq!(db.watermark("Len")?, r1);
        assert_eq!(
            db.watermark("Twice")?,
            Revision::ZERO,
            "other tables keep theirs"
        );
        let r2 = fx.put(&[(1, "b")])?;
        let (_, e2) = db.snapshot()?;
        db.mark_processed("Len", r2, e2)?;
        assert_eq!(db.watermark("Len")?, r2);
        db.mark_processed("Len", r1, e2)?;
        assert_eq!(
            db.watermark("Len")?,
            r2,
            "an older mark does not lower the watermark"
        );
        db.mark_processed("Len", Revision::ZERO, Epoch::new(0))?;
        assert_eq!(db.watermark("Len")?, r2);
        db.mark_processed("Twice", r1, e1)?;
        assert_eq!((db.watermark("Len")?, db.watermark("Twice")?), (r2, r1));
        Ok(())
    })
}

/// `load_if_settled` reads the last table's row (`Some`) only when every
/// derived table among the tables is marked as of the current epoch: an
/// input write or delete anywhere, or an on-demand result, unsettles them
/// until they are marked again; refresh results do not; an older epoch
/// mark does not lower a newer one. `tables_settled` agrees at every step.
pub fn load_if_settled(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        let r1 = fx.put(&[(1, "abc"), (2, "de")])?;
        fx.write(fx.len, &[ok(1, &[r1], vec![int(3)])])?;
        let rl = fx.must(fx.len, 1)?.changed_at;
        fx.write(fx.twice, &[ok(1, &[rl], vec![int(6)])])?;
        let chain = fx.g.ancestry(fx.twice);
        assert_eq!(chain, [fx.src, fx.len, fx.twice]);
        let settled = |k: i64| {
            let state = db.load_if_settled(&fx.g, &chain, &Key::Int(k))?;
            assert_eq!(
                db.tables_settled(&fx.g, &chain)?,
                state.is_some(),
                "tables_settled agrees with load_if_settled"
            );
            Ok::<_, crate::error::Error>(state)
        };
        let mark_all = || -> crate::error::Result<()> {
            let (rev, epoch) = db.snapshot()?;
            db.mark_processed("Len", rev, epoch)?;
            db.mark_processed("Twice", rev, epoch)
        };

        assert_eq!(settled(1)?, None, "nothing is marked");
        let (rev, e1) = db.snapshot()?;
        db.mark_processed("Len", rev, e1)?;
        assert_eq!(settled(1)?, None, "Twice is not marked");
        db.mark_processed("Twice", rev, e1)?;
        let twice = fx.must(fx.twice, 1)?;
        assert_eq!(
            settled(1)?,
            Some(Some(twice.clone())),
            "every derived table is marked"
        );
        assert_eq!(settled(99)?, Some(None), "settled, and no row");
        let src = db.load_if_settled(&fx.g, &[fx.src], &Key::Int(1))?;
        assert_eq!(src, Some(fx.state(fx.src, 1)?), "input tables need no mark");
        assert!(db.tables_settled(&fx.g, &[fx.src])?);
        let tag = fx.g.ancestry(fx.tag_len);
        assert_eq!(
            db.load_if_settled(&fx.g, &tag, &Key::from("t"))?,
            None,
            "TagLen is not marked"
        );
        assert!(!db.tables_settled(&fx.g, &tag)?);

        fx.write(fx.twice, &[ok(1, &[rl], vec![int(7)])])?;
        let now = settled(1)?.flatten().map(|s| s.values);
        assert_eq!(
            now,
            Some(vec![int(7)]),
            "refresh results keep the tables settled"
        );

        let on_demand = [ok(1, &[rl], vec![int(8)])];
        fx.write_as(db, fx.twice, &on_demand, Pass::OnDemand, &Fence::Unfenced)?;
        assert_eq!(settled(1)?, None, "an on-demand result unsettles");
        mark_all()?;
        assert!(settled(1)?.is_some());
        db.mark_processed("Twice", rev, e1)?;
        assert!(
            settled(1)?.is_some(),
            "an older epoch mark does not lower a newer one"
        );

        fx.put_tags(&[("t", None, 1.0)])?;
        assert_eq!(settled(1)?, None, "an input write to any table unsettles");
        mark_all()?;
        assert!(settled(1)?.is_some());
        assert!(db.delete_row(&fx.g, fx.src, &Key::Int(2))?);
        assert_eq!(settled(1)?, None, "a delete unsettles");
        mark_all()?;
        assert_eq!(settled(2)?, Some(None));
        Ok(())
    })
}

/// The change token changes when another connection commits a write
/// (input rows, results, deletes), and not because time passes.
/// Skipped for private databases.
pub fn change_token(h: &Harness) {
    run(h, |fx| {
        let Some(b) = fx.second() else {
            return Ok(());
        };
        let a = &*fx.db;
        let t0 = a.change_token()?;
        fx.clock.advance(Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(a.change_token()?, t0, "time passing changes nothing");
        let r1 = put_src(b, &[(1, "a")])?;
        let t1 = a.change_token()?;
        assert_ne!(t1, t0, "another connection wrote input rows");
        assert_eq!(
            a.change_token()?,
            t1,
            "the token holds still without writes"
        );
        fx.write_as(
            b,
            fx.len,
            &[ok(1, &[r1], vec![int(1)])],
            Pass::Refresh,
            &Fence::Unfenced,
        )?;
        let t2 = a.change_token()?;
        assert_ne!(t2, t1, "another connection wrote results");
        assert!(b.delete_row(&fx.g, fx.src, &Key::Int(1))?);
        assert_ne!(a.change_token()?, t2, "another connection deleted a row");
        Ok(())
    })
}

/// The backend follows the clock it was opened with; for shared backends,
/// a connection from [`crate::storage::Backend::connector`] sees the same
/// database and follows the same clock.
pub fn connections_and_clock(h: &Harness) {
    run(h, |fx| {
        let a = &*fx.db;
        assert_eq!(
            a.clock().now_ms(),
            START_MS,
            "the backend's clock is the one it was given"
        );
        fx.clock.advance(5 * SEC);
        assert_eq!(a.clock().now_ms(), START_MS + 5_000);
        let Some(b) = fx.second() else {
            return Ok(());
        };
        let connector = a.connector().expect("a shared backend has a connector");
        assert!(
            !connector.location().is_empty(),
            "a connector names its database"
        );
        assert_eq!(
            b.clock().now_ms(),
            START_MS + 5_000,
            "a connection follows the same clock"
        );
        assert_eq!(b.stored_tables()?, a.stored_tables()?);
        b.apply_schema(&fx.g, &codes(&fx.g, CODE))?;

        let r1 = fx.put(&[(1, "a")])?;
        assert_eq!(b.revision()?, r1, "one revision counter");
        assert_eq!(b.snapshot()?, a.snapshot()?);
        let s = b.load(&fx.g, &[fx.src], &Key::Int(1), Values::All)?;
        assert_eq!(
            s,
            [fx.state(fx.src, 1)?],
            "rows written by one connection are read by the other"
        );
        assert_eq!(s[0].as_ref().map(|s| s.changed_ms), Some(START_MS + 5_000));

        fx.clock.advance(SEC);
        let r2 = put_src(b, &[(2, "b")])?;
        assert!(r2 > r1);
        let s = fx.must(fx.src, 2)?;
        assert_eq!((s.changed_at, s.changed_ms), (r2, START_MS + 6_000));
        fx.write_as(
            b,
            fx.len,
            &[ok(2, &[r2], vec![int(1)])],
            Pass::Refresh,
            &Fence::Unfenced,
        )?;
        assert_eq!(fx.must(fx.len, 2)?.values, [int(1)]);
        let (rev, epoch) = a.snapshot()?;
        b.mark_processed("Len", rev, epoch)?;
        assert_eq!(a.watermark("Len")?, rev, "marks are shared");
        Ok(())
    })
}
