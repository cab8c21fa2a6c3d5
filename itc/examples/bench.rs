//! Rates of the clock operations on realistic stamps.
//!
//! ```text
//! cargo run --release -p rederive-itc --example bench
//! ```
//!
//! The stamps are the live replicas at the end of `vv_compare`-style runs
//! (20,000 steps of updates, syncs and churn with random heirs): small,
//! medium and large systems. Each operation runs over every replica (or
//! every ordered pair of replicas) for about half a second.

mod sim;

use std::hint::black_box;
use std::time::{Duration, Instant};

use rederive_itc::Stamp;
use sim::{Config, Heir, System};

const BUDGET: Duration = Duration::from_millis(500);

/// Runs `op` over the inputs repeatedly for about [`BUDGET`]; returns
/// operations per second.
fn rate<T>(inputs: &[T], mut op: impl FnMut(&T)) -> f64 {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < BUDGET {
        for input in inputs {
            op(black_box(input));
        }
        done += inputs.len() as u64;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn human(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2} M/s", rate / 1e6)
    } else {
        format!("{:.0} k/s", rate / 1e3)
    }
}

fn main() {
    println!("| stamps | mean bytes | event | join | leq | encode | decode |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (replicas, churn) in [(4, 0.01), (16, 0.01), (64, 0.05)] {
        let system = System::run(&Config {
            replicas,
            churn,
            steps: 20_000,
            seed: 0x17c0_ffee ^ replicas as u64,
            heir: Heir::Random,
        });
        let stamps: Vec<Stamp> = system.live.iter().map(|r| r.stamp.clone()).collect();
        let pairs: Vec<(Stamp, Stamp)> = stamps
            .iter()
            .flat_map(|a| stamps.iter().map(move |b| (a.clone(), b.peek())))
            .collect();
        let encoded: Vec<Vec<u8>> = stamps.iter().map(Stamp::encode).collect();
        let bytes = encoded.iter().map(Vec::len).sum::<usize>() as f64 / stamps.len() as f64;

        let event = rate(&stamps, |s| {
            black_box(s.event().expect("replicas own an id"));
        });
        let join = rate(&pairs, |(a, b)| {
            black_box(a.join(b).expect("a peek joins anything"));
        });
        let leq = rate(&pairs, |(a, b)| {
            black_box(a.leq(b));
        });
        let encode = rate(&stamps, |s| {
            black_box(s.encode());
        });
        let decode = rate(&encoded, |b| {
            black_box(Stamp::decode(b).expect("valid encoding"));
        });
        println!(
            "| {replicas} replicas, {:.0}% churn | {bytes:.0} | {} | {} | {} | {} | {} |",
            churn * 100.0,
            human(event),
            human(join),
            human(leq),
            human(encode),
            human(decode),
        );
    }
}
