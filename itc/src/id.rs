//! Id trees: which part of the unit interval a stamp owns.

use crate::{Error, Result};

/// An id tree: a set of subintervals of `[0, 1)`, the part of the id space a
/// stamp owns.
///
/// `0` owns nothing (an anonymous stamp), `1` owns the whole interval, and a
/// node `(l,r)` owns `l` scaled into the left half and `r` scaled into the
/// right half. Every `Id` is kept in the paper's normal form: `(0,0)` is
/// written `0` and `(1,1)` is written `1`, so two ids are equal exactly when
/// they own the same set.
///
/// ```
/// use rederive_itc::Id;
///
/// let (a, b) = Id::one().split();
/// assert_eq!((a.to_string(), b.to_string()), ("(1,0)".into(), "(0,1)".into()));
/// assert_eq!(a.sum(&b)?, Id::one());
/// assert!(a.sum(&a).is_err()); // overlapping ids never merge
/// # Ok::<(), rederive_itc::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Id(Kind);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Kind {
    Zero,
    One,
    Node(Box<(Id, Id)>),
}

impl Id {
    /// The empty id `0`: owns nothing.
    pub const fn zero() -> Id {
        Id(Kind::Zero)
    }

    /// The full id `1`: owns the whole interval (the seed's id).
    pub const fn one() -> Id {
        Id(Kind::One)
    }

    /// The id `(left,right)`, normalized: `(0,0)` becomes `0` and `(1,1)`
    /// becomes `1`.
    pub fn node(left: Id, right: Id) -> Id {
        match (&left.0, &right.0) {
            (Kind::Zero, Kind::Zero) => Id::zero(),
            (Kind::One, Kind::One) => Id::one(),
            _ => Id(Kind::Node(Box::new((left, right)))),
        }
    }

    /// Whether this is `0`, the id of an anonymous stamp.
    pub fn is_zero(&self) -> bool {
        matches!(self.0, Kind::Zero)
    }

    /// Whether this is `1`, the whole interval.
    pub fn is_one(&self) -> bool {
        matches!(self.0, Kind::One)
    }

    /// The two halves of a node `(l,r)`, or `None` for `0` and `1`.
    pub fn children(&self) -> Option<(&Id, &Id)> {
        match &self.0 {
            Kind::Node(pair) => Some((&pair.0, &pair.1)),
            _ => None,
        }
    }

    /// Nesting depth: `0` for `0` and `1`, one more than the deeper half for
    /// a node.
    pub fn depth(&self) -> usize {
        self.children()
            .map_or(0, |(l, r)| 1 + l.depth().max(r.depth()))
    }

    /// The paper's *split*: two disjoint ids whose [`sum`](Id::sum) is
    /// `self`. Splitting `0` gives `(0, 0)`; a node owning parts of both
    /// halves gives its left and right parts; otherwise the owned part is
    /// divided in two.
    pub fn split(&self) -> (Id, Id) {
        match &self.0 {
            Kind::Zero => (Id::zero(), Id::zero()),
            Kind::One => (
                Id::node(Id::one(), Id::zero()),
                Id::node(Id::zero(), Id::one()),
            ),
            Kind::Node(pair) => match (&pair.0, &pair.1) {
                (l, r) if l.is_zero() => {
                    let (r1, r2) = r.split();
                    (Id::node(Id::zero(), r1), Id::node(Id::zero(), r2))
                }
                (l, r) if r.is_zero() => {
                    let (l1, l2) = l.split();
                    (Id::node(l1, Id::zero()), Id::node(l2, Id::zero()))
                }
                (l, r) => (
                    Id::node(l.clone(), Id::zero()),
                    Id::node(Id::zero(), r.clone()),
                ),
            },
        }
    }

    /// The paper's *sum*: the union of two disjoint ids.
    ///
    /// # Errors
    ///
    /// [`Error::OverlappingIds`] if the ids share any part of the interval.
    pub fn sum(&self, other: &Id) -> Result<Id> {
        match (&self.0, &other.0) {
            (Kind::Zero, _) => Ok(other.clone()),
            (_, Kind::Zero) => Ok(self.clone()),
            (Kind::Node(a), Kind::Node(b)) => Ok(Id::node(a.0.sum(&b.0)?, a.1.sum(&b.1)?)),
            // `1` against anything but `0` overlaps: normalized nodes are
            // never empty.
            _ => Err(Error::OverlappingIds),
        }
    }

    /// Whether the two ids share no part of the interval, i.e. whether
    /// [`sum`](Id::sum) would succeed.
    pub fn is_disjoint(&self, other: &Id) -> bool {
        match (&self.0, &other.0) {
            (Kind::Zero, _) | (_, Kind::Zero) => true,
            (Kind::Node(a), Kind::Node(b)) => a.0.is_disjoint(&b.0) && a.1.is_disjoint(&b.1),
            _ => false,
        }
    }
}

impl Default for Id {
    /// The empty id `0`.
    fn default() -> Id {
        Id::zero()
    }
}
