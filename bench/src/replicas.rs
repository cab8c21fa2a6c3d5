//! Replica figures: what a sync costs against the size of the database,
//! bytes per changed row, rows applied per second, and the clocks' size
//! under churn.

use crate::{median, put_items, Item};
use rederive::itc::Stamp;
use rederive::replica::net::encode_apply_request;
use rederive::replica::version::{event_bytes, merge, next_event, Version};
use rederive::replica::Peer;
use rederive::{Db, Key, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn items(range: std::ops::Range<usize>, v: i64) -> impl Iterator<Item = Item> {
    range.map(move |i| Item {
        id: i as i64,
        v: v + i as i64,
    })
}

/// A replica pair over `n` rows, synced once.
fn pair(dir: &Path, n: usize) -> (Db, Db) {
    let a_path = dir.join(format!("sync-a-{n}.db"));
    let b_path = dir.join(format!("sync-b-{n}.db"));
    for p in [&a_path, &b_path] {
        let _ = std::fs::remove_file(p);
    }
    let a = Db::open(&a_path).unwrap();
    put_items(&a, n, 0);
    let b = a.fork_replica(&b_path).unwrap();
    // Every row written on the first replica after the fork: every row
    // has a version of its own (the worst case for the sync's bookkeeping).
    put_items(&a, n, 1);
    b.sync_with(&a).unwrap();
    (a, b)
}

/// Times syncing 10 changed rows, 7 times: the first and the median.
fn ten_changed(a: &Db, b: &Db, round0: i64) -> (Duration, Duration, usize) {
    let mut times = Vec::new();
    let mut bytes = 0;
    for round in 0..7 {
        let v = round0 + round;
        a.put_all((0..10).map(|i| Item {
            id: i * 97,
            v: 1000 * v + i,
        }))
        .unwrap();
        let t = Instant::now();
        let r = b.sync_with(a).unwrap();
        times.push(t.elapsed());
        assert_eq!(r.received, 10, "{r:?}");
        if round == 0 {
            // The body of the request that pushes them over HTTP.
            let versions: Vec<Version> = (0..10)
                .flat_map(|i| a.stored_versions("Item", i * 97).unwrap())
                .collect();
            let name = a.replica_meta().unwrap().expect("a replica").name;
            bytes = encode_apply_request(&name, &versions, &b.checkpoint(&name).unwrap()).len();
        }
    }
    let first = times[0];
    (first, median(times).0, bytes)
}

/// The clocks' size under churn: `replicas` live replicas write random
/// keys of 1,000, sync in random pairs, and now and then one retires into
/// another and a new one forks; the mean encoded clock of a row's version
/// after `steps` steps.
fn churn(replicas: usize, steps: usize) -> (f64, usize) {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let keys = 1000;
    let mut ids = vec![Stamp::seed()];
    while ids.len() < replicas {
        let s = ids.remove(0);
        let (l, r) = s.fork();
        ids.push(l);
        ids.push(r);
    }
    let mut state: Vec<Vec<Vec<Version>>> = vec![vec![Vec::new(); keys]; replicas];
    for _ in 0..steps {
        let a = next(replicas);
        match next(100) {
            0..=59 => {
                let k = next(keys);
                let event = next_event(ids[a].id(), &state[a][k]).unwrap();
                state[a][k] = vec![Version {
                    table: "Item".into(),
                    key: Key::Int(k as i64),
                    event,
                    values: Some(vec![Value::Integer(k as i64)]),
                }];
            }
            60..=97 => {
                let b = next(replicas);
                if a != b {
                    let merged: Vec<Vec<Version>> = state[a]
                        .iter()
                        .zip(&state[b])
                        .map(|(x, y)| merge(x, y))
                        .collect();
                    state[a] = merged.clone();
                    state[b] = merged;
                }
            }
            _ => {
                // `a` retires into `b` (after a sync), and a new replica
                // forks from `b` in its place.
                let b = (a + 1 + next(replicas - 1)) % replicas;
                state[b] = state[a]
                    .iter()
                    .zip(&state[b])
                    .map(|(x, y)| merge(x, y))
                    .collect();
                let joined = ids[b].join(&ids[a]).unwrap();
                let (keep, give) = joined.fork();
                ids[b] = keep;
                ids[a] = give;
                state[a] = state[b].clone();
            }
        }
    }
    let (mut total, mut count, mut most) = (0usize, 0usize, 0usize);
    for replica in &state {
        for versions in replica {
            for v in versions {
                let n = event_bytes(&v.event).len();
                total += n;
                most = most.max(n);
                count += 1;
            }
        }
    }
    (total as f64 / count.max(1) as f64, most)
}

/// A peer that offers no derived rows: a sync as it was before derived
/// rows travelled, for the baseline of [`reuse`].
struct InputsOnly<'a>(&'a Db);

impl Peer for InputsOnly<'_> {
    fn describe(&self) -> rederive::Result<rederive::replica::PeerInfo> {
        self.0.describe()
    }
    fn checkpoint(&self, of: &str) -> rederive::Result<rederive::storage::SyncCursor> {
        self.0.checkpoint(of)
    }
    fn changes_after(
        &self,
        to: &str,
        after: &rederive::storage::SyncCursor,
        limit: usize,
    ) -> rederive::Result<rederive::storage::Changes> {
        self.0.changes_after(to, after, limit)
    }
    fn apply(
        &self,
        from: &str,
        versions: &[Version],
        upto: &rederive::storage::SyncCursor,
    ) -> rederive::Result<rederive::storage::Applied> {
        self.0.apply(from, versions, upto)
    }
    fn absorb(&self, from: &str, id: &rederive::itc::Id) -> rederive::Result<()> {
        self.0.absorb(from, id)
    }
}

/// Derived rows computed on one replica after `put` wrote `rows` input
/// rows (each with `derived` derived rows): what the other replica spends
/// to be up to date, when the sync brings the derived rows along and when
/// it computes them itself (the first run of each).
fn reuse(dir: &Path, what: &str, rows: usize, derived: usize, put: impl Fn(&Db)) {
    let paths: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|f| dir.join(format!("reuse-{what}-{f}.db").replace(' ', "-")))
        .collect();
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    let a = Db::open(&paths[0]).unwrap();
    let with = a.fork_replica(&paths[1]).unwrap();
    let without = a.fork_replica(&paths[2]).unwrap();
    put(&a);
    let (computed, _) = crate::time(|| a.refresh().unwrap());
    let (sync_with, r) = crate::time(|| rederive::replica::sync(&with, &a).unwrap());
    assert_eq!(r.reused_here as usize, derived * rows, "{r:?}");
    let (refresh_with, rep) = crate::time(|| with.refresh().unwrap());
    assert_eq!(rep.calls(), 0, "{rep:?}");
    let (sync_without, _) =
        crate::time(|| rederive::replica::sync(&without, &InputsOnly(&a)).unwrap());
    let (refresh_without, rep) = crate::time(|| without.refresh().unwrap());
    assert_eq!(rep.calls() as usize, derived * rows, "{rep:?}");
    let total_with = sync_with + refresh_with;
    let total_without = sync_without + refresh_without;
    println!(
        "derived rows travelling, {what}: {rows} new input rows, {} derived rows (computed on \
         the first replica in {computed:.2?}):\n  sync bringing them {sync_with:.2?} + refresh \
         {refresh_with:.2?} (0 calls) = {total_with:.2?}; sync of the inputs only \
         {sync_without:.2?} + refresh computing them {refresh_without:.2?} = {total_without:.2?} \
         (ratio {:.2})",
        derived * rows,
        total_with.as_secs_f64() / total_without.as_secs_f64()
    );
}

/// Times writing `n` new rows on a replica (recording a version per row)
/// and on a database that never forked; prints both.
pub fn put_on_replica(dir: &Path, n: usize) -> (Duration, Duration) {
    let a_path = dir.join("put-a.db");
    let b_path = dir.join("put-b.db");
    let plain_path = dir.join("put-plain.db");
    for p in [&a_path, &b_path, &plain_path] {
        let _ = std::fs::remove_file(p);
    }
    let a = Db::open(&a_path).unwrap();
    a.put(Item { id: -1, v: 0 }).unwrap();
    let _b = a.fork_replica(&b_path).unwrap();
    let plain = Db::open(&plain_path).unwrap();
    let write = |db: &Db| {
        let t = Instant::now();
        put_items(db, n, 0);
        t.elapsed()
    };
    let put = write(&a);
    let put_plain = write(&plain);
    println!(
        "writing {n} rows on a replica (recording versions): {put:.2?}; on a database that \
         never forked: {put_plain:.2?} ({:.1}x)",
        put.as_secs_f64() / put_plain.as_secs_f64()
    );
    (put, put_plain)
}

/// Runs every replica figure.
pub fn run(dir: &Path) {
    println!("Replicas (SQLite files on this machine)\n");
    let mut medians = Vec::new();
    for n in [1_000usize, 50_000] {
        let (a, b) = pair(dir, n);
        let (first, med, bytes) = ten_changed(&a, &b, 10);
        println!(
            "sync of 10 changed rows, {n} rows: first {first:.2?}, median of 7 {med:.2?}; \
             pushing them over HTTP takes a {bytes}-byte request body ({} per row)",
            bytes / 10
        );
        medians.push(med);
    }
    println!(
        "  ratio 50,000 / 1,000 rows: {:.2} (target <= 3)",
        medians[1].as_secs_f64() / medians[0].as_secs_f64()
    );

    // Applying a sync of 100,000 changed rows.
    let n = 100_000;
    let a_path = dir.join("apply-a.db");
    let b_path = dir.join("apply-b.db");
    for p in [&a_path, &b_path] {
        let _ = std::fs::remove_file(p);
    }
    let a = Db::open(&a_path).unwrap();
    a.put(Item { id: -1, v: 0 }).unwrap();
    let b = a.fork_replica(&b_path).unwrap();
    let t = Instant::now();
    put_items(&a, n, 0);
    let put = t.elapsed();
    let plain_path = dir.join("apply-plain.db");
    let _ = std::fs::remove_file(&plain_path);
    let plain = Db::open(&plain_path).unwrap();
    let t = Instant::now();
    put_items(&plain, n, 0);
    let put_plain = t.elapsed();
    let t = Instant::now();
    let r = b.sync_with(&a).unwrap();
    let applied = t.elapsed();
    assert_eq!(r.received as usize, n);
    println!(
        "sync applying {n} new rows: {applied:.2?}, {:.0} rows/s (cr-sqlite: about 11-20k changes/s)",
        n as f64 / applied.as_secs_f64()
    );
    println!(
        "  writing those rows on a replica (recording versions): {put:.2?}; on a database that \
         never forked: {put_plain:.2?} ({:.1}x)",
        put.as_secs_f64() / put_plain.as_secs_f64()
    );

    reuse(dir, "3 trivial steps", 50_000, 3, |db| {
        db.put_all(items(0..50_000, 0)).unwrap();
    });
    reuse(dir, "one 1 ms step", 2_000, 1, |db| {
        db.put_all((0..2000).map(|id| crate::Heavy { id, cost_us: 1000 }))
            .unwrap();
    });

    for replicas in [4, 16, 64] {
        let (mean, most) = churn(replicas, 20_000);
        println!(
            "clock bytes per row version under churn, {replicas} replicas, 20,000 steps over \
             1,000 keys: mean {mean:.1}, largest {most}"
        );
    }
}
