//! Several worker processes on one database (a SQLite file, or a
//! PostgreSQL database on a throwaway server): leases make every row
//! computed exactly once, and a killed worker's rows are taken over after
//! its leases expire.
mod common;

use common::{create_calls_db, postgres_db, record_call, refresh_until_done};
use rederive::{derive_table, Db, Row};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Job {
    #[row(key)]
    pub id: i64,
    pub n: i64,
    /// Microseconds of work per call (spinning), or of sleep when
    /// negative.
    pub cost_us: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Done {
    pub digest: i64,
}

fn digest(n: i64) -> i64 {
    (0..1000).fold(n, |acc, i| acc.wrapping_mul(31).wrapping_add(i))
}

/// Calls of `work` in this process, by id.
static IN_PROCESS_CALLS: std::sync::Mutex<std::collections::BTreeMap<i64, u32>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

#[derive_table]
fn work(job: &Job) -> Done {
    record_call(job.id);
    *IN_PROCESS_CALLS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(job.id)
        .or_default() += 1;
    if job.cost_us < 0 {
        std::thread::sleep(Duration::from_micros(job.cost_us.unsigned_abs()));
    }
    let until = Instant::now() + Duration::from_micros(job.cost_us.max(0) as u64);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    Done {
        digest: digest(job.n),
    }
}

/// Where a test's database is: a file in its directory, or a PostgreSQL
/// URL.
fn location(dir: &Path, postgres: Option<String>) -> String {
    postgres.unwrap_or_else(|| dir.join("work.db").to_str().unwrap().to_owned())
}

fn setup(db_path: &str, dir: &Path, rows: i64, cost_us: i64) -> std::path::PathBuf {
    let calls = dir.join("calls.db");
    create_calls_db(&calls);
    let db = Db::open(db_path).unwrap();
    db.put_all((0..rows).map(|id| Job {
        id,
        n: id * 7,
        cost_us,
    }))
    .unwrap();
    calls
}

fn spawn_worker(db: &str, calls: &Path, ttl_ms: u64) -> Child {
    worker_command(db, calls, ttl_ms)
        .spawn()
        .expect("spawn worker")
}

fn worker_command(db: &str, calls: &Path, ttl_ms: u64) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "worker_process",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env("WORKER_DB", db)
    .env("CALLS_DB", calls)
    .env("WORKER_TTL_MS", ttl_ms.to_string());
    cmd
}

/// Waits for a worker process (120 s at most: then it is killed and the
/// test fails, naming `what` it waited for).
fn finish(child: &mut Child, what: &str) -> std::process::ExitStatus {
    common::wait_child(child, Instant::now() + Duration::from_secs(120), what)
}

/// The body of a worker process (run by the tests below, not on its own).
#[test]
#[ignore]
fn worker_process() {
    let Some(path) = std::env::var_os("WORKER_DB") else {
        return;
    };
    let db = Db::open(&path).expect("open");
    let ttl: u64 = std::env::var("WORKER_TTL_MS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(30_000);
    db.set_lease_ttl(Duration::from_millis(ttl));
    if std::env::var_os("WORKER_ONCE").is_some() {
        // One refresh, as a user's worker calls it: it must leave nothing
        // undone, whatever the other workers do.
        db.refresh().expect("refresh");
    } else {
        refresh_until_done(&db);
    }
}

fn calls_per_id(calls: &Path) -> Vec<(i64, i64)> {
    let conn = rusqlite::Connection::open(calls).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, count(*) FROM calls GROUP BY id ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn three_processes(db_path: &str, dir: &Path) {
    let calls = setup(db_path, dir, 2000, 200);
    let mut workers: Vec<Child> = (0..3)
        .map(|_| spawn_worker(db_path, &calls, 30_000))
        .collect();
    for w in &mut workers {
        assert!(finish(w, "a worker's refresh").success(), "a worker failed");
    }
    let per_id = calls_per_id(&calls);
    assert_eq!(per_id.len(), 2000, "every row computed");
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| *n != 1).collect();
    assert!(twice.is_empty(), "rows computed more than once: {twice:?}");
    // More than one process did work (the rows were shared out).
    let conn = rusqlite::Connection::open(&calls).unwrap();
    let pids: i64 = conn
        .query_row("SELECT count(DISTINCT pid) FROM calls", [], |r| r.get(0))
        .unwrap();
    assert!(pids >= 2, "only {pids} process did the work");
    let db = Db::open(db_path).unwrap();
    assert_eq!(db.refresh().unwrap().calls(), 0);
    assert_eq!(db.get::<Done>(1234i64).unwrap().digest, digest(1234 * 7));
}

#[test]
fn three_processes_compute_every_row_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    three_processes(&location(dir.path(), None), dir.path());
}

#[test]
fn three_processes_compute_every_row_exactly_once_on_postgres() {
    let Some(url) = postgres_db("three_processes") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    three_processes(&location(dir.path(), Some(url)), dir.path());
}

/// Waits (60 s at most) until workers have recorded `n` calls.
fn wait_for_calls(calls: &Path, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = rusqlite::Connection::open(calls)
            .unwrap()
            .query_row("SELECT count(*) FROM calls", [], |r| r.get(0))
            .unwrap_or(0);
        if done >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {n} calls after 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn killed_worker_taken_over(db_path: &str, dir: &Path) {
    let rows = 400;
    let calls = setup(db_path, dir, rows, 3_000);
    let ttl_ms = 1_000;
    let mut victim = spawn_worker(db_path, &calls, ttl_ms);
    // Kill it in the middle of its refresh.
    wait_for_calls(&calls, 40);
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();

    let db = Db::open(db_path).unwrap();
    db.set_lease_ttl(Duration::from_millis(ttl_ms));
    let started = Instant::now();
    refresh_until_done(&db);
    assert!(started.elapsed() < Duration::from_secs(60));

    if !db_path.starts_with("postgres") {
        let conn = rusqlite::Connection::open(db_path).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
    let status = db.status().unwrap();
    let table = |name: &str| status.iter().find(|t| t.table == name).unwrap();
    assert_eq!(table("Job").rows, rows as u64, "no input row lost");
    assert_eq!(table("Done").rows, rows as u64, "every row stored");
    assert_eq!(
        table("Done").running,
        0,
        "every lease released or taken over"
    );
    assert!(
        table("Done").workers.is_empty(),
        "{:?}",
        table("Done").workers
    );
    // The final state equals a clean single-process refresh.
    for id in 0..rows {
        assert_eq!(
            db.get::<Done>(id).unwrap().digest,
            digest(id * 7),
            "row {id}"
        );
        assert_eq!(db.explain::<Done>(id).unwrap(), rederive::Staleness::Fresh);
    }
    // The victim did part of the work before it died.
    let by_victim = calls_per_id(&calls).len() as i64;
    assert!((40..rows).contains(&by_victim), "{by_victim}");
}

#[test]
fn a_killed_worker_is_taken_over_after_its_leases_expire() {
    let dir = tempfile::tempdir().unwrap();
    killed_worker_taken_over(&location(dir.path(), None), dir.path());
}

#[test]
fn a_killed_worker_is_taken_over_after_its_leases_expire_on_postgres() {
    let Some(url) = postgres_db("killed_worker") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    killed_worker_taken_over(&location(dir.path(), Some(url)), dir.path());
}

#[test]
fn threads_sharing_one_db_compute_every_row_exactly_once() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Db>();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("threads.db")).unwrap();
    // Ids of their own, so that other tests of this process don't count here.
    let ids = 10_000..10_600;
    db.put_all(ids.clone().map(|id| Job {
        id,
        n: id * 7,
        cost_us: 100,
    }))
    .unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| refresh_until_done(&db));
        }
    });
    let calls = IN_PROCESS_CALLS.lock().unwrap_or_else(|e| e.into_inner());
    for id in ids {
        assert_eq!(calls.get(&id), Some(&1), "calls of row {id}");
        assert_eq!(db.get::<Done>(id).unwrap().digest, digest(id * 7));
    }
}

/// A worker computing slow rows writes its results at least every half
/// second, so that a worker killed mid-batch loses less than a second of
/// work: the rows computed twice (by it, then by the worker taking over)
/// stay under what one second of work produces.
#[test]
fn a_killed_worker_loses_less_than_a_second_of_work() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 400;
    let cost = Duration::from_millis(20);
    let db_path = location(dir.path(), None);
    let calls = setup(&db_path, dir.path(), rows, cost.as_micros() as i64);
    let ttl_ms = 1_000;
    let mut victim = spawn_worker(&db_path, &calls, ttl_ms);
    // Let it work for a few seconds (it computes rows all along): without
    // writes by time, all of that would be lost.
    wait_for_calls(&calls, 200);
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();

    // Another worker process takes over (its calls are recorded too).
    let mut heir = spawn_worker(&db_path, &calls, ttl_ms);
    assert!(
        finish(&mut heir, "the second worker's refresh").success(),
        "the second worker failed"
    );
    let per_id = calls_per_id(&calls);
    assert_eq!(per_id.len() as i64, rows, "every row computed");
    let twice = per_id.iter().filter(|(_, n)| *n > 1).count();
    // One second of work on every core the victim had.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let one_second = threads * (1_000 / cost.as_millis() as usize);
    assert!(
        twice < one_second,
        "{twice} rows computed twice; one second of work is {one_second} rows"
    );
}

/// Three workers started at the same moment on a fresh database, each
/// calling `refresh()` once: when all three have returned, every row was
/// computed (by one of them), and no fourth refresh finds anything to do.
fn three_at_once_each_refreshing_once(db_path: &str, dir: &Path) {
    let rows = 3000;
    let calls = setup(db_path, dir, rows, -2_000);
    let mut workers: Vec<Child> = (0..3)
        .map(|_| {
            worker_command(db_path, &calls, 2_000)
                .env("WORKER_ONCE", "1")
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    for w in &mut workers {
        assert!(finish(w, "a worker's refresh").success(), "a worker failed");
    }
    let per_id = calls_per_id(&calls);
    let db = Db::open(db_path).unwrap();
    let status = db.status().unwrap();
    let done = status.iter().find(|t| t.table == "Done").unwrap();
    assert_eq!(
        (per_id.len() as i64, done.missing, done.stale),
        (rows, 0, 0),
        "rows never computed by any of the three workers"
    );
    assert_eq!(
        db.refresh().unwrap().calls(),
        0,
        "a fourth refresh had work"
    );
}

#[test]
fn three_workers_at_once_leave_nothing_undone() {
    let dir = tempfile::tempdir().unwrap();
    three_at_once_each_refreshing_once(&location(dir.path(), None), dir.path());
}

#[test]
fn three_workers_at_once_leave_nothing_undone_on_postgres() {
    let Some(url) = postgres_db("three_at_once") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    three_at_once_each_refreshing_once(&location(dir.path(), Some(url)), dir.path());
}
