//! Encoded size of Interval Tree Clock stamps against version vectors, for
//! replicas that fork, update, sync and retire over time.
//!
//! ```text
//! cargo run --release -p rederive-itc --example vv_compare [steps]
//! ```
//!
//! Each run keeps a fixed number of replicas alive. A step is, with the
//! churn probability, one replica retiring (its stamp joined into a peer)
//! and a new one forked from a random replica; otherwise an update at a
//! random replica (half the time) or a sync of two random replicas (both
//! learn everything the other knows). Sizes are averaged over all live
//! replicas at ten points in the second half of the run.
//!
//! ITC stamps are measured twice, with the same schedule: retiring into a
//! random peer, and retiring into the peer whose id absorbs the retiring id
//! most compactly. A version vector keeps one entry per replica whose
//! updates it has seen, which under churn means an entry for every replica
//! ever created; it is sized with varint replica numbers (needs a global
//! registry) and with 16-byte random ids (what a registry-free system would
//! use).

mod sim;

use sim::{vv_size, Config, Heir, System};

/// Steps per run unless given on the command line.
const STEPS: usize = 20_000;

#[derive(Default)]
struct Sizes {
    samples: usize,
    itc_total: usize,
    itc_max: usize,
    entries_total: usize,
    vv_numbered_total: usize,
    vv_uuid_total: usize,
    created: u64,
}

impl Sizes {
    fn mean(&self, total: usize) -> f64 {
        total as f64 / self.samples as f64
    }
}

fn simulate(config: &Config) -> Sizes {
    let mut system = System::new(config);
    let mut sizes = Sizes::default();
    for step in 1..=config.steps {
        system.step(config.churn);
        if step > config.steps / 2 && step % (config.steps / 20) == 0 {
            for replica in &system.live {
                let itc = replica.stamp.encode().len();
                sizes.samples += 1;
                sizes.itc_total += itc;
                sizes.itc_max = sizes.itc_max.max(itc);
                sizes.entries_total += replica.vv.len();
                sizes.vv_numbered_total += vv_size(&replica.vv, 0);
                sizes.vv_uuid_total += vv_size(&replica.vv, 16);
            }
        }
    }
    sizes.created = system.created;
    sizes
}

fn main() {
    let steps = match std::env::args().nth(1).map(|arg| arg.parse::<usize>()) {
        None => STEPS,
        Some(Ok(steps)) if steps >= 20 => steps,
        Some(_) => {
            eprintln!("usage: vv_compare [steps, at least 20]");
            std::process::exit(2);
        }
    };
    println!("{steps} steps per run; sizes in bytes, mean (max) over live replicas\n");
    println!(
        "| replicas alive | churn per step | replicas created | ITC, random heir | ITC, compact heir | VV entries | VV, numbered ids | VV, 16-byte ids |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for replicas in [4, 16, 64] {
        for churn in [0.0, 0.01, 0.05] {
            let config = Config {
                replicas,
                churn,
                steps,
                seed: 0x17c0_ffee ^ replicas as u64,
                heir: Heir::Random,
            };
            let random = simulate(&config);
            let compact = simulate(&Config {
                heir: Heir::Compact,
                ..config
            });
            println!(
                "| {replicas} | {:.0}% | {} | {:.0} ({}) | {:.0} ({}) | {:.0} | {:.0} | {:.0} |",
                churn * 100.0,
                random.created,
                random.mean(random.itc_total),
                random.itc_max,
                compact.mean(compact.itc_total),
                compact.itc_max,
                random.mean(random.entries_total),
                random.mean(random.vv_numbered_total),
                random.mean(random.vv_uuid_total),
            );
        }
    }
}
