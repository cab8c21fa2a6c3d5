//! Random call graphs (with cycles and deletions) against a from-scratch
//! oracle: after every operation the stored values, `explain`, `status`
//! agree with it, and no function call was made that a previous call with
//! the same inputs and the same rows read had already answered.

use proptest::prelude::*;
use rederive::{derive_table, Ctx, Db, ReadError, Row, Staleness};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Fun {
    #[row(key)]
    pub name: String,
    pub body: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Sum {
    pub v: i64,
}

/// One completed call: the body and what each read gave.
type Signature = (String, Vec<(String, String)>);

/// Completed calls, in order, per test case (cases run one at a time).
static LOG: Mutex<Vec<(String, Signature)>> = Mutex::new(Vec::new());

#[derive_table(reads = [Sum])]
fn sum(f: &Fun, ctx: &Ctx) -> Result<Sum, String> {
    let mut v = 0;
    let mut failure = None;
    let mut stopped = false;
    let mut seen = Vec::new();
    for word in f.body.split_whitespace() {
        if let Ok(n) = word.parse::<i64>() {
            v += n;
            continue;
        }
        let got = ctx.get::<Sum>(word);
        let shown = match &got {
            Ok(Some(s)) => s.v.to_string(),
            Ok(None) => "absent".into(),
            Err(e) => format!("err: {e}"),
        };
        match got {
            Ok(s) => v += s.map_or(0, |s| s.v),
            Err(e @ (ReadError::NotReady { .. } | ReadError::Cycle { .. })) => {
                stopped = true;
                failure.get_or_insert(e.to_string());
            }
            Err(e) => {
                failure.get_or_insert(e.to_string());
            }
        }
        seen.push((word.to_owned(), shown));
    }
    if !stopped {
        LOG.lock()
            .unwrap()
            .push((f.name.clone(), (f.body.clone(), seen)));
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(Sum { v }),
    }
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Pair {
    pub sum: i64,
    pub twice: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Twice {
    pub v: i64,
}

#[derive_table]
fn twice(s: &Sum) -> Twice {
    Twice { v: s.v * 2 }
}

/// Computed from two derived inputs, one computed from the other: both
/// must be brought up to date before it.
#[derive_table]
fn pair(s: &Sum, t: &Twice) -> Pair {
    Pair {
        sum: s.v,
        twice: t.v,
    }
}

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

#[derive(Debug, Clone)]
enum Op {
    Put(usize, Vec<Option<usize>>),
    Delete(usize),
    Refresh,
    Get(usize),
    RefreshFrom(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let word = prop_oneof![
        (0..NAMES.len()).prop_map(Some),
        Just(None), // a number
    ];
    prop_oneof![
        4 => (0..NAMES.len(), prop::collection::vec(word, 0..3)).prop_map(|(n, b)| Op::Put(n, b)),
        1 => (0..NAMES.len()).prop_map(Op::Delete),
        2 => Just(Op::Refresh),
        2 => (0..NAMES.len()).prop_map(Op::Get),
        1 => (0..NAMES.len()).prop_map(Op::RefreshFrom),
    ]
}

fn body(words: &[Option<usize>], salt: usize) -> String {
    words
        .iter()
        .enumerate()
        .map(|(i, w)| match w {
            Some(n) => NAMES[*n].to_owned(),
            None => ((i + salt) % 3 + 1).to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The oracle: from the bodies alone. `Err(())` for a definition that
/// reaches a cycle (through its calls of existing definitions).
fn oracle(defs: &BTreeMap<String, String>) -> BTreeMap<String, Result<i64, ()>> {
    fn calls<'a>(defs: &'a BTreeMap<String, String>, n: &str) -> Vec<&'a str> {
        defs[n]
            .split_whitespace()
            .filter(|w| w.parse::<i64>().is_err() && defs.contains_key(*w))
            .collect()
    }
    fn reaches(defs: &BTreeMap<String, String>, from: &str, to: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = calls(defs, from);
        while let Some(n) = todo.pop() {
            if n == to {
                return true;
            }
            if seen.insert(n) {
                todo.extend(calls(defs, n));
            }
        }
        false
    }
    fn eval(
        defs: &BTreeMap<String, String>,
        n: &str,
        memo: &mut BTreeMap<String, Result<i64, ()>>,
    ) -> Result<i64, ()> {
        if let Some(r) = memo.get(n) {
            return *r;
        }
        let r = if reaches(defs, n, n) {
            Err(())
        } else {
            let mut v = 0;
            let mut r = Ok(());
            for w in defs[n].split_whitespace() {
                match w.parse::<i64>() {
                    Ok(x) => v += x,
                    Err(_) if defs.contains_key(w) => match eval(defs, w, memo) {
                        Ok(x) => v += x,
                        Err(()) => r = Err(()),
                    },
                    Err(_) => {}
                }
            }
            r.map(|()| v)
        };
        memo.insert(n.to_owned(), r);
        r
    }
    let mut memo = BTreeMap::new();
    for n in defs.keys() {
        let _ = eval(defs, n, &mut memo);
    }
    memo
}

fn check_values(db: &Db, defs: &BTreeMap<String, String>) -> Result<(), TestCaseError> {
    for (n, want) in oracle(defs) {
        let got = db.get::<Sum>(n.as_str()).map(|s| s.v);
        let pair = db.get::<Pair>(n.as_str());
        match (want, &pair) {
            (Ok(v), Ok(p)) => prop_assert_eq!((v, 2 * v), (p.sum, p.twice), "pair of {}", n),
            (Err(()), Err(_)) => {}
            _ => prop_assert!(false, "{}: oracle {:?}, pair {:?}", n, want, pair),
        }
        match (want, &got) {
            (Ok(v), Ok(g)) => prop_assert_eq!(v, *g, "value of {}", n),
            (Err(()), Err(e)) => prop_assert!(e.to_string().contains("cycle"), "{}: {}", n, e),
            _ => prop_assert!(false, "{}: oracle {:?}, stored {:?}", n, want, got),
        }
    }
    Ok(())
}

/// Every completed call since `from` had inputs (body, rows read) unlike
/// those of the name's previous completed call.
fn check_calls_needed(
    last: &mut HashMap<String, Signature>,
    from: usize,
) -> Result<usize, TestCaseError> {
    let log = LOG.lock().unwrap();
    for (name, sig) in &log[from..] {
        prop_assert!(
            last.get(name) != Some(sig),
            "`{}` computed again with the same inputs {:?}",
            name,
            sig
        );
        last.insert(name.clone(), sig.clone());
    }
    Ok(log.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn random_call_graphs_agree_with_the_oracle(ops in prop::collection::vec(op(), 1..14)) {
        LOG.lock().unwrap().clear();
        let db = Db::open_in_memory().unwrap();
        let mut defs: BTreeMap<String, String> = BTreeMap::new();
        let mut last: HashMap<String, Signature> = HashMap::new();
        let mut logged = 0;
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Put(n, words) => {
                    let name = NAMES[*n];
                    let b = body(words, i);
                    db.put(Fun { name: name.into(), body: b.clone() }).unwrap();
                    let fresh = defs.insert(name.to_owned(), b.clone()).as_ref() != Some(&b);
                    if fresh {
                        // Its input row changed (even back to an earlier
                        // body: provenance is by revision): a call is needed.
                        last.remove(name);
                        // Its stored row is now stale or missing.
                        let e = db.explain::<Sum>(name).unwrap();
                        prop_assert!(
                            matches!(e, Staleness::InputChanged { .. } | Staleness::Missing),
                            "{}: {:?}", name, e
                        );
                    }
                }
                Op::Delete(n) => {
                    let name = NAMES[*n];
                    let existed = defs.remove(name).is_some();
                    match db.delete::<Fun>(name) {
                        Ok(found) => prop_assert_eq!(found, existed),
                        Err(e) => prop_assert!(false, "{}", e),
                    }
                    // Its row is gone: computing it again is needed, and so
                    // is computing again what read it (a deletion is a
                    // change, even if an equal row comes back).
                    last.remove(name);
                    last.retain(|_, sig| !sig.1.iter().any(|(w, _)| w == name));
                }
                Op::Refresh => {
                    db.refresh().unwrap();
                    let status = db.status().unwrap();
                    let st = status.iter().find(|s| s.table == "Sum").unwrap();
                    prop_assert_eq!(st.stale + st.missing, 0, "{:?}", st);
                    for n in defs.keys() {
                        prop_assert!(db.explain::<Sum>(n.as_str()).unwrap().is_settled());
                    }
                    check_values(&db, &defs)?;
                }
                Op::Get(n) => {
                    let name = NAMES[*n];
                    // The pair first: it must bring both its inputs up to date.
                    if let (Some(Ok(v)), Ok(p)) = (oracle(&defs).get(name), db.get::<Pair>(name)) {
                        prop_assert_eq!((*v, 2 * v), (p.sum, p.twice), "pair of {}", name);
                    }
                    let got = db.get::<Sum>(name);
                    match oracle(&defs).get(name) {
                        None => prop_assert!(got.is_err()),
                        Some(Ok(v)) => prop_assert_eq!(got.unwrap().v, *v),
                        Some(Err(())) => prop_assert!(got.unwrap_err().to_string().contains("cycle")),
                    }
                    prop_assert!(db.explain::<Sum>(name).map_or(true, |e| e.is_settled()));
                }
                Op::RefreshFrom(n) => {
                    let name = NAMES[*n];
                    match db.refresh_from::<Fun>(name) {
                        Ok(_) => {
                            prop_assert!(defs.contains_key(name));
                            prop_assert!(db.explain::<Sum>(name).unwrap().is_settled());
                            prop_assert!(db.stale_from::<Fun>(name).unwrap().is_empty());
                        }
                        Err(_) => prop_assert!(!defs.contains_key(name)),
                    }
                }
            }
            logged = check_calls_needed(&mut last, logged)?;
        }
        db.refresh().unwrap();
        check_values(&db, &defs)?;
        check_calls_needed(&mut last, logged)?;
    }
}
