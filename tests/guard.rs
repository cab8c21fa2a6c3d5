//! The write guard and lease fencing: a slow computation on an old revision
//! that finishes after a newer one is not stored.
mod common;

use common::deadline::{waiting_for, within_deadline};
use rederive::{derive_table, Db, Row, Staleness};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Setting {
    #[row(key)]
    pub name: String,
    pub value: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Doubled {
    pub value: i64,
}

static STARTED: AtomicBool = AtomicBool::new(false);
static RELEASE: AtomicBool = AtomicBool::new(false);
static SERIAL: Mutex<()> = Mutex::new(());

#[derive_table]
fn double(s: &Setting) -> Doubled {
    if s.value == 1 {
        // The old revision's computation: announce, then wait to be released.
        STARTED.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !RELEASE.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Doubled { value: s.value * 2 }
}

/// One test at a time (the gate is global): two handles on a fresh
/// database file, the gate closed.
struct Setup {
    _serial: std::sync::MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        STARTED.store(false, Ordering::SeqCst);
        RELEASE.store(false, Ordering::SeqCst);
        Setup {
            _serial: serial,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("test.db")
    }

    fn two_workers(&self) -> rederive::Result<(Db, Db)> {
        Ok((Db::open(self.path())?, Db::open(self.path())?))
    }
}

fn wait_started() {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !STARTED.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the slow computation never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn write_guard_refuses_an_old_result() -> rederive::Result<()> {
    within_deadline(1, || -> rederive::Result<()> {
        let setup = Setup::new();
        let (slow, fast) = setup.two_workers()?;
        // Without leases, only the write guard stands between the two.
        slow.set_leasing(false);
        fast.set_leasing(false);
        slow.put(Setting {
            name: "k".into(),
            value: 1,
        })?;

        std::thread::scope(|scope| -> rederive::Result<()> {
            let old = scope.spawn(|| slow.refresh());
            wait_started();
            // While the old computation runs, a newer input arrives and is computed.
            fast.put(Setting {
                name: "k".into(),
                value: 5,
            })?;
            let r = fast.refresh()?;
            assert_eq!(r.computed, 1);
            assert_eq!(fast.get::<Doubled>("k")?.value, 10);

            RELEASE.store(true, Ordering::SeqCst);
            waiting_for("`old`: a refresh thread to return");
            let old_report = old.join().expect("refresh thread panicked")?;
            assert_eq!(
                old_report.skipped, 1,
                "the old result must be refused: {old_report:?}"
            );
            assert_eq!(old_report.computed, 0);
            Ok(())
        })?;

        // The newer result survived, and it is fresh.
        assert_eq!(fast.get::<Doubled>("k")?.value, 10);
        assert_eq!(slow.explain::<Doubled>("k")?, Staleness::Fresh);
        // The refused refresh left its watermark behind; a new refresh finds nothing stale.
        let r = slow.refresh()?;
        assert_eq!(r.calls(), 0);
        Ok(())
    })
}

#[test]
fn lease_fencing_refuses_a_worker_whose_lease_was_taken_over() -> rederive::Result<()> {
    within_deadline(1, || -> rederive::Result<()> {
        // Alone, the slow worker claims the table for its batch; with another
        // worker about, it claims the row. Both leases fence.
        fencing(false)?;
        fencing(true)
    })
}

fn fencing(other_worker_first: bool) -> rederive::Result<()> {
    let setup = Setup::new();
    let path = setup.path();
    let (slow, fast) = setup.two_workers()?;
    if other_worker_first {
        // The fast worker computes something first, which registers it.
        fast.put(Setting {
            name: "other".into(),
            value: 2,
        })?;
        assert_eq!(fast.refresh()?.computed, 1);
    }
    slow.put(Setting {
        name: "k".into(),
        value: 1,
    })?;

    std::thread::scope(|scope| -> rederive::Result<()> {
        let old = scope.spawn(|| slow.refresh());
        wait_started();
        fast.put(Setting {
            name: "k".into(),
            value: 5,
        })?;
        // The slow worker holds the row: the fast one waits for it.
        let waiting = scope.spawn(|| fast.refresh());
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !waiting.is_finished(),
            "a refresh returned while another worker held a stale row"
        );
        let status = fast.status()?;
        let doubled = status.iter().find(|s| s.table == "Doubled").unwrap();
        assert_eq!(doubled.running, 1);
        assert_eq!(
            doubled.workers,
            vec![rederive::storage::RunningWork {
                worker: slow.worker_id().to_owned(),
                rows: 1
            }]
        );

        // The slow worker's lease runs out (as if it had hung): the row is taken over.
        let conn = rusqlite::Connection::open(&path).unwrap();
        // (Alone when it claimed, it holds the whole table for its batch.)
        conn.execute("UPDATE rederive_leases SET expires_ms = 0", [])
            .unwrap();
        conn.execute("UPDATE rederive_table_leases SET expires_ms = 0", [])
            .unwrap();
        waiting_for("`waiting`: a refresh thread to return");
        let r = waiting.join().expect("refresh thread panicked")?;
        assert_eq!((r.computed, r.skipped), (1, 1), "{r:?}");

        RELEASE.store(true, Ordering::SeqCst);
        waiting_for("`old`: a refresh thread to return");
        let old_report = old.join().expect("refresh thread panicked")?;
        assert_eq!(
            (old_report.computed, old_report.skipped),
            (0, 1),
            "{old_report:?}"
        );
        Ok(())
    })?;
    assert_eq!(fast.get::<Doubled>("k")?.value, 10);
    assert_eq!(slow.explain::<Doubled>("k")?, Staleness::Fresh);
    Ok(())
}

#[test]
fn a_row_deleted_while_computed_leaves_nothing_behind() -> rederive::Result<()> {
    within_deadline(1, || -> rederive::Result<()> {
        let setup = Setup::new();
        let path = setup.path();
        let (worker, user) = setup.two_workers()?;
        worker.put(Setting {
            name: "k".into(),
            value: 1,
        })?;
        std::thread::scope(|scope| -> rederive::Result<()> {
            let refresh = scope.spawn(|| worker.refresh());
            wait_started();
            // The input row goes while its row is being computed.
            assert!(user.delete::<Setting>("k")?);
            RELEASE.store(true, Ordering::SeqCst);
            waiting_for("`refresh`: a refresh thread to return");
            let r = refresh.join().expect("refresh thread panicked")?;
            assert_eq!((r.computed, r.skipped), (0, 1), "{r:?}");
            Ok(())
        })?;
        let conn = rusqlite::Connection::open(&path).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM Doubled", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "no orphan derived row");
        assert!(matches!(
            user.get::<Doubled>("k"),
            Err(rederive::Error::NotFound { .. })
        ));
        Ok(())
    })
}
