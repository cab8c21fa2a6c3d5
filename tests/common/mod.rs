//! Helpers shared by integration tests.

use std::path::Path;

pub mod cli;
pub mod deadline;
#[allow(dead_code)]
pub mod hooked;

/// This test binary's graph (its macro-defined tables and functions) with
/// run-time `nodes` added.
#[allow(dead_code)]
pub fn graph_with_nodes(nodes: Vec<rederive::RuntimeNode>) -> rederive::Result<rederive::Graph> {
    rederive::Graph::with_runtime_nodes(
        rederive::node::registered_tables(),
        rederive::node::registered_nodes()
            .into_iter()
            .copied()
            .collect(),
        nodes,
    )
}

/// The tables of an SQLite file, as SQLite itself lists them, sorted.
#[allow(dead_code)]
pub fn sqlite_tables(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    names
}

/// Creates the side database where worker processes record their calls
/// (`record_call`), at `path`.
#[allow(dead_code)]
pub fn create_calls_db(path: &Path) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE calls(id INTEGER NOT NULL, pid INTEGER NOT NULL);",
        )
        .unwrap();
}

thread_local! {
    static CALLS: std::cell::RefCell<Option<rusqlite::Connection>> =
        const { std::cell::RefCell::new(None) };
}

/// Records one call for `id`, by this process, in the side database named
/// by `CALLS_DB` (nothing when it is not set).
#[allow(dead_code)]
pub fn record_call(id: i64) {
    let Some(path) = std::env::var_os("CALLS_DB") else {
        return;
    };
    CALLS.with(|c| {
        let mut c = c.borrow_mut();
        let conn = c.get_or_insert_with(|| {
            let conn = rusqlite::Connection::open(&path).expect("open calls db");
            conn.busy_timeout(std::time::Duration::from_secs(30))
                .unwrap();
            conn
        });
        conn.execute(
            "INSERT INTO calls(id, pid) VALUES (?1, ?2)",
            [id, std::process::id() as i64],
        )
        .expect("record call");
    });
}

/// Refreshes until a pass finds nothing left for anyone (no row held by
/// another worker, nothing stale).
#[allow(dead_code)]
pub fn refresh_until_done(db: &rederive::Db) {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = db.refresh().expect("refresh");
        if r.skipped == 0 && r.calls() == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "workers did not finish");
        if r.skipped > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A fresh PostgreSQL database for one test, on the throwaway server this
/// test binary shares (started on first use, stopped when the process
/// ends); `None` when PostgreSQL is not installed, after saying that the
/// test skipped (with `REDERIVE_REQUIRE_POSTGRES=1`, as CI sets, a missing
/// server fails the test instead).
#[allow(dead_code)]
pub fn postgres_db(test: &str) -> Option<String> {
    rederive_postgres::testing::database_or_skip(test)
}

/// The example `name`, built with `features` into this test binary's target
/// directory and profile (`target/<profile>/deps/TEST-HASH` ->
/// `target/<profile>/examples/NAME`); returns its path.
///
/// `cargo test` builds the examples first, but `cargo test --test cli` does
/// not, and an example with required features is never built without them:
/// then it is missing, or stale (built before the last change to the
/// runtime). So it is built here; when it is up to date that is a quick
/// no-op.
#[allow(dead_code)]
pub fn example(name: &str, features: &[&str]) -> std::path::PathBuf {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps");
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    match cmd.output() {
        Ok(out) => assert!(
            out.status.success(),
            "`{cmd:?}` failed ({}); this test needs the {name} example:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        // No cargo here (the test binary was copied elsewhere): use the
        // example that is there, if any.
        Err(e) if bin.exists() => {
            eprintln!("note: cannot run `{cmd:?}` ({e}); using the {name} example as built");
        }
        Err(e) => panic!("the {name} example is missing and `{cmd:?}` cannot run: {e}"),
    }
    assert!(
        bin.exists(),
        "the {name} example is not at {} after building it",
        bin.display()
    );
    bin
}

/// A small deterministic random number generator (splitmix64), for the
/// seeded campaigns and simulations.
#[allow(dead_code)]
pub struct Rng(pub u64);

#[allow(dead_code)]
impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.range(0, n as u64) as usize
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }

    /// `n` distinct numbers of `0..from`.
    pub fn pick(&mut self, n: usize, from: i64) -> Vec<i64> {
        let mut all: Vec<i64> = (0..from).collect();
        for i in 0..n.min(all.len()) {
            let j = i + (self.next() % (all.len() - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(n);
        all
    }
}

/// Waits for a child process until `deadline`, then kills it and fails the
/// test, naming `what` it waited for.
#[allow(dead_code)]
pub fn wait_child(
    child: &mut std::process::Child,
    deadline: std::time::Instant,
    what: &str,
) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{what} did not finish in time");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
