//! A build of a table that records many reads leaves its rows' entries in
//! the index by row read to one sorted pass: whatever happens in between
//! (the pass ends, it is cut short, another worker asks), the readers of a
//! row are found, and a change to a row read makes them stale.
mod common;

use common::deadline::{waiting_for, within_deadline};
use rederive::{derive_table, Ctx, Db, Row, Staleness};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Cell {
    #[row(key)]
    pub id: i64,
    pub v: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Around {
    pub sum: i64,
}

/// Rows of `Cell`.
const N: i64 = 2_000;

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// Its own value and the values of the five cells after it (wrapping).
#[derive_table(reads = [Cell])]
fn around(c: &Cell, ctx: &Ctx) -> Result<Around, String> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    let mut sum = c.v;
    for i in 1..=5 {
        sum += ctx.get::<Cell>((c.id + i) % N)?.map_or(0, |o| o.v);
    }
    Ok(Around { sum })
}

fn expected(values: &dyn Fn(i64) -> i64, id: i64) -> i64 {
    (0..=5).map(|i| values((id + i) % N)).sum()
}

fn pending(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM rederive_reads_pending", [], |r| {
            r.get(0)
        })
        .unwrap()
}

/// After a build, a change to one cell makes exactly its six readers
/// stale, and the next refresh recomputes just those.
#[test]
fn after_a_build_a_change_reaches_every_reader() {
    within_deadline(1, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("build.db");
        let db = Db::open(&path).unwrap();
        db.put_all((0..N).map(|id| Cell { id, v: id })).unwrap();
        waiting_for("the build");
        let r = db.refresh().unwrap();
        assert_eq!(r.computed, N as u64);
        assert_eq!(pending(&path), 0, "the pass completed the index");
        db.put(Cell {
            id: 100,
            v: 1_000_000,
        })
        .unwrap();
        let before = CALLS.load(Ordering::SeqCst);
        waiting_for("the refresh after one change");
        let r = db.refresh().unwrap();
        assert_eq!(r.computed, 6);
        assert_eq!(CALLS.load(Ordering::SeqCst) - before, 6);
        let v = |id: i64| if id == 100 { 1_000_000 } else { id };
        for id in [95, 96, 99, 100, 101, 1999, 0] {
            assert_eq!(
                db.get::<Around>(id).unwrap().sum,
                expected(&v, id),
                "row {id}"
            );
        }
    })
}

/// A build cut short after its first batches leaves rows whose index
/// entries are pending; another worker (a new `Db`, as another process
/// would be) finds the readers all the same, and completes the index.
#[test]
fn a_build_cut_short_leaves_readers_found() {
    within_deadline(1, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.db");
        let db = Db::open(&path).unwrap();
        db.put_all((0..N).map(|id| Cell { id, v: id })).unwrap();
        let cancel = db.cancel_flag();
        waiting_for("a build cut short");
        let cut = db.refresh_with_progress(|_, r| {
            if r.computed >= 500 {
                cancel.store(true, Ordering::SeqCst);
            }
        });
        assert!(matches!(cut, Err(rederive::Error::Cancelled)), "{cut:?}");
        drop(db);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let counts: (i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM rederive_reads), (SELECT count(*) FROM Around)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(
            pending(&path) > 0,
            "the first batches left their entries pending ({counts:?})"
        );

        // A row whose entries are pending, and a cell it read.
        let reader: i64 = conn
            .query_row(
                "SELECT reader_key FROM rederive_reads_pending ORDER BY reader_key LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let cell = (reader + 3) % N;
        let other = Db::open(&path).unwrap();
        // Its readers are found without writing.
        other.put(Cell { id: cell, v: -7 }).unwrap();
        let stale = other.stale_from::<Cell>(cell).unwrap();
        assert!(
            stale.iter().any(|s| s.key == rederive::Key::Int(reader)),
            "the reader {reader} of cell {cell} is found: {stale:?}"
        );
        waiting_for("the refresh after the cut");
        other.refresh().unwrap();
        assert_eq!(pending(&path), 0, "the refresh completed the index");
        let v = |id: i64| if id == cell { -7 } else { id };
        for id in [0, 1, reader, cell, 1000, N - 1] {
            assert_eq!(other.explain::<Around>(id).unwrap(), Staleness::Fresh);
            assert_eq!(
                other.get::<Around>(id).unwrap().sum,
                expected(&v, id),
                "row {id}"
            );
        }
    })
}

/// A cell deleted while the index entries of its readers are pending: its
/// readers are still told (the tombstone is written), and recompute.
#[test]
fn a_row_deleted_while_entries_are_pending_reaches_its_readers() {
    within_deadline(1, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deleted.db");
        let db = Db::open(&path).unwrap();
        db.put_all((0..N).map(|id| Cell { id, v: id })).unwrap();
        let cancel = db.cancel_flag();
        let _ = db.refresh_with_progress(|_, r| {
            if r.computed >= 500 {
                cancel.store(true, Ordering::SeqCst);
            }
        });
        drop(db);
        assert!(pending(&path) > 0);
        let other = Db::open(&path).unwrap();
        assert!(other.delete::<Cell>(5i64).unwrap());
        waiting_for("the refresh after the deletion");
        other.refresh().unwrap();
        let v = |id: i64| if id == 5 { 0 } else { id };
        for id in [0, 1, 4, 6] {
            assert_eq!(
                other.get::<Around>(id).unwrap().sum,
                expected(&v, id),
                "row {id}"
            );
        }
    })
}
