//! Helpers shared by the property tests: an independent reading of ids and
//! event trees as functions on a grid, normal-form checkers written from the
//! paper's definitions, and generators of realistic stamps.

#![allow(dead_code)]

pub mod reference;

use proptest::prelude::*;
use rederive_itc::{Event, Id, Stamp};

/// Grids finer than this are not sampled (2^14 cells); checks on deeper
/// trees are skipped, which the generators make rare.
pub const MAX_GRID: usize = 14;

/// Which of the `2^depth` equal cells of `[0, 1)` the id owns.
pub fn owned(id: &Id, depth: usize) -> Vec<bool> {
    match id.children() {
        None => vec![id.is_one(); 1 << depth],
        Some(_) if depth == 0 => panic!("grid too coarse for {id}"),
        Some((l, r)) => [owned(l, depth - 1), owned(r, depth - 1)].concat(),
    }
}

/// The event tree's value on each of the `2^depth` cells.
pub fn values(e: &Event, depth: usize) -> Vec<u64> {
    match e.children() {
        None => vec![e.base(); 1 << depth],
        Some(_) if depth == 0 => panic!("grid too coarse for {e}"),
        Some((l, r)) => {
            let mut v = [values(l, depth - 1), values(r, depth - 1)].concat();
            v.iter_mut().for_each(|x| *x += e.base());
            v
        }
    }
}

/// A grid depth fine enough for all the given trees, or `None` if that
/// would exceed [`MAX_GRID`].
pub fn grid(ids: &[&Id], events: &[&Event]) -> Option<usize> {
    let depth = ids
        .iter()
        .map(|i| i.depth())
        .chain(events.iter().map(|e| e.depth()))
        .max()
        .unwrap_or(0);
    (depth <= MAX_GRID).then_some(depth)
}

/// The paper's normal form for ids: no `(0,0)`, no `(1,1)`, anywhere.
pub fn id_is_normal(id: &Id) -> bool {
    match id.children() {
        None => true,
        Some((l, r)) => {
            let collapsible = (l.is_zero() && r.is_zero()) || (l.is_one() && r.is_one());
            !collapsible && id_is_normal(l) && id_is_normal(r)
        }
    }
}

/// The paper's normal form for event trees: no `(n,m,m)`, and a child of
/// every node has minimum 0.
pub fn event_is_normal(e: &Event) -> bool {
    match e.children() {
        None => true,
        Some((l, r)) => {
            let equal_leaves = l.is_leaf() && r.is_leaf() && l.base() == r.base();
            !equal_leaves
                && min_value(l).min(min_value(r)) == 0
                && event_is_normal(l)
                && event_is_normal(r)
        }
    }
}

/// The minimum computed the long way, not trusting normal form.
fn min_value(e: &Event) -> u64 {
    e.base()
        + e.children()
            .map_or(0, |(l, r)| min_value(l).min(min_value(r)))
}

pub fn stamp_is_normal(s: &Stamp) -> bool {
    id_is_normal(s.id()) && event_is_normal(s.event_tree())
}

/// A tree as written, not normalized: the input to normalization tests.
#[derive(Debug, Clone)]
pub enum RawEvent {
    Leaf(u64),
    Node(u64, Box<RawEvent>, Box<RawEvent>),
}

impl RawEvent {
    pub fn text(&self) -> String {
        match self {
            RawEvent::Leaf(n) => n.to_string(),
            RawEvent::Node(n, l, r) => format!("({n},{},{})", l.text(), r.text()),
        }
    }

    pub fn values(&self, depth: usize) -> Vec<u64> {
        match self {
            RawEvent::Leaf(n) => vec![*n; 1 << depth],
            RawEvent::Node(n, l, r) => {
                let mut v = [l.values(depth - 1), r.values(depth - 1)].concat();
                v.iter_mut().for_each(|x| *x += n);
                v
            }
        }
    }

    pub fn depth(&self) -> usize {
        match self {
            RawEvent::Leaf(_) => 0,
            RawEvent::Node(_, l, r) => 1 + l.depth().max(r.depth()),
        }
    }
}

#[derive(Debug, Clone)]
pub enum RawId {
    Zero,
    One,
    Node(Box<RawId>, Box<RawId>),
}

impl RawId {
    pub fn text(&self) -> String {
        match self {
            RawId::Zero => "0".into(),
            RawId::One => "1".into(),
            RawId::Node(l, r) => format!("({},{})", l.text(), r.text()),
        }
    }

    pub fn owned(&self, depth: usize) -> Vec<bool> {
        match self {
            RawId::Zero => vec![false; 1 << depth],
            RawId::One => vec![true; 1 << depth],
            RawId::Node(l, r) => [l.owned(depth - 1), r.owned(depth - 1)].concat(),
        }
    }

    pub fn depth(&self) -> usize {
        match self {
            RawId::Node(l, r) => 1 + l.depth().max(r.depth()),
            _ => 0,
        }
    }
}

/// Unnormalized event trees up to depth 5 with small counters (so that
/// equal subtrees, which normalization merges, are common).
pub fn raw_event() -> impl Strategy<Value = RawEvent> {
    (0u64..4)
        .prop_map(RawEvent::Leaf)
        .prop_recursive(5, 48, 2, |inner| {
            (0u64..3, inner.clone(), inner)
                .prop_map(|(n, l, r)| RawEvent::Node(n, Box::new(l), Box::new(r)))
        })
}

pub fn raw_id() -> impl Strategy<Value = RawId> {
    prop_oneof![Just(RawId::Zero), Just(RawId::One)].prop_recursive(5, 32, 2, |inner| {
        (inner.clone(), inner).prop_map(|(l, r)| RawId::Node(Box::new(l), Box::new(r)))
    })
}

/// Normalized event trees (through the parser, which normalizes).
pub fn event() -> impl Strategy<Value = Event> {
    raw_event().prop_map(|raw| raw.text().parse().expect("generated text parses"))
}

pub fn id() -> impl Strategy<Value = Id> {
    raw_id().prop_map(|raw| raw.text().parse().expect("generated text parses"))
}

/// One step of a replicated system; indices are taken modulo the number of
/// live replicas.
#[derive(Debug, Clone)]
pub enum Op {
    /// A replica forks a new one.
    Fork(usize),
    /// A replica records an update.
    Event(usize),
    /// Two replicas exchange knowledge (peeks), keeping their ids.
    Sync(usize, usize),
    /// Two replicas join and fork again (ids are redistributed).
    Merge(usize, usize),
    /// A replica retires into another.
    Retire(usize, usize),
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<usize>().prop_map(Op::Fork),
        4 => any::<usize>().prop_map(Op::Event),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Sync(a, b)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Merge(a, b)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Op::Retire(a, b)),
    ]
}

/// The outcome of running a list of operations from the seed.
pub struct Run {
    /// The replicas alive at the end (ids pairwise disjoint).
    pub live: Vec<Stamp>,
    /// Every stamp any operation produced, in order.
    pub history: Vec<Stamp>,
}

/// Runs `ops` from a seed; every operation must succeed (ids stay disjoint
/// and every replica owns a non-empty id).
pub fn run(ops: &[Op]) -> Run {
    let mut live = vec![Stamp::seed()];
    let mut history = live.clone();
    for op in ops {
        let n = live.len();
        let produced: Vec<Stamp> = match *op {
            Op::Fork(a) => {
                let (x, y) = live[a % n].fork();
                live[a % n] = x.clone();
                live.push(y.clone());
                vec![x, y]
            }
            Op::Event(a) => {
                live[a % n] = live[a % n].event().expect("event on a replica");
                vec![live[a % n].clone()]
            }
            Op::Sync(a, b) | Op::Merge(a, b) | Op::Retire(a, b) if a % n == b % n => vec![],
            Op::Sync(a, b) => {
                let (x, y) = (live[a % n].clone(), live[b % n].clone());
                live[a % n] = x.join(&y.peek()).expect("join a peek");
                live[b % n] = y.join(&x.peek()).expect("join a peek");
                vec![live[a % n].clone(), live[b % n].clone()]
            }
            Op::Merge(a, b) => {
                let joined = live[a % n].join(&live[b % n]).expect("disjoint ids");
                let (x, y) = joined.fork();
                live[a % n] = x.clone();
                live[b % n] = y.clone();
                vec![joined, x, y]
            }
            Op::Retire(a, b) => {
                let joined = live[a % n].join(&live[b % n]).expect("disjoint ids");
                live[a % n] = joined.clone();
                live.remove(b % n);
                vec![joined]
            }
        };
        history.extend(produced);
    }
    Run { live, history }
}

pub fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 0..max)
}
