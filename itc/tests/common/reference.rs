//! The paper's event-tree functions transcribed equation by equation, with
//! no shortcuts (explicit lift and sink, `N` as a large constant, fill
//! compared by equality), as an oracle for the optimized implementation.

use rederive_itc::{Event, Id};

use super::{RawEvent, RawId};

/// The paper's `N`: larger than any depth reached in the tests.
const N: u64 = 1 << 40;

pub fn raw_event(e: &Event) -> RawEvent {
    match e.children() {
        None => RawEvent::Leaf(e.base()),
        Some((l, r)) => RawEvent::Node(e.base(), Box::new(raw_event(l)), Box::new(raw_event(r))),
    }
}

pub fn raw_id(id: &Id) -> RawId {
    match id.children() {
        None if id.is_one() => RawId::One,
        None => RawId::Zero,
        Some((l, r)) => RawId::Node(Box::new(raw_id(l)), Box::new(raw_id(r))),
    }
}

fn leaf(n: u64) -> RawEvent {
    RawEvent::Leaf(n)
}

fn node(n: u64, l: RawEvent, r: RawEvent) -> RawEvent {
    RawEvent::Node(n, Box::new(l), Box::new(r))
}

fn min(e: &RawEvent) -> u64 {
    match e {
        RawEvent::Leaf(n) => *n,
        RawEvent::Node(n, l, r) => n + min(l).min(min(r)),
    }
}

fn max(e: &RawEvent) -> u64 {
    match e {
        RawEvent::Leaf(n) => *n,
        RawEvent::Node(n, l, r) => n + max(l).max(max(r)),
    }
}

fn lift(e: &RawEvent, m: u64) -> RawEvent {
    match e {
        RawEvent::Leaf(n) => leaf(n + m),
        RawEvent::Node(n, l, r) => RawEvent::Node(n + m, l.clone(), r.clone()),
    }
}

fn sink(e: &RawEvent, m: u64) -> RawEvent {
    match e {
        RawEvent::Leaf(n) => leaf(n - m),
        RawEvent::Node(n, l, r) => RawEvent::Node(n - m, l.clone(), r.clone()),
    }
}

/// norm((n, m, m)) = n + m; norm((n, e1, e2)) = (n + m, sink(e1, m), sink(e2, m))
/// with m = min(min(e1), min(e2)); children already normal.
fn norm(n: u64, l: RawEvent, r: RawEvent) -> RawEvent {
    if let (RawEvent::Leaf(a), RawEvent::Leaf(b)) = (&l, &r) {
        if a == b {
            return leaf(n + a);
        }
    }
    let m = min(&l).min(min(&r));
    node(n + m, sink(&l, m), sink(&r, m))
}

pub fn join(a: &RawEvent, b: &RawEvent) -> RawEvent {
    match (a, b) {
        (RawEvent::Leaf(x), RawEvent::Leaf(y)) => leaf(*x.max(y)),
        (RawEvent::Leaf(x), _) => join(&node(*x, leaf(0), leaf(0)), b),
        (_, RawEvent::Leaf(y)) => join(a, &node(*y, leaf(0), leaf(0))),
        (RawEvent::Node(n1, ..), RawEvent::Node(n2, ..)) if n1 > n2 => join(b, a),
        (RawEvent::Node(n1, l1, r1), RawEvent::Node(n2, l2, r2)) => norm(
            *n1,
            join(l1, &lift(l2, n2 - n1)),
            join(r1, &lift(r2, n2 - n1)),
        ),
    }
}

pub fn leq(a: &RawEvent, b: &RawEvent) -> bool {
    match (a, b) {
        (RawEvent::Leaf(x), RawEvent::Leaf(y)) | (RawEvent::Leaf(x), RawEvent::Node(y, ..)) => {
            x <= y
        }
        (RawEvent::Node(n1, l1, r1), RawEvent::Leaf(n2)) => {
            n1 <= n2 && leq(&lift(l1, *n1), b) && leq(&lift(r1, *n1), &leaf(*n2))
        }
        (RawEvent::Node(n1, l1, r1), RawEvent::Node(n2, l2, r2)) => {
            n1 <= n2 && leq(&lift(l1, *n1), &lift(l2, *n2)) && leq(&lift(r1, *n1), &lift(r2, *n2))
        }
    }
}

fn fill(i: &RawId, e: &RawEvent) -> RawEvent {
    match (i, e) {
        (RawId::Zero, _) => e.clone(),
        (RawId::One, _) => leaf(max(e)),
        (_, RawEvent::Leaf(_)) => e.clone(),
        (RawId::Node(il, ir), RawEvent::Node(n, el, er)) => match (&**il, &**ir) {
            (RawId::One, ir) => {
                let er = fill(ir, er);
                norm(*n, leaf(max(el).max(min(&er))), er)
            }
            (il, RawId::One) => {
                let el = fill(il, el);
                let level = max(er).max(min(&el));
                norm(*n, el, leaf(level))
            }
            (il, ir) => norm(*n, fill(il, el), fill(ir, er)),
        },
    }
}

fn grow(i: &RawId, e: &RawEvent) -> (RawEvent, u64) {
    match (i, e) {
        (RawId::One, RawEvent::Leaf(n)) => (leaf(n + 1), 0),
        (_, RawEvent::Leaf(n)) => {
            let (e, c) = grow(i, &node(*n, leaf(0), leaf(0)));
            (e, c + N)
        }
        (RawId::Node(il, ir), RawEvent::Node(n, el, er)) => match (&**il, &**ir) {
            (RawId::Zero, ir) => {
                let (er, c) = grow(ir, er);
                (node(*n, (**el).clone(), er), c + 1)
            }
            (il, RawId::Zero) => {
                let (el, c) = grow(il, el);
                (node(*n, el, (**er).clone()), c + 1)
            }
            (il, ir) => {
                let ((gl, cl), (gr, cr)) = (grow(il, el), grow(ir, er));
                if cl < cr {
                    (node(*n, gl, (**er).clone()), cl + 1)
                } else {
                    (node(*n, (**el).clone(), gr), cr + 1)
                }
            }
        },
        _ => panic!("grow({}, {}) is not defined", i.text(), e.text()),
    }
}

/// event((i, e)) = (i, fill(i, e)) if that differs from e, else (i, grow(i, e)).
pub fn event(i: &RawId, e: &RawEvent) -> RawEvent {
    let filled = fill(i, e);
    if filled.text() != e.text() {
        filled
    } else {
        grow(i, e).0
    }
}

/// The paper's encoding as a string of bits, rule by rule (the Erlang
/// reference's `enci`, `ence` and `encn`), zero-padded to whole bytes.
pub fn encode(i: &RawId, e: &RawEvent) -> String {
    let mut bits = enc_id(i) + &enc_event(e);
    while bits.len() % 8 != 0 {
        bits.push('0');
    }
    bits
}

fn enc_id(i: &RawId) -> String {
    match i {
        RawId::Zero => "000".into(),
        RawId::One => "001".into(),
        RawId::Node(l, r) => match (&**l, &**r) {
            (RawId::Zero, r) => "01".to_string() + &enc_id(r),
            (l, RawId::Zero) => "10".to_string() + &enc_id(l),
            (l, r) => "11".to_string() + &enc_id(l) + &enc_id(r),
        },
    }
}

fn enc_event(e: &RawEvent) -> String {
    let zero = |e: &RawEvent| matches!(e, RawEvent::Leaf(0));
    match e {
        RawEvent::Leaf(n) => enc_number(*n, 2),
        RawEvent::Node(0, l, r) if zero(l) => "000".to_string() + &enc_event(r),
        RawEvent::Node(0, l, r) if zero(r) => "001".to_string() + &enc_event(l),
        RawEvent::Node(0, l, r) => "010".to_string() + &enc_event(l) + &enc_event(r),
        RawEvent::Node(n, l, r) if zero(l) => {
            "01100".to_string() + &enc_number(*n, 2) + &enc_event(r)
        }
        RawEvent::Node(n, l, r) if zero(r) => {
            "01101".to_string() + &enc_number(*n, 2) + &enc_event(l)
        }
        RawEvent::Node(n, l, r) => {
            "0111".to_string() + &enc_number(*n, 2) + &enc_event(l) + &enc_event(r)
        }
    }
}

/// encn(N, B): `B - 1` ones, a zero and N in B bits if N < 2^B, else
/// encn(N - 2^B, B + 1). (The leading one doubles as the leaf tag.)
fn enc_number(n: u64, b: u32) -> String {
    let n = u128::from(n);
    if n < 1u128 << b {
        format!(
            "{}0{:0width$b}",
            "1".repeat(b as usize - 1),
            n,
            width = b as usize
        )
    } else {
        enc_number((n - (1u128 << b)) as u64, b + 1)
    }
}
