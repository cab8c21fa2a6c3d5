//! PostgreSQL figures: the full build on PostgreSQL against SQLite, how a
//! CPU-bound pipeline scales with worker processes, and how many rows
//! worker processes claim (and complete) a second under contention.
//!
//! The server is a throwaway one the bench starts itself (Debian's
//! `postgresql` package), on this machine, over loopback: what one machine
//! measures, not a tuned database server. It runs with `fsync=off`.

use crate::{build_on, spin, Cpu, Heavy};
use rederive::postgres::testing::TestServer;
use rederive::Db;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Rows of the full build on both backends.
const BUILD_ROWS: usize = 100_000;
/// The CPU-bound pipeline: rows, and the work per row.
const SLOW_ROWS: i64 = 400;
const SLOW_COST_US: i64 = 5_000;
/// The contention figure: trivial rows, and processes claiming them.
const CLAIM_ROWS: i64 = 40_000;
const CLAIM_WORKERS: usize = 4;

/// Runs the PostgreSQL figures, printing them.
pub fn run(dir: &Path) {
    let server = match TestServer::start() {
        Ok(s) => s,
        Err(skip) => {
            println!("PostgreSQL figures skipped: {skip}");
            return;
        }
    };
    println!("PostgreSQL (a throwaway server on loopback, fsync off)\n");

    // The full build, same graph and rows, on each backend.
    let path = dir.join("pg-vs-sqlite.db");
    let db = build_on(&path, BUILD_ROWS);
    let started = Instant::now();
    let r = db.refresh().unwrap();
    let sqlite = started.elapsed();
    assert_eq!(r.computed as usize, 3 * BUILD_ROWS);
    drop(db);
    let url = server.new_database("build").unwrap();
    let db = build_on(&url, BUILD_ROWS);
    let started = Instant::now();
    let r = db.refresh().unwrap();
    let pg = started.elapsed();
    assert_eq!(r.computed as usize, 3 * BUILD_ROWS);
    drop(db);
    println!(
        "full build, {BUILD_ROWS} rows x 3 tables: SQLite {sqlite:.2?} ({:.0} rows/s), PostgreSQL {pg:.2?} \
         ({:.0} rows/s): PostgreSQL at {:.2} of SQLite's throughput",
        (3 * BUILD_ROWS) as f64 / sqlite.as_secs_f64(),
        (3 * BUILD_ROWS) as f64 / pg.as_secs_f64(),
        sqlite.as_secs_f64() / pg.as_secs_f64()
    );
    // The same three stages written by hand on PostgreSQL, in the same run.
    let batched = hand_written_pg(
        &server.new_database("hand_batched").unwrap(),
        BUILD_ROWS,
        true,
    );
    let per_row = hand_written_pg(
        &server.new_database("hand_rows").unwrap(),
        BUILD_ROWS,
        false,
    );
    println!(
        "the same stages by hand on PostgreSQL: a page a statement (unnest) {batched:.2?}, \
         rederive at {:.2} of its throughput; a row a statement {per_row:.2?}, rederive at {:.2}",
        batched.as_secs_f64() / pg.as_secs_f64(),
        per_row.as_secs_f64() / pg.as_secs_f64()
    );

    scaling(&server);
    claims(&server);
}

/// A CPU-bound function with 1, 2 and 4 worker processes, each with one
/// computing thread (as if each were a one-core machine).
pub fn scaling(server: &TestServer) {
    let iters = iterations_for(Duration::from_micros(SLOW_COST_US as u64));
    let mut times = Vec::new();
    for workers in [1usize, 2, 4] {
        let url = server.new_database(&format!("slow{workers}")).unwrap();
        let db = Db::open(&url).unwrap();
        db.put_all((0..SLOW_ROWS).map(|id| Cpu { id, iters }))
            .unwrap();
        let started = Instant::now();
        wait_all(spawn_workers(&url, workers, Some(1)));
        let d = started.elapsed();
        assert_eq!(db.refresh().unwrap().calls(), 0, "the workers left rows");
        times.push((workers, d));
    }
    let one = times[0].1.as_secs_f64();
    let line: Vec<String> = times
        .iter()
        .map(|(w, d)| format!("{w} worker(s) {d:.2?} ({:.2}x)", one / d.as_secs_f64()))
        .collect();
    println!(
        "CPU-bound function (~{} ms/row), {SLOW_ROWS} rows, worker processes of one thread each: {} \
         (target: 2 workers >= 1.8x on this 2-core machine)",
        SLOW_COST_US / 1000,
        line.join(", ")
    );
}

/// Claims under contention, and one process alone.
pub fn claims(server: &TestServer) {
    // Claims under contention: four processes (all threads each) racing
    // for the same trivial rows; every row claimed, computed, written.
    let url = server.new_database("claims").unwrap();
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!("claims database: {url}");
    }
    let db = Db::open(&url).unwrap();
    db.put_all((0..CLAIM_ROWS).map(|id| Heavy { id, cost_us: 0 }))
        .unwrap();
    let started = Instant::now();
    wait_all(spawn_workers(&url, CLAIM_WORKERS, None));
    let d = started.elapsed();
    assert_eq!(db.refresh().unwrap().calls(), 0, "the workers left rows");
    println!(
        "claims under contention: {CLAIM_WORKERS} processes, {CLAIM_ROWS} rows claimed, computed and \
         written in {d:.2?}: {:.0} rows/s",
        CLAIM_ROWS as f64 / d.as_secs_f64()
    );
    // A second figure for the same: one process alone.
    let url = server.new_database("claims1").unwrap();
    let db = Db::open(&url).unwrap();
    db.put_all((0..CLAIM_ROWS).map(|id| Heavy { id, cost_us: 0 }))
        .unwrap();
    let started = Instant::now();
    wait_all(spawn_workers(&url, 1, None));
    let d1 = started.elapsed();
    println!(
        "    the same rows, one process alone: {d1:.2?}: {:.0} rows/s",
        CLAIM_ROWS as f64 / d1.as_secs_f64()
    );
}

/// How many rounds of [`spin`] take `target` on this machine (the fastest
/// of a few tries).
fn iterations_for(target: Duration) -> i64 {
    let probe = 1_000_000;
    let best = (0..5)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(spin(1, probe));
            started.elapsed()
        })
        .min()
        .unwrap();
    (probe as f64 * target.as_secs_f64() / best.as_secs_f64()) as i64
}

/// Starts worker processes (this binary, `--pg-worker URL [THREADS]`).
fn spawn_workers(url: &str, n: usize, threads: Option<usize>) -> Vec<Child> {
    (0..n)
        .map(|_| {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args(["--pg-worker", url]);
            if let Some(t) = threads {
                c.arg(t.to_string());
            }
            c.spawn().expect("spawn a worker")
        })
        .collect()
}

fn wait_all(workers: Vec<Child>) {
    for mut w in workers {
        assert!(w.wait().unwrap().success(), "a worker failed");
    }
}

/// The body of a worker process: refreshes until nothing is left that no
/// other worker holds.
pub fn worker(url: &str, threads: Option<usize>) {
    let opening = Instant::now();
    let db = Db::open(url).expect("open");
    let verbose = std::env::var_os("BENCH_VERBOSE").is_some();
    if verbose {
        eprintln!(
            "  worker {} opened in {:.2?}",
            std::process::id(),
            opening.elapsed()
        );
    }
    let started = Instant::now();
    let work = || loop {
        let r = db.refresh().expect("refresh");
        if verbose {
            eprintln!(
                "  worker {} at {:.2?}: {} calls, {} skipped",
                std::process::id(),
                started.elapsed(),
                r.calls(),
                r.skipped
            );
        }
        if r.skipped == 0 && r.calls() == 0 {
            if verbose {
                eprintln!(
                    "  worker {} done: {:.2?} of CPU in {:.2?}",
                    std::process::id(),
                    crate::cpu_time(),
                    started.elapsed()
                );
            }
            return;
        }
        if r.skipped > 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    match threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
            .install(work),
        None => work(),
    }
}

/// What a user writes on PostgreSQL without rederive, the same three
/// stages as `hand_written_plain` (main.rs): read the previous table in key
/// order, a page of 10,000 rows at a time, and insert plain result rows
/// (`BIGINT` primary key, the value, one provenance column) in one
/// transaction per page. `batched` sends each page as one statement
/// (`INSERT .. SELECT * FROM unnest($1, $2, $3)`, what a user who knows
/// PostgreSQL writes); otherwise one prepared `INSERT` a row (the first
/// program most users write). The input rows are written before the
/// clock starts, as for the engine.
fn hand_written_pg(url: &str, n: usize, batched: bool) -> Duration {
    const PAGE: i64 = 10_000;
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.batch_execute(
        "CREATE TABLE item(id BIGINT PRIMARY KEY, v BIGINT NOT NULL);
         CREATE TABLE s1(id BIGINT PRIMARY KEY, v BIGINT NOT NULL, src BIGINT NOT NULL);
         CREATE TABLE s2(id BIGINT PRIMARY KEY, v BIGINT NOT NULL, src BIGINT NOT NULL);
         CREATE TABLE s3(id BIGINT PRIMARY KEY, v BIGINT NOT NULL, src BIGINT NOT NULL);",
    )
    .unwrap();
    let ids: Vec<i64> = (0..n as i64).collect();
    c.execute(
        "INSERT INTO item SELECT * FROM unnest($1::bigint[], $1::bigint[])",
        &[&ids],
    )
    .unwrap();
    type Stage = (&'static str, &'static str, fn(i64) -> i64);
    let stages: [Stage; 3] = [
        ("item", "s1", |v| v + 1),
        ("s1", "s2", |x| x * 2),
        ("s2", "s3", |y| y - 3),
    ];
    let started = Instant::now();
    for (from, to, f) in stages {
        let select = c
            .prepare(&format!(
                "SELECT id, v FROM {from} WHERE id > $1 ORDER BY id LIMIT {PAGE}"
            ))
            .unwrap();
        let insert = match batched {
            true => format!(
                "INSERT INTO {to}(id, v, src) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])"
            ),
            false => format!("INSERT INTO {to}(id, v, src) VALUES ($1, $2, $3)"),
        };
        let insert = c.prepare(&insert).unwrap();
        let mut after = -1i64;
        loop {
            let page: Vec<(i64, i64)> = c
                .query(&select, &[&after])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let Some(last) = page.last() else { break };
            after = last.0;
            let mut tx = c.transaction().unwrap();
            if batched {
                let ids: Vec<i64> = page.iter().map(|r| r.0).collect();
                let vs: Vec<i64> = page.iter().map(|r| f(r.1)).collect();
                tx.execute(&insert, &[&ids, &vs, &ids]).unwrap();
            } else {
                for (id, v) in page {
                    tx.execute(&insert, &[&id, &f(v), &id]).unwrap();
                }
            }
            tx.commit().unwrap();
        }
    }
    started.elapsed()
}
