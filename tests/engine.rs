//! Engine behaviour on a small compiler-like graph.
use rederive::{derive_table, Db, Error, Row, Staleness};
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Source {
    #[row(key)]
    pub name: String,
    pub text: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Parsed {
    pub words: i64,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Parity {
    pub even: bool,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Summary {
    pub text: String,
}

static PARSE_CALLS: AtomicUsize = AtomicUsize::new(0);
static PARITY_CALLS: AtomicUsize = AtomicUsize::new(0);
static SUMMARY_CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive_table]
fn parse(src: &Source) -> Result<Parsed, String> {
    PARSE_CALLS.fetch_add(1, Ordering::SeqCst);
    if src.text.contains("syntax error") {
        return Err(format!("cannot parse {}", src.name));
    }
    if src.text.contains("boom") {
        panic!("parser exploded");
    }
    Ok(Parsed {
        words: src.text.split_whitespace().count() as i64,
    })
}

#[derive_table]
fn parity(p: &Parsed) -> Parity {
    PARITY_CALLS.fetch_add(1, Ordering::SeqCst);
    Parity {
        even: p.words % 2 == 0,
    }
}

#[derive_table]
fn summary(p: &Parsed, q: &Parity) -> Summary {
    SUMMARY_CALLS.fetch_add(1, Ordering::SeqCst);
    Summary {
        text: format!("{} words, even: {}", p.words, q.even),
    }
}

fn calls() -> [usize; 3] {
    [
        PARSE_CALLS.load(Ordering::SeqCst),
        PARITY_CALLS.load(Ordering::SeqCst),
        SUMMARY_CALLS.load(Ordering::SeqCst),
    ]
}

fn src(name: &str, text: &str) -> Source {
    Source {
        name: name.into(),
        text: text.into(),
    }
}

// The call counters are global; tests that count run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn refresh_early_cutoff_errors_and_explain() -> rederive::Result<()> {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = Db::open_in_memory()?;
    db.put_all([
        src("a", "one two"),
        src("b", "one two three"),
        src("c", "syntax error here"),
    ])?;
    assert_eq!(db.explain::<Summary>("a")?, Staleness::Missing);
    let before = calls();
    let r = db.refresh()?;
    let after = calls();
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [3, 2, 2]
    );
    assert_eq!((r.computed, r.failed, r.blocked), (6, 1, 2), "{r:?}");
    assert_eq!(db.get::<Summary>("a")?.text, "2 words, even: true");
    assert_eq!(db.explain::<Summary>("a")?, Staleness::Fresh);
    assert_eq!(
        db.explain::<Parsed>("c")?,
        Staleness::Failed {
            message: "cannot parse c".into()
        }
    );
    assert_eq!(
        db.explain::<Summary>("c")?,
        Staleness::Blocked {
            table: "Parsed".into(),
            key: "c".into()
        }
    );
    match db.get::<Summary>("c") {
        Err(Error::Blocked { failed_table, .. }) => assert_eq!(failed_table, "Parsed"),
        other => panic!("expected blocked, got {other:?}"),
    }
    match db.get::<Parsed>("c") {
        Err(Error::Failed { message, .. }) => assert_eq!(message, "cannot parse c"),
        other => panic!("expected failed, got {other:?}"),
    }

    // Nothing stale: nothing runs.
    let before = calls();
    let r = db.refresh()?;
    assert_eq!(calls(), before);
    assert_eq!(r.calls() + r.blocked, 0);

    // Same word count: Parsed is recomputed, unchanged, and nothing downstream runs.
    db.put(src("a", "three four"))?;
    assert_eq!(
        db.explain::<Parsed>("a")?,
        Staleness::InputChanged {
            table: "Source".into(),
            key: "a".into()
        }
    );
    assert_eq!(
        db.explain::<Summary>("a")?,
        Staleness::UpstreamStale {
            table: "Parsed".into(),
            key: "a".into()
        }
    );
    let stale = db.stale_from::<Source>("a")?;
    assert_eq!(stale.len(), 3);
    let before = calls();
    let r = db.refresh()?;
    assert_eq!(calls()[0] - before[0], 1);
    assert_eq!(&calls()[1..], &before[1..]);
    assert_eq!((r.computed, r.unchanged), (0, 1));

    // A put of an equal value changes nothing.
    db.put(src("a", "three four"))?;
    assert_eq!(db.explain::<Parsed>("a")?, Staleness::Fresh);

    // Fix the error: the blocked rows come back.
    db.put(src("c", "fine now"))?;
    let r = db.refresh_from::<Source>("c")?;
    assert_eq!((r.computed, r.failed, r.blocked), (3, 0, 0), "{r:?}");
    assert_eq!(db.get::<Summary>("c")?.text, "2 words, even: true");

    // A panic is stored as a failure with its message.
    db.put(src("d", "boom"))?;
    match db.get::<Parsed>("d") {
        Err(Error::Failed { message, .. }) => assert_eq!(message, "panicked: parser exploded"),
        other => panic!("expected failed, got {other:?}"),
    }

    // Deleting an input deletes what was derived from it.
    assert!(db.delete::<Source>("a")?);
    assert!(matches!(
        db.get::<Summary>("a"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        db.explain::<Summary>("a"),
        Err(Error::NotFound { .. })
    ));
    assert!(!db.delete::<Source>("a")?);
    Ok(())
}

#[test]
fn get_computes_on_demand() -> rederive::Result<()> {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = Db::open_in_memory()?;
    db.put(src("x", "a b c"))?;
    let before = calls();
    assert_eq!(db.get::<Summary>("x")?.text, "3 words, even: false");
    let after = calls();
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [1, 1, 1]
    );
    // Fresh now: a second get computes nothing, and neither does refresh.
    db.get::<Summary>("x")?;
    db.refresh()?;
    assert_eq!(calls(), after);
    assert_eq!(db.get::<Source>("x")?.text, "a b c");
    assert!(matches!(
        db.get::<Summary>("nope"),
        Err(Error::NotFound { .. })
    ));
    Ok(())
}

#[test]
fn restart_finds_nothing_to_do() -> rederive::Result<()> {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("restart.db");
    {
        let db = Db::open(&path)?;
        db.put_all((0..100).map(|i| src(&format!("k{i}"), &"w ".repeat(i))))?;
        let r = db.refresh()?;
        assert_eq!(r.calls(), 300);
    }
    let db = Db::open(&path)?;
    let before = calls();
    let r = db.refresh()?;
    assert_eq!(calls(), before);
    assert_eq!(r.calls() + r.blocked, 0);
    assert!(db.stale_from::<Source>("k5")?.is_empty());
    Ok(())
}

mod awkward {
    use rederive::{derive_table, Row};
    /// Table and column names that are SQL keywords, and a raw identifier.
    #[derive(Row, Debug, Clone, PartialEq)]
    #[row(input)]
    pub struct Group {
        #[row(key)]
        pub r#type: String,
        pub order: i64,
        pub select: Option<Vec<u8>>,
        pub ratio: f32,
    }
    #[derive(Row, Debug, Clone, PartialEq)]
    pub struct Where {
        pub from: String,
    }
    #[derive_table]
    pub fn by(g: &Group) -> Where {
        Where {
            from: format!(
                "{}:{}:{}",
                g.r#type,
                g.order,
                g.select.as_ref().map_or(0, Vec::len)
            ),
        }
    }
}

#[test]
fn keywords_and_odd_keys_are_just_names() -> rederive::Result<()> {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = Db::open_in_memory()?;
    let key = "it's \"quoted\"; DROP TABLE Group; --";
    db.put(awkward::Group {
        r#type: key.into(),
        order: 3,
        select: Some(vec![1, 2]),
        ratio: 0.5,
    })?;
    db.put(awkward::Group {
        r#type: "".into(),
        order: -1,
        select: None,
        ratio: f32::MAX,
    })?;
    db.refresh()?;
    assert_eq!(db.get::<awkward::Where>(key)?.from, format!("{key}:3:2"));
    assert_eq!(db.get::<awkward::Where>("")?.from, ":-1:0");
    assert_eq!(db.get::<awkward::Group>("")?.ratio, f32::MAX);
    assert!(db.delete::<awkward::Group>(key)?);
    assert_eq!(db.keys::<awkward::Group>()?, vec![rederive::Key::from("")]);
    Ok(())
}

mod wide {
    use rederive::Row;
    /// Unsigned counters: stored when they fit in SQLite's signed 64 bits.
    #[derive(Row, Debug, Clone, PartialEq)]
    #[row(input)]
    pub struct Counter {
        #[row(key)]
        pub name: String,
        pub hits: u64,
        pub len: usize,
        pub delta: isize,
    }
}

#[test]
fn wide_integers_are_stored_when_they_fit() -> rederive::Result<()> {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = Db::open_in_memory()?;
    let fits = wide::Counter {
        name: "a".into(),
        hits: i64::MAX as u64,
        len: 3,
        delta: -4,
    };
    db.put(fits.clone())?;
    assert_eq!(db.get::<wide::Counter>("a")?, fits);
    let too_big = wide::Counter {
        name: "b".into(),
        hits: u64::MAX,
        len: 0,
        delta: 0,
    };
    let err = db.put(too_big).unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "cannot encode a `Counter` row: column `hits`: 18446744073709551615 does not fit in a signed 64-bit INTEGER column"
    );
    // Nothing of the refused batch was written.
    assert!(matches!(
        db.get::<wide::Counter>("b"),
        Err(Error::NotFound { .. })
    ));
    Ok(())
}

#[test]
fn delete_removes_the_derived_rows_from_storage() -> rederive::Result<()> {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("delete.db");
    let db = Db::open(&path)?;
    db.put_all([src("a", "one two"), src("b", "three")])?;
    assert_eq!(db.refresh()?.computed, 6);
    let derived = ["Parsed", "Parity", "Summary"];
    let rows = |db: &Db| -> rederive::Result<Vec<(String, u64, u64, u64)>> {
        Ok(db
            .status()?
            .into_iter()
            .filter(|s| derived.contains(&s.table.as_str()))
            .map(|s| (s.table, s.rows, s.missing, s.stale))
            .collect())
    };
    let stored = |table: &str| -> i64 {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    for t in derived {
        assert_eq!(stored(t), 2, "{t}");
    }

    assert!(db.delete::<Source>("a")?);
    for t in derived {
        assert_eq!(stored(t), 1, "the rows of {t} derived from `a` must go");
    }
    let expect = |rows, missing| -> Vec<(String, u64, u64, u64)> {
        derived
            .iter()
            .map(|t| (t.to_string(), rows, missing, 0))
            .collect()
    };
    assert_eq!(rows(&db)?, expect(1, 0));

    // The same input again: its derived rows are missing, not stale
    // leftovers of the deleted row.
    db.put(src("a", "one two"))?;
    assert_eq!(rows(&db)?, expect(1, 1));
    for t in derived {
        assert_eq!(stored(t), 1, "{t}");
    }
    assert_eq!(db.explain::<Parsed>("a")?, Staleness::Missing);
    assert_eq!(db.explain::<Summary>("a")?, Staleness::Missing);
    let before = calls();
    assert_eq!(db.refresh()?.computed, 3);
    let after = calls();
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [1, 1, 1]
    );
    assert_eq!(db.get::<Summary>("a")?.text, "2 words, even: true");
    Ok(())
}
