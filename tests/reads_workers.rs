//! Two worker processes refresh one database whose rows read each other:
//! leases make every row computed once, whichever process reaches it, and
//! the result is the one a single process computes.
mod common;

use common::{create_calls_db, record_call, refresh_until_done};
use rederive::{derive_table, Ctx, Db, Row};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Node {
    #[row(key)]
    pub id: i64,
    /// The ids it calls, separated by spaces.
    pub calls: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Total {
    pub v: i64,
}

#[derive_table(reads = [Total])]
fn total(node: &Node, ctx: &Ctx) -> Result<Total, String> {
    let mut v = 1;
    for callee in node.calls.split_whitespace() {
        let id: i64 = callee.parse().map_err(|_| format!("bad id {callee}"))?;
        v = (v + ctx.get::<Total>(id)?.map_or(0, |t| t.v)) % 1_000_000_007;
    }
    record_call(node.id);
    let until = Instant::now() + Duration::from_micros(300);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    Ok(Total { v })
}

/// Node `i` calls `i - 1` and `i / 2`: chains and shared callees.
fn calls_of(i: i64) -> String {
    let mut c = Vec::new();
    if i > 0 {
        c.push((i - 1).to_string());
    }
    if i > 1 {
        c.push((i / 2).to_string());
    }
    c.join(" ")
}

fn expected(n: i64) -> Vec<i64> {
    let mut v = vec![0i64; n as usize];
    for i in 0..n {
        let mut t = 1;
        for c in calls_of(i).split_whitespace() {
            t = (t + v[c.parse::<usize>().unwrap()]) % 1_000_000_007;
        }
        v[i as usize] = t;
    }
    v
}

/// A worker process: refreshes the database named by `WORKER_DB`.
#[test]
#[ignore = "run by two_processes_compute_every_row_once"]
fn reads_worker_process() {
    let Some(path) = std::env::var_os("WORKER_DB") else {
        return;
    };
    let db = Db::open(Path::new(&path)).unwrap();
    refresh_until_done(&db);
}

#[test]
fn two_processes_compute_every_row_once() {
    let n = 300;
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("reads.db");
    let calls = dir.path().join("calls.db");
    create_calls_db(&calls);
    {
        let db = Db::open(&db_path).unwrap();
        // The callers first in key order: the build meets readers before
        // the rows they read.
        db.put_all((0..n).rev().map(|id| Node {
            id,
            calls: calls_of(id),
        }))
        .unwrap();
    }
    let spawn = || {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "reads_worker_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("WORKER_DB", &db_path)
            .env("CALLS_DB", &calls)
            .spawn()
            .expect("spawn worker")
    };
    let workers = [spawn(), spawn()];
    for mut w in workers {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        assert!(common::wait_child(&mut w, deadline, "a worker's refresh").success());
    }
    let conn = rusqlite::Connection::open(&calls).unwrap();
    let per_id: Vec<(i64, i64)> = conn
        .prepare("SELECT id, count(*) FROM calls GROUP BY id ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(per_id.len() as i64, n, "every row computed");
    for (id, count) in &per_id {
        assert_eq!(*count, 1, "calls of row {id}");
    }
    let pids: i64 = conn
        .query_row("SELECT count(DISTINCT pid) FROM calls", [], |r| r.get(0))
        .unwrap();
    let db = Db::open(&db_path).unwrap();
    let want = expected(n);
    for id in 0..n {
        assert_eq!(
            db.get::<Total>(id).unwrap().v,
            want[id as usize],
            "row {id}"
        );
    }
    eprintln!("rows computed by {pids} processes");
}
