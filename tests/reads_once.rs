//! A reader runs once: before a row's function is called, the rows it read
//! last time are settled, so that a function whose reads are unchanged in
//! set is called once per `refresh` and per `get`, not once more for every
//! read of a row that was stale. Every call is counted here, including
//! those stopped at a read of a row to compute first.
mod common;

use common::deadline::{waiting_for, within_deadline};
use rederive::{derive_table, Ctx, Db, Row};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Def {
    #[row(key)]
    pub name: String,
    /// Words: a number adds itself, a name adds that definition's value.
    pub body: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Linked {
    pub v: i64,
}

/// Every call of `link`, by key (each test uses keys of its own prefix).
static CALLS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

/// A definition's value with its callees' inlined; a read that fails (or
/// must wait for a row to be computed first) ends the call, as `?` does.
#[derive_table(reads = [Linked])]
fn link(d: &Def, ctx: &Ctx) -> Result<Linked, String> {
    *CALLS.lock().unwrap().entry(d.name.clone()).or_default() += 1;
    let mut v = 0;
    for word in d.body.split_whitespace() {
        v += match word.parse::<i64>() {
            Ok(n) => n,
            Err(_) => ctx.get::<Linked>(word)?.map_or(0, |l| l.v),
        };
    }
    Ok(Linked { v })
}

/// The calls of each key of `prefix` since the last [`clear`].
fn calls(prefix: &str) -> BTreeMap<String, usize> {
    CALLS
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, n)| (k.clone(), *n))
        .collect()
}

fn clear(prefix: &str) {
    CALLS.lock().unwrap().retain(|k, _| !k.starts_with(prefix));
}

/// `n` calls for each of `keys`.
fn each(n: usize, keys: &[&str]) -> BTreeMap<String, usize> {
    keys.iter().map(|k| (k.to_string(), n)).collect()
}

fn def(name: &str, body: &str) -> Def {
    Def {
        name: name.into(),
        body: body.into(),
    }
}

fn put(db: &Db, defs: &[(&str, &str)]) {
    waiting_for(format!("put_all {defs:?}"));
    db.put_all(defs.iter().map(|(n, b)| def(n, b))).unwrap();
}

fn refresh(db: &Db) -> rederive::Report {
    waiting_for("refresh");
    db.refresh().unwrap()
}

fn value(db: &Db, name: &str) -> Result<i64, String> {
    waiting_for(format!("get::<Linked>({name:?})"));
    db.get::<Linked>(name)
        .map(|l| l.v)
        .map_err(|e| e.to_string())
}

/// `a = 1`, `b = a + 1`, `c = b + a + 10`.
fn abc(db: &Db, p: &str) {
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    put(
        db,
        &[
            (&a, "1"),
            (&b, &format!("{a} 1")),
            (&c, &format!("{b} {a} 10")),
        ],
    );
}

#[test]
fn after_a_changes_refresh_calls_b_and_c_once() {
    within_deadline(1, || {
        let db = Db::open_in_memory().unwrap();
        abc(&db, "r_");
        refresh(&db);
        assert_eq!(value(&db, "r_c"), Ok(13));
        clear("r_");
        put(&db, &[("r_a", "2")]);
        let report = refresh(&db);
        assert_eq!(calls("r_"), each(1, &["r_a", "r_b", "r_c"]));
        assert_eq!(report.table("Linked").computed, 3, "{report:?}");
        assert_eq!(value(&db, "r_b"), Ok(3));
        assert_eq!(value(&db, "r_c"), Ok(15));
        assert_eq!(calls("r_"), each(1, &["r_a", "r_b", "r_c"]));
    })
}

#[test]
fn after_a_changes_get_of_c_calls_each_function_once() {
    within_deadline(1, || {
        let db = Db::open_in_memory().unwrap();
        abc(&db, "g_");
        refresh(&db);
        clear("g_");
        put(&db, &[("g_a", "2")]);
        assert_eq!(value(&db, "g_c"), Ok(15));
        assert_eq!(calls("g_"), each(1, &["g_a", "g_b", "g_c"]));
        // Everything it needed is settled: nothing is called again.
        assert_eq!(value(&db, "g_b"), Ok(3));
        assert_eq!(refresh(&db).calls(), 0);
        assert_eq!(calls("g_"), each(1, &["g_a", "g_b", "g_c"]));
    })
}

/// `w` reads ten rows, each computed from the one before; the first of
/// them changes, and so do all ten.
fn wide(db: &Db, p: &str) -> Vec<String> {
    let chain: Vec<String> = (0..=10).map(|i| format!("{p}r{i:02}")).collect();
    let mut defs: Vec<(String, String)> = vec![(chain[0].clone(), "1".into())];
    for i in 1..=10 {
        defs.push((chain[i].clone(), format!("{} 1", chain[i - 1])));
    }
    defs.push((format!("{p}w"), chain[1..].join(" ")));
    let defs: Vec<(&str, &str)> = defs.iter().map(|(n, b)| (&n[..], &b[..])).collect();
    put(db, &defs);
    chain
}

#[test]
fn a_reader_of_ten_changed_rows_is_called_once_by_refresh_and_by_get() {
    within_deadline(1, || {
        for by_get in [false, true] {
            let p = if by_get { "wg_" } else { "wr_" };
            let db = Db::open_in_memory().unwrap();
            let chain = wide(&db, p);
            let w = format!("{p}w");
            refresh(&db);
            // 2 + 3 + .. + 11
            assert_eq!(value(&db, &w), Ok(65));
            clear(p);
            put(&db, &[(&chain[0], "2")]);
            if by_get {
                assert_eq!(value(&db, &w), Ok(75));
            } else {
                refresh(&db);
            }
            let mut keys: Vec<&str> = chain.iter().map(|k| &k[..]).collect();
            keys.push(&w);
            assert_eq!(calls(p), each(1, &keys), "by get: {by_get}");
            assert_eq!(value(&db, &w), Ok(75));
        }
    })
}

#[test]
fn a_reader_that_reads_a_row_it_never_read_is_still_right() {
    within_deadline(1, || {
        for by_get in [false, true] {
            let p = if by_get { "ng_" } else { "nr_" };
            let k = |s: &str| format!("{p}{s}");
            let db = Db::open_in_memory().unwrap();
            put(
                &db,
                &[
                    (&k("p"), "1"),
                    (&k("q"), "2"),
                    (&k("x"), &format!("{} 10", k("p"))),
                ],
            );
            refresh(&db);
            assert_eq!(value(&db, &k("x")), Ok(11));
            // `x` now reads `q` as well, which changed too.
            clear(p);
            put(
                &db,
                &[
                    (&k("q"), "5"),
                    (&k("x"), &format!("{} {} 10", k("p"), k("q"))),
                ],
            );
            if !by_get {
                refresh(&db);
            }
            assert_eq!(value(&db, &k("x")), Ok(16));
            // Stopped at most once, at its new read.
            let x = calls(p)[&k("x")];
            assert!((1..=2).contains(&x), "{:?}", calls(p));
            // And no longer reads `p`, which changes.
            clear(p);
            put(&db, &[(&k("p"), "7"), (&k("x"), &k("q"))]);
            if !by_get {
                refresh(&db);
            }
            assert_eq!(value(&db, &k("x")), Ok(5));
            // (`get` settles `p` too: `x` read it last time.)
            assert_eq!(calls(p), each(1, &[&k("p"), &k("x")]));
        }
    })
}

/// The message every row of the cycle `names` (in that order) carries.
fn cycle(names: &[&str]) -> String {
    let mut s = String::from("cycle:");
    for n in names.iter().chain(names.first()) {
        if s.len() > 6 {
            s.push_str(" ->");
        }
        s.push_str(&format!(" `Linked` \"{n}\""));
    }
    s
}

#[test]
fn cycles_are_errors_in_every_row_on_them_whatever_was_read_before() {
    within_deadline(1, || {
        for by_get in [false, true] {
            let p = if by_get { "cg_" } else { "cr_" };
            let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
            let db = Db::open_in_memory().unwrap();
            let settle = |db: &Db| {
                if !by_get {
                    refresh(db);
                }
            };
            // A cycle of three.
            put(
                &db,
                &[
                    (&a, &format!("{b} 1")),
                    (&b, &format!("{c} 1")),
                    (&c, &format!("{a} 1")),
                ],
            );
            settle(&db);
            let message = cycle(&[&a, &b, &c]);
            for n in [&a, &b, &c] {
                let e = value(&db, n).unwrap_err();
                assert!(e.ends_with(&message), "{n}: {e}");
            }
            // An edit that keeps it: still the cycle, in every row.
            put(&db, &[(&a, &format!("{b} 2"))]);
            settle(&db);
            for n in [&c, &a, &b] {
                let e = value(&db, n).unwrap_err();
                assert!(e.ends_with(&message), "{n}: {e}");
            }
            // An edit that breaks it: the rows read last time lead back to
            // the row being computed, which reads none of them any more.
            clear(p);
            put(&db, &[(&b, "5")]);
            settle(&db);
            assert_eq!(value(&db, &a), Ok(7));
            assert_eq!(value(&db, &c), Ok(8));
            assert_eq!(value(&db, &b), Ok(5));
            assert_eq!(calls(p), each(1, &[&a, &b, &c]), "by get: {by_get}");
            // An edit that makes a new cycle of two.
            put(&db, &[(&b, &format!("{a} 1"))]);
            settle(&db);
            let message = cycle(&[&a, &b]);
            for n in [&b, &a] {
                let e = value(&db, n).unwrap_err();
                assert!(e.ends_with(&message), "{n}: {e}");
            }
            let e = value(&db, &c).unwrap_err();
            assert!(e.contains(&message), "{c}: {e}");
        }
    })
}
