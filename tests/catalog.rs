//! Catalog rules that protect the user's file: read-only opens change no
//! table, another program's database is refused, and tables left by removed
//! functions are reported and dropped only on request.
use rederive::engine::OpenMode;
use rederive::node::registered_nodes;
use rederive::sqlite::SqliteStore;
use rederive::{Db, Error, Graph, NodeDef, Row, Staleness};
use std::path::Path;

mod common;

mod notes {
    use rederive::{derive_table, Row};
    #[derive(Row, Debug, Clone, PartialEq)]
    #[row(input)]
    pub struct Note {
        #[row(key)]
        pub id: i64,
        pub text: String,
    }
    #[derive(Row, Debug, Clone, PartialEq)]
    pub struct Shout {
        pub text: String,
    }
    #[derive(Row, Debug, Clone, PartialEq)]
    pub struct Length {
        pub n: i64,
    }
    #[derive(Row, Debug, Clone, PartialEq)]
    #[row(input)]
    pub struct Tag {
        #[row(key)]
        pub name: String,
    }
    #[derive_table]
    pub fn shout(n: &Note) -> Shout {
        Shout {
            text: n.text.to_uppercase(),
        }
    }
    #[derive_table]
    pub fn length(n: &Note) -> Length {
        Length {
            n: n.text.len() as i64,
        }
    }
}

mod orders {
    use rederive::{derive_table, Row};
    #[derive(Row, Debug, Clone, PartialEq)]
    #[row(input)]
    pub struct Order {
        #[row(key)]
        pub id: i64,
        pub qty: i64,
    }
    #[derive(Row, Debug, Clone, PartialEq)]
    pub struct Total {
        pub qty: i64,
    }
    #[derive_table]
    pub fn total(o: &Order) -> Total {
        Total { qty: o.qty }
    }
}

fn node(name: &str) -> NodeDef {
    *registered_nodes()
        .into_iter()
        .find(|n| n.name == name)
        .unwrap()
}

/// Notes, their shouts and lengths, and tags.
fn notes_full() -> Graph {
    Graph::new(
        vec![&<notes::Note as Row>::TABLE, &<notes::Tag as Row>::TABLE],
        vec![node("shout"), node("length")],
    )
    .unwrap()
}

/// The same program after `length` and `Tag` were removed.
fn notes_reduced() -> Graph {
    Graph::new(vec![&<notes::Note as Row>::TABLE], vec![node("shout")]).unwrap()
}

fn orders() -> Graph {
    Graph::new(vec![&<orders::Order as Row>::TABLE], vec![node("total")]).unwrap()
}

fn open_to_read(path: &Path, graph: Graph) -> rederive::Result<Db> {
    Db::open_backend_as(Box::new(SqliteStore::open(path)?), graph, OpenMode::Read)
}

fn orders_db(path: &Path) -> rederive::Result<()> {
    let db = Db::open_with(path, orders())?;
    db.put(orders::Order { id: 1, qty: 3 })?;
    db.refresh()?;
    Ok(())
}

#[test]
fn a_read_only_open_of_another_programs_database_changes_nothing() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.db");
    orders_db(&path)?;
    let before = common::sqlite_tables(&path);
    let err = open_to_read(&path, notes_full()).err().expect("refused");
    assert!(matches!(err, Error::OtherGraph { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("Order") && text.contains("Total"), "{text}");
    assert!(text.contains("Note"), "names this program's tables: {text}");
    assert_eq!(common::sqlite_tables(&path), before, "nothing was created");
    Ok(())
}

#[test]
fn a_write_open_of_another_programs_database_is_refused_too() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.db");
    orders_db(&path)?;
    let before = common::sqlite_tables(&path);
    let err = Db::open_with(&path, notes_full()).err().expect("refused");
    assert!(matches!(err, Error::OtherGraph { .. }), "{err}");
    assert_eq!(common::sqlite_tables(&path), before, "nothing was created");
    // Its own program still opens it, rows intact.
    let db = Db::open_with(&path, orders())?;
    assert_eq!(db.get::<orders::Total>(1)?.qty, 3);
    Ok(())
}

#[test]
fn a_read_only_open_says_which_tables_are_missing() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    {
        let db = Db::open_with(&path, notes_reduced())?;
        db.put(notes::Note {
            id: 1,
            text: "hi".into(),
        })?;
    }
    let before = common::sqlite_tables(&path);
    let err = open_to_read(&path, notes_full()).err().expect("refused");
    match &err {
        Error::SchemaNotApplied { missing, changed } => {
            assert_eq!(missing, &["Length", "Tag"]);
            assert!(changed.is_empty());
        }
        other => panic!("expected SchemaNotApplied, got {other}"),
    }
    assert!(err.to_string().contains("refresh"), "{err}");
    assert_eq!(common::sqlite_tables(&path), before, "nothing was created");
    // A read-only open of a database in step works, and reads.
    let db = open_to_read(&path, notes_reduced())?;
    assert_eq!(db.explain::<notes::Shout>(1)?, Staleness::Missing);
    Ok(())
}

#[test]
fn leftover_tables_are_reported_and_dropped_only_on_request() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    {
        let db = Db::open_with(&path, notes_full())?;
        db.put(notes::Note {
            id: 1,
            text: "hi".into(),
        })?;
        db.put(notes::Tag { name: "red".into() })?;
        db.refresh()?;
    }
    let db = Db::open_with(&path, notes_reduced())?;
    assert_eq!(db.get::<notes::Shout>(1)?.text, "HI");
    let leftovers = db.leftover_tables()?;
    let names: Vec<(&str, bool, u64)> = leftovers
        .iter()
        .map(|t| (t.name.as_str(), t.input, t.rows))
        .collect();
    assert_eq!(names, [("Length", false, 1), ("Tag", true, 1)]);
    let status = db.status()?;
    let reported: Vec<&str> = status
        .iter()
        .filter(|s| s.leftover)
        .map(|s| s.table.as_str())
        .collect();
    assert_eq!(reported, ["Length", "Tag"]);

    // A table of the graph is never dropped; an input table only explicitly.
    let err = db.drop_leftover_table("Shout", true).unwrap_err();
    assert!(matches!(err, Error::NotDropped { .. }), "{err}");
    let err = db.drop_leftover_table("Tag", false).unwrap_err();
    assert!(err.to_string().contains("input table"), "{err}");
    assert!(common::sqlite_tables(&path).contains(&"Tag".to_owned()));
    db.drop_leftover_table("Length", false)?;
    assert!(!common::sqlite_tables(&path).contains(&"Length".to_owned()));
    db.drop_leftover_table("Tag", true)?;
    assert!(!common::sqlite_tables(&path).contains(&"Tag".to_owned()));
    assert!(db.leftover_tables()?.is_empty());
    assert_eq!(db.get::<notes::Shout>(1)?.text, "HI", "the rest is intact");
    Ok(())
}

/// A database written before derived rows named their code version by an
/// id (layout 1: `__code TEXT`) is read as out of step, and a write open
/// rebuilds its derived tables, keeping every input row.
#[test]
fn derived_tables_of_an_older_layout_are_rebuilt_and_inputs_kept() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.db");
    orders_db(&path)?;
    {
        // What an older rederive left: a text code version in every row,
        // and a catalog entry without the layout.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE Total;
             CREATE TABLE Total(__key INTEGER NOT NULL PRIMARY KEY, qty INTEGER,
                 __status INTEGER NOT NULL, __error TEXT, __origin_key ANY,
                 __code TEXT NOT NULL, __changed_at INTEGER NOT NULL,
                 __in_0 INTEGER NOT NULL) STRICT;
             INSERT INTO Total VALUES (1, 99, 0, NULL, NULL, 'abcdef0123456789', 1, 1);
             UPDATE rederive_tables SET columns = replace(columns, ' | layout 2', '')
                 WHERE name = 'Total';",
        )
        .unwrap();
    }
    match open_to_read(&path, orders()).err().expect("out of step") {
        Error::SchemaNotApplied { missing, changed } => {
            assert!(missing.is_empty());
            assert_eq!(changed, ["Total"]);
        }
        other => panic!("expected SchemaNotApplied, got {other}"),
    }
    let db = Db::open_with(&path, orders())?;
    assert_eq!(db.explain::<orders::Total>(1)?, Staleness::Missing);
    let report = db.refresh()?;
    assert_eq!(report.computed, 1);
    assert_eq!(
        db.get::<orders::Total>(1)?.qty,
        3,
        "computed again, not the old row"
    );
    assert_eq!(db.get::<orders::Order>(1)?.qty, 3, "the input row is kept");
    Ok(())
}
