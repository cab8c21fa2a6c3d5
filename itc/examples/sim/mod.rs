//! A replicated system driven by a seeded random schedule, tracking each
//! replica's causal history both as an Interval Tree Clock stamp and as a
//! version vector, for the `vv_compare` and `bench` examples.

// Each example uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;

use rederive_itc::{Event, Stamp};

/// A small deterministic generator (SplitMix64), so that runs reproduce
/// without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A version vector with one entry per replica whose updates it has seen.
/// Replicas are numbered in creation order, which needs exactly the global
/// registry ITC avoids; it is the most compact version vector possible.
pub type VersionVector = BTreeMap<u64, u64>;

/// Bytes of a LEB128 varint.
pub fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Encoded size of a version vector: a count, then per entry the replica
/// number (or a `uuid_bytes`-byte id when non-zero) and the counter, as
/// varints.
pub fn vv_size(vv: &VersionVector, uuid_bytes: usize) -> usize {
    varint_len(vv.len() as u64)
        + vv.iter()
            .map(|(&replica, &count)| {
                let id = if uuid_bytes == 0 {
                    varint_len(replica)
                } else {
                    uuid_bytes
                };
                id + varint_len(count)
            })
            .sum::<usize>()
}

pub struct Replica {
    pub number: u64,
    pub stamp: Stamp,
    pub vv: VersionVector,
}

/// Parameters of a run.
#[derive(Clone, Copy)]
pub struct Config {
    /// Replicas alive at any time.
    pub replicas: usize,
    /// Per step, the probability that a random replica retires (joining its
    /// stamp into a random peer) and a new one is forked from a random
    /// replica.
    pub churn: f64,
    pub steps: usize,
    pub seed: u64,
    /// Who takes over a retiring replica's id.
    pub heir: Heir,
}

/// How a retiring replica picks the peer that absorbs its stamp.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Heir {
    /// Any live replica, at random: ids fragment over time.
    Random,
    /// The replica whose id, summed with the retiring one, encodes
    /// smallest (typically the owner of the adjacent interval): ids merge
    /// back into simple trees.
    Compact,
}

pub struct System {
    pub live: Vec<Replica>,
    /// Replicas ever created.
    pub created: u64,
    heir: Heir,
    rng: Rng,
}

impl System {
    /// A seed forked into `config.replicas` replicas, each from a random
    /// existing one.
    pub fn new(config: &Config) -> System {
        let mut system = System {
            live: vec![Replica {
                number: 0,
                stamp: Stamp::seed(),
                vv: VersionVector::new(),
            }],
            created: 1,
            heir: config.heir,
            rng: Rng::new(config.seed),
        };
        while system.live.len() < config.replicas {
            system.spawn();
        }
        system
    }

    /// Runs `config.steps` steps: each is a churn event with probability
    /// `config.churn`, otherwise an update (half the time) or a sync of two
    /// random replicas.
    pub fn run(config: &Config) -> System {
        let mut system = System::new(config);
        for _ in 0..config.steps {
            system.step(config.churn);
        }
        system
    }

    pub fn step(&mut self, churn: f64) {
        let n = self.live.len();
        if n > 1 && self.rng.chance(churn) {
            self.retire();
            self.spawn();
        } else if n < 2 || self.rng.chance(0.5) {
            let r = self.rng.below(n);
            self.update(r);
        } else {
            let a = self.rng.below(n);
            let b = (a + 1 + self.rng.below(n - 1)) % n;
            self.sync(a, b);
        }
    }

    fn update(&mut self, r: usize) {
        let replica = &mut self.live[r];
        replica.stamp = replica.stamp.event().expect("replicas own an id");
        *replica.vv.entry(replica.number).or_default() += 1;
    }

    /// Both replicas learn everything the other knows; ids stay put.
    fn sync(&mut self, a: usize, b: usize) {
        let (sa, sb) = (self.live[a].stamp.peek(), self.live[b].stamp.peek());
        self.live[a].stamp = self.live[a].stamp.join(&sb).expect("peeks join");
        self.live[b].stamp = self.live[b].stamp.join(&sa).expect("peeks join");
        let merged = merge(&self.live[a].vv, &self.live[b].vv);
        self.live[a].vv = merged.clone();
        self.live[b].vv = merged;
    }

    /// A random replica forks a new one, which starts with its knowledge.
    fn spawn(&mut self) {
        let parent = self.rng.below(self.live.len());
        let (keep, give) = self.live[parent].stamp.fork();
        self.live[parent].stamp = keep;
        let vv = self.live[parent].vv.clone();
        self.live.push(Replica {
            number: self.created,
            stamp: give,
            vv,
        });
        self.created += 1;
    }

    /// A random replica retires into a random peer, handing over its id and
    /// knowledge.
    fn retire(&mut self) {
        let gone = self.live.swap_remove(self.rng.below(self.live.len()));
        // Drawn under both policies, so that they follow the same schedule.
        let random = self.rng.below(self.live.len());
        let heir = match self.heir {
            Heir::Random => random,
            Heir::Compact => (0..self.live.len())
                .min_by_key(|&r| {
                    let id = self.live[r].stamp.id().sum(gone.stamp.id());
                    let id = id.expect("ids are disjoint");
                    Stamp::new(id, Event::leaf(0)).encode().len()
                })
                .unwrap_or(0),
        };
        let heir = &mut self.live[heir];
        heir.stamp = heir.stamp.join(&gone.stamp).expect("ids are disjoint");
        heir.vv = merge(&heir.vv, &gone.vv);
    }
}

fn merge(a: &VersionVector, b: &VersionVector) -> VersionVector {
    let mut out = a.clone();
    for (&replica, &count) in b {
        let entry = out.entry(replica).or_default();
        *entry = (*entry).max(count);
    }
    out
}
