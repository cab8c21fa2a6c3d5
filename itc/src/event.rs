//! Event trees: how many events a stamp has seen, per part of the interval.

use std::cmp::Ordering;

use crate::{Error, Id, Result};

/// An event tree: a function from the unit interval `[0, 1)` to counters,
/// recording how many events a stamp knows of in each part of the id space.
///
/// A leaf `n` is the constant `n`; a node `(n,l,r)` adds `n` to `l` scaled
/// into the left half and `r` scaled into the right half. Every `Event` is
/// kept in the paper's normal form (a node's smaller child has base `0`, and
/// a node never has two equal leaves), so two event trees are equal exactly
/// when they are the same function, and every value the function takes fits
/// in a `u64`.
///
/// Event trees are ordered pointwise: `a <= b` when `a` is nowhere greater
/// than `b`. Two trees neither of which is `<=` the other are concurrent,
/// and [`partial_cmp`](PartialOrd::partial_cmp) returns `None`.
///
/// ```
/// use rederive_itc::Event;
///
/// let a = Event::node(0, Event::leaf(2), Event::leaf(0))?; // (0,2,0)
/// let b = Event::node(1, Event::leaf(0), Event::leaf(3))?; // (1,0,3)
/// assert_eq!(a.partial_cmp(&b), None);
/// assert_eq!(a.join(&b).to_string(), "(2,0,2)");
/// assert!(a <= a.join(&b) && b <= a.join(&b));
/// # Ok::<(), rederive_itc::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Event {
    base: u64,
    children: Option<Box<(Event, Event)>>,
}

/// The zero leaf, standing in for the children of a leaf when a leaf is
/// compared or joined with a node (`n` is `(n,0,0)`).
static ZERO: Event = Event::leaf(0);

/// The cost of growing an event tree in one place, compared
/// lexicographically: first how many leaves must be expanded into nodes
/// (the paper's large constant `N` per expansion), then how many steps down
/// the tree. A pair instead of `N + steps` means no depth limit is implied.
type Cost = (u64, u64);

#[derive(Clone, Copy)]
enum Side {
    Left,
    Right,
}

impl Event {
    /// The constant tree `n`.
    pub const fn leaf(n: u64) -> Event {
        Event {
            base: n,
            children: None,
        }
    }

    /// The tree `(n,left,right)`, normalized: `(n,m,m)` becomes `n+m` and a
    /// common minimum of the children is moved into `n`.
    ///
    /// # Errors
    ///
    /// [`Error::CounterOverflow`] if `n` plus a value of `left` or `right`
    /// exceeds `u64::MAX`.
    pub fn node(n: u64, left: Event, right: Event) -> Result<Event> {
        n.checked_add(left.max().max(right.max()))
            .ok_or(Error::CounterOverflow)?;
        Ok(normalized(n, left, right))
    }

    /// The tree's own counter: for a leaf its value, for a node the amount
    /// added to both children. In normal form this is also the minimum.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The two children of a node, or `None` for a leaf.
    pub fn children(&self) -> Option<(&Event, &Event)> {
        self.children.as_deref().map(|(l, r)| (l, r))
    }

    /// Whether this tree is a single counter.
    pub fn is_leaf(&self) -> bool {
        self.children.is_none()
    }

    /// The smallest value of the function (the paper's *min*).
    pub fn min(&self) -> u64 {
        // Normal form: one child of every node has base 0.
        self.base
    }

    /// The largest value of the function (the paper's *max*).
    pub fn max(&self) -> u64 {
        match self.children() {
            None => self.base,
            Some((l, r)) => self.base + l.max().max(r.max()),
        }
    }

    /// Nesting depth: `0` for a leaf, one more than the deeper child for a
    /// node.
    pub fn depth(&self) -> usize {
        self.children()
            .map_or(0, |(l, r)| 1 + l.depth().max(r.depth()))
    }

    /// The paper's event-tree *join*: the pointwise maximum, the least tree
    /// that is `>=` both.
    pub fn join(&self, other: &Event) -> Event {
        join_lifted(self, 0, other, 0)
    }

    /// The paper's *leq*: whether `self` is pointwise `<=` `other`, i.e.
    /// whether everything `self` has seen, `other` has seen too.
    pub fn leq(&self, other: &Event) -> bool {
        leq_lifted(self, 0, other, 0)
    }

    /// The children of a node, or two zero leaves for a leaf (`n` is
    /// `(n,0,0)`).
    fn children_or_zero(&self) -> (&Event, &Event) {
        self.children().unwrap_or((&ZERO, &ZERO))
    }

    /// This tree with `delta` added everywhere (the paper's *lift*).
    fn lifted(&self, delta: u64) -> Event {
        Event {
            base: self.base + delta,
            children: self.children.clone(),
        }
    }

    /// The paper's *fill*: raise the parts owned by `id` as far as possible
    /// without inventing events, i.e. so that the tree can be simplified.
    /// Returns `None` when nothing can be filled (the tree would not change).
    pub(crate) fn fill(&self, id: &Id) -> Option<Event> {
        if id.is_zero() {
            return None;
        }
        let (el, er) = self.children()?;
        if id.is_one() {
            return Some(Event::leaf(self.max()));
        }
        let (il, ir) = id.children()?;
        if il.is_one() {
            let filled = er.fill(ir);
            let er = filled.as_ref().unwrap_or(er);
            let level = el.max().max(er.base);
            if filled.is_none() && el.is_leaf() && el.base == level {
                return None;
            }
            return Some(normalized(self.base, Event::leaf(level), er.clone()));
        }
        if ir.is_one() {
            let filled = el.fill(il);
            let el = filled.as_ref().unwrap_or(el);
            let level = er.max().max(el.base);
            if filled.is_none() && er.is_leaf() && er.base == level {
                return None;
            }
            return Some(normalized(self.base, el.clone(), Event::leaf(level)));
        }
        match (el.fill(il), er.fill(ir)) {
            (None, None) => None,
            (l, r) => Some(normalized(
                self.base,
                l.unwrap_or_else(|| el.clone()),
                r.unwrap_or_else(|| er.clone()),
            )),
        }
    }

    /// The paper's *grow*: add one event in a part owned by `id`, choosing
    /// the place that keeps the tree smallest (fewest leaves expanded, then
    /// the shallowest).
    ///
    /// # Errors
    ///
    /// [`Error::AnonymousEvent`] if `id` is `0`; [`Error::CounterOverflow`]
    /// if the grown counter would exceed `u64::MAX`.
    pub(crate) fn grow(&self, id: &Id) -> Result<Event> {
        self.grown(id, 0)
    }

    /// [`grow`](Event::grow) for a subtree whose ancestors add up to
    /// `offset`, so that overflow is checked on the absolute value.
    fn grown(&self, id: &Id, offset: u64) -> Result<Event> {
        if id.is_one() {
            // After `fill`, a subtree under `1` is always a leaf; growing
            // a node here would mean taking its maximum, which is the same
            // operation.
            let value = self.max();
            offset
                .checked_add(value)
                .and_then(|v| v.checked_add(1))
                .ok_or(Error::CounterOverflow)?;
            return Ok(Event::leaf(value + 1));
        }
        let (il, ir) = id.children().ok_or(Error::AnonymousEvent)?;
        let (el, er) = self.children_or_zero();
        let below = offset + self.base;
        Ok(
            match cheaper_side(il, ir, el, er).ok_or(Error::AnonymousEvent)? {
                (Side::Left, _) => normalized(self.base, el.grown(il, below)?, er.clone()),
                (Side::Right, _) => normalized(self.base, el.clone(), er.grown(ir, below)?),
            },
        )
    }

    /// What growing under `id` would cost, or `None` if `id` owns nothing.
    fn grow_cost(&self, id: &Id) -> Option<Cost> {
        if id.is_zero() {
            return None;
        }
        let Some((il, ir)) = id.children() else {
            return Some((0, 0));
        };
        let (el, er) = self.children_or_zero();
        let (_, (expansions, steps)) = cheaper_side(il, ir, el, er)?;
        Some((expansions + u64::from(self.is_leaf()), steps))
    }
}

/// Which child to grow into, and the cost including the step down; ties go
/// right, as in the paper.
fn cheaper_side(il: &Id, ir: &Id, el: &Event, er: &Event) -> Option<(Side, Cost)> {
    let chosen = match (el.grow_cost(il), er.grow_cost(ir)) {
        (Some(l), Some(r)) if l < r => (Side::Left, l),
        (_, Some(r)) => (Side::Right, r),
        (Some(l), None) => (Side::Left, l),
        (None, None) => return None,
    };
    let (side, (expansions, steps)) = chosen;
    Some((side, (expansions, steps + 1)))
}

/// The node `(n,l,r)` in normal form, given children in normal form whose
/// values plus `n` fit in a `u64` (the caller's responsibility: readers of
/// untrusted input check sums along each path as they go).
pub(crate) fn normalized(n: u64, mut l: Event, mut r: Event) -> Event {
    if l.is_leaf() && r.is_leaf() && l.base == r.base {
        return Event::leaf(n + l.base);
    }
    let common = l.base.min(r.base);
    l.base -= common;
    r.base -= common;
    Event {
        base: n + common,
        children: Some(Box::new((l, r))),
    }
}

/// The join of `a` lifted by `da` and `b` lifted by `db`; lifting as we go
/// avoids copying subtrees only to add a constant to them.
fn join_lifted(a: &Event, da: u64, b: &Event, db: u64) -> Event {
    let (na, nb) = (a.base + da, b.base + db);
    match (a.children(), b.children()) {
        (None, None) => Event::leaf(na.max(nb)),
        // A tree's base is its minimum, so a leaf no higher than it is
        // absorbed.
        (_, None) if nb <= na => a.lifted(da),
        (None, _) if na <= nb => b.lifted(db),
        _ => {
            let m = na.min(nb);
            let (al, ar) = a.children_or_zero();
            let (bl, br) = b.children_or_zero();
            normalized(
                m,
                join_lifted(al, na - m, bl, nb - m),
                join_lifted(ar, na - m, br, nb - m),
            )
        }
    }
}

/// Whether `a` lifted by `da` is pointwise `<=` `b` lifted by `db`.
fn leq_lifted(a: &Event, da: u64, b: &Event, db: u64) -> bool {
    let (na, nb) = (a.base + da, b.base + db);
    if na > nb {
        // `na` is a value of `a` and `nb` the minimum of `b`.
        return false;
    }
    match a.children() {
        None => true,
        Some((al, ar)) => {
            let (bl, br) = b.children_or_zero();
            leq_lifted(al, na, bl, nb) && leq_lifted(ar, na, br, nb)
        }
    }
}

impl PartialOrd for Event {
    /// Pointwise comparison: `None` when the trees are concurrent.
    fn partial_cmp(&self, other: &Event) -> Option<Ordering> {
        match (self.leq(other), other.leq(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Less),
            (false, true) => Some(Ordering::Greater),
            (false, false) => None,
        }
    }
}

impl Default for Event {
    /// The zero tree `0`: no events seen.
    fn default() -> Event {
        Event::leaf(0)
    }
}
