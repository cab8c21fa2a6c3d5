//! Cases on recorded reads: stored with the row, replaced with it, found
//! from the row read, and followed through changes, creations and deletes.
//! In the suite's graph, `Twice` declares reads of `Len` and `Tag`.

use super::{int, ok, run, Harness};
use crate::storage::{Outcome, Read, RecordedRead, Revision};
use crate::value::Key;

fn reading(mut o: Outcome, reads: Vec<Read>) -> Outcome {
    o.reads = reads;
    o
}

/// The reads written with a row are returned with the read rows' current
/// `changed_at`, found from each row read, and replaced (not merged) when
/// the row is written again; a write the guard rejects keeps them.
pub fn reads_are_recorded_with_the_row(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        let r1 = fx.put(&[(1, "a"), (2, "bb")])?;
        fx.write(
            fx.len,
            &[ok(1, &[r1], vec![int(1)]), ok(2, &[r1], vec![int(2)])],
        )?;
        let len1 = fx.must(fx.len, 1)?.changed_at;
        let len2 = fx.must(fx.len, 2)?.changed_at;
        let read_len2 = Read {
            table: fx.len,
            key: Key::Int(2),
            seen: Some(len2),
        };
        let read_x = Read {
            table: fx.tag,
            key: Key::from("x"),
            seen: None,
        };
        let first = reading(
            ok(1, &[len1], vec![int(3)]),
            vec![read_x.clone(), read_len2.clone()],
        );
        fx.write(fx.twice, &[first])?;
        let mut want = vec![
            RecordedRead {
                read: read_len2.clone(),
                now: Some(len2),
            },
            RecordedRead {
                read: read_x.clone(),
                now: None,
            },
        ];
        want.sort_by(|a, b| a.read.cmp(&b.read));
        assert_eq!(
            db.reads_of(&fx.g, fx.twice, &Key::Int(1))?,
            want,
            "reads_of"
        );
        assert_eq!(
            db.readers_of(&fx.g, fx.len, &Key::Int(2))?,
            [(fx.twice, Key::Int(1))],
            "readers of a row read"
        );
        assert_eq!(
            db.readers_of(&fx.g, fx.tag, &Key::from("x"))?,
            [(fx.twice, Key::Int(1))],
            "readers of a key read as absent"
        );
        assert!(db.readers_of(&fx.g, fx.len, &Key::Int(1))?.is_empty());
        assert!(
            db.reads_of(&fx.g, fx.twice, &Key::Int(2))?.is_empty(),
            "a row that does not exist records no reads"
        );

        // Rewritten: the new reads replace the old.
        let read_len1 = Read {
            table: fx.len,
            key: Key::Int(1),
            seen: Some(len1),
        };
        fx.write(
            fx.twice,
            &[reading(
                ok(1, &[len1], vec![int(3)]),
                vec![read_len1.clone()],
            )],
        )?;
        assert_eq!(
            db.reads_of(&fx.g, fx.twice, &Key::Int(1))?,
            [RecordedRead {
                read: read_len1.clone(),
                now: Some(len1),
            }],
            "replaced, even by an unchanged result"
        );
        assert!(db.readers_of(&fx.g, fx.len, &Key::Int(2))?.is_empty());
        assert!(db.readers_of(&fx.g, fx.tag, &Key::from("x"))?.is_empty());

        // A result from older inputs is rejected with its reads.
        let late = reading(
            ok(1, &[Revision::new(len1.get() - 1)], vec![int(9)]),
            vec![read_len2],
        );
        fx.write(fx.twice, &[late])?;
        assert_eq!(
            db.reads_of(&fx.g, fx.twice, &Key::Int(1))?.len(),
            1,
            "a rejected write keeps the recorded reads"
        );
        assert_eq!(
            db.readers_of(&fx.g, fx.len, &Key::Int(1))?,
            [(fx.twice, Key::Int(1))]
        );
        Ok(())
    })
}

/// `readers_changed_since` lists, in key order and by pages, the readers
/// of rows changed, created or deleted after a revision; a reader whose
/// root row is deleted takes its reads along.
pub fn readers_follow_changes_creations_and_deletes(h: &Harness) {
    run(h, |fx| {
        let db = &*fx.db;
        let r1 = fx.put(&[(1, "a"), (2, "bb"), (3, "ccc")])?;
        fx.write(
            fx.len,
            &[
                ok(1, &[r1], vec![int(1)]),
                ok(2, &[r1], vec![int(2)]),
                ok(3, &[r1], vec![int(3)]),
            ],
        )?;
        let ins = |k: i64| -> crate::error::Result<Vec<Revision>> {
            Ok(vec![fx.must(fx.len, k)?.changed_at])
        };
        let len2 = fx.must(fx.len, 2)?.changed_at;
        // Twice 1 reads Len 2; Twice 3 reads Tag "x", which does not exist.
        fx.write(
            fx.twice,
            &[
                reading(
                    ok(1, &ins(1)?, vec![int(0)]),
                    vec![Read {
                        table: fx.len,
                        key: Key::Int(2),
                        seen: Some(len2),
                    }],
                ),
                reading(
                    ok(3, &ins(3)?, vec![int(0)]),
                    vec![Read {
                        table: fx.tag,
                        key: Key::from("x"),
                        seen: None,
                    }],
                ),
            ],
        )?;
        let since = db.revision()?;
        let changed = |since: Revision, after: Option<i64>, limit: usize| {
            db.readers_changed_since(&fx.g, fx.twice, since, after.map(Key::Int).as_ref(), limit)
        };
        assert!(
            changed(since, None, 10)?.is_empty(),
            "nothing read changed yet"
        );
        assert!(
            db.readers_changed_since(&fx.g, fx.len, Revision::ZERO, None, 10)?
                .is_empty(),
            "a table without declared reads has no readers"
        );

        // Len 2 changes: Twice 1 is listed.
        let r2 = fx.put(&[(2, "bbbb")])?;
        fx.write(fx.len, &[ok(2, &[r2], vec![int(4)])])?;
        assert_eq!(
            changed(since, None, 10)?,
            [Key::Int(1)],
            "a read row changed"
        );
        // Tag "x" appears: Twice 3 too.
        fx.put_tags(&[("x", None, 1.0)])?;
        assert_eq!(
            changed(since, None, 10)?,
            [Key::Int(1), Key::Int(3)],
            "a key read as absent appeared"
        );
        assert_eq!(changed(since, None, 1)?, [Key::Int(1)], "a page of one");
        assert_eq!(
            changed(since, Some(1), 10)?,
            [Key::Int(3)],
            "the page after 1"
        );
        let now = db.revision()?;
        assert!(
            changed(now, None, 10)?.is_empty(),
            "nothing after the last change"
        );
        assert_eq!(
            db.reads_of(&fx.g, fx.twice, &Key::Int(3))?[0].now,
            Some(fx.must(fx.tag, "x")?.changed_at),
            "the read row's changed_at now"
        );

        // Src 2 is deleted, and Len 2 with it: Twice 1 is listed again.
        assert!(db.delete_row(&fx.g, fx.src, &Key::Int(2))?);
        assert_eq!(changed(now, None, 10)?, [Key::Int(1)], "a read row deleted");
        assert_eq!(db.reads_of(&fx.g, fx.twice, &Key::Int(1))?[0].now, None);

        // Src 1 is deleted: Twice 1 goes, and its reads with it.
        assert!(db.delete_row(&fx.g, fx.src, &Key::Int(1))?);
        assert!(db.reads_of(&fx.g, fx.twice, &Key::Int(1))?.is_empty());
        assert!(db.readers_of(&fx.g, fx.len, &Key::Int(2))?.is_empty());
        assert_eq!(
            db.readers_of(&fx.g, fx.tag, &Key::from("x"))?,
            [(fx.twice, Key::Int(3))]
        );
        Ok(())
    })
}
