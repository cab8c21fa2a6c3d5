//! Interval Tree Clocks (placeholder, being written).

/// A stamp: an id tree and an event tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stamp;
