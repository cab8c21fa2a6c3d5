//! Interval Tree Clocks (Almeida, Baquero, Fonte, *Interval Tree Clocks: A
//! Logical Clock for Dynamic Systems*, OPODIS 2008): causality tracking for
//! a set of replicas that grows and shrinks over time, with no global
//! registry of replica ids.
//!
//! ```
//! use rederive_itc::{Error, Stamp};
//!
//! // One seed per system; every replica is forked from an existing one.
//! let (alice, bob) = Stamp::seed().fork();
//!
//! // Both update while disconnected.
//! let alice = alice.event()?;
//! let bob = bob.event()?;
//! assert_eq!(alice.to_string(), "((1,0),(0,1,0))");
//!
//! // Comparing the stamps detects the conflict: neither saw the other's
//! // update.
//! assert!(alice.concurrent(&bob));
//! assert_eq!(alice.partial_cmp(&bob), None);
//!
//! // Bob learns Alice's history (a peek carries knowledge, not an id) and
//! // records the reconciled version as a new event, which now dominates both.
//! let bob = bob.join(&alice.peek())?.event()?;
//! assert!(alice < bob);
//!
//! // Alice retires: her stamp is joined into Bob's, who gets her id back.
//! let bob = bob.join(&alice)?;
//! assert_eq!(bob.id().to_string(), "1");
//! assert!(alice <= bob);
//!
//! // Stamps travel as text or as the paper's compact bits.
//! assert_eq!(Stamp::decode(&bob.encode())?, bob);
//! assert_eq!(bob.to_string().parse::<Stamp>()?, bob);
//!
//! // Ids are never used twice: joining a stamp with itself is refused.
//! assert_eq!(bob.join(&bob), Err(Error::OverlappingIds));
//! # Ok::<(), Error>(())
//! ```
//!
//! # The pieces
//!
//! A [`Stamp`] pairs an [`Id`] (the part of the unit interval `[0, 1)` the
//! replica owns) with an [`Event`] tree (how many events it has seen in each
//! part of the interval). [`fork`](Stamp::fork) splits an id in two,
//! [`join`](Stamp::join) sums two ids and takes the pointwise maximum of the
//! event trees, [`event`](Stamp::event) raises the event tree inside the
//! stamp's own id, and [`peek`](Stamp::peek) gives an anonymous copy to send
//! in messages. All trees are kept in the paper's normal form, so stamps stay
//! as small as the current set of replicas allows.
//!
//! Nothing panics on input from outside: [`FromStr`](std::str::FromStr)
//! (module [`text`]) and [`Stamp::decode`] (module [`codec`]) normalize what
//! they read or return an [`Error`] saying where and why, and reject
//! nesting deeper than [`MAX_DEPTH`] before building it. With the `serde`
//! feature, stamps serialize as text in human-readable formats and as the
//! binary encoding otherwise.
//!
//! # A node with no parent to fork from
//!
//! A new node must not call [`Stamp::seed`]: a second seed owns the same
//! interval as the first, and the two systems' stamps can never be joined
//! ([`Error::OverlappingIds`]). Instead it starts with no id and asks any
//! live peer — no registry, coordinator or particular peer is needed:
//!
//! 1. The newcomer starts anonymous, `Stamp::new(Id::zero(), Event::leaf(0))`.
//!    It can already receive and compare stamps (join peers'
//!    [`peek`](Stamp::peek)s into its own), but [`event`](Stamp::event)
//!    fails with [`Error::AnonymousEvent`] until it owns an id.
//! 2. The peer forks its stamp, keeps one half, and sends the other half to
//!    the newcomer, which joins it into its anonymous stamp (`0` plus any id
//!    is that id). The peer must replace its own stamp *before* sending, and
//!    hand that half to this newcomer only: if a half is lost in transit
//!    only that piece of the interval is leaked (history stays correct), but
//!    a half delivered to two nodes would let both claim the same events.
//!    Retrying the same half to the same newcomer is safe, because the
//!    newcomer adopts an id only while it has none.
//! 3. On retiring, a node joins its stamp into a peer's, returning its
//!    interval so ids shrink back.
//!
//! Nodes that must start writing before they can reach anyone need their ids
//! handed out ahead of time: fork one seed offline as often as needed and
//! provision each node with one of the results.
//!
//! # When a fixed-size bitset id would do
//!
//! If the number of replicas alive at once has a small, known bound — say
//! 64 — the interval can be cut into 64 fixed slots and an id kept as a
//! `u64` mask: sum is `|`, the overlap check is `&`, fork gives away some of
//! the set bits, and the event component becomes a fixed array of 64
//! counters. Ids then take 8 bytes and every operation is constant time.
//! What that gives up: a replica holding a single slot cannot fork at all,
//! so a new node must wait for a slot to be returned, and at most 64 nodes
//! exist at any moment; counters cannot be coarser than a slot, so the
//! event component stays 64 counters wide even when two replicas remain. The
//! tree ids here split indefinitely, and the trees shrink again as ids are
//! joined back, at the price of variable-size stamps and operations linear
//! in their size.

#![warn(missing_docs)]

mod error;
mod event;
mod id;
mod stamp;

pub mod codec;
#[cfg(feature = "serde")]
mod serde_impl;
pub mod text;

pub use error::{Error, Malformed, Result};
pub use event::Event;
pub use id::Id;
pub use stamp::Stamp;

// The README's examples run as doctests too.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The deepest nesting of id or event trees accepted from text or binary
/// input. Recursion over a tree is bounded by its depth, so this bound keeps
/// every operation on a decoded stamp well inside a thread's stack, and
/// stamps from this crate's own operations only get this deep after hundreds
/// of forks of one id with no joins in between.
pub const MAX_DEPTH: usize = 512;
