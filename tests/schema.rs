//! Opening databases: bad files, newer formats, schema changes, code versions.
use rederive::node::registered_nodes;
use rederive::{Db, Error, Graph, NodeDef, Row, Staleness};

mod v1 {
    use rederive::{derive_table, Row};
    #[derive(Row, Debug, Clone, PartialEq)]
    #[row(input)]
    pub struct Doc {
        #[row(key)]
        pub id: i64,
        pub text: String,
    }
    #[derive(Row, Debug, Clone, PartialEq)]
    pub struct Len {
        pub n: i64,
    }
    #[derive_table]
    pub fn len_v1(d: &Doc) -> Len {
        Len {
            n: d.text.len() as i64,
        }
    }
}

mod v2 {
    use rederive::{derive_table, Row};
    /// v1 plus a nullable column: migrated in place.
    #[derive(Row, Debug, Clone, PartialEq)]
    #[row(input)]
    pub struct Doc {
        #[row(key)]
        pub id: i64,
        pub text: String,
        pub author: Option<String>,
    }
    /// A different derived row type: the table is rebuilt.
    #[derive(Row, Debug, Clone, PartialEq)]
    pub struct Len {
        pub n: i64,
        pub words: i64,
    }
    #[derive_table]
    pub fn len_v2(d: &Doc) -> Len {
        Len {
            n: d.text.len() as i64,
            words: d.text.split_whitespace().count() as i64,
        }
    }
}

mod v3 {
    use rederive::Row;
    /// v1 with a column renamed: refused.
    #[derive(Row, Debug, Clone, PartialEq)]
    #[row(input)]
    pub struct Doc {
        #[row(key)]
        pub id: i64,
        pub body: String,
    }
}

fn node(name: &str) -> NodeDef {
    *registered_nodes()
        .into_iter()
        .find(|n| n.name == name)
        .unwrap()
}

fn graph_v1() -> Graph {
    Graph::new(vec![&<v1::Doc as Row>::TABLE], vec![node("len_v1")]).unwrap()
}

fn graph_v2() -> Graph {
    Graph::new(vec![&<v2::Doc as Row>::TABLE], vec![node("len_v2")]).unwrap()
}

#[test]
fn a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are my notes, not a database; ".repeat(200)).unwrap();
    let err = Db::open_with(&path, graph_v1())
        .err()
        .expect("must be refused");
    assert!(matches!(err, Error::NotADatabase { .. }), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    // The file is untouched.
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .starts_with("these are my notes"));
}

#[test]
fn an_sqlite_database_of_someone_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT)")
        .unwrap();
    drop(conn);
    let err = Db::open_with(&path, graph_v1())
        .err()
        .expect("must be refused");
    assert!(matches!(err, Error::NotADatabase { .. }), "{err}");
    assert!(err.to_string().contains("customers"), "{err}");
}

#[test]
fn a_database_from_a_newer_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    drop(Db::open_with(&path, graph_v1()).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE rederive_meta SET value = 99 WHERE key = 'format'",
        [],
    )
    .unwrap();
    drop(conn);
    let err = Db::open_with(&path, graph_v1())
        .err()
        .expect("must be refused");
    assert!(matches!(err, Error::NewerFormat { found: 99, .. }), "{err}");
}

#[test]
fn input_gains_a_nullable_column_and_derived_table_is_rebuilt() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("migrate.db");
    {
        let db = Db::open_with(&path, graph_v1())?;
        db.put_all([
            v1::Doc {
                id: 1,
                text: "a b".into(),
            },
            v1::Doc {
                id: 2,
                text: "c".into(),
            },
        ])?;
        db.refresh()?;
        assert_eq!(db.get::<v1::Len>(1)?.n, 3);
    }
    let db = Db::open_with(&path, graph_v2())?;
    // Input rows kept, the new column is NULL.
    assert_eq!(
        db.get::<v2::Doc>(1)?,
        v2::Doc {
            id: 1,
            text: "a b".into(),
            author: None
        }
    );
    // The derived table was rebuilt and is recomputed.
    assert_eq!(db.explain::<v2::Len>(1)?, Staleness::Missing);
    let r = db.refresh()?;
    assert_eq!(r.computed, 2);
    assert_eq!(db.get::<v2::Len>(1)?, v2::Len { n: 3, words: 2 });
    db.put(v2::Doc {
        id: 3,
        text: "x".into(),
        author: Some("ann".into()),
    })?;
    assert_eq!(db.get::<v2::Doc>(3)?.author.as_deref(), Some("ann"));
    Ok(())
}

#[test]
fn incompatible_input_change_is_refused_and_loses_nothing() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refuse.db");
    {
        let db = Db::open_with(&path, graph_v1())?;
        db.put(v1::Doc {
            id: 1,
            text: "keep me".into(),
        })?;
    }
    let g3 = Graph::new(vec![&<v3::Doc as Row>::TABLE], vec![]).unwrap();
    let err = Db::open_with(&path, g3).err().expect("must be refused");
    let msg = err.to_string();
    assert!(matches!(err, Error::SchemaChanged { .. }), "{msg}");
    assert!(
        msg.contains("`Doc`")
            && msg.contains("text TEXT NOT NULL")
            && msg.contains("body TEXT NOT NULL"),
        "{msg}"
    );
    // The old program still opens the file and finds its rows.
    let db = Db::open_with(&path, graph_v1())?;
    assert_eq!(db.get::<v1::Doc>(1)?.text, "keep me");
    Ok(())
}

#[test]
fn declared_files_are_part_of_the_code_version() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("files.db");
    let grammar_dir = dir.path().join("grammar");
    std::fs::create_dir(&grammar_dir).unwrap();
    std::fs::write(grammar_dir.join("rules.txt"), "rule 1").unwrap();
    let base: &'static str = Box::leak(dir.path().to_string_lossy().into_owned().into_boxed_str());
    let graph = || {
        let mut n = node("len_v1");
        n.files = &["grammar/*.txt"];
        n.base_dir = base;
        Graph::new(vec![&<v1::Doc as Row>::TABLE], vec![n]).unwrap()
    };
    {
        let db = Db::open_with(&path, graph())?;
        db.put(v1::Doc {
            id: 1,
            text: "abc".into(),
        })?;
        db.refresh()?;
    }
    // Unchanged files: fresh after reopening.
    {
        let db = Db::open_with(&path, graph())?;
        assert_eq!(db.explain::<v1::Len>(1)?, Staleness::Fresh);
    }
    std::fs::write(grammar_dir.join("rules.txt"), "rule 2").unwrap();
    let db = Db::open_with(&path, graph())?;
    assert_eq!(
        db.explain::<v1::Len>(1)?,
        Staleness::CodeChanged {
            node: "len_v1".into()
        }
    );
    let r = db.refresh()?;
    assert_eq!(
        (r.computed, r.unchanged),
        (0, 1),
        "same value: early cutoff"
    );
    // A new file matching the glob counts too.
    std::fs::write(grammar_dir.join("more.txt"), "rule 3").unwrap();
    drop(db);
    let db = Db::open_with(&path, graph())?;
    assert_eq!(
        db.explain::<v1::Len>(1)?,
        Staleness::CodeChanged {
            node: "len_v1".into()
        }
    );
    Ok(())
}

#[test]
fn bad_keys_are_clear_errors() -> rederive::Result<()> {
    let db = Db::open_in_memory_with(graph_v1())?;
    let err = db.get::<v1::Doc>("not a number").unwrap_err();
    assert!(matches!(err, Error::KeyType { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "invalid key \"not a number\" for table `Doc`: the key column is INTEGER"
    );
    // Text that is a number is accepted for an integer key.
    db.put(v1::Doc {
        id: 7,
        text: "x".into(),
    })?;
    assert_eq!(db.get::<v1::Doc>("7")?.id, 7);
    let err = db.get::<v1::Doc>(8).unwrap_err();
    assert_eq!(err.to_string(), "no row 8 in `Doc`");
    Ok(())
}

mod bad {
    use rederive::{derive_table, Row};
    use serde::{Deserialize, Serialize};
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Settings {
        pub depth: u8,
    }
    #[derive(Row, Debug, Clone, PartialEq)]
    #[row(input)]
    pub struct Config {
        #[row(key)]
        pub name: String,
        #[row(json)]
        pub settings: Settings,
        pub flag: bool,
    }
    #[derive(Row, Debug, Clone, PartialEq)]
    pub struct Depth {
        pub depth: i64,
    }
    #[derive_table]
    pub fn depth(c: &Config) -> Depth {
        Depth {
            depth: c.settings.depth.into(),
        }
    }
}

#[test]
fn values_that_do_not_decode_are_errors_not_panics() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.db");
    let graph = || Graph::new(vec![&<bad::Config as Row>::TABLE], vec![node("depth")]).unwrap();
    let db = Db::open_with(&path, graph())?;
    db.put(bad::Config {
        name: "ok".into(),
        settings: bad::Settings { depth: 3 },
        flag: true,
    })?;
    db.put(bad::Config {
        name: "broken".into(),
        settings: bad::Settings { depth: 1 },
        flag: false,
    })?;
    // Someone writes rows the types cannot hold: JSON of the wrong shape, a
    // number out of range, a bool that is neither 0 nor 1.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        r#"UPDATE Config SET settings = '{"depth": 900}' WHERE name = 'broken'"#,
        [],
    )
    .unwrap();
    let err = db.get::<bad::Config>("broken").unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    assert!(
        err.to_string().contains("column `settings` of `Config`"),
        "{err}"
    );
    // The function is not run on an input that does not decode; the failure
    // is stored like any other, and blocks nothing else.
    let r = db.refresh()?;
    assert_eq!((r.computed, r.failed), (1, 1), "{r:?}");
    match db.explain::<bad::Depth>("broken")? {
        Staleness::Failed { message } => assert!(
            message.contains("cannot decode input row of `Config`"),
            "{message}"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(db.get::<bad::Depth>("ok")?.depth, 3);
    conn.execute("UPDATE Config SET flag = 7 WHERE name = 'ok'", [])
        .unwrap();
    let err = db.get::<bad::Config>("ok").unwrap_err();
    assert!(err.to_string().contains("7 is not a bool"), "{err}");
    // Nothing was lost: both rows are still there.
    let n: i64 = conn
        .query_row("SELECT count(*) FROM Config", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    Ok(())
}

#[test]
fn opening_to_read_writes_nothing() -> rederive::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("read.db");
    {
        let db = Db::open_with(&path, graph_v1())?;
        db.put(v1::Doc {
            id: 1,
            text: "abc".into(),
        })?;
        db.refresh()?;
    }
    let watcher = rusqlite::Connection::open(&path).unwrap();
    let version = |c: &rusqlite::Connection| -> i64 {
        c.query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap()
    };
    let before = version(&watcher);
    {
        let db = Db::open_with(&path, graph_v1())?;
        assert_eq!(db.explain::<v1::Len>(1)?, Staleness::Fresh);
        assert_eq!(db.get::<v1::Len>(1)?.n, 3);
        db.status()?;
        db.errors()?;
    }
    assert_eq!(version(&watcher), before, "reading must not write");
    // A write is seen.
    Db::open_with(&path, graph_v1())?.put(v1::Doc {
        id: 2,
        text: "x".into(),
    })?;
    assert_ne!(version(&watcher), before);
    Ok(())
}
