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
