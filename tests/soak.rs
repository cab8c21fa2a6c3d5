//! Concurrency soak: several workers refresh one database file while a
//! writer puts and deletes input rows at random. Afterwards one refresh must
//! leave exactly what a clean computation from the final inputs gives: no
//! lost input, no orphan, no stale row, every value right.
//!
//! The default run lasts about two seconds; the ignored `soak_long` runs for
//! `SOAK_SECONDS` (default 60): `cargo test --test soak -- --ignored`.
use rederive::{derive_table, Db, Key, Row, Staleness};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Cell {
    #[row(key)]
    pub id: i64,
    pub v: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Half {
    pub x: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Next {
    pub y: i64,
}

fn half_model(v: i64) -> Result<i64, String> {
    if v % 7 == 0 {
        Err(format!("{v} is a multiple of seven"))
    } else {
        Ok(v / 2)
    }
}

#[derive_table]
fn half(c: &Cell) -> Result<Half, String> {
    // A little work, so that computations overlap with writes.
    std::thread::sleep(Duration::from_micros(200));
    half_model(c.v).map(|x| Half { x })
}

#[derive_table]
fn next(h: &Half, c: &Cell) -> Next {
    Next { y: h.x + c.v % 3 }
}

/// A small deterministic random number generator (xorshift).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn soak(duration: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("soak.db");
    let stop = AtomicBool::new(false);
    Db::open(&path).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                let db = Db::open(&path).unwrap();
                db.set_lease_ttl(Duration::from_millis(500));
                while !stop.load(Ordering::SeqCst) {
                    db.refresh().unwrap();
                }
            });
        }
        scope.spawn(|| {
            let db = Db::open(&path).unwrap();
            let mut rng = Rng(0x9e3779b97f4a7c15);
            let until = Instant::now() + duration;
            while Instant::now() < until {
                let id = rng.below(200) as i64;
                match rng.below(10) {
                    0 => {
                        db.delete::<Cell>(id).unwrap();
                    }
                    1 => {
                        // A demand read in the middle of it all.
                        let _ = db.get::<Next>(id);
                    }
                    _ => db
                        .put(Cell {
                            id,
                            v: rng.below(50) as i64,
                        })
                        .unwrap(),
                }
            }
            stop.store(true, Ordering::SeqCst);
        });
    });

    let db = Db::open(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.refresh().unwrap().skipped > 0 {
        assert!(Instant::now() < deadline, "leases never cleared");
        std::thread::sleep(Duration::from_millis(50));
    }
    let keys = db.keys::<Cell>().unwrap();
    assert!(!keys.is_empty());
    for key in &keys {
        let cell: Cell = db.get(key.clone()).unwrap();
        match half_model(cell.v) {
            Ok(x) => {
                assert_eq!(db.get::<Half>(key.clone()).unwrap().x, x, "Half {key}");
                assert_eq!(
                    db.get::<Next>(key.clone()).unwrap().y,
                    x + cell.v % 3,
                    "Next {key}"
                );
                assert_eq!(db.explain::<Next>(key.clone()).unwrap(), Staleness::Fresh);
            }
            Err(m) => {
                assert_eq!(
                    db.explain::<Half>(key.clone()).unwrap(),
                    Staleness::Failed { message: m }
                );
                assert_eq!(
                    db.explain::<Next>(key.clone()).unwrap(),
                    Staleness::Blocked {
                        table: "Half".into(),
                        key: key.clone()
                    }
                );
            }
        }
    }
    // No orphans: derived tables hold exactly the keys of the inputs.
    let conn = rusqlite::Connection::open(&path).unwrap();
    for table in ["Half", "Next"] {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n as usize, keys.len(), "rows of {table}");
    }
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    assert!(keys.iter().all(|k| matches!(k, Key::Int(_))));
}

#[test]
fn soak_short() {
    soak(Duration::from_secs(2));
}

#[test]
#[ignore]
fn soak_long() {
    let secs = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    soak(Duration::from_secs(secs));
}
