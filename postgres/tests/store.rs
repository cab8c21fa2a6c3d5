//! What the conformance suite cannot show with one case on two
//! connections: claims and schema changes racing on many connections, a
//! lost connection, text keys in a database with a locale, URLs and
//! passwords, bad input, snapshots, and the engine with several workers.

mod common;

use common::{col, SRC};
use rederive_postgres::testing::{database_or_skip, TestServer};
use rederive_postgres::PgStore;
use rederive_runtime::clock::ManualClock;
use rederive_runtime::graph::Graph;
use rederive_runtime::row::TableInfo;
use rederive_runtime::storage::conformance::{self, Harness};
use rederive_runtime::storage::{
    Backend, Catalog, ClaimMode, Fence, Leases, Outcome, OutcomeKind, Pass, Progress, Revision,
    Rows, Values,
};
use rederive_runtime::value::{Key, SqlType, Value};
use rederive_runtime::{Ctx, Db, Error};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const TTL: Duration = Duration::from_secs(600);

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// `Len`: the body's length, slowly enough for workers to meet.
fn len(_: &Ctx<'_>, inputs: Vec<Vec<Value>>) -> Result<Vec<Value>, String> {
    CALLS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2));
    match inputs.first().and_then(|row| row.get(1)) {
        Some(Value::Text(body)) => Ok(vec![Value::Integer(body.len() as i64)]),
        other => Err(format!("no body: {other:?}")),
    }
}

fn graph() -> Graph {
    common::graph("store_tests", "len-1", len)
}

fn codes(g: &Graph) -> Vec<Option<String>> {
    g.tables()
        .iter()
        .map(|t| (!t.info.input).then(|| "code-1".to_owned()))
        .collect()
}

fn src_rows(keys: impl Iterator<Item = i64>) -> Vec<Vec<Value>> {
    keys.map(|k| vec![Value::Integer(k), Value::Text("x".repeat(k as usize % 7))])
        .collect()
}

fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("an admin connection")
}

/// Row claims from many connections at once, with and without whole-table
/// claims among them: no key is ever granted to two owners, and a table
/// lease is never granted while another owner holds a row.
#[test]
fn claims_from_many_connections_never_grant_a_row_twice() {
    let Some(url) = database_or_skip("claims_never_twice") else {
        return;
    };
    for (table, register_all) in [("Rows", true), ("Mixed", false)] {
        let keys: Vec<Key> = (0..300).map(Key::Int).collect();
        let threads = 4;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (url, keys, barrier) = (url.clone(), keys.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let store = PgStore::open(&url).expect("a connection");
                    let worker = format!("w{t}");
                    let owner = format!("o{t}");
                    // In the mixed round only the first thread registers: it
                    // is alone whenever no other owner holds a row.
                    if register_all || t == 0 {
                        store.register_worker(&worker, TTL).unwrap();
                    }
                    barrier.wait();
                    let mut granted: Vec<Key> = Vec::new();
                    let mut table_fence = false;
                    let mut order: Vec<&Key> = keys.iter().collect();
                    order.rotate_left(t * 70);
                    for batch in order.chunks(20) {
                        let mode = if t == 0 {
                            ClaimMode::TableIfAlone
                        } else {
                            ClaimMode::Rows
                        };
                        let c = store
                            .claim(table, batch, &worker, &owner, TTL, mode)
                            .unwrap();
                        table_fence |= matches!(c.fence, Fence::Table { .. });
                        for (k, g) in batch.iter().zip(c.granted) {
                            if g {
                                granted.push((*k).clone());
                            }
                        }
                    }
                    (owner, table_fence, granted)
                })
            })
            .collect();
        let results: Vec<(String, bool, Vec<Key>)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut owners: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
        for (owner, _, granted) in &results {
            for k in granted {
                owners.entry(k.clone()).or_default().insert(owner.clone());
            }
        }
        for (k, o) in &owners {
            assert_eq!(o.len(), 1, "{table}: key {k} granted to {o:?}");
        }
        if let Some((holder, _, _)) = results.iter().find(|r| r.1) {
            for (owner, _, granted) in &results {
                assert!(
                    owner == holder || granted.is_empty(),
                    "{table}: {owner} got rows while {holder} held the table"
                );
            }
        } else {
            assert_eq!(owners.len(), keys.len(), "{table}: every key was granted");
        }
    }
}

/// Processes opening one new database and applying one graph at once:
/// each succeeds, and the tables are created once.
#[test]
fn schema_changes_from_many_connections_at_once() {
    let Some(url) = database_or_skip("schema_at_once") else {
        return;
    };
    let threads = 6;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || -> rederive_runtime::Result<()> {
                barrier.wait();
                let store = PgStore::open(&url)?;
                let g = graph();
                store.apply_schema(&g, &codes(&g))
            })
        })
        .collect();
    for h in handles {
        h.join()
            .unwrap()
            .expect("apply_schema from one of many connections");
    }
    let store = PgStore::open(&url).unwrap();
    let names: Vec<String> = store
        .stored_tables()
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["Len", "Src"]);
    assert_eq!(store.row_count("Len").unwrap(), 0);
}

/// A connection the server ends is an error for the call that meets it
/// (inside a snapshot too), and the next call connects again.
#[test]
fn a_lost_connection_is_an_error_and_the_next_call_reconnects() {
    let Some(url) = database_or_skip("lost_connection") else {
        return;
    };
    let store = PgStore::open(&url).unwrap();
    let g = graph();
    store.apply_schema(&g, &codes(&g)).unwrap();
    let r1 = store.put_rows(&SRC, &src_rows(1..3)).unwrap();
    let mut admin = admin(&url);
    let kill = |admin: &mut postgres::Client| {
        let n = admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap();
        assert_eq!(n, 1, "one connection to end");
    };
    kill(&mut admin);
    match store.revision() {
        Err(Error::Storage(e)) => assert!(!e.to_string().is_empty()),
        other => panic!("a lost connection must be a storage error, got {other:?}"),
    }
    assert_eq!(store.revision().unwrap(), r1, "connected again");

    store.begin_snapshot().unwrap();
    let src = g.table_id("Src").unwrap();
    assert!(store.load(&g, &[src], &Key::Int(1), Values::All).unwrap()[0].is_some());
    kill(&mut admin);
    assert!(store.load(&g, &[src], &Key::Int(1), Values::All).is_err());
    let again = store.load(&g, &[src], &Key::Int(2), Values::All).unwrap();
    assert!(
        again[0].is_some(),
        "connected again, outside the lost snapshot"
    );
    store.end_snapshot().unwrap();
    let r2 = store.put_rows(&SRC, &src_rows(3..4)).unwrap();
    assert!(r2 > r1, "writes work on the new connection");
}

/// In a database whose default collation is a language's (ICU `en-US`,
/// where `a` sorts before `B`), keys still sort byte by byte: the cases of
/// the suite that order text keys pass there too.
#[test]
fn text_keys_sort_byte_by_byte_in_a_database_with_a_locale() {
    let server = match TestServer::shared() {
        Ok(server) => server,
        Err(skip) => {
            skip.report("text_keys_sort_byte_by_byte_in_a_database_with_a_locale");
            return;
        }
    };
    let n = AtomicUsize::new(0);
    let harness = Harness {
        open: Box::new(move |clock| {
            let name = format!("icu_{}", n.fetch_add(1, Ordering::SeqCst));
            let mut admin = admin(&server.url());
            admin
                .batch_execute(&format!(
                    "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' \
                     LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
                ))
                .expect("an ICU database (PostgreSQL 15 built with ICU)");
            let url = server.database_url(&name);
            let mut check = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let a_first: bool = check.query_one("SELECT 'a' < 'B'", &[]).unwrap().get(0);
            assert!(a_first, "the database's own collation is a language's");
            let store = PgStore::open_with_clock(&url, clock)?;
            Ok(Box::new(store) as Box<dyn Backend>)
        }),
        shared: true,
    };
    conformance::keys_and_counts(&harness);
    conformance::scan_page_in_key_order(&harness);
    conformance::changed_page_visits_each_row_once(&harness);
    conformance::readers_follow_changes_creations_and_deletes(&harness);
}

/// `postgres://` URLs reach the store through the runtime's registry;
/// passwords never appear in locations or errors.
#[test]
fn urls_reach_the_store_and_never_show_passwords() {
    let Some(url) = database_or_skip("urls") else {
        return;
    };
    let backend = rederive_runtime::storage::url::open_url(&url)
        .unwrap()
        .expect("a URL opens a backend");
    assert_eq!(backend.revision().unwrap(), Revision::ZERO);
    assert_eq!(backend.connector().unwrap().location(), url);
    Db::open(&url).expect("Db::open takes a postgres:// URL");

    // The test server trusts every connection: a password is ignored, and
    // must not show.
    let with_password = url.replacen("postgres://postgres@", "postgresql://postgres:secret@", 1);
    let backend = rederive_runtime::storage::url::open_url(&with_password)
        .unwrap()
        .unwrap();
    let location = backend.connector().unwrap().location();
    assert!(
        location.contains("postgres:***@") && !location.contains("secret"),
        "{location}"
    );

    let Err(e) = PgStore::open("postgres://me:secret@127.0.0.1:1/nothing") else {
        panic!("nothing listens on port 1");
    };
    let m = e.to_string();
    assert!(
        m.contains("cannot connect to postgres://me:***@127.0.0.1:1/nothing"),
        "{m}"
    );
    assert!(!m.contains("secret"), "{m}");
}

/// Values that do not fit their columns, keys of the wrong type, names
/// PostgreSQL would cut, and tables that do not exist are errors; the
/// store goes on working.
#[test]
fn bad_input_is_an_error_never_a_panic() {
    let Some(url) = database_or_skip("bad_input") else {
        return;
    };
    let store = PgStore::open(&url).unwrap();
    let g = graph();
    store.apply_schema(&g, &codes(&g)).unwrap();
    let int = Value::Integer;
    let text = |s: &str| Value::Text(s.to_owned());
    assert!(
        store.put_rows(&SRC, &[vec![int(1)]]).is_err(),
        "too few values"
    );
    assert!(matches!(
        store.put_rows(&SRC, &[vec![text("x"), text("a")]]),
        Err(Error::KeyType { .. })
    ));
    let e = store.put_rows(&SRC, &[vec![int(1), int(5)]]).unwrap_err();
    assert!(e.to_string().contains("`body`"), "{e}");
    let len = g.table_id("Len").unwrap();
    let outcome = Outcome {
        key: Key::from("abc"),
        new: false,
        ins: vec![Revision::new(1)],
        reads: vec![],
        kind: OutcomeKind::Ok(vec![int(1)]),
    };
    let w = store.write_outcomes(
        &g,
        len,
        "code-1",
        &[outcome],
        Pass::Refresh,
        &Fence::Unfenced,
        Revision::ZERO,
    );
    assert!(matches!(w, Err(Error::KeyType { .. })), "{w:?}");
    let e = store.row_count("Nope").unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let src = g.table_id("Src").unwrap();
    assert_eq!(
        store
            .load(&g, &[src, len], &Key::from("zzz"), Values::All)
            .unwrap(),
        [None, None],
        "a text key of an integer table finds nothing"
    );

    static LONG: TableInfo = TableInfo {
        name: "AVeryLongRowTypeNameThatPostgresWouldCutAtSixtyThreeBytesWithoutTelling",
        type_path: "Long",
        input: true,
        columns: &[col("id", SqlType::Integer)],
        key: Some(0),
    };
    let long = Graph::new(vec![&SRC, &LONG], vec![]).unwrap();
    let e = store.apply_schema(&long, &[None, None]).unwrap_err();
    assert!(e.to_string().contains("63"), "{e}");
    assert_eq!(store.revision().unwrap(), Revision::ZERO, "still working");
    assert!(store.put_rows(&SRC, &src_rows(1..2)).is_ok());
}

/// Between `begin_snapshot` and a write (or `end_snapshot`), reads see
/// one state of the database.
#[test]
fn a_snapshot_reads_one_state_until_a_write() {
    let Some(url) = database_or_skip("snapshot") else {
        return;
    };
    let clock = Arc::new(ManualClock::new(0));
    let a = PgStore::open_with_clock(&url, clock.clone()).unwrap();
    let b = PgStore::open_with_clock(&url, clock).unwrap();
    let g = graph();
    a.apply_schema(&g, &codes(&g)).unwrap();
    let src = g.table_id("Src").unwrap();
    let body = |s: &PgStore| -> Value {
        let states = s.load(&g, &[src], &Key::Int(1), Values::All).unwrap();
        states[0].as_ref().unwrap().values[1].clone()
    };
    let put = |s: &PgStore, v: &str| {
        s.put_rows(&SRC, &[vec![Value::Integer(1), Value::Text(v.into())]])
            .unwrap()
    };
    put(&a, "a");
    a.begin_snapshot().unwrap();
    assert_eq!(body(&a), Value::Text("a".into()));
    put(&b, "b");
    assert_eq!(body(&a), Value::Text("a".into()), "inside the snapshot");
    assert_eq!(body(&b), Value::Text("b".into()));
    a.end_snapshot().unwrap();
    assert_eq!(body(&a), Value::Text("b".into()), "after end_snapshot");

    a.begin_snapshot().unwrap();
    assert_eq!(body(&a), Value::Text("b".into()));
    put(&b, "c");
    assert_eq!(body(&a), Value::Text("b".into()));
    put(&a, "d");
    assert_eq!(
        body(&a),
        Value::Text("d".into()),
        "a write ends the snapshot"
    );
}

/// Three engines on three connections refresh one table at once: every
/// row is computed, once.
#[test]
fn three_workers_compute_every_row_once() {
    let Some(url) = database_or_skip("three_workers") else {
        return;
    };
    let rows = 240;
    let store = PgStore::open(&url).unwrap();
    let g = graph();
    store.apply_schema(&g, &codes(&g)).unwrap();
    store.put_rows(&SRC, &src_rows(0..rows)).unwrap();
    CALLS.store(0, Ordering::SeqCst);
    let barrier = Arc::new(Barrier::new(3));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let db = Db::open_backend(Box::new(PgStore::open(&url).unwrap()), graph()).unwrap();
                barrier.wait();
                let mut computed = 0;
                // A worker may stop while others still hold rows: go again
                // until nothing is left to anyone.
                for _ in 0..50 {
                    let report = db.refresh().unwrap();
                    computed += report.computed;
                    if report.skipped == 0 && report.calls() == 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                computed
            })
        })
        .collect();
    let computed: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(computed, rows as u64, "each row computed and written once");
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        rows as usize,
        "each row computed once"
    );
    assert_eq!(store.row_count("Len").unwrap(), rows as u64);
    let len = g.table_id("Len").unwrap();
    for k in [0, 5, 13] {
        let s = store.load(&g, &[len], &Key::Int(k), Values::All).unwrap();
        assert_eq!(s[0].as_ref().unwrap().values, [Value::Integer(k % 7)]);
    }
}

/// While another transaction holds a lease's row lock (as a heartbeat
/// does for a moment): another owner's claim does not wait for it, and
/// finds the row in use; the lease's own owner waits, and keeps it.
#[test]
fn claims_wait_only_for_their_own_leases() {
    let Some(url) = database_or_skip("claims_wait_only_for_their_own") else {
        return;
    };
    let a = Arc::new(PgStore::open(&url).unwrap());
    let b = Arc::new(PgStore::open(&url).unwrap());
    a.register_worker("w1", TTL).unwrap();
    let key = |k: i64| Key::Int(k);
    let claim = |s: &Arc<PgStore>, table: &'static str, k: i64, owner: &'static str, mode| {
        let s = s.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let worker = if owner == "o1" { "w1" } else { "w2" };
            let c = s.claim(table, &[&Key::Int(k)], worker, owner, TTL, mode);
            let _ = tx.send(c.map(|c| (matches!(c.fence, Fence::Table { .. }), c.granted)));
        });
        rx
    };
    let t = a
        .claim("T", &[&key(1)], "w1", "o1", TTL, ClaimMode::TableIfAlone)
        .unwrap();
    assert!(matches!(t.fence, Fence::Table { .. }));
    let r = a
        .claim("R", &[&key(10)], "w1", "o1", TTL, ClaimMode::Rows)
        .unwrap();
    assert_eq!(r.granted, [true]);

    for (table, lock) in [
        (
            "T",
            "UPDATE rederive_table_leases SET expires_ms = expires_ms WHERE tbl = 'T'",
        ),
        (
            "R",
            "UPDATE rederive_leases SET expires_ms = expires_ms WHERE tbl = 'R'",
        ),
    ] {
        let k = if table == "T" { 2 } else { 10 };
        let mut holder = admin(&url);
        let mut held = holder.transaction().unwrap();
        held.execute(lock, &[]).unwrap();

        let other = claim(&b, table, k, "o2", ClaimMode::Rows);
        let got = other
            .recv_timeout(Duration::from_secs(10))
            .expect("another owner's claim does not wait for the lock")
            .unwrap();
        assert_eq!(
            got,
            (false, vec![false]),
            "{table}: in use by another owner"
        );

        let mode = if table == "T" {
            ClaimMode::TableIfAlone
        } else {
            ClaimMode::Rows
        };
        let own = claim(&a, table, k, "o1", mode);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            own.try_recv().is_err(),
            "{table}: the owner waits for its own lease's lock"
        );
        held.commit().unwrap();
        let got = own.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        assert_eq!(
            got,
            (table == "T", vec![true]),
            "{table}: the owner keeps its lease"
        );
    }
}

/// An expired lease whose row another transaction has locked (another
/// worker taking it over, or giving it back, at this moment) is in use:
/// a claim that would take it over does not wait for that lock
/// (`FOR UPDATE SKIP LOCKED`), and finds the row not granted; once the lock
/// is gone, the claim takes it over.
#[test]
fn taking_over_an_expired_lease_never_waits_for_a_lock() {
    let Some(url) = database_or_skip("takeover_never_waits") else {
        return;
    };
    let a = Arc::new(PgStore::open(&url).unwrap());
    let b = Arc::new(PgStore::open(&url).unwrap());
    let k = Key::Int(7);
    let first = a
        .claim(
            "R",
            &[&k],
            "w1",
            "o1",
            Duration::from_millis(1),
            ClaimMode::Rows,
        )
        .unwrap();
    assert_eq!(first.granted, [true]);
    std::thread::sleep(Duration::from_millis(20));

    let mut holder = admin(&url);
    let mut held = holder.transaction().unwrap();
    held.execute(
        "SELECT 1 FROM rederive_leases WHERE tbl = 'R' FOR UPDATE",
        &[],
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let b = b.clone();
        std::thread::spawn(move || {
            let c = b.claim("R", &[&Key::Int(7)], "w2", "o2", TTL, ClaimMode::Rows);
            let _ = tx.send(c.map(|c| c.granted));
        });
    }
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a claim taking over an expired lease waited for another transaction's lock")
        .unwrap();
    assert_eq!(got, [false], "a locked lease is in use");
    held.commit().unwrap();
    let got = b
        .claim("R", &[&k], "w2", "o2", TTL, ClaimMode::Rows)
        .unwrap();
    assert_eq!(got.granted, [true], "the expired lease is taken over");
}

/// A transaction PostgreSQL aborts to break a deadlock is run again by the
/// store: the caller sees it succeed.
#[test]
fn a_deadlock_victim_is_run_again() {
    let Some(url) = database_or_skip("deadlock_victim") else {
        return;
    };
    let store = Arc::new(PgStore::open(&url).unwrap());
    store.register_worker("w", TTL).unwrap();
    let keys: Vec<Key> = (0..3).map(Key::Int).collect();
    let refs: Vec<&Key> = keys.iter().collect();
    let c = store
        .claim("T", &refs, "w", "o", TTL, ClaimMode::Rows)
        .unwrap();
    assert_eq!(c.granted, [true, true, true]);

    let mut holder = admin(&url);
    let mut held = holder.transaction().unwrap();
    // Holds the worker's registration, which `release_worker` deletes last.
    held.execute(
        "UPDATE rederive_workers SET expires_ms = expires_ms WHERE worker = 'w'",
        &[],
    )
    .unwrap();
    let releasing = {
        let store = store.clone();
        std::thread::spawn(move || store.release_worker("w"))
    };
    // `release_worker` has deleted (locked) the leases and waits for the
    // registration; asking for the leases closes the cycle. The store's
    // transaction, waiting longer, is the one PostgreSQL aborts.
    std::thread::sleep(Duration::from_millis(300));
    held.execute(
        "UPDATE rederive_leases SET expires_ms = expires_ms WHERE worker = 'w'",
        &[],
    )
    .expect("the other transaction was the deadlock's victim");
    held.commit().unwrap();
    releasing
        .join()
        .unwrap()
        .expect("the victim ran again, and succeeded");
    assert_eq!(store.running("T").unwrap(), []);
    let c = store
        .claim("T", &refs, "w2", "o2", TTL, ClaimMode::Rows)
        .unwrap();
    assert_eq!(c.granted, [true, true, true], "every lease was given back");
}

/// Watch mode's hints: a write that takes a revision on any connection
/// wakes a subscriber (its own connection's writes too: the change token,
/// not the hint, tells whose write it was); a write that fails sends none;
/// a listener whose connection is ended connects again, and says so with
/// one wake; dropping the subscription ends its thread.
#[test]
fn hints_of_writes_reach_subscribers_and_survive_a_lost_listener() {
    let Some(url) = database_or_skip("hints") else {
        return;
    };
    let store = PgStore::open(&url).unwrap();
    let g = graph();
    store.apply_schema(&g, &codes(&g)).unwrap();
    let writer = store.connector().unwrap().connect().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let subscription = store
        .connector()
        .unwrap()
        .subscribe(Arc::new(move || {
            let _ = tx.send(());
        }))
        .unwrap()
        .expect("PostgreSQL sends hints");
    let woken = |within: Duration| rx.recv_timeout(within).is_ok();
    let drain = || while rx.recv_timeout(Duration::from_millis(300)).is_ok() {};

    assert!(!woken(Duration::from_millis(300)), "no write, no hint");
    writer.put_rows(&SRC, &src_rows(1..3)).unwrap();
    assert!(woken(Duration::from_secs(10)), "another connection wrote");
    drain();
    store.put_rows(&SRC, &src_rows(3..4)).unwrap();
    assert!(woken(Duration::from_secs(10)), "this connection wrote");
    drain();
    // Reads, and a write refused before it takes a revision, send nothing.
    store.revision().unwrap();
    assert!(writer.put_rows(&SRC, &[vec![Value::Integer(9)]]).is_err());
    assert!(!woken(Duration::from_millis(500)), "nothing committed");

    // The listener's connection ends: it connects again (one wake for
    // what it may have missed), and hears later writes.
    let mut admin = admin(&url);
    let ended = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            &[],
        )
        .unwrap();
    assert_eq!(ended, 1, "one listening connection");
    assert!(woken(Duration::from_secs(10)), "reconnected");
    drain();
    writer.put_rows(&SRC, &src_rows(4..5)).unwrap();
    assert!(woken(Duration::from_secs(10)), "heard after reconnecting");

    let started = std::time::Instant::now();
    drop(subscription);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "dropping stops it"
    );
    // The server notices the closed connection soon after.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listeners: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN%'",
                &[],
            )
            .unwrap()
            .get(0);
        if listeners == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the listening connection did not close"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A store opened by URL keeps time on the server's clock: a lease's end
/// is the server's time plus its length, within the measure's error (here
/// the server runs on this machine: the unit tests of the offset show it
/// follows a server whose clock is far off).
#[test]
fn leases_are_timed_on_the_servers_clock() {
    let Some(url) = database_or_skip("leases_on_server_time") else {
        return;
    };
    let store = PgStore::open(&url).unwrap();
    store.register_worker("w", TTL).unwrap();
    store
        .claim("T", &[&Key::Int(1)], "w", "o", TTL, ClaimMode::Rows)
        .unwrap();
    let mut admin = admin(&url);
    let left: i64 = admin
        .query_one(
            "SELECT expires_ms - (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
             FROM rederive_leases",
            &[],
        )
        .unwrap()
        .get(0);
    let ttl = TTL.as_millis() as i64;
    assert!(
        (ttl - 5_000..=ttl).contains(&left),
        "{left} ms left of {ttl}"
    );
}
