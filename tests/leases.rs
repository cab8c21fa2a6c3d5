//! Leases between workers sharing one database file, and cancellation.
//!
//! Each test holds one computation of `stamp` open at a gate (the first call
//! after `arm()`), does something from another worker meanwhile, then lets
//! it finish. `stamp` returns a number unique to each call, so a test can
//! tell whose result was stored even when two workers computed from the
//! same inputs (where the write guard cannot tell them apart).
mod common;

use common::deadline::{waiting_for, within_deadline};
use rederive::{derive_table, Db, Error, Row, Staleness};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Task {
    #[row(key)]
    pub name: String,
    pub n: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Stamp {
    /// The number of the call that computed this row (unique per call).
    pub call: i64,
    pub n: i64,
}

/// Numbers every call of `stamp`, across tests.
static NEXT_CALL: AtomicI64 = AtomicI64::new(1);
/// Calls of `stamp` per key (reset by each test).
static CALLS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());
/// Calls of `stamp` on a build's scanning thread: rows computed ahead.
static AHEAD_CALLS: AtomicI64 = AtomicI64::new(0);
/// The next call of `stamp` waits at the gate.
static ARMED: AtomicBool = AtomicBool::new(false);
/// The number of the call waiting at the gate (0: none yet).
static HELD_CALL: AtomicI64 = AtomicI64::new(0);
/// Opens the gate.
static RELEASE: AtomicBool = AtomicBool::new(false);
/// The gate and the counters are global: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// How long the held call waits at most (a test that fails must not hang).
const GATE_LIMIT: Duration = Duration::from_secs(20);

#[derive_table]
fn stamp(t: &Task) -> Stamp {
    let call = NEXT_CALL.fetch_add(1, Ordering::SeqCst);
    if std::thread::current().name() == Some("rederive-scan") {
        AHEAD_CALLS.fetch_add(1, Ordering::SeqCst);
    }
    *CALLS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(t.name.clone())
        .or_default() += 1;
    if ARMED.swap(false, Ordering::SeqCst) {
        HELD_CALL.store(call, Ordering::SeqCst);
        let deadline = Instant::now() + GATE_LIMIT;
        while !RELEASE.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Stamp { call, n: t.n }
}

fn task(name: &str, n: i64) -> Task {
    Task {
        name: name.into(),
        n,
    }
}

/// A fresh database file, the gate reset, the counters at zero, and this
/// test alone.
struct Setup {
    _serial: MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        ARMED.store(false, Ordering::SeqCst);
        RELEASE.store(false, Ordering::SeqCst);
        HELD_CALL.store(0, Ordering::SeqCst);
        CALLS.lock().unwrap_or_else(|e| e.into_inner()).clear();
        AHEAD_CALLS.store(0, Ordering::SeqCst);
        Setup {
            _serial: serial,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("leases.db")
    }

    fn open(&self) -> Db {
        Db::open(self.path()).expect("open the database")
    }
}

/// Makes the next call of `stamp` wait at the gate.
fn arm() {
    ARMED.store(true, Ordering::SeqCst);
}

/// Waits (with a deadline) until the armed call is at the gate; returns its number.
fn wait_held() -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let call = HELD_CALL.load(Ordering::SeqCst);
        if call != 0 {
            return call;
        }
        assert!(
            Instant::now() < deadline,
            "the held computation never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Opens the gate when dropped, so that a failing assertion does not leave
/// the held computation (and the thread scope joining it) waiting.
struct OpenGateOnDrop;

impl Drop for OpenGateOnDrop {
    fn drop(&mut self) {
        RELEASE.store(true, Ordering::SeqCst);
    }
}

fn calls_of(name: &str) -> u32 {
    CALLS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .copied()
        .unwrap_or(0)
}

/// Refreshes `db`, which computes `name`'s row, a row another worker
/// holds a lease on that is about to expire: the refresh waits for the
/// lease to expire, then takes the row over.
fn refresh_until_taken_over(db: &Db, name: &str) -> rederive::Report {
    waiting_for(format!(
        "a refresh taking over `{name}` once its lease expires"
    ));
    let r = db.refresh().expect("refresh of the worker taking over");
    assert_eq!(
        r.computed, 1,
        "the expired lease on `{name}` was not taken over: {r:?}"
    );
    r
}

fn stamp_status(db: &Db) -> rederive::TableStatus {
    db.status()
        .expect("status")
        .into_iter()
        .find(|s| s.table == "Stamp")
        .expect("a status line for Stamp")
}

/// A worker whose lease ran out is refused when it finally writes, even
/// though it computed from the same inputs as the worker that took its row
/// over (so the write guard alone would let it through). Here the slow
/// worker holds a row lease: another worker was about when it claimed.
#[test]
fn row_fence_refuses_a_taken_over_worker_with_the_same_inputs() -> rederive::Result<()> {
    within_deadline(1, || -> rederive::Result<()> {
        let setup = Setup::new();
        // A third worker that stays alive throughout, so that neither of the two
        // below is ever alone: both claim rows, not the table.
        let bystander = setup.open();
        bystander.put(task("other", 0))?;
        assert_eq!(bystander.refresh()?.computed, 1);

        let slow = setup.open();
        // The slow worker's leases last 1 ms: its heartbeat (every 20 ms at
        // best) cannot keep them, so its row is free for the taking while it runs.
        slow.set_lease_ttl(Duration::from_millis(1));
        let fast = setup.open();
        slow.put(task("k", 7))?;
        take_over_while_computing(&slow, &fast, "lease")
    })
}

/// `slow` computes `k` and is held at the gate; `fast` takes the row over
/// (its lease expired) and computes it from the same inputs; then `slow`
/// finishes and must be refused by its fence (`what`: the lease it held).
fn take_over_while_computing(slow: &Db, fast: &Db, what: &str) -> rederive::Result<()> {
    arm();
    std::thread::scope(|scope| -> rederive::Result<()> {
        let _open_gate = OpenGateOnDrop;
        let old = scope.spawn(|| slow.refresh());
        let slow_call = wait_held();

        // The same inputs, computed again by the worker taking the row over.
        refresh_until_taken_over(fast, "k");
        let fast_call = fast.get::<Stamp>("k")?.call;
        assert_ne!(fast_call, slow_call);

        RELEASE.store(true, Ordering::SeqCst);
        waiting_for("`old`: a refresh thread to return");
        let old_report = old.join().expect("refresh thread panicked")?;
        assert_eq!(
            (
                old_report.computed,
                old_report.unchanged,
                old_report.skipped
            ),
            (0, 0, 1),
            "the worker that lost its {what} must not write: {old_report:?}"
        );
        assert_eq!(
            fast.get::<Stamp>("k")?.call,
            fast_call,
            "the stored row is the result of the worker that took over"
        );
        Ok(())
    })?;
    assert_eq!(calls_of("k"), 2);
    assert_eq!(slow.explain::<Stamp>("k")?, Staleness::Fresh);
    assert_eq!(fast.refresh()?.calls(), 0);
    Ok(())
}

/// Like the test above, for a worker that was alone when it claimed, and so
/// holds a lease on the whole table for its batch.
#[test]
fn table_fence_refuses_a_lone_worker_whose_table_lease_expired() -> rederive::Result<()> {
    within_deadline(1, || -> rederive::Result<()> {
        let setup = Setup::new();
        let slow = setup.open();
        slow.set_lease_ttl(Duration::from_millis(1));
        // Opened, but registered only when it first claims: the slow worker is alone.
        let fast = setup.open();
        slow.put(task("k", 7))?;
        take_over_while_computing(&slow, &fast, "table lease")
    })
}

/// A computation that outlives its lease's TTL keeps the lease through its
/// worker's heartbeat: another worker refreshing meanwhile, long after the
/// TTL, leaves the row alone, and the row is computed exactly once.
#[test]
fn heartbeat_keeps_a_slow_computation_leased() -> rederive::Result<()> {
    within_deadline(1, || -> rederive::Result<()> {
        let setup = Setup::new();
        // The heartbeat extends every third of the TTL: a margin of about half
        // a second for a starved heartbeat thread on a loaded machine.
        let ttl = Duration::from_millis(800);
        let slow = setup.open();
        slow.set_lease_ttl(ttl);
        let other = setup.open();
        slow.put(task("k", 7))?;
        arm();
        std::thread::scope(|scope| -> rederive::Result<()> {
            let _open_gate = OpenGateOnDrop;
            let running = scope.spawn(|| slow.refresh());
            wait_held();
            let started = Instant::now();
            // Until well past the TTL, the other worker keeps trying.
            let mut tries = 0;
            while started.elapsed() < ttl * 5 / 2 {
                let r = other.refresh()?;
                assert_eq!(
                    (r.calls(), r.skipped),
                    (0, 1),
                    "the row is leased to the slow worker while it runs \
                 ({:?} after it started): {r:?}",
                    started.elapsed()
                );
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(tries > 0);
            assert_eq!(calls_of("k"), 1);

            RELEASE.store(true, Ordering::SeqCst);
            waiting_for("`running`: a refresh thread to return");
            let r = running.join().expect("refresh thread panicked")?;
            assert_eq!((r.computed, r.skipped), (1, 0), "{r:?}");
            Ok(())
        })?;
        assert_eq!(other.refresh()?.calls(), 0);
        assert_eq!(calls_of("k"), 1, "computed exactly once");
        assert_eq!(other.explain::<Stamp>("k")?, Staleness::Fresh);
        Ok(())
    })
}

/// A cancel flag set while a batch is being computed stops the refresh when
/// the functions return: nothing of the batch is stored, its leases are
/// given back, and another worker computes it at once.
#[test]
fn cancel_while_computing_stores_nothing_of_the_batch() -> rederive::Result<()> {
    within_deadline(1, || -> rederive::Result<()> {
        let setup = Setup::new();
        let db = setup.open();
        let cancel = db.cancel_flag();
        db.put_all([task("k", 7)])?;
        arm();
        std::thread::scope(|scope| {
            let _open_gate = OpenGateOnDrop;
            let running = scope.spawn(|| db.refresh());
            wait_held();
            // Cancelled while its function runs; the function then returns normally.
            cancel.store(true, Ordering::SeqCst);
            RELEASE.store(true, Ordering::SeqCst);
            waiting_for("`running`: a refresh thread to return");
            let r = running.join().expect("refresh thread panicked");
            assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        });
        assert_eq!(calls_of("k"), 1);
        assert_eq!(
            db.explain::<Stamp>("k")?,
            Staleness::Missing,
            "the cancelled batch's result must not be stored"
        );
        let st = stamp_status(&db);
        assert_eq!(
            (st.rows, st.missing, st.running),
            (0, 1, 0),
            "nothing stored, nothing leased: {st:?}"
        );
        assert!(matches!(db.refresh(), Err(Error::Cancelled)));

        // Another worker (the cancelled one still open) computes it at once.
        let fresh = setup.open();
        let r = fresh.refresh()?;
        assert_eq!((r.computed, r.skipped), (1, 0), "{r:?}");
        assert_eq!(fresh.get::<Stamp>("k")?.n, 7);
        assert_eq!(fresh.explain::<Stamp>("k")?, Staleness::Fresh);
        assert_eq!(calls_of("k"), 2);
        Ok(())
    })
}

/// A worker alone takes the whole table for its batch: a worker that turns
/// up while the batch runs leaves the table alone, even rows that are not
/// in the batch, until the batch is written.
#[test]
fn a_lone_workers_batch_keeps_a_newcomer_off_the_whole_table() -> rederive::Result<()> {
    within_deadline(1, || -> rederive::Result<()> {
        let setup = Setup::new();
        let lone = setup.open();
        let newcomer = setup.open();
        lone.put(task("k", 7))?;
        arm();
        std::thread::scope(|scope| -> rederive::Result<()> {
            let _open_gate = OpenGateOnDrop;
            let running = scope.spawn(|| lone.refresh());
            wait_held();

            newcomer.put(task("late", 8))?;
            // The newcomer waits: the lone worker holds the whole table, even
            // the row that is not in its batch.
            let waiting = scope.spawn(|| newcomer.refresh());
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                !waiting.is_finished(),
                "the newcomer's refresh returned while the lone worker held the table"
            );
            assert_eq!(calls_of("late"), 0, "the newcomer computed in a held table");
            let st = stamp_status(&lone);
            let workers: Vec<&str> = st.workers.iter().map(|w| w.worker.as_str()).collect();
            assert_eq!(workers, vec![lone.worker_id()], "{st:?}");

            RELEASE.store(true, Ordering::SeqCst);
            waiting_for("`running`: a refresh thread to return");
            let r = running.join().expect("refresh thread panicked")?;
            waiting_for("`waiting`: a refresh thread to return");
            let n = waiting.join().expect("refresh thread panicked")?;
            // Between them, the two rows were computed once each.
            assert_eq!(r.computed + n.computed, 2, "{r:?} {n:?}");
            assert_eq!(newcomer.refresh()?.calls(), 0);
            assert_eq!(lone.refresh()?.calls(), 0);
            Ok(())
        })?;
        assert_eq!((calls_of("k"), calls_of("late")), (1, 1));
        Ok(())
    })
}

/// A worker holding a *row* lease that expired is taken over by a worker
/// that finds itself alone and claims the whole *table*: the takeover must
/// remove the expired row lease, so that the first worker's row fence
/// fails and it cannot overwrite the newcomer's result.
#[test]
fn row_fence_holds_when_the_takeover_claims_the_whole_table() -> rederive::Result<()> {
    within_deadline(1, || -> rederive::Result<()> {
        let setup = Setup::new();
        let fast = setup.open();
        // Registered first, so that the slow worker claims a row, not the table.
        fast.put(task("other", 0))?;
        assert_eq!(fast.refresh()?.computed, 1);
        let slow = setup.open();
        // Its registration expires with its lease: the fast worker, taking
        // over, finds itself alone and claims the whole table.
        slow.set_lease_ttl(Duration::from_millis(1));
        slow.put(task("k", 7))?;
        arm();
        std::thread::scope(|scope| -> rederive::Result<()> {
            let _open_gate = OpenGateOnDrop;
            let old = scope.spawn(|| slow.refresh());
            wait_held();
            refresh_until_taken_over(&fast, "k");
            let fast_call = fast.get::<Stamp>("k")?.call;

            RELEASE.store(true, Ordering::SeqCst);
            waiting_for("`old`: a refresh thread to return");
            let old_report = old.join().expect("refresh thread panicked")?;
            assert_eq!(
                (
                    old_report.computed,
                    old_report.unchanged,
                    old_report.skipped
                ),
                (0, 0, 1),
                "the worker that lost its lease must not write: {old_report:?}"
            );
            assert_eq!(fast.get::<Stamp>("k")?.call, fast_call);
            Ok(())
        })
    })
}

/// A build pass plans its next pages while it computes one: rows that
/// another worker computes meanwhile (and that worker then leaves) are not
/// computed again when the pass, alone by then, claims the whole table for
/// a page it planned before they were written.
#[test]
fn a_build_page_planned_before_another_worker_computed_it_is_not_computed_again(
) -> rederive::Result<()> {
    let setup = Setup::new();
    let other = setup.open();
    let keys: Vec<String> = (0..2000).map(|i| format!("k{i:04}")).collect();
    other.put_all(keys.iter().enumerate().map(|(i, k)| task(k, i as i64)))?;
    // Registered as a live worker, so that the build claims rows, not the
    // table, while it is about; the table left empty, so that the
    // builder's pass is a build.
    other.put(task("temporary", 0))?;
    other.get::<Stamp>("temporary")?;
    other.delete::<Task>("temporary")?;
    CALLS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let builder = setup.open();
    arm();
    std::thread::scope(|scope| -> rederive::Result<()> {
        let _open_gate = OpenGateOnDrop;
        let building = scope.spawn(|| builder.refresh());
        wait_held();
        // The builder's scanner plans the pages after the held one.
        std::thread::sleep(Duration::from_millis(300));
        let r = other.refresh()?;
        assert!(r.computed > 0 && r.skipped > 0, "{r:?}");
        // It leaves: the builder is alone for its next claims.
        drop(other);
        RELEASE.store(true, Ordering::SeqCst);
        waiting_for("`building`: a refresh thread to return");
        let built = building.join().expect("refresh thread panicked")?;
        assert_eq!(
            built.computed + r.computed,
            keys.len() as u64,
            "between them, every row once: {built:?}"
        );
        Ok(())
    })?;
    let calls = CALLS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let twice: Vec<_> = calls.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "computed more than once: {twice:?}");
    assert_eq!(calls.len(), keys.len(), "every row computed");
    assert_eq!(builder.refresh()?.calls(), 0);
    Ok(())
}

/// A lone worker's build computes cheap rows ahead of their claim, on its
/// scanning thread, under the whole table it holds between pages. A
/// worker that shows up in the middle computes none of those rows again:
/// between them, every row is computed exactly once, and the table is
/// given back when the build ends.
#[test]
fn rows_computed_ahead_are_computed_once_when_a_worker_shows_up() -> rederive::Result<()> {
    within_deadline(1, || -> rederive::Result<()> {
        let setup = Setup::new();
        let builder = setup.open();
        let n = 30_000;
        let keys: Vec<String> = (0..n).map(|i| format!("k{i:05}")).collect();
        builder.put_all(keys.iter().enumerate().map(|(i, k)| task(k, i as i64)))?;
        let newcomer = setup.open();
        std::thread::scope(|scope| -> rederive::Result<()> {
            let building = scope.spawn(|| builder.refresh());
            // Shows up once the build is under way (the exact moment varies:
            // any moment must keep every row computed once).
            let deadline = Instant::now() + Duration::from_secs(20);
            while calls_of("k02000") == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut joined = rederive::Report::default();
            loop {
                let r = newcomer.refresh()?;
                joined.computed += r.computed;
                if r.skipped == 0 || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            waiting_for("`building`: a refresh thread to return");
            let built = building.join().expect("refresh thread panicked")?;
            assert_eq!(
                built.computed + joined.computed,
                n as u64,
                "between them, every row once: {built:?} {joined:?}"
            );
            Ok(())
        })?;
        let calls = CALLS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let twice: Vec<_> = calls.iter().filter(|(_, c)| **c != 1).collect();
        assert!(twice.is_empty(), "computed more than once: {twice:?}");
        assert_eq!(calls.len(), n);
        // The build did compute ahead (the case this test is for), and did not
        // compute every row there.
        let ahead = AHEAD_CALLS.load(Ordering::SeqCst);
        assert!(ahead > 0 && ahead < n as i64, "{ahead} rows computed ahead");
        for db in [&builder, &newcomer] {
            assert_eq!(db.refresh()?.calls(), 0);
            assert_eq!(db.get::<Stamp>("k12345")?.n, 12345);
            assert!(stamp_status(db).workers.is_empty(), "no lease left");
        }
        Ok(())
    })
}
