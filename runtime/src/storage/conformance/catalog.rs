//! Cases on the catalog: creating, migrating and dropping tables.

use super::{codes, graph_with, int, ok, run_bare, text, Harness, CODE, LEN, LEN_WIDE, OTHER};
use super::{SRC, SRC_NARROW, SRC_WIDE};
use crate::catalog::{fingerprint, StoredTable};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::storage::{Backend, Revision, Values, Written};
use crate::value::{Key, Value};

/// What the catalog should hold for `graph`, sorted by name.
fn expected(graph: &Graph, codes: &[Option<String>]) -> Vec<StoredTable> {
    let mut out: Vec<StoredTable> = graph
        .ids()
        .map(|id| StoredTable {
            name: graph.table(id).info.name.to_owned(),
            input: graph.table(id).info.input,
            columns: fingerprint(graph, id),
            code: codes[id.index()].clone(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The catalog, sorted by name (its order is the backend's).
fn stored(db: &dyn Backend) -> Result<Vec<StoredTable>> {
    let mut out = db.stored_tables()?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `stored_tables` is empty for a new database and describes every table
/// after `apply_schema`; applying the same graph again changes nothing; a
/// new code version is recorded and resets the table's watermark and epoch
/// mark but keeps its rows; a table the graph no longer has is left alone
/// (and counted) until `drop_table` drops it.
pub fn catalog_apply_and_drop(h: &Harness) {
    run_bare(h, |fx| {
        let db = &*fx.db;
        assert_eq!(db.stored_tables()?, [], "a new database holds no tables");
        let codes1 = codes(&fx.g, CODE);
        db.apply_schema(&fx.g, &codes1)?;
        assert_eq!(stored(db)?, expected(&fx.g, &codes1));
        for t in fx.g.tables() {
            assert_eq!(db.row_count(t.info.name)?, 0);
        }

        let r1 = fx.put(&[(1, "a")])?;
        let rt = fx.put_tags(&[("t", None, 1.0)])?;
        fx.write(fx.len, &[ok(1, &[r1], vec![int(1)])])?;
        fx.write(fx.tag_len, &[ok("t", &[rt], vec![int(1)])])?;
        let (rev, epoch) = db.snapshot()?;
        for name in ["Len", "Twice"] {
            db.mark_processed(name, rev, epoch)?;
        }
        let settled = || db.load_if_settled(&fx.g, &fx.g.ancestry(fx.twice), &Key::Int(1));
        assert!(settled()?.is_some());

        db.apply_schema(&fx.g, &codes1)?;
        assert_eq!(
            stored(db)?,
            expected(&fx.g, &codes1),
            "applying again changes nothing"
        );
        assert_eq!((db.row_count("Src")?, db.row_count("Len")?), (1, 1));
        assert_eq!(db.watermark("Len")?, rev, "applying again keeps watermarks");
        assert!(settled()?.is_some(), "applying again keeps epoch marks");

        let mut codes2 = codes1.clone();
        codes2[fx.len.index()] = Some("code-2".into());
        db.apply_schema(&fx.g, &codes2)?;
        assert_eq!(
            stored(db)?,
            expected(&fx.g, &codes2),
            "the new code version is recorded"
        );
        assert_eq!(
            db.watermark("Len")?,
            Revision::ZERO,
            "a new code version resets the watermark"
        );
        assert_eq!(db.watermark("Twice")?, rev, "other tables keep theirs");
        assert_eq!(settled()?, None, "a new code version resets the epoch mark");
        assert_eq!(
            fx.must(fx.len, 1)?.values,
            [int(1)],
            "a new code version keeps the rows"
        );

        // A graph without TagLen.
        let g2 = graph_with(&SRC, &LEN, false);
        let codes3 = codes(&g2, "code-2");
        db.apply_schema(&g2, &codes3)?;
        let mut want = expected(&g2, &codes3);
        want.extend(
            expected(&fx.g, &codes2)
                .into_iter()
                .filter(|t| t.name == "TagLen"),
        );
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            stored(db)?,
            want,
            "a table the graph no longer has is left alone"
        );
        assert_eq!(
            db.row_count("TagLen")?,
            1,
            "a leftover table is counted by name"
        );
        assert!(db.drop_table("TagLen")?, "drop_table finds the leftover");
        assert!(
            stored(db)?.iter().all(|t| t.name != "TagLen"),
            "dropped from the catalog"
        );
        assert!(!db.drop_table("TagLen")?, "dropped already");
        assert!(!db.drop_table("Nope")?, "never was");
        assert_eq!(db.row_count("Tag")?, 1, "its root is untouched");
        db.apply_schema(&fx.g, &codes2)?;
        assert_eq!(
            db.row_count("TagLen")?,
            0,
            "a table dropped and created again is empty"
        );
        assert_eq!(stored(db)?, expected(&fx.g, &codes2));
        Ok(())
    })
}

/// `apply_schema` carries out what [`crate::catalog::plan`] decides: an
/// input table gains nullable columns and keeps its rows; a derived table
/// whose row type changed is rebuilt empty with its watermark at zero; a
/// change that would lose input rows, or a database of another graph, is
/// refused with the error and nothing changed.
pub fn catalog_schema_changes(h: &Harness) {
    run_bare(h, |fx| {
        let db = &*fx.db;
        let codes1 = codes(&fx.g, CODE);
        db.apply_schema(&fx.g, &codes1)?;
        let r1 = fx.put(&[(1, "a"), (2, "b")])?;
        fx.write(
            fx.len,
            &[ok(1, &[r1], vec![int(1)]), ok(2, &[r1], vec![int(1)])],
        )?;
        let (rev, epoch) = db.snapshot()?;
        db.mark_processed("Len", rev, epoch)?;

        let wide = graph_with(&SRC_WIDE, &LEN, true);
        db.apply_schema(&wide, &codes(&wide, CODE))?;
        assert_eq!(stored(db)?, expected(&wide, &codes(&wide, CODE)));
        let src = wide.table_id("Src")?;
        let load = |g: &Graph, k: i64| -> Result<Vec<Value>> {
            let s = db.load(g, &[g.table_id("Src")?], &Key::Int(k), Values::All)?;
            Ok(s[0].clone().map(|s| s.values).unwrap_or_default())
        };
        assert_eq!(
            load(&wide, 1)?,
            [int(1), text("a"), Value::Null],
            "a new nullable column"
        );
        let r2 = db.put_rows(&SRC_WIDE, &[vec![int(3), text("c"), int(9)]])?;
        assert_eq!(load(&wide, 3)?, [int(3), text("c"), int(9)]);
        assert_eq!(db.row_count("Len")?, 2, "derived tables are untouched");
        assert_eq!(db.watermark("Len")?, rev);

        let rebuilt = graph_with(&SRC_WIDE, &LEN_WIDE, true);
        db.apply_schema(&rebuilt, &codes(&rebuilt, CODE))?;
        assert_eq!(stored(db)?, expected(&rebuilt, &codes(&rebuilt, CODE)));
        assert_eq!(
            db.row_count("Len")?,
            0,
            "a derived table with a new row type is rebuilt"
        );
        assert_eq!(db.watermark("Len")?, Revision::ZERO);
        assert_eq!(db.row_count("Src")?, 3, "input rows stay");
        let len = rebuilt.table_id("Len")?;
        let w = db.write_outcomes(
            &rebuilt,
            len,
            CODE,
            &[ok(3, &[r2], vec![int(1), Value::Real(0.5)])],
            crate::storage::Pass::Refresh,
            &crate::storage::Fence::Unfenced,
            Revision::ZERO,
        )?;
        assert_eq!(w, [Written::Changed]);
        let s = db.load(&rebuilt, &[src, len], &Key::Int(3), Values::All)?;
        assert_eq!(
            s[1].as_ref().map(|s| s.values.clone()),
            Some(vec![int(1), Value::Real(0.5)])
        );

        let before = stored(db)?;
        let narrow = graph_with(&SRC_NARROW, &LEN_WIDE, true);
        match db.apply_schema(&narrow, &codes(&narrow, CODE)) {
            Err(Error::SchemaChanged { table, .. }) => assert_eq!(table, "Src"),
            other => panic!("dropping an input column must be refused, got {other:?}"),
        }
        assert_eq!(stored(db)?, before, "a refused change changes nothing");
        assert_eq!(load(&rebuilt, 3)?, [int(3), text("c"), int(9)]);

        let other = Graph::new(vec![&OTHER], vec![])?;
        match db.apply_schema(&other, &codes(&other, CODE)) {
            Err(Error::OtherGraph { .. }) => {}
            other => panic!("a database of another graph must be refused, got {other:?}"),
        }
        assert_eq!(stored(db)?, before, "a refused graph changes nothing");
        Ok(())
    })
}
