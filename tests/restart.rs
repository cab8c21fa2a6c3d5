//! A PostgreSQL server that restarts under a running pipeline: a refresh
//! cut off says so, the next one leaves nothing undone (it waits for the
//! leases the cut-off one left, or takes them back), and watch mode goes on
//! by itself. Each test has a server of its own, which it restarts.
mod common;

use rederive::watch::{watch_with, WatchEvent, WatchOptions};
use rederive::{derive_table, Db, Graph, Row};
use rederive_postgres::testing::TestServer;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Page {
    #[row(key)]
    pub id: i64,
    pub n: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Count {
    pub n2: i64,
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive_table]
fn count(p: &Page) -> Count {
    CALLS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1));
    Count { n2: p.n * 2 }
}

fn server(test: &str) -> Option<TestServer> {
    match TestServer::start_crash_safe() {
        Ok(s) => Some(s),
        Err(skip) => {
            skip.report(test);
            None
        }
    }
}

/// The counts of `Count` that must all be zero once a refresh returned.
fn undone(db: &Db) -> (u64, u64, u64) {
    let status = db.status().unwrap();
    let t = status.iter().find(|t| t.table == "Count").unwrap();
    (t.missing, t.stale, t.running)
}

#[test]
fn a_refresh_after_a_server_restart_leaves_nothing_undone() {
    let Some(server) = server("restart_refresh") else {
        return;
    };
    let url = server.new_database("restart_refresh").unwrap();
    let rows = 2_000;
    {
        let db = Db::open(&url).unwrap();
        db.put_all((0..rows).map(|id| Page { id, n: id })).unwrap();
    }
    // A worker with a long lease, as by default: a refresh after the
    // restart must not wait for it to run out, nor return before the rows
    // it held are done.
    let cut = Db::open(&url).unwrap();
    cut.set_lease_ttl(Duration::from_secs(30));
    let before = CALLS.load(Ordering::SeqCst);
    let failed = std::thread::scope(|scope| {
        let refresh = scope.spawn(|| cut.refresh());
        // Restart once the refresh is well under way.
        let deadline = Instant::now() + Duration::from_secs(60);
        while CALLS.load(Ordering::SeqCst) < before + 200 {
            assert!(Instant::now() < deadline, "the refresh never got going");
            std::thread::sleep(Duration::from_millis(2));
        }
        server
            .restart_immediately(Duration::from_secs(1))
            .expect("the server comes back");
        refresh.join().expect("the refresh thread panicked")
    });
    let error = failed.expect_err("a refresh cut off by the restart says so");
    assert!(
        !error.to_string().is_empty(),
        "the error names what failed: {error:?}"
    );
    // Another worker (another `Db`: another worker id, as another process
    // would be) refreshes right after.
    let next = Db::open(&url).unwrap();
    next.set_lease_ttl(Duration::from_secs(30));
    let started = Instant::now();
    let next = common::deadline::within_deadline(1, move || {
        common::deadline::waiting_for(
            "the refresh after the restart (leases that no one gave back?)",
        );
        next.refresh().expect("the refresh after the restart");
        next
    });
    assert_eq!(
        undone(&next),
        (0, 0, 0),
        "rows left undone by the refresh after the restart"
    );
    // The cut-off worker's leases were given back (not waited out): far
    // less than their 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the refresh waited {:?} for leases of a worker that gave up",
        started.elapsed()
    );
    for id in [0, rows / 2, rows - 1] {
        assert_eq!(next.get::<Count>(id).unwrap().n2, id * 2);
    }
}

#[test]
fn watch_goes_on_after_a_server_restart() {
    let Some(server) = server("restart_watch") else {
        return;
    };
    let url = server.new_database("restart_watch").unwrap();
    let db = Db::open(&url).unwrap();
    db.put(Page { id: 1, n: 1 }).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<String>();
    let watcher = {
        let (stop, url) = (stop.clone(), url.clone());
        std::thread::spawn(move || {
            let options = WatchOptions {
                poll: Duration::from_millis(50),
                debounce: Duration::from_millis(20),
                ..Default::default()
            };
            watch_with(
                std::path::Path::new(&url),
                Graph::from_registry().unwrap(),
                &options,
                &stop,
                |e| {
                    let text = match e {
                        WatchEvent::Refreshed { cause, report } => {
                            format!("refreshed {cause}: {report}")
                        }
                        WatchEvent::Retrying { .. } => "retrying".to_owned(),
                        WatchEvent::Recovered { .. } => "recovered".to_owned(),
                        other => format!("{other:?}"),
                    };
                    let _ = tx.send(text);
                },
            )
        })
    };
    let wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(e) = rx.recv_timeout(Duration::from_millis(50)) {
                let hit = e.contains(what);
                seen.push(e);
                if hit {
                    return;
                }
            }
        }
        panic!("watch sent no event containing {what:?} within 60 s; saw {seen:?}");
    };
    wait_for("refreshed start: 1 computed");
    server
        .restart_immediately(Duration::from_secs(1))
        .expect("the server comes back");
    // Watch mode noticed, and said so (rather than ending).
    wait_for("retrying");
    // A write after the restart (the writer's own connection reconnects).
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = db.put(Page { id: 2, n: 2 }) {
        assert!(
            Instant::now() < deadline,
            "cannot write after the restart: {e}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for("1 computed");
    assert_eq!(db.get::<Count>(2i64).unwrap().n2, 4);
    stop.store(true, Ordering::SeqCst);
    watcher
        .join()
        .expect("the watch thread panicked")
        .expect("watch mode ends cleanly when stopped");
}
