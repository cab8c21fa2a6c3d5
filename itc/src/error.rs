//! The crate's error type.

use std::fmt;

/// Everything that can go wrong in this crate.
///
/// Operations on stamps fail only for the three reasons a caller can act on
/// ([`OverlappingIds`](Error::OverlappingIds),
/// [`AnonymousEvent`](Error::AnonymousEvent),
/// [`CounterOverflow`](Error::CounterOverflow)); reading a stamp from outside
/// fails with [`Parse`](Error::Parse) or [`Decode`](Error::Decode), which say
/// where the input went wrong and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two stamps with overlapping ids were joined.
    ///
    /// Ids handed out by [`fork`](crate::Stamp::fork) never overlap, so this
    /// means one id was used twice: a stamp was copied instead of forked, a
    /// retired replica's stamp was joined back twice, or two systems were
    /// started from two separate [`seed`](crate::Stamp::seed)s. Joining
    /// anyway would produce an id that silently claims the same interval
    /// twice, so the join is refused. To merge only the *knowledge* of such a
    /// stamp, join its [`peek`](crate::Stamp::peek) instead.
    #[error("cannot join stamps whose ids overlap (an id was copied or used twice)")]
    OverlappingIds,

    /// [`event`](crate::Stamp::event) was called on an anonymous stamp
    /// (id `0`), which owns no part of the id space and so cannot record
    /// events. Obtain an id first, by [`fork`](crate::Stamp::fork)ing a
    /// stamp that has one and [`join`](crate::Stamp::join)ing one half.
    #[error("cannot record an event on an anonymous stamp (id 0); fork an id from a peer first")]
    AnonymousEvent,

    /// Recording an event would push a counter past `u64::MAX`.
    #[error("event counter would exceed u64::MAX")]
    CounterOverflow,

    /// Text given to [`FromStr`](std::str::FromStr) is not a stamp, id or
    /// event tree in the paper's notation.
    #[error("invalid clock text at byte {position}: {problem}")]
    Parse {
        /// Byte offset into the text where the problem was found.
        position: usize,
        /// What is wrong there.
        problem: Malformed,
    },

    /// Bytes given to [`Stamp::decode`](crate::Stamp::decode) are not an
    /// encoded stamp.
    #[error("invalid stamp encoding at bit {bit}: {problem}")]
    Decode {
        /// Bit offset (most significant bit of the first byte is bit 0)
        /// where the problem was found.
        bit: usize,
        /// What is wrong there.
        problem: Malformed,
    },
}

/// Why a text or binary input was rejected (see [`Error::Parse`] and
/// [`Error::Decode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Malformed {
    /// Something else was expected here (the text names it).
    Expected(&'static str),
    /// The input ended in the middle of a stamp.
    UnexpectedEnd,
    /// Trees are nested deeper than [`MAX_DEPTH`](crate::MAX_DEPTH).
    TooDeep,
    /// A counter, or the sum of counters along a path of an event tree,
    /// exceeds `u64::MAX`.
    CounterTooLarge,
    /// A number in the text has a leading zero (numbers are written in
    /// canonical decimal).
    LeadingZero,
    /// A complete stamp was read but input remains (for binary input:
    /// more than the zero padding of the last byte).
    TrailingInput,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Expected(what) => write!(f, "expected {what}"),
            Malformed::UnexpectedEnd => f.write_str("unexpected end of input"),
            Malformed::TooDeep => write!(
                f,
                "trees nested deeper than the limit of {}",
                crate::MAX_DEPTH
            ),
            Malformed::CounterTooLarge => f.write_str("counter exceeds u64::MAX"),
            Malformed::LeadingZero => f.write_str("number with a leading zero"),
            Malformed::TrailingInput => f.write_str("input continues after the stamp"),
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
