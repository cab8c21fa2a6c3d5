//! Replicas: fork, offline writes, sync, conflicts and their resolution,
//! retiring, and the refusals (unrelated databases, copies made by hand).
use rederive::replica::version::Version;
use rederive::{derive_table, Db, Error, Row};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Note {
    #[row(key)]
    pub id: i64,
    pub text: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Shout {
    pub loud: String,
}

#[derive_table]
fn shout(n: &Note) -> Shout {
    Shout {
        loud: n.text.to_uppercase(),
    }
}

fn note(id: i64, text: &str) -> Note {
    Note {
        id,
        text: text.into(),
    }
}

fn texts(db: &Db, id: i64) -> Vec<Option<String>> {
    db.versions::<Note>(id)
        .unwrap()
        .into_iter()
        .map(|v| v.map(|n| n.text))
        .collect()
}

#[test]
fn two_laptops_edit_offline_conflict_and_resolve() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let desk = Db::open(dir.path().join("desk.db"))?;
    desk.put(note(1, "groceries"))?;
    desk.put(note(2, "call mum"))?;
    desk.refresh()?;
    assert_eq!(texts(&desk, 1), vec![Some("groceries".into())]);
    assert_eq!(
        texts(&desk, 9),
        Vec::<Option<String>>::new(),
        "never written"
    );

    let laptop = desk.fork_replica(dir.path().join("laptop.db"))?;
    assert_eq!(laptop.get::<Note>(1)?.text, "groceries");
    assert_eq!(
        laptop.get::<Shout>(2)?.loud,
        "CALL MUM",
        "derived rows came along"
    );
    let r = laptop.sync_with(&desk)?;
    assert_eq!(
        (r.sent, r.received),
        (0, 0),
        "nothing new since the fork: {r:?}"
    );

    // Offline: an edit on each side, of different rows.
    desk.put(note(2, "call mum back"))?;
    laptop.put(note(3, "book train"))?;
    let r = laptop.sync_with(&desk)?;
    assert_eq!((r.sent, r.received, r.conflicts), (1, 1, 0), "{r:?}");
    for db in [&desk, &laptop] {
        assert_eq!(db.get::<Note>(2)?.text, "call mum back");
        assert_eq!(db.get::<Shout>(3)?.loud, "BOOK TRAIN");
    }
    // Again: nothing to send either way.
    let r = desk.sync_with(&laptop)?;
    assert_eq!((r.sent, r.received), (0, 0), "{r:?}");

    // A conflict: the same row edited on both.
    desk.put(note(1, "groceries: milk"))?;
    laptop.put(note(1, "groceries: eggs"))?;
    let r = desk.sync_with(&laptop)?;
    assert_eq!(r.conflicts, 1, "{r:?}");
    let here = texts(&desk, 1);
    assert_eq!(here.len(), 2, "{here:?}");
    assert_eq!(
        texts(&laptop, 1),
        here,
        "the same versions, in the same order"
    );
    let winner = here[0].clone().unwrap();
    for db in [&desk, &laptop] {
        assert_eq!(db.get::<Note>(1)?.text, winner, "one winner everywhere");
        assert_eq!(db.get::<Shout>(1)?.loud, winner.to_uppercase());
        let c = db.conflicts()?;
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].table.as_str(), c[0].versions), ("Note", 2));
    }
    // Resolved on the laptop (which has seen both).
    laptop.put(note(1, "groceries: milk, eggs"))?;
    assert!(laptop.conflicts()?.is_empty());
    desk.sync_with(&laptop)?;
    for db in [&desk, &laptop] {
        assert_eq!(texts(db, 1), vec![Some("groceries: milk, eggs".into())]);
        assert!(db.conflicts()?.is_empty());
    }

    // An edit against a deletion: both kept; the row wins meanwhile.
    desk.delete::<Note>(3)?;
    laptop.put(note(3, "book train, seat 42"))?;
    laptop.sync_with(&desk)?;
    for db in [&desk, &laptop] {
        assert_eq!(texts(db, 3), vec![Some("book train, seat 42".into()), None]);
        assert_eq!(db.get::<Shout>(3)?.loud, "BOOK TRAIN, SEAT 42");
    }
    // Resolved by deleting, on the desk: gone everywhere.
    desk.delete::<Note>(3)?;
    desk.sync_with(&laptop)?;
    for db in [&desk, &laptop] {
        assert_eq!(texts(db, 3), vec![None], "a plain deletion");
        assert!(db.get::<Note>(3).is_err());
        assert!(db.get::<Shout>(3).is_err());
    }

    // The laptop retires into the desk: its last edit arrives, its writes stop.
    laptop.put(note(4, "from the laptop"))?;
    laptop.retire_into(&desk)?;
    assert_eq!(desk.get::<Note>(4)?.text, "from the laptop");
    match laptop.put(note(5, "too late")) {
        Err(Error::Replica { reason, .. }) => assert!(reason.contains("retired"), "{reason}"),
        other => panic!("a retired replica took a write: {other:?}"),
    }
    assert!(laptop.sync_with(&desk).is_err());
    desk.put(note(5, "the desk goes on"))?;
    Ok(())
}

#[test]
fn unrelated_databases_and_copies_made_by_hand_are_refused() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let a = Db::open(dir.path().join("a.db"))?;
    let b = Db::open(dir.path().join("b.db"))?;
    let err = a.sync_with(&b).unwrap_err().to_string();
    assert!(err.contains("never forked"), "{err}");
    let a2 = a.fork_replica(dir.path().join("a2.db"))?;
    let b2 = b.fork_replica(dir.path().join("b2.db"))?;
    let err = a2.sync_with(&b2).unwrap_err().to_string();
    assert!(err.contains("not a replica of this one"), "{err}");
    drop(a2);
    std::fs::copy(dir.path().join("a2.db"), dir.path().join("copy.db")).unwrap();
    let a2 = Db::open(dir.path().join("a2.db"))?;
    let copy = Db::open(dir.path().join("copy.db"))?;
    let err = copy.sync_with(&a2).unwrap_err().to_string();
    assert!(err.contains("copy of the other made by hand"), "{err}");
    let err = match a.fork_replica(dir.path().join("a2.db")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("forked over an existing file"),
    };
    assert!(err.contains("exists already"), "{err}");
    Ok(())
}

#[test]
fn a_database_that_never_forked_keeps_tombstones_and_no_clocks() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("plain.db"))?;
    assert!(db.replica_meta()?.is_none());
    db.put(note(1, "one"))?;
    assert_eq!(texts(&db, 1), vec![Some("one".into())]);
    db.delete::<Note>(1)?;
    assert_eq!(texts(&db, 1), vec![None], "a plain deletion");
    assert!(!db.delete::<Note>(7)?);
    assert_eq!(texts(&db, 7), Vec::<Option<String>>::new(), "never written");
    db.put(note(1, "again"))?;
    assert_eq!(texts(&db, 1), vec![Some("again".into())]);
    db.delete::<Note>(1)?;
    // The tombstone is part of the genesis both replicas share; a write on
    // either replaces it everywhere.
    let other = db.fork_replica(dir.path().join("other.db"))?;
    assert_eq!(texts(&other, 1), vec![None]);
    other.put(note(1, "back"))?;
    db.sync_with(&other)?;
    assert_eq!(texts(&db, 1), vec![Some("back".into())]);
    assert_eq!(db.get::<Shout>(1)?.loud, "BACK");
    Ok(())
}

mod stamps {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(bool, i64),
        Delete(bool, i64),
        Sync,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<bool>(), 0..3i64).prop_map(|(a, k)| Op::Put(a, k)),
            2 => (any::<bool>(), 0..3i64).prop_map(|(a, k)| Op::Delete(a, k)),
            2 => Just(Op::Sync),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// The clocks stored with rows: a write's clock is strictly newer
        /// than every version its replica held of the key; two writes with
        /// no sync between them on different replicas are concurrent; a
        /// sync keeps exactly the versions no other has seen.
        #[test]
        fn clocks_stored_with_rows_order_writes_causally(ops in proptest::collection::vec(op(), 1..30)) {
            let dir = tempfile::tempdir().unwrap();
            let a = Db::open(dir.path().join("a.db")).unwrap();
            let b = a.fork_replica(dir.path().join("b.db")).unwrap();
            // The last write on each replica since the last sync, by key.
            let mut unsynced: [std::collections::HashMap<i64, Version>; 2] = Default::default();
            for op in ops {
                match op {
                    Op::Put(on_a, k) | Op::Delete(on_a, k) => {
                        let db = if on_a { &a } else { &b };
                        let before = db.stored_versions("Note", k).unwrap();
                        match op {
                            Op::Put(..) => db.put(note(k, &format!("{k}"))).map(|_| ()).unwrap(),
                            _ => db.delete::<Note>(k).map(|_| ()).unwrap(),
                        }
                        let after = db.stored_versions("Note", k).unwrap();
                        if after == before {
                            continue; // nothing changed: no version written
                        }
                        prop_assert_eq!(after.len(), 1);
                        let new = &after[0];
                        for old in &before {
                            prop_assert!(old.event.leq(&new.event) && old.event != new.event,
                                "{:?} not newer than {:?}", new.event, old.event);
                        }
                        let side = usize::from(!on_a);
                        if let Some(theirs) = unsynced[1 - side].get(&k) {
                            prop_assert!(!theirs.event.leq(&new.event) && !new.event.leq(&theirs.event),
                                "writes on two replicas with no sync between are concurrent");
                        }
                        unsynced[side].insert(k, new.clone());
                    }
                    Op::Sync => {
                        let union: Vec<Vec<Version>> = (0..3)
                            .map(|k| {
                                let mut v = a.stored_versions("Note", k).unwrap();
                                v.extend(b.stored_versions("Note", k).unwrap());
                                v
                            })
                            .collect();
                        a.sync_with(&b).unwrap();
                        for (k, all) in union.iter().enumerate() {
                            let kept = a.stored_versions("Note", k as i64).unwrap();
                            prop_assert_eq!(&kept, &b.stored_versions("Note", k as i64).unwrap());
                            for v in all {
                                let seen = kept.iter().any(|w| v.event.leq(&w.event));
                                prop_assert!(seen, "a version was dropped unseen");
                            }
                            for (i, x) in kept.iter().enumerate() {
                                for y in &kept[i + 1..] {
                                    prop_assert!(!x.event.leq(&y.event) && !y.event.leq(&x.event));
                                }
                            }
                        }
                        unsynced = Default::default();
                    }
                }
            }
        }
    }
}
