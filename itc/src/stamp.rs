//! Stamps: an id and an event tree, and the clock operations on them.

use std::cmp::Ordering;

use crate::{Error, Event, Id, Result};

/// An Interval Tree Clock stamp: the [`Id`] a replica owns and the
/// [`Event`] tree of what it has seen.
///
/// Stamps are values: every operation returns new stamps and leaves its
/// inputs unchanged, so a replica replaces its stamp with the result.
///
/// # Comparing stamps
///
/// [`leq`](Stamp::leq) and [`PartialOrd`] compare what two stamps have seen
/// and ignore their ids, as in the paper: `a < b` means `b` has seen
/// everything `a` has and more, and `partial_cmp` returning `None` means the
/// stamps are concurrent (each has seen an event the other has not — a
/// conflict). Two replicas that have seen the same events compare as
/// `Some(Equal)` even though their ids differ; `==` is stricter and compares
/// ids too, so `a == b` implies `a.partial_cmp(&b) == Some(Equal)` but not
/// the other way round. Use [`Event`]'s own ordering (via
/// [`event_tree`](Stamp::event_tree)) when you want `==` and `<=` to agree.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Stamp {
    id: Id,
    event: Event,
}

impl Stamp {
    /// The stamp `(1,0)` that starts a system: it owns the whole id space
    /// and has seen nothing. Create exactly one seed per system and
    /// [`fork`](Stamp::fork) every other replica from it or its
    /// descendants; stamps of two separate seeds cannot be joined.
    pub fn seed() -> Stamp {
        Stamp::new(Id::one(), Event::leaf(0))
    }

    /// A stamp from its parts.
    pub fn new(id: Id, event: Event) -> Stamp {
        Stamp { id, event }
    }

    /// The part of the id space this stamp owns.
    pub fn id(&self) -> &Id {
        &self.id
    }

    /// What this stamp has seen.
    pub fn event_tree(&self) -> &Event {
        &self.event
    }

    /// The id and event tree, by value.
    pub fn into_parts(self) -> (Id, Event) {
        (self.id, self.event)
    }

    /// Whether the id is `0`: the stamp can carry and compare knowledge but
    /// not record events.
    pub fn is_anonymous(&self) -> bool {
        self.id.is_zero()
    }

    /// Two stamps with the same knowledge and disjoint halves of this
    /// stamp's id: one for this replica to keep, one to hand to a new
    /// replica. Forking an anonymous stamp gives two anonymous stamps.
    pub fn fork(&self) -> (Stamp, Stamp) {
        let (a, b) = self.id.split();
        (
            Stamp::new(a, self.event.clone()),
            Stamp::new(b, self.event.clone()),
        )
    }

    /// This stamp after recording one more event: strictly greater than
    /// `self`, and changed only in the part of the interval its id owns.
    ///
    /// # Errors
    ///
    /// [`Error::AnonymousEvent`] if the id is `0`;
    /// [`Error::CounterOverflow`] if a counter would exceed `u64::MAX`.
    pub fn event(&self) -> Result<Stamp> {
        if self.id.is_zero() {
            return Err(Error::AnonymousEvent);
        }
        let event = match self.event.fill(&self.id) {
            Some(filled) => filled,
            None => self.event.grow(&self.id)?,
        };
        Ok(Stamp::new(self.id.clone(), event))
    }

    /// One stamp with both ids and everything both have seen: how a replica
    /// retires (its stamp is joined into a peer's) or absorbs another's id.
    /// To merge knowledge only, keeping ids apart, join a
    /// [`peek`](Stamp::peek): `a.join(&b.peek())`.
    ///
    /// # Errors
    ///
    /// [`Error::OverlappingIds`] if the two ids share any part of the
    /// interval (a stamp was copied instead of forked, or joined twice).
    pub fn join(&self, other: &Stamp) -> Result<Stamp> {
        Ok(Stamp::new(
            self.id.sum(&other.id)?,
            self.event.join(&other.event),
        ))
    }

    /// An anonymous copy (id `0`) of this stamp's knowledge, to send in a
    /// message; joining it into any stamp is always allowed.
    pub fn peek(&self) -> Stamp {
        Stamp::new(Id::zero(), self.event.clone())
    }

    /// Whether `other` has seen everything `self` has (ids are ignored).
    pub fn leq(&self, other: &Stamp) -> bool {
        self.event.leq(&other.event)
    }

    /// Whether each stamp has seen an event the other has not: the
    /// histories have diverged and must be reconciled.
    pub fn concurrent(&self, other: &Stamp) -> bool {
        !self.leq(other) && !other.leq(self)
    }
}

impl PartialOrd for Stamp {
    /// Compares what the stamps have seen, ignoring ids (see the type's
    /// docs): `None` when they are concurrent.
    fn partial_cmp(&self, other: &Stamp) -> Option<Ordering> {
        self.event.partial_cmp(&other.event)
    }
}
