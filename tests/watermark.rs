//! The watermark: a refresh marks a table processed up to the revision at
//! which its pass *began*, so that a write committed during the pass, after
//! its last page of changes was read, is found by the next refresh.
mod common;

use common::hooked::Hooked;
use rederive::sqlite::SqliteStore;
use rederive::{derive_table, Db, Graph, Row, Staleness};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Reading {
    #[row(key)]
    pub id: i64,
    pub value: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Scaled {
    pub value: i64,
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive_table]
fn scaled(r: &Reading) -> Scaled {
    CALLS.fetch_add(1, Ordering::SeqCst);
    Scaled {
        value: r.value * 10,
    }
}

#[test]
fn a_write_after_a_pass_read_its_last_page_is_refreshed_next_time() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("watermark.db");
    let hook = Arc::new(Mutex::new(None::<common::hooked::Hook>));
    let db = Db::open_backend(
        Box::new(Hooked {
            inner: Box::new(SqliteStore::open(&path)?),
            after_last_page: hook.clone(),
        }),
        Graph::from_registry()?,
    )?;
    db.put_all((1..=3).map(|id| Reading { id, value: id }))?;
    db.refresh()?;
    // Another process's connection.
    let other = Db::open(&path)?;
    other.put(Reading { id: 1, value: 100 })?;
    // The next pass walks the change to row 1; once it has read its last
    // page, the other process writes row 2, before the pass ends.
    let path_for_hook = path.clone();
    *hook.lock().unwrap() = Some(Box::new(move |table: &str| {
        if table == "Scaled" {
            let other = Db::open(&path_for_hook).unwrap();
            other.put(Reading { id: 2, value: 200 }).unwrap();
        }
    }));
    let r = db.refresh()?;
    *hook.lock().unwrap() = None;
    assert_eq!(r.computed, 1, "the pass computed row 1 only: {r:?}");
    assert!(matches!(
        db.explain::<Scaled>(2i64)?,
        Staleness::InputChanged { .. }
    ));
    // The next refresh finds the write the last pass did not see.
    let before = CALLS.load(Ordering::SeqCst);
    let r = db.refresh()?;
    assert_eq!(
        (r.computed, CALLS.load(Ordering::SeqCst) - before),
        (1, 1),
        "the write made during the last pass was not refreshed: {r:?}"
    );
    assert_eq!(db.explain::<Scaled>(2i64)?, Staleness::Fresh);
    assert_eq!(db.get::<Scaled>(2i64)?.value, 2000);
    Ok(())
}
