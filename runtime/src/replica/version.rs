//! Versions of input rows and how replicas reconcile them: the pure rules,
//! with no storage in sight (backends call them inside their transactions).
//!
//! A version is what one replica wrote for a key (its values, or a
//! deletion) with an Interval Tree Clock event tree: the causal history it
//! was written over. A key's current versions are the maximal ones of
//! everything a replica has seen: normally one; several when replicas wrote
//! concurrently (a conflict). A key that no replica has written since the
//! family began holds its **genesis** version implicitly: the row as it was
//! when the first replica forked (or no row), with the empty history, which
//! every written version descends from.

use crate::value::{Key, Value};
use rederive_itc::{Event, Id, Stamp};
use std::cmp::Ordering;

/// One version of an input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// The input table.
    pub table: String,
    /// The row's key.
    pub key: Key,
    /// The causal history the version was written with.
    pub event: Event,
    /// The row's values (every column, key included), or `None` for a
    /// deletion.
    pub values: Option<Vec<Value>>,
}

/// The genesis history: what every written version descends from.
pub fn genesis() -> Event {
    Event::leaf(0)
}

/// An event tree, encoded (the paper's encoding of the anonymous stamp
/// holding it).
pub fn event_bytes(event: &Event) -> Vec<u8> {
    Stamp::new(Id::zero(), event.clone()).encode()
}

/// An event tree, decoded.
pub fn event_from_bytes(bytes: &[u8]) -> Result<Event, String> {
    let stamp = Stamp::decode(bytes).map_err(|e| format!("a stored clock does not decode: {e}"))?;
    if !stamp.id().is_zero() {
        return Err("a version's clock carries an id".into());
    }
    Ok(stamp.into_parts().1)
}

/// A clock id, encoded (the paper's encoding of the stamp with this id and
/// the empty history).
pub fn id_bytes(id: &Id) -> Vec<u8> {
    Stamp::new(id.clone(), genesis()).encode()
}

/// A clock id, decoded.
pub fn id_from_bytes(bytes: &[u8]) -> Result<Id, String> {
    let stamp =
        Stamp::decode(bytes).map_err(|e| format!("a stored clock id does not decode: {e}"))?;
    Ok(stamp.into_parts().0)
}

/// The history of a new write over the key's `current` versions by the
/// replica owning `id`: it has seen every current version (the write
/// resolves a conflict) and one event more.
pub fn next_event(id: &Id, current: &[Version]) -> Result<Event, String> {
    let seen = current.iter().fold(genesis(), |acc, v| acc.join(&v.event));
    Stamp::new(id.clone(), seen)
        .event()
        .map(|s| s.into_parts().1)
        .map_err(|e| format!("cannot record a write: {e}"))
}

/// The versions to keep of one key: the maximal ones among `local` and
/// `received` (a version whose history another one has seen is replaced by
/// it; one with the same history is the same version: the local one stays).
pub fn merge(local: &[Version], received: &[Version]) -> Vec<Version> {
    let mut out: Vec<Version> = Vec::with_capacity(local.len() + received.len());
    for v in local.iter().chain(received) {
        if out.iter().any(|o| v.event.leq(&o.event)) {
            continue; // seen by one kept (or the same)
        }
        out.retain(|o| !o.event.leq(&v.event));
        out.push(v.clone());
    }
    sort(&mut out);
    out
}

/// The order versions are listed in, the same on every replica: the
/// winner first, then the others as [`rank`] orders them.
pub fn sort(versions: &mut [Version]) {
    versions.sort_by(|a, b| rank(b, a));
}

/// Which of two concurrent versions wins while they conflict: a row over a
/// deletion (nothing disappears because of a conflict), then the larger
/// encoded history. Only the versions decide, so every replica picks the
/// same winner.
pub fn rank(a: &Version, b: &Version) -> Ordering {
    a.values
        .is_some()
        .cmp(&b.values.is_some())
        .then_with(|| event_bytes(&a.event).cmp(&event_bytes(&b.event)))
}

/// The winner among a key's versions (see [`rank`]).
pub fn winner(versions: &[Version]) -> Option<&Version> {
    versions.iter().max_by(|a, b| rank(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(event: &Event, value: Option<i64>) -> Version {
        Version {
            table: "T".into(),
            key: Key::Int(1),
            event: event.clone(),
            values: value.map(|n| vec![Value::Integer(1), Value::Integer(n)]),
        }
    }

    #[test]
    fn newer_replaces_older_and_concurrent_stay_side_by_side() {
        let (a, b) = Stamp::seed().fork();
        let e1 = next_event(a.id(), &[]).unwrap();
        let older = v(&e1, Some(1));
        let newer = v(
            &next_event(a.id(), std::slice::from_ref(&older)).unwrap(),
            Some(2),
        );
        assert_eq!(
            merge(std::slice::from_ref(&older), std::slice::from_ref(&newer)),
            vec![newer.clone()]
        );
        assert_eq!(
            merge(std::slice::from_ref(&newer), std::slice::from_ref(&older)),
            vec![newer.clone()]
        );
        let theirs = v(
            &next_event(b.id(), std::slice::from_ref(&older)).unwrap(),
            None,
        );
        let both = merge(std::slice::from_ref(&newer), std::slice::from_ref(&theirs));
        assert_eq!(both.len(), 2);
        assert_eq!(winner(&both), Some(&newer), "a row wins over a deletion");
        assert_eq!(both[0], newer, "the winner is listed first");
        // Merging in the other order gives the same list.
        assert_eq!(
            merge(std::slice::from_ref(&theirs), std::slice::from_ref(&newer)),
            both
        );
        // A write over both resolves the conflict.
        let resolved = v(&next_event(b.id(), &both).unwrap(), Some(3));
        assert_eq!(
            merge(&both, std::slice::from_ref(&resolved)),
            vec![resolved]
        );
    }

    #[test]
    fn clocks_round_trip_through_bytes() {
        let (a, _) = Stamp::seed().fork();
        let e = next_event(a.id(), &[]).unwrap();
        assert_eq!(event_from_bytes(&event_bytes(&e)).unwrap(), e);
        assert_eq!(&id_from_bytes(&id_bytes(a.id())).unwrap(), a.id());
        assert!(event_from_bytes(&id_bytes(a.id())).is_err());
        assert!(event_from_bytes(&[0xff, 0xff]).is_err());
    }
}
