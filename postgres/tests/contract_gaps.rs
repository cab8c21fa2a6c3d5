//! Parts of the storage contract that the conformance suite does not check
//! (yet), checked here against both backends, so that they agree: the
//! SQLite file backend, and PostgreSQL (skipped where it is not installed).

mod common;

use common::SRC;
use rederive_postgres::testing::database_or_skip;
use rederive_postgres::PgStore;
use rederive_runtime::clock::ManualClock;
use rederive_runtime::graph::Graph;
use rederive_runtime::sqlite::SqliteStore;
use rederive_runtime::storage::{
    Backend, ClaimMode, Fence, Outcome, OutcomeKind, Pass, Revision, Values, Written,
};
use rederive_runtime::value::{Key, Value};
use rederive_runtime::Ctx;
use std::sync::Arc;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(30);

fn nothing(_: &Ctx<'_>, _: Vec<Vec<Value>>) -> Result<Vec<Value>, String> {
    Err("computes nothing".into())
}

fn graph() -> Graph {
    common::graph("contract_gaps", "0", nothing)
}

/// Runs `case` on a new SQLite file, then on a new PostgreSQL database.
fn on_both(test: &str, case: impl Fn(&dyn Backend)) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let sqlite = SqliteStore::open_with_clock(&dir.path().join("gaps.db"), clock.clone()).unwrap();
    case(&sqlite);
    if let Some(url) = database_or_skip(test) {
        case(&PgStore::open_with_clock(&url, clock).unwrap());
    }
}

fn ok(key: i64, ins: Revision, v: i64) -> Outcome {
    Outcome {
        key: Key::Int(key),
        new: false,
        ins: vec![ins],
        reads: vec![],
        kind: OutcomeKind::Ok(vec![Value::Integer(v)]),
    }
}

/// The integer key 5 and the text key "5" are two keys: claimed by two
/// owners, each given back on its own.
#[test]
fn integer_and_text_keys_are_different_leases() {
    on_both("integer_and_text_keys_are_different_leases", |db| {
        let (int, text) = (Key::Int(5), Key::from("5"));
        let a = db
            .claim("Any", &[&int], "w1", "o1", TTL, ClaimMode::Rows)
            .unwrap();
        let b = db
            .claim("Any", &[&text], "w2", "o2", TTL, ClaimMode::Rows)
            .unwrap();
        assert_eq!((a.granted, b.granted), (vec![true], vec![true]));
        db.release("Any", &a.fence, &[&int]).unwrap();
        let c = db
            .claim("Any", &[&int, &text], "w3", "o3", TTL, ClaimMode::Rows)
            .unwrap();
        assert_eq!(c.granted, [true, false], "only 5 was given back");
    });
}

/// A row fence is given back by the write: a key given twice in one batch
/// is written once, by its first outcome.
#[test]
fn a_key_given_twice_under_a_row_fence_is_written_once() {
    on_both("a_key_given_twice_under_a_row_fence", |db| {
        let g = graph();
        let codes = vec![None, Some("code".to_owned())];
        db.apply_schema(&g, &codes).unwrap();
        let r = db
            .put_rows(&SRC, &[vec![Value::Integer(1), Value::Text("a".into())]])
            .unwrap();
        let c = db
            .claim("Len", &[&Key::Int(1)], "w1", "o1", TTL, ClaimMode::Rows)
            .unwrap();
        let len = g.table_id("Len").unwrap();
        let w = db
            .write_outcomes(
                &g,
                len,
                "code",
                &[ok(1, r, 1), ok(1, r, 2)],
                Pass::Refresh,
                &c.fence,
                Revision::ZERO,
            )
            .unwrap();
        assert_eq!(w, [Written::Changed, Written::Rejected]);
        let s = db.load(&g, &[len], &Key::Int(1), Values::All).unwrap();
        assert_eq!(s[0].as_ref().unwrap().values, [Value::Integer(1)]);
        assert!(matches!(c.fence, Fence::Rows { .. }));
    });
}
