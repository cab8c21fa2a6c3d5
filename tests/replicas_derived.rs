//! Derived rows travel between replicas: a pipeline computed on one is
//! stored on the other by a sync instead of being computed again, as long
//! as the other's inputs and code version match; rows of other inputs or
//! other code, and rows that read other rows, are computed locally.
mod common;

use rederive::{derive_table, Ctx, Db, Graph, NodeBuilder, Row};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Doc {
    #[row(key)]
    pub id: i64,
    pub text: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Words {
    pub n: i64,
}

/// Derived from a derived table: the pipeline's second step.
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Size {
    pub class: String,
}

/// Reads other documents: never travels.
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Links {
    pub known: i64,
}

/// The output of a run-time node whose code version a test chooses.
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Upper {
    pub text: String,
}

/// Calls per function, in this process.
static CALLS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());
/// The counters are global: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn called(f: &'static str) {
    *CALLS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(f)
        .or_default() += 1;
}

/// The calls since the last look, per function (and the counters reset).
fn calls() -> BTreeMap<&'static str, u64> {
    std::mem::take(&mut *CALLS.lock().unwrap_or_else(|e| e.into_inner()))
}

fn serial() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    calls();
    guard
}

fn count_words(text: &str) -> i64 {
    text.split_whitespace().count() as i64
}

#[derive_table]
fn words(d: &Doc) -> Words {
    called("words");
    Words {
        n: count_words(&d.text),
    }
}

fn class(n: i64) -> &'static str {
    if n > 3 {
        "long"
    } else {
        "short"
    }
}

#[derive_table]
fn size(w: &Words) -> Size {
    called("size");
    Size {
        class: class(w.n).into(),
    }
}

/// Counts the words `#N` that name an existing document.
#[derive_table(reads = [Doc])]
fn links(d: &Doc, ctx: &Ctx) -> Result<Links, String> {
    called("links");
    let mut known = 0;
    for word in d.text.split_whitespace() {
        if let Some(id) = word.strip_prefix('#').and_then(|n| n.parse::<i64>().ok()) {
            if ctx.get::<Doc>(id).map_err(|e| e.to_string())?.is_some() {
                known += 1;
            }
        }
    }
    Ok(Links { known })
}

/// This binary's graph with the `upper` node at code version `version`.
fn graph(version: &str) -> Graph {
    let upper = NodeBuilder::new("upper")
        .input::<Doc>()
        .version(version)
        .output(|_, inputs| {
            called("upper");
            let d: Doc = inputs.get(0)?;
            Ok(Upper {
                text: d.text.to_uppercase(),
            })
        });
    common::graph_with_nodes(vec![upper]).expect("the graph")
}

fn open(path: &Path, version: &str) -> Db {
    Db::open_with(path, graph(version)).expect("open")
}

fn doc(id: i64, text: &str) -> Doc {
    Doc {
        id,
        text: text.into(),
    }
}

/// Every derived row of `db` for `ids` equals what the functions return
/// for its input now.
fn check_clean(db: &Db, ids: impl IntoIterator<Item = i64>) {
    for id in ids {
        let d = db.get::<Doc>(id).unwrap();
        let n = count_words(&d.text);
        assert_eq!(db.get::<Words>(id).unwrap().n, n, "Words {id}");
        assert_eq!(db.get::<Size>(id).unwrap().class, class(n), "Size {id}");
        assert_eq!(
            db.get::<Upper>(id).unwrap().text,
            d.text.to_uppercase(),
            "Upper {id}"
        );
    }
}

fn calls_of(c: &BTreeMap<&'static str, u64>, f: &str) -> u64 {
    c.get(f).copied().unwrap_or(0)
}

#[test]
fn a_pipeline_computed_on_one_replica_is_not_computed_on_the_other() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let desk = open(&dir.path().join("desk.db"), "1");
    let laptop = desk.fork_replica(dir.path().join("laptop.db")).unwrap();
    desk.put_all((0..50).map(|i| doc(i, &format!("doc {i} links to #{}", i + 1))))
        .unwrap();
    desk.refresh().unwrap();
    let c = calls();
    assert_eq!(calls_of(&c, "words"), 50, "{c:?}");

    let r = laptop.sync_with(&desk).unwrap();
    assert_eq!(r.received, 50, "{r:?}");
    // Words, Size and Upper travel; Links reads other rows, so it does not.
    assert_eq!((r.reused_here, r.reused_there), (150, 0), "{r:?}");
    let refreshed = laptop.refresh().unwrap();
    let c = calls();
    assert_eq!(
        (
            calls_of(&c, "words"),
            calls_of(&c, "size"),
            calls_of(&c, "upper")
        ),
        (0, 0, 0),
        "nothing of the pipeline computed again: {c:?} {refreshed:?}"
    );
    assert_eq!(calls_of(&c, "links"), 50, "{c:?}");
    check_clean(&laptop, 0..50);
    assert_eq!(laptop.get::<Links>(3).unwrap().known, 1);
    assert_eq!(
        laptop.get::<Links>(49).unwrap().known,
        0,
        "#50 does not exist"
    );

    // An edit on the laptop, refreshed there, travels with its results.
    laptop
        .put(doc(7, "a much longer text than before, now"))
        .unwrap();
    laptop.refresh().unwrap();
    calls();
    let r = desk.sync_with(&laptop).unwrap();
    assert_eq!((r.received, r.reused_here), (1, 3), "{r:?}");
    desk.refresh().unwrap();
    let c = calls();
    assert_eq!(calls_of(&c, "words") + calls_of(&c, "upper"), 0, "{c:?}");
    check_clean(&desk, [7]);
    assert_eq!(desk.get::<Size>(7).unwrap().class, "long");

    // An edit synced before it was refreshed: nothing fresh to offer, so
    // the other side computes it.
    desk.put(doc(8, "unrefreshed")).unwrap();
    let r = laptop.sync_with(&desk).unwrap();
    assert_eq!((r.received, r.reused_here), (1, 0), "{r:?}");
    laptop.refresh().unwrap();
    let c = calls();
    assert_eq!(calls_of(&c, "words"), 1, "{c:?}");
    check_clean(&laptop, 0..50);
    check_clean(&desk, 0..50);
}

#[test]
fn rows_of_other_code_or_other_inputs_are_computed_locally() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let desk = open(&dir.path().join("desk.db"), "1");
    desk.put_all((0..10).map(|i| doc(i, &format!("doc {i}"))))
        .unwrap();
    desk.refresh().unwrap();
    calls();
    let laptop_path = dir.path().join("laptop.db");
    drop(desk.fork_replica(&laptop_path).unwrap());
    // The laptop runs another version of `upper`.
    let laptop = open(&laptop_path, "2");
    laptop.refresh().unwrap();
    let c = calls();
    assert_eq!(
        (calls_of(&c, "upper"), calls_of(&c, "words")),
        (10, 0),
        "only the new code's rows: {c:?}"
    );

    desk.put(doc(20, "new on the desk")).unwrap();
    desk.refresh().unwrap();
    calls();
    let r = laptop.sync_with(&desk).unwrap();
    assert_eq!(r.reused_here, 2, "Words and Size, not Upper: {r:?}");
    laptop.refresh().unwrap();
    let c = calls();
    assert_eq!(
        (calls_of(&c, "upper"), calls_of(&c, "words")),
        (1, 0),
        "{c:?}"
    );

    // Concurrent edits of one document, each refreshed on its side. The
    // winner's side offers rows computed from the winner; the other side
    // stores them (its own were computed from the version that lost).
    desk.put(doc(3, "desk edit of three")).unwrap();
    laptop
        .put(doc(3, "the laptop edit of document three"))
        .unwrap();
    desk.refresh().unwrap();
    laptop.refresh().unwrap();
    calls();
    let r = laptop.sync_with(&desk).unwrap();
    assert_eq!(r.conflicts, 1, "{r:?}");
    assert_eq!(
        r.reused_here + r.reused_there,
        2,
        "the loser's side reuses Words and Size: {r:?}"
    );
    desk.refresh().unwrap();
    laptop.refresh().unwrap();
    let c = calls();
    assert_eq!(calls_of(&c, "words"), 0, "{c:?}");
    assert_eq!(calls_of(&c, "upper"), 1, "on the loser's side: {c:?}");
    for db in [&desk, &laptop] {
        check_clean(db, (0..10).chain([20]));
    }
    assert_eq!(
        desk.get::<Doc>(3).unwrap(),
        laptop.get::<Doc>(3).unwrap(),
        "one winner"
    );
}

#[test]
fn offers_that_do_not_fit_are_refused_and_stale_offers_ignored() {
    use rederive::replica::shared::SharedRow;
    use rederive::value::{Key, Value};
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let desk = open(&dir.path().join("desk.db"), "1");
    desk.put(doc(1, "one two")).unwrap();
    desk.refresh().unwrap();
    let laptop = desk.fork_replica(dir.path().join("laptop.db")).unwrap();
    desk.put(doc(1, "one two three four five")).unwrap();
    desk.refresh().unwrap();
    let offered = desk.shared_rows(&[("Doc".into(), Key::Int(1))]).unwrap();
    let mut tables: Vec<&str> = offered.iter().map(|r| r.table.as_str()).collect();
    tables.sort();
    assert_eq!(tables, ["Size", "Upper", "Words"], "{offered:?}");
    let words_offer = offered.iter().find(|r| r.table == "Words").unwrap();

    // The laptop has not received the edit: its inputs differ, so nothing
    // is stored.
    assert_eq!(laptop.adopt(&offered).unwrap(), 0);
    assert_eq!(laptop.get::<Words>(1).unwrap().n, 2);

    // Values of the wrong shape are an error that names the row.
    let bad = SharedRow {
        values: vec![Value::Text("five".into())],
        ..words_offer.clone()
    };
    let err = laptop.adopt(&[bad]).unwrap_err().to_string();
    assert!(err.contains("`Words` row 1"), "{err}");
    // Tables and keys this program does not know are skipped.
    let unknown = SharedRow {
        table: "Nope".into(),
        ..words_offer.clone()
    };
    assert_eq!(laptop.adopt(&[unknown]).unwrap(), 0);
    // An offer computed from other inputs than the current ones is not
    // stored, whatever its values.
    let sync = laptop.sync_with(&desk).unwrap();
    assert_eq!(sync.reused_here, 3, "{sync:?}");
    laptop.put(doc(1, "back to two")).unwrap();
    let other_inputs = SharedRow {
        values: vec![Value::Integer(99)],
        ..words_offer.clone()
    };
    assert_eq!(laptop.adopt(&[other_inputs]).unwrap(), 0);
    assert_eq!(laptop.get::<Words>(1).unwrap().n, 3);
    assert_eq!(laptop.get::<Doc>(1).unwrap().text, "back to two");
}

/// Calls of the pipeline's functions (the tables that travel).
fn pipeline(c: &BTreeMap<&'static str, u64>) -> u64 {
    calls_of(c, "words") + calls_of(c, "size") + calls_of(c, "upper")
}

#[test]
fn rows_refreshed_after_the_sync_that_brought_their_inputs_travel_too() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let desk = open(&dir.path().join("desk.db"), "1");
    let laptop = desk.fork_replica(dir.path().join("laptop.db")).unwrap();

    // Sync, refresh on the desk, sync, refresh on the laptop.
    desk.put_all((0..20).map(|i| doc(i, &format!("doc {i}"))))
        .unwrap();
    let r = laptop.sync_with(&desk).unwrap();
    assert_eq!((r.received, r.reused_here), (20, 0), "{r:?}");
    desk.refresh().unwrap();
    let r = laptop.sync_with(&desk).unwrap();
    assert_eq!((r.received, r.reused_here), (0, 60), "{r:?}");
    calls();
    laptop.refresh().unwrap();
    let c = calls();
    assert_eq!(pipeline(&c), 0, "sync, refresh, sync: {c:?}");
    check_clean(&laptop, 0..20);

    // Inputs already in sync; refresh on the laptop, sync from the desk's
    // side (the rows travel the other way), refresh on the desk.
    laptop
        .put_all((0..5).map(|i| doc(i, &format!("edited doc {i} with more words"))))
        .unwrap();
    let r = desk.sync_with(&laptop).unwrap();
    assert_eq!((r.received, r.reused_here), (5, 0), "{r:?}");
    laptop.refresh().unwrap();
    let r = desk.sync_with(&laptop).unwrap();
    assert_eq!(
        (r.received, r.reused_here, r.reused_there),
        (0, 15, 0),
        "{r:?}"
    );
    calls();
    desk.refresh().unwrap();
    let c = calls();
    assert_eq!(pipeline(&c), 0, "refresh, sync from the other side: {c:?}");
    check_clean(&desk, 0..20);

    // Refresh on one side, sync from either side: nothing comes back
    // that the other side had already.
    let r = laptop.sync_with(&desk).unwrap();
    assert_eq!((r.reused_here, r.reused_there), (0, 0), "{r:?}");
}

#[test]
fn a_value_changed_and_changed_back_is_offered_by_the_side_that_kept_it() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let desk = open(&dir.path().join("desk.db"), "1");
    desk.put_all((0..4).map(|i| doc(i, "two words"))).unwrap();
    desk.refresh().unwrap();
    let laptop = desk.fork_replica(dir.path().join("laptop.db")).unwrap();
    // On the laptop, document 1 changes and changes back: its rows are
    // stale there, while the desk's, of the same input values, stay fresh
    // when the versions arrive.
    laptop.put(doc(1, "something else")).unwrap();
    laptop.put(doc(1, "two words")).unwrap();
    let r = desk.sync_with(&laptop).unwrap();
    // Words and Upper; Size stays fresh behind Words' early cutoff.
    assert_eq!((r.received, r.reused_there), (1, 2), "{r:?}");
    calls();
    laptop.refresh().unwrap();
    desk.refresh().unwrap();
    let c = calls();
    assert_eq!(pipeline(&c), 0, "{c:?}");
    check_clean(&laptop, 0..4);
}

/// The desk's and the laptop's input rows are in sync after a random
/// history of writes, deletions, refreshes and syncs; one of them
/// refreshes, a sync follows: the other computes nothing of the pipeline.
#[test]
fn whatever_the_history_the_side_that_refreshes_second_computes_nothing() {
    let _serial = serial();
    let seeds: u64 = std::env::var("REDERIVE_DERIVED_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    for seed in 0..seeds {
        let mut rng = common::Rng(seed);
        let dir = tempfile::tempdir().unwrap();
        let a = open(&dir.path().join("a.db"), "1");
        let b = a.fork_replica(dir.path().join("b.db")).unwrap();
        let dbs = [&a, &b];
        let mut log = Vec::new();
        for _ in 0..40 {
            let at = rng.below(2);
            match rng.below(7) {
                0..=2 => {
                    let n = 1 + rng.below(4);
                    let ids = rng.pick(n, 25);
                    let words = "w ".repeat(rng.below(6));
                    let text = format!("text {words}{}", rng.next() % 3);
                    dbs[at].put_all(ids.iter().map(|&i| doc(i, &text))).unwrap();
                    log.push(format!("put {ids:?} on {at}"));
                }
                3 => {
                    let id = rng.below(25) as i64;
                    dbs[at].delete::<Doc>(id).unwrap();
                    log.push(format!("delete {id} on {at}"));
                }
                4 => {
                    dbs[at].refresh().unwrap();
                    log.push(format!("refresh {at}"));
                }
                _ => {
                    dbs[at].sync_with(dbs[1 - at]).unwrap();
                    log.push(format!("sync from {at}"));
                }
            }
        }
        // Inputs in sync.
        a.sync_with(&b).unwrap();
        let first = rng.below(2);
        let (x, y) = (dbs[first], dbs[1 - first]);
        if rng.chance(50) {
            // New inputs on the side that refreshes first, synced before it
            // refreshes.
            let ids = rng.pick(3, 25);
            x.put_all(ids.iter().map(|&i| doc(i, "late words here")))
                .unwrap();
            y.sync_with(x).unwrap();
            log.push(format!("put {ids:?} on {first}, sync"));
        }
        x.refresh().unwrap();
        let r = if rng.chance(50) {
            y.sync_with(x).unwrap()
        } else {
            x.sync_with(y).unwrap()
        };
        calls();
        y.refresh().unwrap();
        let c = calls();
        assert_eq!(
            pipeline(&c),
            0,
            "seed {seed}: the second side computed {c:?} after {r:?}; history:\n{}",
            log.join("\n")
        );
        let live: Vec<i64> = (0..25).filter(|&i| y.get::<Doc>(i).is_ok()).collect();
        check_clean(y, live.iter().copied());
        check_clean(x, live);
    }
}

/// A peer cut short in the offers of derived rows: with `offers_fail`,
/// its own offers fail (the connection drops); always, the offers it
/// receives arrive with the first row's values damaged, so that storing
/// them fails in its own code.
struct CutShort<'a> {
    db: &'a Db,
    offers_fail: bool,
}

impl rederive::replica::Peer for CutShort<'_> {
    fn describe(&self) -> rederive::Result<rederive::replica::PeerInfo> {
        self.db.describe()
    }
    fn checkpoint(&self, of: &str) -> rederive::Result<rederive::storage::SyncCursor> {
        self.db.checkpoint(of)
    }
    fn changes_after(
        &self,
        to: &str,
        after: &rederive::storage::SyncCursor,
        limit: usize,
    ) -> rederive::Result<rederive::storage::Changes> {
        self.db.changes_after(to, after, limit)
    }
    fn apply(
        &self,
        from: &str,
        versions: &[rederive::replica::version::Version],
        upto: &rederive::storage::SyncCursor,
    ) -> rederive::Result<rederive::storage::Applied> {
        self.db.apply(from, versions, upto)
    }
    fn absorb(&self, from: &str, id: &rederive::itc::Id) -> rederive::Result<()> {
        self.db.absorb(from, id)
    }
    fn shared_checkpoint(&self, of: &str) -> rederive::Result<i64> {
        self.db.shared_checkpoint(of)
    }
    fn shared_after(
        &self,
        to: &str,
        after: i64,
        limit: usize,
    ) -> rederive::Result<rederive::replica::shared::SharedPage> {
        if self.offers_fail {
            return Err(rederive::Error::Replica {
                replica: "cut-short".into(),
                reason: "the connection dropped".into(),
            });
        }
        self.db.shared_after(to, after, limit)
    }
    fn adopt(
        &self,
        from: &str,
        rows: &[rederive::replica::shared::SharedRow],
        upto: i64,
    ) -> rederive::Result<u64> {
        let mut rows = rows.to_vec();
        if let Some(first) = rows.first_mut() {
            first.values.push(rederive::Value::Null);
        }
        self.db.adopt_from(from, &rows, upto)
    }
}

#[test]
fn a_sync_cut_short_before_the_offers_offers_them_at_the_next_one() {
    use rederive::replica::{sync, Peer};
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let desk = open(&dir.path().join("desk.db"), "1");
    let laptop = desk.fork_replica(dir.path().join("laptop.db")).unwrap();
    let desk_name = desk.replica_meta().unwrap().unwrap().name;
    let laptop_name = laptop.replica_meta().unwrap().unwrap().name;
    desk.put_all((0..10).map(|i| doc(i, &format!("doc {i}"))))
        .unwrap();
    desk.refresh().unwrap();

    // The versions arrive; the desk's offers do not.
    let cut = CutShort {
        db: &desk,
        offers_fail: true,
    };
    let err = sync(&laptop, &cut).unwrap_err().to_string();
    assert!(err.contains("the connection dropped"), "{err}");
    assert_eq!(laptop.get::<Doc>(3).unwrap().text, "doc 3");
    assert_eq!(laptop.shared_checkpoint(&desk_name).unwrap(), 0);
    // The next sync sends no versions, and offers the rows.
    let r = laptop.sync_with(&desk).unwrap();
    assert_eq!((r.sent, r.received, r.reused_here), (0, 0, 30), "{r:?}");
    calls();
    laptop.refresh().unwrap();
    let c = calls();
    assert_eq!(pipeline(&c), 0, "{c:?}");

    // The laptop's offers fail in the desk's own code: the desk's
    // checkpoint stays where it was, and the next sync offers them again.
    laptop
        .put_all((10..14).map(|i| doc(i, &format!("laptop doc {i}"))))
        .unwrap();
    laptop.refresh().unwrap();
    let before = desk.shared_checkpoint(&laptop_name).unwrap();
    let cut = CutShort {
        db: &desk,
        offers_fail: false,
    };
    let err = sync(&laptop, &cut).unwrap_err().to_string();
    assert!(err.contains("do not fit"), "{err}");
    assert_eq!(desk.get::<Doc>(12).unwrap().text, "laptop doc 12");
    assert_eq!(desk.shared_checkpoint(&laptop_name).unwrap(), before);
    let r = desk.sync_with(&laptop).unwrap();
    assert_eq!((r.sent, r.received), (0, 0), "{r:?}");
    assert!(r.reused_here > 0, "{r:?}");
    calls();
    desk.refresh().unwrap();
    let c = calls();
    assert_eq!(pipeline(&c), 0, "{c:?}");
    check_clean(&laptop, 0..14);
    check_clean(&desk, 0..14);
}

/// The same over the network: the desk is served, the laptop syncs with
/// it through `HttpPeer`.
#[test]
fn rows_refreshed_after_their_inputs_travel_over_http() {
    use rederive::replica::net::{serve, HttpPeer};
    use rederive::replica::sync;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let desk_path = dir.path().join("desk.db");
    let desk = open(&desk_path, "1");
    let laptop = desk.fork_replica(dir.path().join("laptop.db")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let flag = stop.clone();
    let server = std::thread::spawn(move || {
        let db = open(&desk_path, "1");
        serve(&db, "127.0.0.1:0", &flag, |addr| tx.send(addr).unwrap())
    });
    let addr = rx.recv().expect("the server started");
    let remote = HttpPeer::new(&format!("http://{addr}")).unwrap();

    // Inputs in sync first, then the desk refreshes, then a sync.
    desk.put_all((0..8).map(|i| doc(i, &format!("doc {i}"))))
        .unwrap();
    let r = sync(&laptop, &remote).unwrap();
    assert_eq!((r.received, r.reused_here), (8, 0), "{r:?}");
    desk.refresh().unwrap();
    let r = sync(&laptop, &remote).unwrap();
    assert_eq!((r.received, r.reused_here), (0, 24), "{r:?}");
    calls();
    laptop.refresh().unwrap();
    assert_eq!(pipeline(&calls()), 0);

    // The other way: the laptop refreshes after the inputs are in sync.
    laptop
        .put_all((0..3).map(|i| doc(i, "longer texts on the laptop now")))
        .unwrap();
    let r = sync(&laptop, &remote).unwrap();
    assert_eq!((r.sent, r.reused_there), (3, 0), "{r:?}");
    laptop.refresh().unwrap();
    let r = sync(&laptop, &remote).unwrap();
    assert_eq!((r.sent, r.reused_there), (0, 9), "{r:?}");
    calls();
    desk.refresh().unwrap();
    assert_eq!(pipeline(&calls()), 0);
    check_clean(&desk, 0..8);

    stop.store(true, Ordering::SeqCst);
    server.join().unwrap().unwrap();
}
