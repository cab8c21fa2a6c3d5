//! The replica simulation: deterministic from a seed. Replicas fork and
//! retire along the way, write and delete rows of a small hot key space,
//! sync in random pairs (which makes partitions), and some syncs crash
//! midway. A causal-history oracle follows along: each write is a dot
//! whose history is everything its replica had seen of the key; a sync
//! keeps the versions no other version has seen. After every step the
//! replicas touched are checked against the oracle (a crashed sync may
//! have delivered any part of what was sent, key by key: what arrived must
//! be such a part); after healing, every replica holds the same versions,
//! lists the same conflicts, derives the same rows as a clean computation,
//! and no acknowledged write is lost unless a write that saw it replaced
//! it. After every complete sync, a derived row fresh on one side is fresh
//! on the other: the side that refreshes next computes nothing its peer
//! computed from the same inputs and code.
//!
//! `REDERIVE_SIM_SEEDS=N` runs N seeds instead of the few of the normal
//! suite; `REDERIVE_SIM_STEPS=N` changes the steps per seed.
use rederive::replica::shared::{SharedPage, SharedRow};
use rederive::replica::version::{event_bytes, Version};
use rederive::replica::{sync, Peer, PeerInfo};
use rederive::storage::{Applied, Changes, SyncCursor};
use rederive::{derive_table, Db, Error, Row};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

mod common;

use common::Rng;

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Item {
    #[row(key)]
    pub id: i64,
    pub text: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Loud {
    pub text: String,
}

#[derive_table]
fn loud(i: &Item) -> Loud {
    Loud {
        text: i.text.to_uppercase(),
    }
}

const KEYS: i64 = 5;

/// A dot: one acknowledged write (a row or a deletion), and the dots its
/// replica had seen of the key when it wrote.
#[derive(Debug, Clone)]
struct Dot {
    key: i64,
    deleted: bool,
    history: BTreeSet<usize>,
}

/// The oracle: every dot, and each replica's current dots per key.
#[derive(Default)]
struct Oracle {
    dots: Vec<Dot>,
    /// Dots by key and the encoded clock of the version each write made
    /// (before the first fork every version has the empty history).
    by_event: HashMap<(i64, Vec<u8>), usize>,
    /// Replica index -> key -> current dots.
    state: Vec<BTreeMap<i64, BTreeSet<usize>>>,
}

impl Oracle {
    /// The dots to keep: those no other kept dot has seen.
    fn maxima(&self, dots: &BTreeSet<usize>) -> BTreeSet<usize> {
        dots.iter()
            .copied()
            .filter(|&d| {
                !dots
                    .iter()
                    .any(|&o| o != d && self.dots[o].history.contains(&d))
            })
            .collect()
    }

    fn merged(&self, a: &BTreeSet<usize>, b: &BTreeSet<usize>) -> BTreeSet<usize> {
        self.maxima(&a.union(b).copied().collect())
    }
}

/// The dots a replica holds for a key, read through the clocks.
fn held(db: &Db, oracle: &Oracle, key: i64) -> BTreeSet<usize> {
    db.stored_versions("Item", key)
        .unwrap()
        .iter()
        .map(|v| dot_of(oracle, key, v))
        .collect()
}

fn dot_of(oracle: &Oracle, key: i64, v: &Version) -> usize {
    *oracle
        .by_event
        .get(&(key, event_bytes(&v.event)))
        .unwrap_or_else(|| panic!("a version no write made: {v:?}"))
}

/// A peer that crashes: after `calls` requests, every request fails; and
/// it sends one version per page, so that a crash can fall between any two.
struct Crashy<'a> {
    db: &'a Db,
    calls: Cell<usize>,
}

impl Crashy<'_> {
    fn tick(&self) -> rederive::Result<()> {
        match self.calls.get() {
            0 => Err(Error::Replica {
                replica: "crashy".into(),
                reason: "crashed".into(),
            }),
            n => {
                self.calls.set(n - 1);
                Ok(())
            }
        }
    }
}

impl Peer for Crashy<'_> {
    fn describe(&self) -> rederive::Result<PeerInfo> {
        self.db.describe()
    }
    fn checkpoint(&self, of: &str) -> rederive::Result<SyncCursor> {
        self.db.checkpoint(of)
    }
    fn changes_after(&self, to: &str, after: &SyncCursor, _: usize) -> rederive::Result<Changes> {
        self.tick()?;
        self.db.changes_after(to, after, 1)
    }
    fn apply(&self, from: &str, v: &[Version], upto: &SyncCursor) -> rederive::Result<Applied> {
        self.tick()?;
        self.db.apply(from, v, upto)
    }
    fn absorb(&self, from: &str, id: &rederive::itc::Id) -> rederive::Result<()> {
        self.db.absorb(from, id)
    }
    fn shared_checkpoint(&self, of: &str) -> rederive::Result<i64> {
        self.db.shared_checkpoint(of)
    }
    fn shared_after(&self, to: &str, after: i64, _: usize) -> rederive::Result<SharedPage> {
        self.tick()?;
        self.db.shared_after(to, after, 1)
    }
    fn adopt(&self, from: &str, rows: &[SharedRow], upto: i64) -> rederive::Result<u64> {
        self.tick()?;
        self.db.adopt_from(from, rows, upto)
    }
}

struct Sim {
    dir: tempfile::TempDir,
    rng: Rng,
    oracle: Oracle,
    /// Live replicas: (oracle index, database).
    live: Vec<(usize, Db)>,
    files: usize,
    log: Vec<String>,
    /// Derived rows stored by syncs instead of being computed.
    reused: u64,
}

impl Sim {
    fn check(&self, at: usize) {
        let (r, db) = &self.live[at];
        for key in 0..KEYS {
            let want = self.oracle.state[*r].get(&key).cloned().unwrap_or_default();
            let got = held(db, &self.oracle, key);
            assert_eq!(
                got,
                want,
                "replica {r} key {key}; steps:\n{}",
                self.log.join("\n")
            );
        }
    }

    fn write(&mut self, at: usize, key: i64, delete: bool) {
        let (r, db) = &self.live[at];
        let r = *r;
        let before = self.oracle.state[r].get(&key).cloned().unwrap_or_default();
        let dot = self.oracle.dots.len();
        let text = format!("w{dot}");
        if delete {
            db.delete::<Item>(key).unwrap();
        } else {
            db.put(Item {
                id: key,
                text: text.clone(),
            })
            .unwrap();
        }
        let versions = db.stored_versions("Item", key).unwrap();
        let nothing_to_delete = delete && before.iter().all(|&d| self.oracle.dots[d].deleted);
        if nothing_to_delete && before.len() <= 1 {
            // Deleting what is not there (or deleted already) writes nothing.
            assert_eq!(held(db, &self.oracle, key), before);
            self.log.push(format!("r{r}: delete {key} (nothing)"));
            return;
        }
        assert_eq!(
            versions.len(),
            1,
            "a write leaves one version: {versions:?}"
        );
        let mut history: BTreeSet<usize> = before
            .iter()
            .flat_map(|&d| self.oracle.dots[d].history.iter().copied())
            .collect();
        history.insert(dot);
        self.oracle.dots.push(Dot {
            key,
            deleted: delete,
            history,
        });
        self.oracle
            .by_event
            .insert((key, event_bytes(&versions[0].event)), dot);
        self.oracle.state[r].insert(key, BTreeSet::from([dot]));
        self.log.push(format!(
            "r{r}: {} {key} = {}",
            if delete { "delete" } else { "put" },
            if delete { "-".into() } else { text }
        ));
        self.check(at);
    }

    fn sync(&mut self, a: usize, b: usize, crash_after: Option<usize>) {
        let (ra, da) = &self.live[a];
        let (rb, db) = &self.live[b];
        let (ra, rb) = (*ra, *rb);
        match crash_after {
            None => {
                let r = sync(da, db).unwrap();
                self.reused += r.reused_here + r.reused_there;
                for key in 0..KEYS {
                    let empty = BTreeSet::new();
                    let m = self.oracle.merged(
                        self.oracle.state[ra].get(&key).unwrap_or(&empty),
                        self.oracle.state[rb].get(&key).unwrap_or(&empty),
                    );
                    self.oracle.state[ra].insert(key, m.clone());
                    self.oracle.state[rb].insert(key, m);
                }
                self.log.push(format!("sync r{ra} r{rb}"));
                // Their inputs agree now: a derived row fresh on one side
                // is fresh on the other (stored from the offer, or fresh
                // there already), so a refresh there computes nothing a
                // peer computed, whatever the order of refreshes and syncs.
                for key in 0..KEYS {
                    let fresh =
                        |db: &Db| matches!(db.explain::<Loud>(key), Ok(rederive::Staleness::Fresh));
                    assert_eq!(
                        fresh(da),
                        fresh(db),
                        "Loud {key} fresh on one of r{ra} and r{rb} only, after their sync; \
                         steps:\n{}",
                        self.log.join("\n")
                    );
                }
            }
            Some(calls) => {
                let crashy = Crashy {
                    db,
                    calls: Cell::new(calls),
                };
                let result = sync(da, &crashy);
                self.log.push(format!(
                    "sync r{ra} r{rb} crashing after {calls} calls: {}",
                    if result.is_ok() {
                        "finished"
                    } else {
                        "crashed"
                    }
                ));
                // Whatever arrived must be part of what the other side sent,
                // merged key by key.
                for (here, there, dbh) in [(ra, rb, da), (rb, ra, db)] {
                    for key in 0..KEYS {
                        let empty = BTreeSet::new();
                        let mine = self.oracle.state[here].get(&key).unwrap_or(&empty).clone();
                        let theirs = self.oracle.state[there].get(&key).unwrap_or(&empty).clone();
                        let got = held(dbh, &self.oracle, key);
                        let arrived: BTreeSet<usize> = got.difference(&mine).copied().collect();
                        assert!(
                            arrived.is_subset(&theirs),
                            "r{here} key {key}: {got:?} holds dots r{there} never had; steps:\n{}",
                            self.log.join("\n")
                        );
                        let expected = self.oracle.merged(&mine, &arrived);
                        assert_eq!(
                            got,
                            expected,
                            "r{here} key {key} after a partial sync; steps:\n{}",
                            self.log.join("\n")
                        );
                        self.oracle.state[here].insert(key, got);
                    }
                }
                if result.is_ok() {
                    // Finished despite the budget: both sides are merged.
                    self.check(a);
                    self.check(b);
                }
            }
        }
        self.check(a);
        self.check(b);
    }

    fn fork(&mut self, at: usize) {
        self.files += 1;
        let path = self.dir.path().join(format!("r{}.db", self.files));
        let child = self.live[at].1.fork_replica(&path).unwrap();
        let parent = self.live[at].0;
        let state = self.oracle.state[parent].clone();
        self.oracle.state.push(state);
        let r = self.oracle.state.len() - 1;
        self.log.push(format!("fork r{parent} -> r{r}"));
        self.live.push((r, child));
        self.check(self.live.len() - 1);
    }

    fn retire(&mut self, at: usize, into: usize) {
        let (ra, da) = &self.live[at];
        let (rb, db) = &self.live[into];
        let (ra, rb) = (*ra, *rb);
        da.retire_into(db).unwrap();
        for key in 0..KEYS {
            let empty = BTreeSet::new();
            let m = self.oracle.merged(
                self.oracle.state[ra].get(&key).unwrap_or(&empty),
                self.oracle.state[rb].get(&key).unwrap_or(&empty),
            );
            self.oracle.state[rb].insert(key, m);
        }
        self.log.push(format!("retire r{ra} into r{rb}"));
        assert!(da
            .put(Item {
                id: 0,
                text: "late".into()
            })
            .is_err());
        self.live.remove(at);
        let into = if into > at { into - 1 } else { into };
        self.check(into);
    }
}

/// Runs one seed; returns how many derived rows syncs reused.
fn run(seed: u64, steps: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let first = Db::open(dir.path().join("r0.db")).unwrap();
    let mut sim = Sim {
        dir,
        rng: Rng(seed),
        oracle: Oracle {
            state: vec![BTreeMap::new()],
            ..Oracle::default()
        },
        live: vec![(0, first)],
        files: 0,
        log: vec![format!("seed {seed}")],
        reused: 0,
    };
    // Some rows before the first fork: the genesis every replica shares.
    for key in 0..3 {
        sim.write(0, key, false);
    }
    sim.fork(0);
    sim.fork(1);
    for _ in 0..steps {
        let n = sim.live.len();
        let a = sim.rng.below(n);
        let mut b = sim.rng.below(n - 1);
        if b >= a {
            b += 1;
        }
        let key = sim.rng.below(KEYS as usize) as i64;
        match sim.rng.below(100) {
            0..=32 => sim.write(a, key, false),
            33..=45 => sim.write(a, key, true),
            46..=70 => sim.sync(a, b, None),
            71..=82 => {
                let calls = sim.rng.below(8);
                sim.sync(a, b, Some(calls));
            }
            83..=88 if n < 6 => sim.fork(a),
            89..=93 if n > 2 => sim.retire(a, b),
            // Refreshed replicas offer their derived rows when they sync.
            94..=99 => {
                sim.live[a].1.refresh().unwrap();
                sim.log.push(format!("refresh r{}", sim.live[a].0));
            }
            _ => {}
        }
    }
    // Heal: sync around the ring until every replica has everything
    // (each refreshed first, so that its derived rows are offered too).
    let n = sim.live.len();
    for (_, db) in &sim.live {
        db.refresh().unwrap();
    }
    for _ in 0..2 {
        for i in 0..n {
            sim.sync(i, (i + 1) % n, None);
        }
    }
    let first = &sim.live[0];
    let conflicts = first.1.conflicts().unwrap();
    for (r, db) in &sim.live {
        for key in 0..KEYS {
            assert_eq!(
                sim.oracle.state[*r].get(&key),
                sim.oracle.state[first.0].get(&key),
                "replicas r{r} and r{} differ at key {key}",
                first.0
            );
        }
        assert_eq!(
            db.conflicts().unwrap(),
            conflicts,
            "r{r} lists other conflicts"
        );
        // Derived rows: as a clean computation of the winners.
        db.refresh().unwrap();
        for key in 0..KEYS {
            match db.get::<Item>(key) {
                Ok(item) => {
                    assert_eq!(db.get::<Loud>(key).unwrap().text, item.text.to_uppercase());
                    assert_eq!(
                        db.get::<Item>(key).unwrap(),
                        first.1.get::<Item>(key).unwrap()
                    );
                }
                Err(_) => assert!(
                    db.get::<Loud>(key).is_err(),
                    "r{r}: Loud {key} outlived its row"
                ),
            }
        }
    }
    // No acknowledged write is lost unless a write that saw it replaced it.
    let finals = &sim.oracle.state[first.0];
    for (d, dot) in sim.oracle.dots.iter().enumerate() {
        let kept = finals.get(&dot.key).cloned().unwrap_or_default();
        assert!(
            kept.contains(&d)
                || kept
                    .iter()
                    .any(|&k| sim.oracle.dots[k].history.contains(&d)),
            "write w{d} of key {} was lost",
            dot.key
        );
    }
    sim.reused
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn replicas_converge_on_what_the_causal_oracle_predicts() {
    let seeds = env("REDERIVE_SIM_SEEDS", 6) as u64;
    let steps = env("REDERIVE_SIM_STEPS", 150);
    let mut reused = 0;
    for seed in 1..=seeds {
        reused += run(seed, steps);
    }
    assert!(
        reused > 0,
        "no sync reused a derived row: the check above saw none"
    );
}
