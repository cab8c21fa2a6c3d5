//! Replicas: fork, offline writes, sync, conflicts and their resolution,
//! retiring, the refusals (unrelated databases, copies made by hand), the
//! clocks stored with rows, and the same over HTTP on loopback.
use rederive::replica::version::Version;
use rederive::{derive_table, Db, Error, Row};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Note {
    #[row(key)]
    pub id: i64,
    pub text: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Shout {
    pub loud: String,
}

#[derive_table]
fn shout(n: &Note) -> Shout {
    Shout {
        loud: n.text.to_uppercase(),
    }
}

fn note(id: i64, text: &str) -> Note {
    Note {
        id,
        text: text.into(),
    }
}

fn texts(db: &Db, id: i64) -> Vec<Option<String>> {
    db.versions::<Note>(id)
        .unwrap()
        .into_iter()
        .map(|v| v.map(|n| n.text))
        .collect()
}

#[test]
fn two_laptops_edit_offline_conflict_and_resolve() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let desk = Db::open(dir.path().join("desk.db"))?;
    desk.put(note(1, "groceries"))?;
    desk.put(note(2, "call mum"))?;
    desk.refresh()?;
    assert_eq!(texts(&desk, 1), vec![Some("groceries".into())]);
    assert_eq!(
        texts(&desk, 9),
        Vec::<Option<String>>::new(),
        "never written"
    );

    let laptop = desk.fork_replica(dir.path().join("laptop.db"))?;
    assert_eq!(laptop.get::<Note>(1)?.text, "groceries");
    assert_eq!(
        laptop.get::<Shout>(2)?.loud,
        "CALL MUM",
        "derived rows came along"
    );
    let r = laptop.sync_with(&desk)?;
    assert_eq!(
        (r.sent, r.received),
        (0, 0),
        "nothing new since the fork: {r:?}"
    );

    // Offline: an edit on each side, of different rows.
    desk.put(note(2, "call mum back"))?;
    laptop.put(note(3, "book train"))?;
    let r = laptop.sync_with(&desk)?;
    assert_eq!((r.sent, r.received, r.conflicts), (1, 1, 0), "{r:?}");
    for db in [&desk, &laptop] {
        assert_eq!(db.get::<Note>(2)?.text, "call mum back");
        assert_eq!(db.get::<Shout>(3)?.loud, "BOOK TRAIN");
    }
    // Again: nothing to send either way.
    let r = desk.sync_with(&laptop)?;
    assert_eq!((r.sent, r.received), (0, 0), "{r:?}");

    // A conflict: the same row edited on both.
    desk.put(note(1, "groceries: milk"))?;
    laptop.put(note(1, "groceries: eggs"))?;
    let r = desk.sync_with(&laptop)?;
    assert_eq!(r.conflicts, 1, "{r:?}");
    let here = texts(&desk, 1);
    assert_eq!(here.len(), 2, "{here:?}");
    assert_eq!(
        texts(&laptop, 1),
        here,
        "the same versions, in the same order"
    );
    let winner = here[0].clone().unwrap();
    for db in [&desk, &laptop] {
        assert_eq!(db.get::<Note>(1)?.text, winner, "one winner everywhere");
        assert_eq!(db.get::<Shout>(1)?.loud, winner.to_uppercase());
        let c = db.conflicts()?;
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].table.as_str(), c[0].versions), ("Note", 2));
    }
    // Resolved on the laptop (which has seen both).
    laptop.put(note(1, "groceries: milk, eggs"))?;
    assert!(laptop.conflicts()?.is_empty());
    desk.sync_with(&laptop)?;
    for db in [&desk, &laptop] {
        assert_eq!(texts(db, 1), vec![Some("groceries: milk, eggs".into())]);
        assert!(db.conflicts()?.is_empty());
    }

    // An edit against a deletion: both kept; the row wins meanwhile.
    desk.delete::<Note>(3)?;
    laptop.put(note(3, "book train, seat 42"))?;
    laptop.sync_with(&desk)?;
    for db in [&desk, &laptop] {
        assert_eq!(texts(db, 3), vec![Some("book train, seat 42".into()), None]);
        assert_eq!(db.get::<Shout>(3)?.loud, "BOOK TRAIN, SEAT 42");
    }
    // Resolved by deleting, on the desk: gone everywhere.
    desk.delete::<Note>(3)?;
    desk.sync_with(&laptop)?;
    for db in [&desk, &laptop] {
        assert_eq!(texts(db, 3), vec![None], "a plain deletion");
        assert!(db.get::<Note>(3).is_err());
        assert!(db.get::<Shout>(3).is_err());
    }

    // The laptop retires into the desk: its last edit arrives, its writes stop.
    laptop.put(note(4, "from the laptop"))?;
    laptop.retire_into(&desk)?;
    assert_eq!(desk.get::<Note>(4)?.text, "from the laptop");
    match laptop.put(note(5, "too late")) {
        Err(Error::Replica { reason, .. }) => assert!(reason.contains("retired"), "{reason}"),
        other => panic!("a retired replica took a write: {other:?}"),
    }
    assert!(laptop.sync_with(&desk).is_err());
    desk.put(note(5, "the desk goes on"))?;
    Ok(())
}

#[test]
fn unrelated_databases_and_copies_made_by_hand_are_refused() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let a = Db::open(dir.path().join("a.db"))?;
    let b = Db::open(dir.path().join("b.db"))?;
    let err = a.sync_with(&b).unwrap_err().to_string();
    assert!(err.contains("never forked"), "{err}");
    let a2 = a.fork_replica(dir.path().join("a2.db"))?;
    let b2 = b.fork_replica(dir.path().join("b2.db"))?;
    let err = a2.sync_with(&b2).unwrap_err().to_string();
    assert!(err.contains("not a replica of this one"), "{err}");
    drop(a2);
    std::fs::copy(dir.path().join("a2.db"), dir.path().join("copy.db")).unwrap();
    let a2 = Db::open(dir.path().join("a2.db"))?;
    let copy = Db::open(dir.path().join("copy.db"))?;
    let err = copy.sync_with(&a2).unwrap_err().to_string();
    assert!(err.contains("copy of the other made by hand"), "{err}");
    let err = match a.fork_replica(dir.path().join("a2.db")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("forked over an existing file"),
    };
    assert!(err.contains("exists already"), "{err}");
    Ok(())
}

#[test]
fn a_database_that_never_forked_keeps_tombstones_and_no_clocks() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("plain.db"))?;
    assert!(db.replica_meta()?.is_none());
    db.put(note(1, "one"))?;
    assert_eq!(texts(&db, 1), vec![Some("one".into())]);
    db.delete::<Note>(1)?;
    assert_eq!(texts(&db, 1), vec![None], "a plain deletion");
    assert!(!db.delete::<Note>(7)?);
    assert_eq!(texts(&db, 7), Vec::<Option<String>>::new(), "never written");
    db.put(note(1, "again"))?;
    assert_eq!(texts(&db, 1), vec![Some("again".into())]);
    db.delete::<Note>(1)?;
    // The tombstone is part of the genesis both replicas share; a write on
    // either replaces it everywhere.
    let other = db.fork_replica(dir.path().join("other.db"))?;
    assert_eq!(texts(&other, 1), vec![None]);
    other.put(note(1, "back"))?;
    db.sync_with(&other)?;
    assert_eq!(texts(&db, 1), vec![Some("back".into())]);
    assert_eq!(db.get::<Shout>(1)?.loud, "BACK");
    Ok(())
}

mod stamps {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(bool, i64),
        Delete(bool, i64),
        Sync,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<bool>(), 0..3i64).prop_map(|(a, k)| Op::Put(a, k)),
            2 => (any::<bool>(), 0..3i64).prop_map(|(a, k)| Op::Delete(a, k)),
            2 => Just(Op::Sync),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// The clocks stored with rows: a write's clock is strictly newer
        /// than every version its replica held of the key; two writes with
        /// no sync between them on different replicas are concurrent; a
        /// sync keeps exactly the versions no other has seen.
        #[test]
        fn clocks_stored_with_rows_order_writes_causally(ops in proptest::collection::vec(op(), 1..30)) {
            let dir = tempfile::tempdir().unwrap();
            let a = Db::open(dir.path().join("a.db")).unwrap();
            let b = a.fork_replica(dir.path().join("b.db")).unwrap();
            // The last write on each replica since the last sync, by key.
            let mut unsynced: [std::collections::HashMap<i64, Version>; 2] = Default::default();
            for op in ops {
                match op {
                    Op::Put(on_a, k) | Op::Delete(on_a, k) => {
                        let db = if on_a { &a } else { &b };
                        let before = db.stored_versions("Note", k).unwrap();
                        match op {
                            Op::Put(..) => db.put(note(k, &format!("{k}"))).map(|_| ()).unwrap(),
                            _ => db.delete::<Note>(k).map(|_| ()).unwrap(),
                        }
                        let after = db.stored_versions("Note", k).unwrap();
                        if after == before {
                            continue; // nothing changed: no version written
                        }
                        prop_assert_eq!(after.len(), 1);
                        let new = &after[0];
                        for old in &before {
                            prop_assert!(old.event.leq(&new.event) && old.event != new.event,
                                "{:?} not newer than {:?}", new.event, old.event);
                        }
                        let side = usize::from(!on_a);
                        if let Some(theirs) = unsynced[1 - side].get(&k) {
                            prop_assert!(!theirs.event.leq(&new.event) && !new.event.leq(&theirs.event),
                                "writes on two replicas with no sync between are concurrent");
                        }
                        unsynced[side].insert(k, new.clone());
                    }
                    Op::Sync => {
                        let union: Vec<Vec<Version>> = (0..3)
                            .map(|k| {
                                let mut v = a.stored_versions("Note", k).unwrap();
                                v.extend(b.stored_versions("Note", k).unwrap());
                                v
                            })
                            .collect();
                        a.sync_with(&b).unwrap();
                        for (k, all) in union.iter().enumerate() {
                            let kept = a.stored_versions("Note", k as i64).unwrap();
                            prop_assert_eq!(&kept, &b.stored_versions("Note", k as i64).unwrap());
                            for v in all {
                                let seen = kept.iter().any(|w| v.event.leq(&w.event));
                                prop_assert!(seen, "a version was dropped unseen");
                            }
                            for (i, x) in kept.iter().enumerate() {
                                for y in &kept[i + 1..] {
                                    prop_assert!(!x.event.leq(&y.event) && !y.event.leq(&x.event));
                                }
                            }
                        }
                        unsynced = Default::default();
                    }
                }
            }
        }
    }
}

/// Replicas over the network: one database served by
/// `rederive::replica::net::serve` in a thread (on loopback, port 0),
/// another syncing with it through `HttpPeer`; a conflict, its
/// resolution, retiring, and the errors a client sees.
mod over_http {
    use super::{note, texts, Note, Shout};
    use rederive::replica::net::{serve, HttpPeer};
    use rederive::replica::{retire, sync, Peer};
    use rederive::{Db, Error};
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::thread::JoinHandle;

    /// A database served in a thread until dropped.
    struct Served {
        url: String,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<rederive::Result<()>>>,
    }

    impl Served {
        /// Serves the database at `path` on 127.0.0.1, on a free port.
        fn start(path: PathBuf) -> Served {
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, rx) = mpsc::channel::<SocketAddr>();
            let flag = stop.clone();
            let thread = std::thread::spawn(move || {
                let db = Db::open(&path)?;
                serve(&db, "127.0.0.1:0", &flag, |addr| {
                    tx.send(addr).unwrap();
                })
            });
            let addr = match rx.recv() {
                Ok(addr) => addr,
                Err(_) => panic!("the server never started: {:?}", thread.join()),
            };
            assert!(addr.ip().is_loopback(), "{addr}");
            assert_ne!(addr.port(), 0);
            Served {
                url: format!("http://{addr}"),
                stop,
                thread: Some(thread),
            }
        }

        /// Stops the server; returns what `serve` returned.
        fn stop(mut self) -> rederive::Result<()> {
            self.stop.store(true, Ordering::SeqCst);
            self.thread
                .take()
                .unwrap()
                .join()
                .expect("the server panicked")
        }
    }

    impl Drop for Served {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    #[test]
    fn a_replica_syncs_over_http_with_a_conflict_and_its_resolution() -> rederive::Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let desk_path = dir.path().join("desk.db");
        let desk = Db::open(&desk_path)?;
        desk.put(note(1, "groceries"))?;
        desk.put(note(2, "call mum"))?;
        desk.refresh()?;
        let laptop = desk.fork_replica(dir.path().join("laptop.db"))?;

        // The desk is served; this thread's handle on it stays open to look
        // at it (SQLite serializes the writes).
        let served = Served::start(desk_path.clone());
        let remote = HttpPeer::new(&served.url)?;
        let info = remote.describe()?;
        assert_eq!(info.meta, desk.replica_meta()?);
        assert!(info.location.starts_with(&served.url), "{}", info.location);

        let r = sync(&laptop, &remote)?;
        assert_eq!((r.sent, r.received), (0, 0), "nothing new: {r:?}");

        // Offline edits of different rows, then of the same row.
        desk.put(note(2, "call mum back"))?;
        laptop.put(note(3, "book train"))?;
        desk.put(note(1, "groceries: milk"))?;
        laptop.put(note(1, "groceries: eggs"))?;
        let r = sync(&laptop, &remote)?;
        assert_eq!(r.conflicts, 1, "{r:?}");
        assert!(r.sent >= 2 && r.received >= 2, "{r:?}");
        let here = texts(&laptop, 1);
        assert_eq!(here.len(), 2, "{here:?}");
        assert_eq!(texts(&desk, 1), here, "the same versions on both sides");
        let winner = here[0].clone().unwrap();
        for db in [&desk, &laptop] {
            assert_eq!(db.get::<Note>(1)?.text, winner, "one winner everywhere");
            assert_eq!(db.get::<Note>(2)?.text, "call mum back");
            assert_eq!(db.get::<Shout>(3)?.loud, "BOOK TRAIN");
            let c = db.conflicts()?;
            assert_eq!(c.len(), 1, "{c:?}");
            assert_eq!((c[0].table.as_str(), c[0].versions), ("Note", 2));
        }

        // Resolved on the laptop, which has seen both versions.
        laptop.put(note(1, "groceries: milk, eggs"))?;
        let r = sync(&laptop, &remote)?;
        assert_eq!((r.sent, r.received, r.conflicts), (1, 0, 0), "{r:?}");
        for db in [&desk, &laptop] {
            assert_eq!(texts(db, 1), vec![Some("groceries: milk, eggs".into())]);
            assert!(db.conflicts()?.is_empty());
            assert_eq!(db.get::<Shout>(1)?.loud, "GROCERIES: MILK, EGGS");
        }

        // Derived rows travel over the network too, both ways.
        desk.refresh()?;
        laptop.refresh()?;
        laptop.put(note(6, "pack bags"))?;
        laptop.refresh()?;
        desk.put(note(7, "water plants"))?;
        desk.refresh()?;
        let r = sync(&laptop, &remote)?;
        assert_eq!((r.reused_here, r.reused_there), (1, 1), "{r:?}");
        assert_eq!(desk.refresh()?.calls() + laptop.refresh()?.calls(), 0);
        assert_eq!(desk.get::<Shout>(6)?.loud, "PACK BAGS");
        assert_eq!(laptop.get::<Shout>(7)?.loud, "WATER PLANTS");

        // The laptop retires into the desk, over the network.
        laptop.put(note(4, "from the laptop"))?;
        retire(&laptop, &remote)?;
        assert_eq!(desk.get::<Note>(4)?.text, "from the laptop");
        match laptop.put(note(5, "too late")) {
            Err(Error::Replica { reason, .. }) => assert!(reason.contains("retired"), "{reason}"),
            other => panic!("a retired replica took a write: {other:?}"),
        }
        // A refusal from the server reaches the client as its text.
        let err = retire(&laptop, &remote).unwrap_err().to_string();
        assert!(err.contains("retired already"), "{err}");
        served.stop()?;
        desk.put(note(5, "the desk goes on"))?;
        Ok(())
    }

    #[test]
    fn the_client_names_what_went_wrong() -> rederive::Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let a_path = dir.path().join("a.db");
        let a = Db::open(&a_path)?;
        a.put(note(1, "a"))?;
        let a2 = a.fork_replica(dir.path().join("a2.db"))?;
        let b = Db::open(dir.path().join("b.db"))?;
        let b2 = b.fork_replica(dir.path().join("b2.db"))?;

        // Nothing listens: bind a port, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let nowhere = format!("http://127.0.0.1:{port}");
        match sync(&a2, &HttpPeer::new(&nowhere)?) {
            Err(Error::Replica { replica, reason }) => {
                assert_eq!(replica, nowhere);
                assert!(reason.contains("cannot reach"), "{reason}");
            }
            other => panic!("synced with nothing: {other:?}"),
        }

        let served = Served::start(a_path);
        let remote = HttpPeer::new(&served.url)?;
        // An unrelated replica is refused, naming the server.
        let err = sync(&b2, &remote).unwrap_err().to_string();
        assert!(err.contains("not a replica of this one"), "{err}");
        assert!(err.contains(&served.url), "{err}");

        // A server's errors come back as its text: a version of a table it
        // does not have is refused.
        let bogus = rederive::replica::version::Version {
            table: "NoSuchTable".into(),
            key: rederive::Key::Int(1),
            event: rederive::replica::version::genesis(),
            values: None,
        };
        let upto = rederive::storage::SyncCursor::start();
        match remote.apply("someone", &[bogus], &upto) {
            Err(Error::Replica { replica, reason }) => {
                assert_eq!(replica, served.url);
                assert!(reason.contains("NoSuchTable"), "{reason}");
            }
            other => panic!("the server took a version of no table: {other:?}"),
        }

        // Requests that are not the protocol: refused with a status, never a
        // crash of the server.
        let http = raw_get(&format!("{}/nothing-here", served.url));
        assert_eq!(http.0, 404, "{http:?}");
        assert!(http.1.contains("no such route"), "{http:?}");
        let http = raw_get(&format!("{}/replica/apply", served.url));
        assert_eq!(http.0, 405, "{http:?}");
        let http = raw_get(&format!("{}/replica/checkpoint", served.url));
        assert_eq!(http.0, 400, "{http:?}");
        // And the server still answers.
        assert_eq!(remote.describe()?.meta, a.replica_meta()?);
        served.stop()?;
        drop(a2);
        Ok(())
    }

    #[test]
    fn serving_an_address_taken_is_an_error() -> rederive::Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("a.db"))?;
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let stop = AtomicBool::new(false);
        let mut ready = false;
        match serve(&db, &addr, &stop, |_| ready = true) {
            Err(Error::Replica { reason, .. }) => {
                assert!(reason.contains("cannot listen on"), "{reason}");
                assert!(reason.contains(&addr), "{reason}");
            }
            other => panic!("served on a taken address: {other:?}"),
        }
        assert!(!ready);
        Ok(())
    }

    /// A `GET` with a raw TCP request: the status and the body.
    fn raw_get(url: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {out}"));
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_owned())
    }
}
