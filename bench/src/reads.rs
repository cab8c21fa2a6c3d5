//! Benchmarks of cross-row reads: (g) one changed definition read by 100
//! rows, (h) a full build with 5 reads per row against the same rows with
//! none, (i) the storage per recorded read.

use rederive::{derive_table, Ctx, Db, Row};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Calls of `link`, counted whether or not the call gave a result (a call
/// stopped at a read of a row to compute first counts too).
static LINK_CALLS: AtomicU64 = AtomicU64::new(0);

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Def {
    #[row(key)]
    pub id: i64,
    pub k: i64,
    /// The ids it calls, separated by spaces.
    pub calls: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Linked {
    pub v: i64,
}

/// A definition's value with every callee's inlined.
#[derive_table(reads = [Linked])]
fn link(d: &Def, ctx: &Ctx) -> Result<Linked, String> {
    LINK_CALLS.fetch_add(1, Ordering::Relaxed);
    let mut v = d.k;
    for c in d.calls.split_whitespace() {
        let id: i64 = c.parse().map_err(|_| format!("bad id {c}"))?;
        v = v.wrapping_add(ctx.get::<Linked>(id)?.map_or(0, |l| l.v));
    }
    Ok(Linked { v })
}

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Src {
    #[row(key)]
    pub id: i64,
    pub v: i64,
    pub n: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct NoReads {
    pub s: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct FiveReads {
    pub s: i64,
}

#[derive_table]
fn no_reads(x: &Src) -> NoReads {
    NoReads {
        s: x.v.wrapping_mul(31),
    }
}

/// The same value, plus five other rows of `Src` read through the `ctx`.
#[derive_table(reads = [Src])]
fn five_reads(x: &Src, ctx: &Ctx) -> Result<FiveReads, String> {
    let mut s = x.v.wrapping_mul(31);
    for i in 1..=5 {
        let other = ctx.get::<Src>((x.id + i * 7919) % x.n)?;
        s = s.wrapping_add(other.map_or(0, |o| o.v) & 1);
    }
    Ok(FiveReads { s })
}

/// The call graph of (g): definition 0 is called by definitions 1..=100;
/// the others above 110 call their predecessor within blocks of ten (call
/// depth at most ten), and definitions 1..=100 call one of them too.
/// Nothing reads definitions 1..=100.
fn calls(id: i64) -> String {
    match id {
        0 => String::new(),
        1..=100 => format!("0 {}", 200 + id * 7),
        _ if id > 110 && id % 10 != 0 => (id - 1).to_string(),
        _ => String::new(),
    }
}

/// (g): builds N definitions, then changes definition 0 `rounds` times,
/// refreshing after each: the time of each refresh, and the rows computed
/// and the calls of the function in the last.
fn one_definition_read_by_100(path: &Path, n: i64, rounds: usize) -> (Vec<Duration>, u64, u64) {
    let _ = std::fs::remove_file(path);
    let db = Db::open(path).unwrap();
    db.put_all((0..n).map(|id| Def {
        id,
        k: 1,
        calls: calls(id),
    }))
    .unwrap();
    let started = Instant::now();
    let built = db.refresh().unwrap();
    eprintln!(
        "    (g) build of {n} definitions: {:.2?}, {} rows computed",
        started.elapsed(),
        built.computed
    );
    let mut times = Vec::new();
    let mut computed = 0;
    let mut calls = 0;
    for r in 0..rounds {
        db.put(Def {
            id: 0,
            k: 2 + r as i64,
            calls: String::new(),
        })
        .unwrap();
        let called = LINK_CALLS.load(Ordering::Relaxed);
        let started = Instant::now();
        let report = db.refresh().unwrap();
        times.push(started.elapsed());
        computed = report.table("Linked").computed;
        calls = LINK_CALLS.load(Ordering::Relaxed) - called;
    }
    (times, computed, calls)
}

/// (h): one refresh builds both tables over the same N rows, one after
/// the other: the time each took (from the progress of the refresh), with
/// five reads per row and without.
fn build_both(path: &Path, n: i64) -> (Duration, Duration) {
    let _ = std::fs::remove_file(path);
    let db = Db::open(path).unwrap();
    db.put_all((0..n).map(|id| Src { id, v: id * 3, n }))
        .unwrap();
    let mut last: std::collections::BTreeMap<String, Instant> = Default::default();
    let started = Instant::now();
    let report = db
        .refresh_with_progress(|table, _| {
            last.insert(table.to_owned(), Instant::now());
        })
        .unwrap();
    assert_eq!(report.table("FiveReads").computed as i64, n);
    assert_eq!(report.table("NoReads").computed as i64, n);
    let (f, no) = (last["FiveReads"], last["NoReads"]);
    // Tables are built in topological order, ties by name.
    assert!(f < no, "FiveReads is built first");
    (f - started, no - f)
}

/// (h) alone, once, with the hand-written floor: for profiling.
pub fn run_h(dir: &Path, n: i64) {
    let (with, without) = build_both(&dir.join("h.db"), n);
    println!(
        "(h) {n} rows: 5 reads {with:.2?}, none {without:.2?}: {:.2}",
        without.as_secs_f64() / with.as_secs_f64()
    );
    let (plain, lookups, recorded) = hand_written_floor(dir, n);
    println!(
        "    by hand: plain {plain:.2?}, 5 lookups {lookups:.2?} ({:.2}), 5 recorded reads {recorded:.2?} ({:.2})",
        plain.as_secs_f64() / lookups.as_secs_f64(),
        plain.as_secs_f64() / recorded.as_secs_f64()
    );
    println!(
        "    rederive with 5 reads at {:.2} of the throughput of the hand-written floor (target >= 0.8)",
        recorded.as_secs_f64() / with.as_secs_f64()
    );
}

/// Runs (g), (h) and (i), printing the figures.
pub fn run(dir: &Path, small: bool) {
    let (big, little) = (50_000, 1_000);
    println!("cross-row reads\n");
    let rounds = 7;
    let (g_little, c_little, k_little) =
        one_definition_read_by_100(&dir.join("g-little.db"), little, rounds);
    let (g_big, c_big, k_big) = one_definition_read_by_100(&dir.join("g-big.db"), big, rounds);
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "(g) one changed definition read by 100 rows: N={little}: first {:.2?}, median {:.2?}; \
         N={big}: first {:.2?}, median {:.2?}; ratio first {:.2}, median {:.2} (target <= 2); \
         rows computed {c_little} and {c_big} (target 101); calls of the function \
         {k_little} and {k_big} (target 101: each reader once)",
        g_little[0],
        median(&g_little),
        g_big[0],
        median(&g_big),
        g_big[0].as_secs_f64() / g_little[0].as_secs_f64(),
        median(&g_big).as_secs_f64() / median(&g_little).as_secs_f64(),
    );
    let n = if small { 20_000 } else { 100_000 };
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..3 {
        let (w, wo) = build_both(&dir.join("h.db"), n);
        with.push(w);
        without.push(wo);
    }
    println!(
        "(h) full build of {n} rows, 5 reads per row: {:.2?} (runs {:?}), no reads: {:.2?} (runs {:?}): \
         throughput {:.2} of the build without reads (target >= 0.5)",
        median(&with),
        with,
        median(&without),
        without,
        median(&without).as_secs_f64() / median(&with).as_secs_f64()
    );
    // (i) the bytes the recorded reads take (the index by row read and
    // each reader's packed reads): the file with them, and without them,
    // each compacted.
    let path = dir.join("h.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let reads: i64 = conn
        .query_row("SELECT count(*) FROM rederive_reads", [], |r| r.get(0))
        .unwrap();
    let compacted = |conn: &rusqlite::Connection| {
        conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        std::fs::metadata(&path).unwrap().len() as f64
    };
    let with = compacted(&conn);
    conn.execute_batch("DELETE FROM rederive_reads; DELETE FROM rederive_reader_reads")
        .unwrap();
    let without = compacted(&conn);
    println!(
        "(i) storage per recorded read: {:.1} bytes ({reads} reads; file {with} bytes with them, {without} without, compacted)",
        (with - without) / reads as f64
    );
}

/// What a careful hand-written program pays for the reads of (h), as a
/// floor: the plain build of N rows with rusqlite (scan in key order,
/// insert), the same with five point lookups per row, and the same with
/// each lookup also recorded as one row of a reverse index
/// `(table, key, reader, reader_key, seen)`, the least that "which rows
/// read X in one index lookup" costs. 10,000 rows per transaction, WAL.
pub fn hand_written_floor(dir: &Path, n: i64) -> (Duration, Duration, Duration) {
    let path = dir.join("floor.db");
    let _ = std::fs::remove_file(&path);
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE src(id INTEGER PRIMARY KEY, v INTEGER NOT NULL, n INTEGER NOT NULL);
         CREATE TABLE reads(tbl INTEGER NOT NULL, key ANY NOT NULL, reader INTEGER NOT NULL,
           reader_key ANY NOT NULL, seen INTEGER, PRIMARY KEY (tbl, key, reader, reader_key)) WITHOUT ROWID;",
    )
    .unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut ins = tx.prepare("INSERT INTO src VALUES (?1, ?2, ?3)").unwrap();
        for id in 0..n {
            ins.execute([id, id * 3, n]).unwrap();
        }
    }
    tx.commit().unwrap();
    let mut stage = |out: &str, reads: usize, record: bool| {
        conn.execute_batch(&format!(
            "CREATE TABLE {out}(key INTEGER PRIMARY KEY, s INTEGER NOT NULL, prov INTEGER NOT NULL)"
        ))
        .unwrap();
        let started = Instant::now();
        let rows: Vec<(i64, i64, i64)> = {
            let mut q = conn
                .prepare("SELECT id, v, n FROM src ORDER BY id")
                .unwrap();
            q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        for chunk in rows.chunks(10_000) {
            let tx = conn.transaction().unwrap();
            {
                let mut get = tx
                    .prepare_cached("SELECT v FROM src WHERE id = ?1")
                    .unwrap();
                let mut put = tx
                    .prepare_cached(&format!("INSERT INTO {out} VALUES (?1, ?2, 1)"))
                    .unwrap();
                let mut rec = tx
                    .prepare_cached("INSERT INTO reads VALUES (1, ?1, 2, ?2, 1)")
                    .unwrap();
                for &(id, v, n) in chunk {
                    let mut s = v.wrapping_mul(31);
                    for i in 1..=reads as i64 {
                        let k = (id + i * 7919) % n;
                        let o: i64 = get.query_row([k], |r| r.get(0)).unwrap();
                        s = s.wrapping_add(o & 1);
                        if record {
                            rec.execute([k, id]).unwrap();
                        }
                    }
                    put.execute([id, s]).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        started.elapsed()
    };
    let plain = stage("plain", 0, false);
    let lookups = stage("lookups", 5, false);
    let recorded = stage("recorded", 5, true);
    (plain, lookups, recorded)
}
