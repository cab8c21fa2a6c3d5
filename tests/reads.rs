//! Cross-row reads: a tiny language whose definitions call each other.
//! A definition's body is a list of words: a number adds itself, a name
//! adds the value of that definition (0 when there is none).

mod common;

use common::deadline::{waiting_for, within_deadline};
use rederive::{derive_table, Ctx, Db, Key, ReadError, Report, Row, Staleness};
use std::sync::Mutex;

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Def {
    #[row(key)]
    pub name: String,
    pub body: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Val {
    pub v: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Doubled {
    pub v: i64,
}

/// Completed calls of `eval` (not those stopped by a read to compute
/// first), by key: each test uses its own keys' prefix.
static CALLS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn calls_of(prefix: &str) -> Vec<String> {
    let mut calls: Vec<String> = CALLS
        .lock()
        .unwrap()
        .iter()
        .filter(|k| k.starts_with(prefix))
        .cloned()
        .collect();
    calls.sort();
    calls
}

fn clear_calls(prefix: &str) {
    CALLS.lock().unwrap().retain(|k| !k.starts_with(prefix));
}

#[derive_table(reads = [Val])]
fn eval(d: &Def, ctx: &Ctx) -> Result<Val, String> {
    let mut v = 0;
    let mut failure = None;
    let mut stopped = false;
    for word in d.body.split_whitespace() {
        if word == "boom" {
            failure.get_or_insert_with(|| "boom".to_owned());
        } else if word == "undeclared" {
            // Doubled is not in `reads`.
            if let Err(e) = ctx.get::<Doubled>(d.name.as_str()) {
                failure.get_or_insert(e.to_string());
            }
        } else if let Ok(n) = word.parse::<i64>() {
            v += n;
        } else {
            match ctx.get::<Val>(word) {
                Ok(found) => v += found.map_or(0, |x| x.v),
                Err(e @ (ReadError::NotReady { .. } | ReadError::Cycle { .. })) => {
                    stopped = true;
                    failure.get_or_insert(e.to_string());
                }
                Err(e) => {
                    failure.get_or_insert(e.to_string());
                }
            }
        }
    }
    if !stopped {
        CALLS.lock().unwrap().push(d.name.clone());
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(Val { v }),
    }
}

#[derive_table]
fn double(v: &Val) -> Doubled {
    Doubled { v: v.v * 2 }
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Both {
    pub v: i64,
    pub d: i64,
}

#[derive_table]
fn both(v: &Val, d: &Doubled) -> Both {
    Both { v: v.v, d: d.v }
}

fn refresh(db: &Db) -> Report {
    waiting_for("refresh");
    db.refresh().unwrap()
}

fn def(name: &str, body: &str) -> Def {
    Def {
        name: name.into(),
        body: body.into(),
    }
}

fn value(db: &Db, name: &str) -> Result<i64, String> {
    waiting_for(format!("get::<Val>({name:?})"));
    db.get::<Val>(name).map(|v| v.v).map_err(|e| e.to_string())
}

#[test]
fn a_definition_reads_its_callees_and_follows_their_changes() {
    within_deadline(1, || {
        let db = Db::open_in_memory().unwrap();
        db.put_all(vec![def("r_main", "r_helper 1"), def("r_helper", "2")])
            .unwrap();
        refresh(&db);
        assert_eq!(value(&db, "r_main"), Ok(3));
        assert_eq!(db.get::<Doubled>("r_main").unwrap().v, 6);

        // A change to the callee makes the caller stale, naming the read.
        db.put(def("r_helper", "5")).unwrap();
        assert_eq!(
            db.explain::<Val>("r_helper").unwrap(),
            Staleness::InputChanged {
                table: "Def".into(),
                key: "r_helper".into()
            }
        );
        assert_eq!(
            db.explain::<Val>("r_main").unwrap(),
            Staleness::UpstreamStale {
                table: "Val".into(),
                key: "r_helper".into()
            }
        );
        let stale = db.stale_from::<Def>("r_helper").unwrap();
        let rows: Vec<(String, Key)> = stale
            .iter()
            .map(|s| (s.table.clone(), s.key.clone()))
            .collect();
        assert!(
            rows.contains(&("Val".into(), "r_helper".into())),
            "{rows:?}"
        );
        assert!(rows.contains(&("Val".into(), "r_main".into())), "{rows:?}");
        assert!(
            rows.contains(&("Doubled".into(), "r_main".into())),
            "{rows:?}"
        );
        waiting_for("refresh_from::<Def>(\"r_helper\")");
        let report = db.refresh_from::<Def>("r_helper").unwrap();
        assert_eq!(report.table("Val").computed, 2, "{report:?}");
        assert_eq!(value(&db, "r_main"), Ok(6));
        assert_eq!(db.get::<Doubled>("r_main").unwrap().v, 12);
        assert_eq!(db.explain::<Val>("r_main").unwrap(), Staleness::Fresh);
    })
}

#[test]
fn an_equal_value_leaves_readers_fresh_and_uncomputed() {
    within_deadline(1, || {
        let db = Db::open_in_memory().unwrap();
        db.put_all(vec![def("c_main", "c_x"), def("c_x", "2")])
            .unwrap();
        refresh(&db);
        clear_calls("c_");
        db.put(def("c_x", "1 1")).unwrap();
        let report = refresh(&db);
        assert_eq!(report.table("Val").unchanged, 1, "{report:?}");
        assert_eq!(calls_of("c_"), vec!["c_x".to_string()]);
        assert_eq!(db.explain::<Val>("c_main").unwrap(), Staleness::Fresh);
        assert_eq!(value(&db, "c_main"), Ok(2));
    })
}

#[test]
fn a_callee_deleted_then_restored() {
    within_deadline(1, || {
        let db = Db::open_in_memory().unwrap();
        db.put_all(vec![def("d_main", "d_helper 1"), def("d_helper", "2")])
            .unwrap();
        refresh(&db);
        assert_eq!(value(&db, "d_main"), Ok(3));
        db.delete::<Def>("d_helper").unwrap();
        assert_eq!(
            db.explain::<Val>("d_main").unwrap(),
            Staleness::ReadChanged {
                table: "Val".into(),
                key: "d_helper".into()
            }
        );
        refresh(&db);
        assert_eq!(value(&db, "d_main"), Ok(1));
        db.put(def("d_helper", "2")).unwrap();
        // On demand, without a refresh.
        assert_eq!(value(&db, "d_main"), Ok(3));
        refresh(&db);
        assert_eq!(db.explain::<Val>("d_main").unwrap(), Staleness::Fresh);
    })
}

#[test]
fn a_key_read_as_absent_then_created() {
    within_deadline(1, || {
        let db = Db::open_in_memory().unwrap();
        db.put(def("a_main", "a_later 1")).unwrap();
        refresh(&db);
        assert_eq!(value(&db, "a_main"), Ok(1));
        db.put(def("a_later", "5")).unwrap();
        let report = refresh(&db);
        assert_eq!(report.table("Val").computed, 2, "{report:?}");
        assert_eq!(value(&db, "a_main"), Ok(6));
    })
}

#[test]
fn a_cycle_of_two_is_an_error_in_both_rows_until_an_edit_breaks_it() {
    within_deadline(1, || {
        for first in ["y_a", "y_b"] {
            let db = Db::open_in_memory().unwrap();
            db.put_all(vec![
                def("y_a", "y_b 1"),
                def("y_b", "y_a 2"),
                def("y_user", "y_a"),
            ])
            .unwrap();
            // Whichever row is met first, the same message in both.
            let e = value(&db, first).unwrap_err();
            assert!(e.contains("cycle"), "{e}");
            refresh(&db);
            let a = value(&db, "y_a").unwrap_err();
            let b = value(&db, "y_b").unwrap_err();
            let cycle = "cycle: `Val` \"y_a\" -> `Val` \"y_b\" -> `Val` \"y_a\"";
            assert!(a.ends_with(cycle), "{a}");
            assert!(b.ends_with(cycle), "{b}");
            // A reader of the cycle fails with it.
            let user = value(&db, "y_user").unwrap_err();
            assert!(user.contains(cycle), "{user}");
            // Settled: no retry loop.
            let again = refresh(&db);
            assert_eq!(again.table("Val").failed, 0, "{again:?}");
            assert!(matches!(
                db.explain::<Val>("y_a").unwrap(),
                Staleness::Failed { .. }
            ));

            db.put(def("y_b", "2")).unwrap();
            refresh(&db);
            assert_eq!(value(&db, "y_b"), Ok(2));
            assert_eq!(value(&db, "y_a"), Ok(3));
            assert_eq!(value(&db, "y_user"), Ok(3));
        }
    })
}

#[test]
fn a_definition_calling_itself_is_a_cycle() {
    within_deadline(1, || {
        let db = Db::open_in_memory().unwrap();
        db.put(def("s_rec", "s_rec 1")).unwrap();
        refresh(&db);
        let e = value(&db, "s_rec").unwrap_err();
        assert!(
            e.ends_with("cycle: `Val` \"s_rec\" -> `Val` \"s_rec\""),
            "{e}"
        );
        db.put(def("s_rec", "1")).unwrap();
        assert_eq!(value(&db, "s_rec"), Ok(1));
    })
}

#[test]
fn failures_read_are_errors_and_undeclared_reads_are_stored_errors() {
    within_deadline(1, || {
        let db = Db::open_in_memory().unwrap();
        db.put_all(vec![
            def("f_bad", "boom"),
            def("f_user", "f_bad 1"),
            def("f_sneak", "undeclared"),
        ])
        .unwrap();
        refresh(&db);
        let e = value(&db, "f_user").unwrap_err();
        assert!(e.contains("`Val` \"f_bad\" failed: boom"), "{e}");
        let e = value(&db, "f_sneak").unwrap_err();
        assert!(
            e.contains("`eval` reads `Doubled`, which is not in its `reads`"),
            "{e}"
        );
    })
}

#[test]
fn get_computes_exactly_what_is_needed() {
    within_deadline(1, || {
        let db = Db::open_in_memory().unwrap();
        db.put_all(vec![
            def("g_top", "g_mid"),
            def("g_mid", "g_leaf 1"),
            def("g_leaf", "1"),
            def("g_other", "g_leaf 7"),
        ])
        .unwrap();
        clear_calls("g_");
        assert_eq!(value(&db, "g_top"), Ok(2));
        assert_eq!(calls_of("g_"), vec!["g_leaf", "g_mid", "g_top"]);
        clear_calls("g_");
        assert_eq!(value(&db, "g_top"), Ok(2));
        assert!(calls_of("g_").is_empty());
        db.put(def("g_leaf", "4")).unwrap();
        assert_eq!(value(&db, "g_top"), Ok(5));
        assert_eq!(calls_of("g_"), vec!["g_leaf", "g_mid", "g_top"]);
    })
}

#[test]
fn a_chain_of_5000_definitions_refreshes_and_answers_get() {
    within_deadline(3, || {
        let n = 5000;
        let db = Db::open_in_memory().unwrap();
        let name = |i: usize| format!("h_{i:05}");
        // Each calls the previous, in reverse key order for the build.
        let defs: Vec<Def> = (0..n)
            .map(|i| {
                let body = if i + 1 == n {
                    "1".to_owned()
                } else {
                    format!("{} 1", name(i + 1))
                };
                def(&name(i), &body)
            })
            .collect();
        db.put_all(defs).unwrap();
        refresh(&db);
        assert_eq!(value(&db, &name(0)), Ok(n as i64));
        // The far end changes: everything is recomputed on demand.
        db.put(def(&name(n - 1), "2")).unwrap();
        assert_eq!(value(&db, &name(0)), Ok(n as i64 + 1));
        db.put(def(&name(n - 1), "3")).unwrap();
        let report = refresh(&db);
        assert_eq!(report.table("Val").computed, n as u64, "{report:?}");
        assert_eq!(value(&db, &name(0)), Ok(n as i64 + 2));
        // A cycle through the whole chain.
        db.put(def(&name(n - 1), &name(0))).unwrap();
        let e = value(&db, &name(2500)).unwrap_err();
        assert!(e.contains("cycle"), "{}", &e[..200.min(e.len())]);
        let e = value(&db, &name(0)).unwrap_err();
        assert!(e.contains("cycle"));
    })
}

#[test]
fn reads_survive_reopening_a_file() {
    within_deadline(1, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reads.db");
        {
            let db = Db::open(&path).unwrap();
            db.put_all(vec![def("o_main", "o_x"), def("o_x", "4")])
                .unwrap();
            refresh(&db);
        }
        let db = Db::open(&path).unwrap();
        db.put(def("o_x", "5")).unwrap();
        let report = refresh(&db);
        assert_eq!(report.table("Val").computed, 2, "{report:?}");
        assert_eq!(value(&db, "o_main"), Ok(5));
    })
}

/// Turns a database file back into storage format 1, as rederive wrote
/// it before each read was one index entry: a row a read, keyed by its
/// reader, with table names, and an index by row read. (Every read here
/// is of a `Val` row, fresh: it saw that row's `changed_at`.)
fn to_format_1(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE old_reads(
             reader TEXT NOT NULL,
             reader_key ANY NOT NULL,
             tbl TEXT NOT NULL,
             key ANY NOT NULL,
             seen INTEGER,
             PRIMARY KEY (reader, reader_key, tbl, key)
         ) STRICT, WITHOUT ROWID;
         INSERT INTO old_reads
           SELECT u.name, r.reader_key, t.name, r.key,
             (SELECT __changed_at FROM \"Val\" v WHERE v.__key = r.key)
           FROM rederive_reads r
           JOIN rederive_read_tables t ON t.id = r.tbl
           JOIN rederive_read_tables u ON u.id = r.reader;
         DROP TABLE rederive_reads;
         DROP TABLE rederive_reader_reads;
         DROP TABLE rederive_read_tables;
         ALTER TABLE old_reads RENAME TO rederive_reads;
         CREATE INDEX rederive_reads_by_row ON rederive_reads(tbl, key, reader, reader_key);
         UPDATE rederive_meta SET value = 1 WHERE key = 'format';
         COMMIT;",
    )
    .unwrap();
}

#[test]
fn reads_of_a_format_1_database_survive_its_conversion() {
    within_deadline(1, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("format1.db");
        {
            let db = Db::open(&path).unwrap();
            db.put_all(vec![
                def("f_main", "f_x f_y 1"),
                def("f_x", "4"),
                def("f_y", "2"),
                def("f_z", "3"),
            ])
            .unwrap();
            refresh(&db);
        }
        to_format_1(&path);
        let db = Db::open(&path).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let format: i64 = conn
            .query_row(
                "SELECT value FROM rederive_meta WHERE key = 'format'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(format, rederive::sqlite::FORMAT);
        assert_eq!(db.explain::<Val>("f_main").unwrap(), Staleness::Fresh);
        // Every read converted is followed.
        db.put_all(vec![def("f_x", "5"), def("f_y", "3")]).unwrap();
        for callee in ["f_x", "f_y"] {
            let stale = db.stale_from::<Def>(callee).unwrap();
            assert!(
                stale
                    .iter()
                    .any(|s| s.table == "Val" && s.key == "f_main".into()),
                "{callee}: {stale:?}"
            );
        }
        let report = refresh(&db);
        assert_eq!(report.table("Val").computed, 3, "{report:?}");
        assert_eq!(value(&db, "f_main"), Ok(9));
        // A reader computed again forgets the reads converted.
        db.put(def("f_main", "f_z")).unwrap();
        refresh(&db);
        assert_eq!(value(&db, "f_main"), Ok(3));
        db.put(def("f_y", "7")).unwrap();
        let stale = db.stale_from::<Def>("f_y").unwrap();
        assert!(!stale.iter().any(|s| s.key == "f_main".into()), "{stale:?}");
        let report = refresh(&db);
        assert_eq!(report.table("Val").computed, 1, "{report:?}");
    })
}

#[test]
fn get_settles_every_input_of_a_row_before_computing_it() {
    within_deadline(1, || {
        let db = Db::open_in_memory().unwrap();
        db.put_all(vec![def("b_main", "b_x 1"), def("b_x", "2")])
            .unwrap();
        assert_eq!(db.get::<Both>("b_main").unwrap(), Both { v: 3, d: 6 });
        db.put(def("b_x", "5")).unwrap();
        // `Both` is computed from `Val` and `Doubled`: both are brought up to
        // date first, not just the one on the way to the change.
        assert_eq!(db.get::<Both>("b_main").unwrap(), Both { v: 6, d: 12 });
        for t in [
            db.explain::<Val>("b_main").unwrap(),
            db.explain::<Doubled>("b_main").unwrap(),
            db.explain::<Both>("b_main").unwrap(),
        ] {
            assert_eq!(t, Staleness::Fresh);
        }
    })
}
