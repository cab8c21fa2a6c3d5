//! Random call graphs (with cycles and deletions) against a from-scratch
//! oracle: after every operation the stored values, `explain`, `status`
//! agree with it, no function call was made that a previous call with
//! the same inputs and the same rows read had already answered, and a
//! function that read the same rows as last time was called once in the
//! operation (a reader runs once).
mod common;

use common::deadline::{waiting_for, within_deadline};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
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

/// Every call, completed or stopped (at a read of a row to compute
/// first), in order, per test case.
static CALLS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[derive_table(reads = [Sum])]
fn sum(f: &Fun, ctx: &Ctx) -> Result<Sum, String> {
    CALLS.lock().unwrap().push(f.name.clone());
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

/// The rows each name's last completed call read, where known: not for a
/// row never computed or deleted since, nor for a row on a cycle (stored
/// with the reads of the cycle, not of a call).
type ReadSets = HashMap<String, BTreeSet<String>>;

/// Every name with calls since `from` (in `CALLS`) whose last completed
/// call read the same rows as the one before it, and whose value is not an
/// error of a cycle, was called once since `from`. Updates `reads`.
fn check_called_once(
    reads: &mut ReadSets,
    defs: &BTreeMap<String, String>,
    calls_from: usize,
    log_from: usize,
) -> Result<(), TestCaseError> {
    let log = LOG.lock().unwrap();
    let calls = CALLS.lock().unwrap();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for name in &calls[calls_from..] {
        *count.entry(name).or_default() += 1;
    }
    let mut now: ReadSets = HashMap::new();
    for (name, (_, seen)) in &log[log_from..] {
        now.insert(name.clone(), seen.iter().map(|(w, _)| w.clone()).collect());
    }
    let values = oracle(defs);
    for (name, n) in count {
        let (Some(before), Some(after)) = (reads.get(name), now.get(name)) else {
            continue;
        };
        if before == after && matches!(values.get(name), Some(Ok(_))) {
            prop_assert_eq!(
                n,
                1,
                "`{}` read the same rows {:?} and was called {} times",
                name,
                after,
                n
            );
        }
    }
    reads.extend(now);
    // Rows on a cycle were stored with the reads of the cycle.
    for n in defs.keys() {
        if oracle_on_cycle(defs, n) {
            reads.remove(n);
        }
    }
    Ok(())
}

/// Whether a definition reaches itself through its calls.
fn oracle_on_cycle(defs: &BTreeMap<String, String>, n: &str) -> bool {
    let calls = |n: &str| -> Vec<String> {
        defs.get(n).map_or_else(Vec::new, |b| {
            b.split_whitespace()
                .filter(|w| w.parse::<i64>().is_err() && defs.contains_key(*w))
                .map(str::to_owned)
                .collect()
        })
    };
    let mut seen = BTreeSet::new();
    let mut todo = calls(n);
    while let Some(m) = todo.pop() {
        if m == n {
            return true;
        }
        if seen.insert(m.clone()) {
            todo.extend(calls(&m));
        }
    }
    false
}

/// Runs the cases on a thread with a deadline (a case that loops fails,
/// naming the operation it was in, instead of hanging the test).
#[test]
fn random_call_graphs_agree_with_the_oracle() {
    // 64 cases, or as many as `PROPTEST_CASES` says.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    let config = ProptestConfig {
        cases,
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    // A deadline of a minute for every 64 cases.
    let scale = 1 + config.cases / 64;
    within_deadline(scale, move || {
        let mut runner = TestRunner::new(config);
        let ops = prop::collection::vec(op(), 1..14);
        if let Err(e) = runner.run(&ops, |ops| case(&ops)) {
            panic!("{e}\n{runner}");
        }
    });
}

fn case(ops: &[Op]) -> Result<(), TestCaseError> {
    LOG.lock().unwrap().clear();
    CALLS.lock().unwrap().clear();
    let db = Db::open_in_memory().unwrap();
    let mut defs: BTreeMap<String, String> = BTreeMap::new();
    let mut last: HashMap<String, Signature> = HashMap::new();
    let mut reads: ReadSets = HashMap::new();
    let mut logged = 0;
    for (i, op) in ops.iter().enumerate() {
        waiting_for(format!("operation {i} ({op:?}) of the case {ops:?}"));
        let called = CALLS.lock().unwrap().len();
        let log_from = LOG.lock().unwrap().len();
        match op {
            Op::Put(n, words) => {
                let name = NAMES[*n];
                let b = body(words, i);
                db.put(Fun {
                    name: name.into(),
                    body: b.clone(),
                })
                .unwrap();
                let fresh = defs.insert(name.to_owned(), b.clone()).as_ref() != Some(&b);
                if fresh {
                    // Its input row changed (even back to an earlier
                    // body: provenance is by revision): a call is needed.
                    last.remove(name);
                    // Its stored row is now stale or missing.
                    let e = db.explain::<Sum>(name).unwrap();
                    prop_assert!(
                        matches!(e, Staleness::InputChanged { .. } | Staleness::Missing),
                        "{}: {:?}",
                        name,
                        e
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
                reads.remove(name);
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
                    Some(Err(())) => {
                        prop_assert!(got.unwrap_err().to_string().contains("cycle"))
                    }
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
        check_called_once(&mut reads, &defs, called, log_from)?;
    }
    waiting_for(format!("the last refresh of the case {ops:?}"));
    let called = CALLS.lock().unwrap().len();
    let log_from = LOG.lock().unwrap().len();
    db.refresh().unwrap();
    check_values(&db, &defs)?;
    check_calls_needed(&mut last, logged)?;
    check_called_once(&mut reads, &defs, called, log_from)?;
    Ok(())
}
