//! Several worker processes, as if on several machines, sharing a slow
//! pipeline in one PostgreSQL database (needs the `postgres` feature).
//!
//! ```text
//! # The demo: starts a throwaway PostgreSQL server (Debian's `postgresql`
//! # package must be installed), writes 60 scenes, runs three workers and
//! # shows with `status` which worker runs what.
//! cargo run --features postgres --example workers
//!
//! # On real machines, against a database you run:
//! export REDERIVE_DB=postgres://me@db-host/pipeline
//! cargo run --features postgres --example workers -- scenes 500   # write 500 scenes
//! cargo run --features postgres --example workers -- refresh      # on each machine: one worker
//! cargo run --features postgres --example workers -- status       # anywhere: who runs what
//! ```
//!
//! Each worker claims batches of rows no other worker holds, computes them,
//! and writes their results only while its claim is still its own; a
//! worker killed midway leaves its rows to the others once its leases
//! expire.
use rederive::{derive_table, Db, Row};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A scene to render: the input rows.
#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Scene {
    #[row(key)]
    pub id: i64,
    /// How much detail: the render's work grows with it.
    pub detail: i64,
}

/// The slow stage (about 40 ms of CPU a row, times the detail).
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Render {
    pub checksum: i64,
}

/// A fast stage downstream of the slow one.
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Thumbnail {
    pub label: String,
}

#[derive_table]
fn render(scene: &Scene) -> Render {
    // Stands in for real work: busy for 40 ms per unit of detail.
    let until = Instant::now() + Duration::from_millis(40 * scene.detail.clamp(1, 10) as u64);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    Render {
        checksum: (scene.id * 7919 + scene.detail) % 1_000_003,
    }
}

#[derive_table]
fn thumbnail(render: &Render) -> Thumbnail {
    Thumbnail {
        label: format!("#{:06}", render.checksum),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        // `scenes N [--db URL]` writes N scenes.
        Some("scenes") => {
            let n: i64 = match args.get(2).and_then(|n| n.parse().ok()) {
                Some(n) => n,
                None => {
                    eprintln!("usage: workers scenes N [--db URL]");
                    std::process::exit(2);
                }
            };
            let location = match args.iter().position(|a| a == "--db") {
                Some(i) if i + 1 < args.len() => args[i + 1].clone().into(),
                _ => rederive::cli::default_db_path(),
            };
            if let Err(e) = Db::open(&location).and_then(|db| db.put_all(scenes(n))) {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
        Some(_) => rederive::cli::main(),
        None => {
            if let Err(e) = demo() {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
    }
}

fn scenes(n: i64) -> impl Iterator<Item = Scene> {
    (0..n).map(|id| Scene { id, detail: 1 })
}

/// Starts a throwaway server (or uses `$REDERIVE_DB` when it is a
/// PostgreSQL URL), writes 60 scenes, runs three worker processes and
/// prints what `status` says while they run.
fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let from_env = std::env::var("REDERIVE_DB")
        .ok()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"));
    let (_server, url) = match from_env {
        Some(url) => (None, url),
        None => {
            println!("starting a throwaway PostgreSQL server ...");
            let server = rederive::postgres::testing::TestServer::start()?;
            let url = server.new_database("workers_demo")?;
            (Some(server), url)
        }
    };
    let db = Db::open(&url)?;
    db.put_all(scenes(60))?;
    println!("60 scenes written; starting three workers");
    let me = std::env::current_exe()?;
    let workers = (0..3)
        .map(|_| {
            Command::new(&me)
                .args(["refresh", "--db", &url])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let mut workers: Vec<_> = workers.into_iter().map(Some).collect();
    let mut outputs = Vec::new();
    while workers.iter().any(Option::is_some) {
        std::thread::sleep(Duration::from_millis(400));
        let status = Command::new(&me).args(["status", "--db", &url]).output()?;
        let text = String::from_utf8_lossy(&status.stdout);
        for line in text.lines().filter(|l| l.contains("running on")) {
            println!(
                "  [{:>4.1}s] {}",
                started.elapsed().as_secs_f64(),
                line.trim()
            );
        }
        for slot in &mut workers {
            if let Some(child) = slot {
                if child.try_wait()?.is_some() {
                    outputs.push(slot.take().expect("present").wait_with_output()?);
                }
            }
        }
    }
    println!(
        "all workers done in {:.1}s; each worker's report:",
        started.elapsed().as_secs_f64()
    );
    for (i, out) in outputs.iter().enumerate() {
        let text = String::from_utf8_lossy(&out.stdout);
        println!(
            "  worker {}: {}",
            i + 1,
            text.lines().next().unwrap_or("").trim()
        );
    }
    let report = db.refresh()?;
    println!(
        "a last refresh computes {} rows: every row was computed once, by one worker",
        report.calls()
    );
    Ok(())
}
