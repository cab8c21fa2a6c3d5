//! Engine benchmarks. Prints ratios measured side by side in one run.
//!
//! ```text
//! cargo run --release -p rederive-bench            # N = 1,000,000 vs 10,000
//! cargo run --release -p rederive-bench -- --small # N = 100,000 vs 1,000 (quick look)
//! cargo run --release -p rederive-bench -- --reads # cross-row reads: (g), (h), (i)
//! cargo run --release -p rederive-bench -- --pg    # PostgreSQL: build, scaling, claims
//! ```
mod pg;
mod reads;
mod replicas;

use rederive::{derive_table, Db, Row};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Item {
    #[row(key)]
    pub id: i64,
    pub v: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Stage1 {
    pub x: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Stage2 {
    pub y: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Stage3 {
    pub z: i64,
}

/// Input of the CPU-bound benchmark: about `cost_us` of work per row.
#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Heavy {
    #[row(key)]
    pub id: i64,
    pub cost_us: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct HeavyOut {
    pub h: i64,
}

/// Input of the PostgreSQL scaling figure: a fixed amount of CPU work per
/// row (`iters` rounds of a hash), the same whatever the scheduler does
/// (a function that spins until a deadline would finish early when
/// preempted).
#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Cpu {
    #[row(key)]
    pub id: i64,
    pub iters: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct CpuOut {
    pub h: i64,
}

/// `iters` rounds of a multiplicative hash.
pub fn spin(seed: i64, iters: i64) -> i64 {
    let mut h = seed;
    for _ in 0..iters {
        h = std::hint::black_box(
            h.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        );
    }
    h
}

#[derive_table]
fn crunch(x: &Cpu) -> CpuOut {
    CpuOut {
        h: spin(x.id, x.iters) & 0xff,
    }
}

#[derive_table]
fn burn(x: &Heavy) -> HeavyOut {
    let until = Instant::now() + Duration::from_micros(x.cost_us as u64);
    let mut h = x.id;
    while Instant::now() < until {
        h = h
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    HeavyOut { h: h & 0xff }
}

/// A CPU-bound function (about 1 ms per row) over 2,000 rows: a full
/// refresh with all cores, and with a single worker thread.
fn cpu_bound(dir: &Path) -> (Duration, Duration) {
    let run = |threads: Option<usize>| {
        let path = dir.join(format!("heavy-{threads:?}.db"));
        let _ = std::fs::remove_file(&path);
        let db = Db::open(&path).unwrap();
        db.put_all((0..2000).map(|id| Heavy { id, cost_us: 1000 }))
            .unwrap();
        let refresh = || time(|| db.refresh().unwrap());
        let (d, r) = match threads {
            Some(n) => rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
                .install(refresh),
            None => refresh(),
        };
        assert_eq!(r.tables["HeavyOut"].computed, 2000);
        d
    };
    (run(None), run(Some(1)))
}

#[derive_table]
fn stage1(i: &Item) -> Stage1 {
    Stage1 { x: i.v + 1 }
}

#[derive_table]
fn stage2(s: &Stage1) -> Stage2 {
    Stage2 { y: s.x * 2 }
}

#[derive_table]
fn stage3(s: &Stage2) -> Stage3 {
    Stage3 { z: s.y - 3 }
}

const PUT_BATCH: usize = 50_000;

fn build(path: &Path, n: usize) -> Db {
    let _ = std::fs::remove_file(path);
    build_on(path, n)
}

/// Writes N items into the database at `location` (a new file or an
/// empty PostgreSQL database).
fn build_on(location: impl AsRef<Path>, n: usize) -> Db {
    let db = Db::open(location).expect("open");
    put_items(&db, n, 0);
    db
}

/// Writes the items `0..n` (each `v` is `v0` plus its id), `PUT_BATCH`
/// rows a write.
fn put_items(db: &Db, n: usize, v0: i64) {
    let mut start = 0;
    while start < n {
        let end = (start + PUT_BATCH).min(n);
        db.put_all((start..end).map(|i| Item {
            id: i as i64,
            v: v0 + i as i64,
        }))
        .expect("put");
        start = end;
    }
}

/// The median and the slowest.
fn median(mut xs: Vec<Duration>) -> (Duration, Duration) {
    xs.sort();
    (xs[xs.len() / 2], xs[xs.len() - 1])
}

/// CPU time (user and system) of this process so far, all threads.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(us(u.ru_utime) + us(u.ru_stime))
}

/// Wall-clock and CPU time of `f`.
fn time_cpu<T>(f: impl FnOnce() -> T) -> (Duration, Duration, T) {
    let cpu = cpu_time();
    let (d, r) = time(f);
    (d, cpu_time() - cpu, r)
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let r = f();
    (t.elapsed(), r)
}

fn nothing_stale(db: &Db) -> (Duration, Duration) {
    median(
        (0..15)
            .map(|_| {
                let (d, r) = time(|| db.refresh().expect("refresh"));
                assert_eq!(r.calls(), 0);
                d
            })
            .collect(),
    )
}

fn one_changed(db: &Db, n: usize) -> (Duration, Duration) {
    median(
        (0..15)
            .map(|round| {
                let id = ((round * 7919) % n) as i64;
                db.put(Item {
                    id,
                    v: -(round as i64) - 1,
                })
                .expect("put");
                let (d, r) = time(|| db.refresh().expect("refresh"));
                assert_eq!(r.computed, 3, "{r:?}");
                d
            })
            .collect(),
    )
}

/// The three stages written by hand with rusqlite, doing the same reads and
/// writes as the engine (same schema with provenance columns and indexes,
/// changed rows found through the `__changed_at` index joined with the
/// stored output, upserts with the write guard and early cutoff, one
/// transaction per page of 512), without the engine's generic machinery.
type Stage = (&'static str, &'static str, &'static str, fn(i64) -> i64);
type Page = Vec<(i64, (i64, i64), Option<(String, i64)>, i64, i64)>;

fn hand_written_same_io(path: &Path, n: usize) -> Duration {
    let _ = std::fs::remove_file(path);
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
         INSERT INTO meta VALUES ('revision', 1);
         CREATE TABLE item(id INTEGER NOT NULL PRIMARY KEY, v INTEGER NOT NULL, __changed_at INTEGER NOT NULL, __changed_ms INTEGER NOT NULL) STRICT;
         CREATE INDEX item_ca ON item(__changed_at);",
    )
    .unwrap();
    for t in ["s1", "s2", "s3"] {
        conn.execute_batch(&format!(
            "CREATE TABLE {t}(__key INTEGER NOT NULL PRIMARY KEY, v INTEGER, __status INTEGER NOT NULL, __error TEXT,
               __origin_key ANY, __code TEXT NOT NULL, __changed_at INTEGER NOT NULL, __in_0 INTEGER NOT NULL) STRICT;
             CREATE INDEX {t}_ca ON {t}(__changed_at);
             CREATE INDEX {t}_st ON {t}(__status) WHERE __status != 0;"
        ))
        .unwrap();
    }
    {
        let tx = conn.transaction().unwrap();
        {
            let mut ins = tx
                .prepare("INSERT INTO item VALUES (?1, ?2, 1, 0)")
                .unwrap();
            for i in 0..n as i64 {
                ins.execute([i, i]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let stages: [Stage; 3] = [
        ("item", "id", "s1", |v| v + 1),
        ("s1", "__key", "s2", |x| x * 2),
        ("s2", "__key", "s3", |y| y - 3),
    ];
    let (d, ()) = time(|| {
        for (from, key, to, f) in stages {
            let mut cursor = (0i64, i64::MIN);
            loop {
                let page: Page = {
                    let mut q = conn
                        .prepare_cached(&format!(
                            "SELECT q.k, q.ca, q.rid, a0.__code, a0.__in_0, a1.__changed_at, a1.v FROM
                               (SELECT * FROM (
                                  SELECT * FROM (SELECT {key} AS k, __changed_at AS ca, rowid AS rid FROM {from}
                                    WHERE __changed_at = ?1 AND rowid > ?2 ORDER BY rowid LIMIT 512)
                                  UNION ALL
                                  SELECT * FROM (SELECT {key} AS k, __changed_at AS ca, rowid AS rid FROM {from}
                                    WHERE __changed_at > ?1 ORDER BY __changed_at, rowid LIMIT 512))
                                ORDER BY ca, rid LIMIT 512) q
                             LEFT JOIN {to} a0 ON a0.__key = q.k LEFT JOIN {from} a1 ON a1.{key} = q.k
                             ORDER BY q.ca, q.rid"
                        ))
                        .unwrap();
                    q.query_map(cursor_params(cursor), |r| {
                        let code: Option<String> = r.get(3)?;
                        let stored = match code {
                            Some(c) => Some((c, r.get(4)?)),
                            None => None,
                        };
                        Ok((
                            r.get(0)?,
                            (r.get(1)?, r.get(2)?),
                            stored,
                            r.get(5)?,
                            r.get(6)?,
                        ))
                    })
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect()
                };
                let Some(last) = page.last() else { break };
                cursor = last.1;
                let work: Vec<(i64, i64, i64)> = page
                    .into_iter()
                    .filter(|(_, _, stored, ca, _)| {
                        stored.as_ref().is_none_or(|(c, i)| c != "v1" || i != ca)
                    })
                    .map(|(k, _, _, ca, v)| (k, ca, f(v)))
                    .collect();
                let tx = conn.transaction().unwrap();
                {
                    let rev: i64 = tx
                        .prepare_cached("UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value")
                        .unwrap()
                        .query_row([], |r| r.get(0))
                        .unwrap();
                    let mut up = tx
                        .prepare_cached(&format!(
                            "INSERT INTO {to}(__key, v, __status, __error, __origin_key, __code, __changed_at, __in_0)
                             VALUES (?1, ?2, 0, NULL, NULL, 'v1', ?3, ?4)
                             ON CONFLICT(__key) DO UPDATE SET
                               __changed_at = CASE WHEN v IS excluded.v AND __status IS excluded.__status
                                 AND __error IS excluded.__error AND __origin_key IS excluded.__origin_key
                                 THEN __changed_at ELSE excluded.__changed_at END,
                               v = excluded.v, __in_0 = excluded.__in_0, __status = excluded.__status,
                               __error = excluded.__error, __origin_key = excluded.__origin_key, __code = excluded.__code
                             WHERE excluded.__in_0 >= __in_0 RETURNING __changed_at"
                        ))
                        .unwrap();
                    for (k, ca, v) in work {
                        let _: Option<i64> = up.query_row([k, v, rev, ca], |r| r.get(0)).ok();
                    }
                }
                tx.commit().unwrap();
            }
        }
    });
    d
}

fn cursor_params(c: (i64, i64)) -> [i64; 2] {
    [c.0, c.1]
}

/// What a user writes without rederive: for each stage, read the previous
/// table in key order and insert plain result rows (`key INTEGER PRIMARY
/// KEY`, the value, one integer provenance column, no secondary index) with
/// a prepared statement, 10,000 rows per transaction, WAL and
/// `synchronous = NORMAL`. The input rows are written before the clock
/// starts, as for the engine. Returns the stages' wall-clock and CPU time.
fn hand_written_plain(path: &Path, n: usize) -> (Duration, Duration) {
    const TX_ROWS: usize = 10_000;
    let _ = std::fs::remove_file(path);
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE item(id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
         CREATE TABLE s1(id INTEGER PRIMARY KEY, v INTEGER NOT NULL, src INTEGER NOT NULL);
         CREATE TABLE s2(id INTEGER PRIMARY KEY, v INTEGER NOT NULL, src INTEGER NOT NULL);
         CREATE TABLE s3(id INTEGER PRIMARY KEY, v INTEGER NOT NULL, src INTEGER NOT NULL);",
    )
    .unwrap();
    {
        let tx = conn.transaction().unwrap();
        {
            let mut ins = tx.prepare("INSERT INTO item VALUES (?1, ?2)").unwrap();
            for i in 0..n as i64 {
                ins.execute([i, i]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    type PlainStage = (&'static str, &'static str, fn(i64) -> i64);
    let stages: [PlainStage; 3] = [
        ("item", "s1", |v| v + 1),
        ("s1", "s2", |x| x * 2),
        ("s2", "s3", |y| y - 3),
    ];
    let (d, cpu, ()) = time_cpu(|| {
        for (from, to, f) in stages {
            let mut after = -1i64;
            loop {
                let page: Vec<(i64, i64)> = conn
                    .prepare_cached(&format!(
                        "SELECT id, v FROM {from} WHERE id > ?1 ORDER BY id LIMIT {TX_ROWS}"
                    ))
                    .unwrap()
                    .query_map([after], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                let Some(last) = page.last() else { break };
                after = last.0;
                let tx = conn.transaction().unwrap();
                {
                    let mut ins = tx
                        .prepare_cached(&format!(
                            "INSERT INTO {to}(id, v, src) VALUES (?1, ?2, ?3)"
                        ))
                        .unwrap();
                    for (id, v) in page {
                        ins.execute([id, f(v), id]).unwrap();
                    }
                }
                tx.commit().unwrap();
            }
        }
    });
    (d, cpu)
}

fn raw_lookup(path: &Path, n: usize) -> Duration {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare_cached("SELECT v FROM s3 WHERE id = ?1")
        .unwrap();
    let rounds = 20_000;
    let (d, sum) = time(|| {
        let mut sum = 0i64;
        for i in 0..rounds {
            let id = ((i * 7919) % n) as i64;
            sum += stmt.query_row([id], |r| r.get::<_, i64>(0)).unwrap();
        }
        sum
    });
    std::hint::black_box(sum);
    d / rounds as u32
}

fn engine_get(db: &Db, n: usize) -> Duration {
    let rounds = 20_000;
    let (d, sum) = time(|| {
        let mut sum = 0i64;
        for i in 0..rounds {
            let id = ((i * 7919) % n) as i64;
            sum += db.get::<Stage3>(id).unwrap().z;
        }
        sum
    });
    std::hint::black_box(sum);
    d / rounds as u32
}

/// Peak resident memory of this process, from /proc (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = tempfile_dir();
    if args.get(1).map(String::as_str) == Some("--build") {
        // Quick look at the full build alone: engine vs the plain program.
        let n: usize = args[2].parse().unwrap();
        let db = build(&dir.join("build.db"), n);
        let (d, cpu, r) = time_cpu(|| db.refresh().unwrap());
        assert_eq!(r.computed as usize, 3 * n);
        let (plain, plain_cpu) = hand_written_plain(&dir.join("plain.db"), n);
        println!(
            "full build N={n}: engine {d:.2?}, plain {plain:.2?}, ratio {:.2}; \
             CPU time engine {cpu:.2?}, plain {plain_cpu:.2?}, ratio {:.2}",
            plain.as_secs_f64() / d.as_secs_f64(),
            plain_cpu.as_secs_f64() / cpu.as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--full-build-rss") {
        // Child process: build N rows from scratch and report peak memory.
        let n: usize = args[2].parse().unwrap();
        let db = build(&dir.join("rss.db"), n);
        let r = db.refresh().unwrap();
        assert_eq!(r.computed as usize, 3 * n);
        println!("{:.1}", peak_rss_mib().unwrap_or(f64::NAN));
        return;
    }
    if args.get(1).map(String::as_str) == Some("--pg-worker") {
        // Child process of the PostgreSQL figures.
        pg::worker(&args[2], args.get(3).map(|t| t.parse().unwrap()));
        return;
    }
    if args.get(1).map(String::as_str) == Some("--pg-claims") {
        pg::claims(&rederive::postgres::testing::TestServer::start().unwrap());
        return;
    }
    if args.get(1).map(String::as_str) == Some("--pg-scaling") {
        // The scaling figure alone, RUNS times (default 3): it is the
        // noisiest.
        let runs = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(3);
        match rederive::postgres::testing::TestServer::start() {
            Ok(server) => (0..runs).for_each(|_| pg::scaling(&server)),
            Err(skip) => println!("skipped: {skip}"),
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("--pg") {
        pg::run(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--reads-build") {
        // Quick look at (h) alone, for profiling.
        let n: i64 = args[2].parse().unwrap();
        reads::run_h(&dir, n);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--replica-put") {
        // Writes on a replica against a database that never forked, alone
        // (for profiling).
        let n: usize = args[2].parse().unwrap();
        replicas::put_on_replica(&dir, n);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--replicas") {
        replicas::run(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let small = args.iter().any(|a| a == "--small");
    if args.iter().any(|a| a == "--reads") {
        reads::run(&dir, small);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let (big, little) = if small {
        (100_000, 1_000)
    } else {
        (1_000_000, 10_000)
    };

    println!("rederive engine benchmarks (3-table chain, N = {big} vs {little})\n");
    let mut dbs = Vec::new();
    for n in [little, big] {
        let path = dir.join(format!("bench-{n}.db"));
        let db = build(&path, n);
        let (d, r) = time(|| db.refresh().unwrap());
        assert_eq!(r.computed as usize, 3 * n);
        println!(
            "full build, N = {n}: {:.2?} ({:.0} rows/s)",
            d,
            (3 * n) as f64 / d.as_secs_f64()
        );
        // The first refresh after the build: what a user meets next.
        let (first, r) = time(|| db.refresh().unwrap());
        assert_eq!(r.calls(), 0);
        dbs.push((n, path, db, d, first));
    }

    let (n, _, _, engine_build, _) = &dbs[1];
    let hand_path = dir.join("plain.db");
    let (plain, _) = hand_written_plain(&hand_path, *n);
    println!(
        "\n(c) full build N={n}: engine {:.2?}, plain hand-written rusqlite program {:.2?}: \
         engine throughput {:.2} of the plain program's (target >= 0.5)",
        engine_build,
        plain,
        plain.as_secs_f64() / engine_build.as_secs_f64()
    );
    if !args.iter().any(|a| a == "--no-same-io") {
        let same = hand_written_same_io(&dir.join("same.db"), *n);
        println!(
            "    for reference: hand-written with the engine's reads and writes (provenance, guard) {:.2?}: ratio {:.2}",
            same, same.as_secs_f64() / engine_build.as_secs_f64()
        );
    }

    let first: Vec<Duration> = dbs.iter().map(|(_, _, _, _, f)| *f).collect();
    println!(
        "(a') first refresh right after the full build: N={little}: {:?}, N={big}: {:?}, ratio {:.2} (target <= 1.5)",
        first[0], first[1], first[1].as_secs_f64() / first[0].as_secs_f64()
    );
    let a: Vec<(Duration, Duration)> = dbs
        .iter()
        .map(|(_, _, db, _, _)| nothing_stale(db))
        .collect();
    println!(
        "(a) refresh, nothing stale: N={little}: {:?} (slowest {:?}), N={big}: {:?} (slowest {:?}), ratio {:.2} (target <= 1.5)",
        a[0].0, a[0].1, a[1].0, a[1].1, a[1].0.as_secs_f64() / a[0].0.as_secs_f64()
    );
    let b: Vec<(Duration, Duration)> = dbs
        .iter()
        .map(|(n, _, db, _, _)| one_changed(db, *n))
        .collect();
    println!(
        "(b) one changed input, 3-table chain: N={little}: {:?} (slowest {:?}), N={big}: {:?} (slowest {:?}), ratio {:.2} (target <= 2)",
        b[0].0, b[0].1, b[1].0, b[1].1, b[1].0.as_secs_f64() / b[0].0.as_secs_f64()
    );

    let (n, _, db, _, _) = &dbs[1];
    let raw = raw_lookup(&hand_path, *n);
    let get = engine_get(db, *n);
    println!(
        "(d) get of a fresh Stage3 row: {:?} vs raw prepared lookup in the plain program's table {:?}: ratio {:.2} (target <= 2.5)",
        get, raw, get.as_secs_f64() / raw.as_secs_f64()
    );
    drop(dbs);

    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--full-build-rss", &big.to_string()])
        .output()
        .unwrap();
    let rss = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    println!("(e) peak resident memory of the N={big} full build: {rss} MiB (target < 256)");
    let (all, one) = cpu_bound(&dir);
    println!(
        "(f) CPU-bound function (~1 ms/row), 2,000 rows: all {} cores {:.2?}, one worker {:.2?}: speed-up {:.2}x (target >= 1.7x on 2 cores)",
        rayon::current_num_threads(),
        all,
        one,
        one.as_secs_f64() / all.as_secs_f64()
    );

    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rederive-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
