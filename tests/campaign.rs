//! The workers campaign (issue #20): the promise that **when every
//! worker's `refresh` has returned, nothing is stale or missing**, tested
//! on the schedules users meet, on each backend.
//!
//! A trial starts 2 to 5 worker processes at random offsets (now and then
//! all at once on an empty table, which takes the build pass) and a writer
//! process that changes and deletes input rows meanwhile; it kills some
//! workers with SIGKILL at random moments and starts them again, and on
//! PostgreSQL restarts the server itself (an immediate stop, back a second
//! later) in some trials. Every worker refreshes in a loop (a refresh that
//! fails on a lost connection is counted as a fault and tried again);
//! when the writer is done, each surviving worker runs one last `refresh`
//! and exits. Then:
//!
//! - `status` counts no missing, stale, failed or blocked row, and no
//!   row running once a killed worker's leases have had their time to
//!   run out;
//! - every derived row equals a clean computation of its input row, and
//!   no derived row is left of a deleted input row;
//! - no row was computed twice from the same input value (every write
//!   gives a fresh value), except by a worker that was killed, or whose
//!   refresh failed when the server went away, within about a second of
//!   that moment (the rows it had computed but not committed).
//!
//! `campaign_sqlite_short` and `campaign_postgres_short` run 5 trials each
//! with the suite; `campaign_sqlite_long` and `campaign_postgres_long`
//! (ignored) run 50, or `REDERIVE_CAMPAIGN_TRIALS`. Each trial prints its
//! seed; `REDERIVE_CAMPAIGN_SEED=<seed>` replays one (the schedule is the
//! seed's; the exact instants still depend on the machine).
#![cfg(unix)]

mod common;

use common::{wait_child, Rng};
use rederive::{derive_table, Db, Row};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// The graph: an input table and a chain of two derived tables.

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Item {
    #[row(key)]
    pub id: i64,
    /// A value no other write of this row ever had.
    pub n: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Twice {
    pub v: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Plus {
    pub w: i64,
}

/// How long each function call sleeps (a slow function: rows are in
/// flight when kills and restarts land).
const CALL: Duration = Duration::from_millis(2);

#[derive_table]
fn twice(item: &Item) -> Twice {
    record("Twice", item.id, item.n);
    std::thread::sleep(CALL);
    Twice { v: item.n * 2 }
}

#[derive_table]
fn plus(t: &Twice) -> Plus {
    record("Plus", t.v / 2, t.v);
    std::thread::sleep(CALL);
    Plus { w: t.v + 1 }
}

thread_local! {
    static CALLS: std::cell::RefCell<Option<rusqlite::Connection>> =
        const { std::cell::RefCell::new(None) };
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Records a call of a function (its table, the row's id, the input value,
/// this process and the time) in the side database named by `CALLS_DB`.
fn record(table: &str, id: i64, n: i64) {
    let Some(path) = std::env::var_os("CALLS_DB") else {
        return;
    };
    CALLS.with(|c| {
        let mut c = c.borrow_mut();
        let conn = c.get_or_insert_with(|| {
            let conn = rusqlite::Connection::open(&path).expect("open the calls database");
            conn.busy_timeout(Duration::from_secs(60)).unwrap();
            conn.execute_batch("PRAGMA synchronous = OFF").unwrap();
            conn
        });
        conn.execute(
            "INSERT INTO calls(tbl, id, n, pid, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![table, id, n, std::process::id() as i64, now_ms()],
        )
        .expect("record a call");
    });
}

// ---------------------------------------------------------------------------
// The processes (run by the trials, not on their own).

/// Lease time-to-live of the campaign's workers.
const TTL: Duration = Duration::from_secs(2);

/// A worker: refreshes in a loop until the `stop` file appears, then runs
/// one last refresh and exits. A failed refresh is recorded in the
/// `faults` file (pid and time) and tried again.
#[test]
#[ignore]
fn campaign_worker_process() {
    let (Some(db), Some(dir)) = (
        std::env::var_os("CAMPAIGN_DB"),
        std::env::var_os("CAMPAIGN_DIR"),
    ) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let fault = |e: &rederive::Error| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("faults"))
            .unwrap();
        writeln!(f, "{} {} {e}", std::process::id(), now_ms()).unwrap();
    };
    let db = loop {
        match Db::open(&db) {
            Ok(db) => break db,
            // The server is restarting.
            Err(e) => {
                fault(&e);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    db.set_lease_ttl(TTL);
    loop {
        let last = dir.join("stop").exists();
        match db.refresh() {
            Ok(_) if last => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                fault(&e);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The writer: `CAMPAIGN_WRITES` writes (puts with fresh values, and
/// deletions) of random rows, a few milliseconds apart; a write that fails
/// (the server restarting) is tried again.
#[test]
#[ignore]
fn campaign_writer_process() {
    let (Some(db), Some(seed), Some(writes)) = (
        std::env::var_os("CAMPAIGN_DB"),
        std::env::var("CAMPAIGN_SEED").ok(),
        std::env::var("CAMPAIGN_WRITES").ok(),
    ) else {
        return;
    };
    let mut rng = Rng(seed.parse().unwrap());
    let writes: i64 = writes.parse().unwrap();
    let retry = |f: &dyn Fn() -> rederive::Result<()>| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = f() {
            assert!(Instant::now() < deadline, "the writer failed for 60 s: {e}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let db = loop {
        if let Ok(db) = Db::open(&db) {
            break db;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for w in 0..writes {
        let id = rng.range(0, ROWS as u64 + 20) as i64;
        if rng.chance(20) {
            retry(&|| db.delete::<Item>(id).map(|_| ()));
        } else {
            // Values are fresh: the writer's are above any initial one.
            let n = 1_000_000 + w;
            retry(&|| db.put(Item { id, n }));
        }
        std::thread::sleep(Duration::from_millis(rng.range(0, 4)));
    }
}

// ---------------------------------------------------------------------------
// A trial.

/// Input rows written before a trial starts.
const ROWS: i64 = 300;

/// What the controller did to the workers and the server, for the checks.
#[derive(Default)]
struct Faults {
    /// Killed workers: pid and when.
    killed: Vec<(i64, i64)>,
    /// Server restarts: when the server went down.
    restarts: Vec<i64>,
}

fn spawn(role: &str, db: &str, dir: &Path, seed: u64, writes: i64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            &format!("campaign_{role}_process"),
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("CAMPAIGN_DB", db)
        .env("CAMPAIGN_DIR", dir)
        .env("CAMPAIGN_SEED", seed.to_string())
        .env("CAMPAIGN_WRITES", writes.to_string())
        .env("CALLS_DB", dir.join("calls.db"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn a campaign process")
}

/// One trial on the database at `db` (a file or a URL), in `dir`;
/// `restart` restarts the server (PostgreSQL), if the trial picks it.
fn trial(db: &str, dir: &Path, seed: u64, restart: Option<&dyn Fn()>) -> Result<(), String> {
    let mut rng = Rng(seed);
    rusqlite::Connection::open(dir.join("calls.db"))
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE calls(tbl TEXT NOT NULL, id INTEGER NOT NULL, n INTEGER NOT NULL,
                                pid INTEGER NOT NULL, at_ms INTEGER NOT NULL);",
        )
        .unwrap();
    {
        let setup = Db::open(db).map_err(|e| e.to_string())?;
        setup
            .put_all((0..ROWS).map(|id| Item { id, n: id }))
            .map_err(|e| e.to_string())?;
    }
    let workers = rng.range(2, 6) as usize;
    let at_once = rng.chance(30);
    let writes = rng.range(150, 400) as i64;
    let mut faults = Faults::default();
    let started = Instant::now();
    let mut writer = spawn("writer", db, dir, rng.next(), writes);
    // When each worker starts (all at once on the empty table, or spread).
    let mut starts: Vec<Duration> = (0..workers)
        .map(|_| {
            if at_once {
                Duration::ZERO
            } else {
                Duration::from_millis(rng.range(0, 800))
            }
        })
        .collect();
    starts.sort();
    let kills = rng.range(0, 3) as usize;
    let mut kill_at: Vec<Duration> = (0..kills)
        .map(|_| Duration::from_millis(rng.range(100, 1_500)))
        .collect();
    kill_at.sort();
    let restart_at =
        (restart.is_some() && rng.chance(40)).then(|| Duration::from_millis(rng.range(100, 1_500)));
    let mut running: Vec<Child> = Vec::new();
    let mut next_start = 0;
    let mut restarted = false;
    let writer_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = started.elapsed();
        while next_start < starts.len() && starts[next_start] <= now {
            running.push(spawn("worker", db, dir, 0, 0));
            next_start += 1;
        }
        if let Some(&at) = kill_at.first() {
            if at <= now && !running.is_empty() {
                kill_at.remove(0);
                let victim = rng.below(running.len());
                let mut child = running.remove(victim);
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                faults.killed.push((child.id() as i64, now_ms()));
                // Started again, as a supervisor would.
                running.push(spawn("worker", db, dir, 0, 0));
            }
        }
        if let (Some(at), Some(restart)) = (restart_at, restart) {
            if at <= now && !restarted {
                restarted = true;
                faults.restarts.push(now_ms());
                restart();
            }
        }
        let writer_done = writer.try_wait().unwrap().is_some();
        if writer_done && next_start == starts.len() && kill_at.is_empty() {
            break;
        }
        if Instant::now() >= writer_deadline {
            let _ = writer.kill();
            return Err("the writer did not finish in 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if !wait_child(&mut writer, writer_deadline, "the writer").success() {
        return Err("the writer failed".into());
    }
    // The writer is done: every worker's next refresh is its last.
    std::fs::write(dir.join("stop"), b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    for w in &mut running {
        if !wait_child(w, deadline, "a worker's last refresh").success() {
            return Err("a worker failed".into());
        }
    }
    check(db, dir, &faults)
}

/// The checks of a trial, once every worker has returned.
fn check(db: &str, dir: &Path, faults: &Faults) -> Result<(), String> {
    let db = Db::open(db).map_err(|e| e.to_string())?;
    for t in db.status().map_err(|e| e.to_string())? {
        if t.stale + t.missing + t.failed + t.blocked > 0 {
            return Err(format!(
                "after every worker returned, {}: {} stale, {} missing, {} failed, {} blocked",
                t.table, t.stale, t.missing, t.failed, t.blocked
            ));
        }
    }
    // Leases still held can only be a killed worker's (one killed between
    // writing a batch and giving its lease back): they run out within
    // their time to live.
    let deadline = Instant::now() + TTL + Duration::from_secs(2);
    loop {
        let running: Vec<(String, u64)> = db
            .status()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|t| t.running > 0)
            .map(|t| (t.table, t.running))
            .collect();
        if running.is_empty() {
            break;
        }
        if Instant::now() >= deadline || faults.killed.is_empty() {
            return Err(format!(
                "leases still held after every worker returned: {running:?} (kills: {:?})",
                faults.killed
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every derived row equals a clean computation (checked fresh before
    // it is read, since `get` would compute a missing one); none is left
    // of a deleted input row.
    let mut inputs: BTreeMap<i64, i64> = BTreeMap::new();
    for key in db.keys::<Item>().map_err(|e| e.to_string())? {
        let rederive::Key::Int(id) = key else {
            return Err(format!("a key that is no integer: {key:?}"));
        };
        let item: Item = db.get(id).map_err(|e| e.to_string())?;
        inputs.insert(id, item.n);
    }
    for t in db.status().map_err(|e| e.to_string())? {
        if t.rows != inputs.len() as u64 {
            return Err(format!(
                "{} has {} rows for {} input rows",
                t.table,
                t.rows,
                inputs.len()
            ));
        }
    }
    for (&id, &n) in &inputs {
        for (table, verdict) in [
            ("Twice", db.explain::<Twice>(id)),
            ("Plus", db.explain::<Plus>(id)),
        ] {
            let verdict = verdict.map_err(|e| e.to_string())?;
            if verdict != rederive::Staleness::Fresh {
                return Err(format!("{table} row {id}: {verdict:?}"));
            }
        }
        let t: Twice = db.get(id).map_err(|e| e.to_string())?;
        let p: Plus = db.get(id).map_err(|e| e.to_string())?;
        if t.v != 2 * n || p.w != 2 * n + 1 {
            return Err(format!("row {id}: Twice {t:?}, Plus {p:?} for n = {n}"));
        }
    }
    // No row computed twice from the same input, but by a worker killed or
    // cut off (within about a second of that moment).
    let conn = rusqlite::Connection::open(dir.join("calls.db")).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT tbl, id, n, group_concat(pid || ':' || at_ms) FROM calls
             GROUP BY tbl, id, n HAVING count(*) > 1",
        )
        .unwrap();
    let twice: Vec<(String, i64, i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let cut_off: Vec<(i64, i64)> = std::fs::read_to_string(dir.join("faults"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect();
    let excused = |pid: i64, at: i64| {
        let near = |moment: i64| (moment - 1_500..=moment + 500).contains(&at);
        faults.killed.iter().any(|&(p, t)| p == pid && near(t))
            || cut_off.iter().any(|&(p, t)| p == pid && near(t))
            || faults
                .restarts
                .iter()
                .any(|&t| (t - 1_500..=t + 2_000).contains(&at))
    };
    for (table, id, n, calls) in &twice {
        let calls: Vec<(i64, i64)> = calls
            .split(',')
            .filter_map(|c| {
                let (p, t) = c.split_once(':')?;
                Some((p.parse().ok()?, t.parse().ok()?))
            })
            .collect();
        // All but one of the calls must be excused.
        let unexcused = calls.iter().filter(|&&(p, t)| !excused(p, t)).count();
        if unexcused > 1 {
            return Err(format!(
                "{table} row {id} computed {} times from n = {n} (pid:ms {calls:?}); killed {:?}, faults {cut_off:?}",
                calls.len(),
                faults.killed
            ));
        }
    }
    eprintln!(
        "  {} rows computed twice, all by killed or cut-off workers ({} kills, {} restarts, {} faults)",
        twice.len(),
        faults.killed.len(),
        faults.restarts.len(),
        cut_off.len()
    );
    Ok(())
}

/// Runs `trials` trials (or the one of `REDERIVE_CAMPAIGN_SEED`), each on
/// a new database from `new_db`.
fn campaign(
    backend: &str,
    trials: usize,
    new_db: &dyn Fn(&Path, usize) -> String,
    restart: Option<&dyn Fn()>,
) {
    let seeds: Vec<u64> = match std::env::var("REDERIVE_CAMPAIGN_SEED") {
        Ok(s) => vec![s.parse().expect("REDERIVE_CAMPAIGN_SEED is a number")],
        Err(_) => {
            let base = now_ms() as u64;
            let trials = std::env::var("REDERIVE_CAMPAIGN_TRIALS")
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(trials);
            (0..trials as u64)
                .map(|i| Rng(base ^ (i << 32)).next())
                .collect()
        }
    };
    for (i, &seed) in seeds.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let db = new_db(dir.path(), i);
        eprintln!("{backend} trial {i}: seed {seed}");
        if let Err(finding) = trial(&db, dir.path(), seed, restart) {
            let kept = dir.keep();
            panic!(
                "{backend} trial {i} failed (REDERIVE_CAMPAIGN_SEED={seed} replays it; files kept in {}): {finding}",
                kept.display()
            );
        }
    }
}

fn sqlite_campaign(trials: usize) {
    campaign(
        "SQLite",
        trials,
        &|dir, _| dir.join("campaign.db").to_str().unwrap().to_owned(),
        None,
    );
}

fn postgres_campaign(trials: usize) {
    use rederive_postgres::testing::TestServer;
    // A server of its own: the campaign restarts it.
    let server = match TestServer::start_crash_safe() {
        Ok(server) => server,
        Err(skip) => {
            skip.report("campaign_postgres");
            return;
        }
    };
    let restart = || {
        server
            .restart_immediately(Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("the server did not come back: {e}"))
    };
    campaign(
        "PostgreSQL",
        trials,
        &|_, i| {
            server
                .new_database(&format!("campaign{i}"))
                .unwrap_or_else(|e| panic!("creating a database: {e}"))
        },
        Some(&restart),
    );
}

#[test]
fn campaign_sqlite_short() {
    sqlite_campaign(5);
}

#[test]
fn campaign_postgres_short() {
    postgres_campaign(5);
}

#[test]
#[ignore]
fn campaign_sqlite_long() {
    sqlite_campaign(50);
}

#[test]
#[ignore]
fn campaign_postgres_long() {
    postgres_campaign(50);
}
