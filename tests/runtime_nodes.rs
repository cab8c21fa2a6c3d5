//! Nodes defined at run time: a name, inputs, declared reads, an output
//! table (a row type or JSON rows), a caller's code version and a closure.

mod common;

use rederive::{derive_table, dynamic, Db, Graph, NodeBuilder, Row, Staleness};
use serde_json::json;

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Rule {
    #[row(key)]
    pub name: String,
    pub body: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Length {
    pub n: i64,
}

/// Produced by no function of this binary: a run-time node's output.
#[derive(Row, Debug, Clone, PartialEq)]
pub struct Upper {
    pub text: String,
}

#[derive_table]
fn length(r: &Rule) -> Length {
    Length {
        n: r.body.len() as i64,
    }
}

/// A lint "written in the language": flags bodies longer than `limit`,
/// and bodies that mention a rule that does not exist.
fn lint(limit: usize, version: &str) -> rederive::RuntimeNode {
    NodeBuilder::new("lint")
        .input::<Rule>()
        .input::<Length>()
        .reads::<Rule>()
        .version(version)
        .output_json("Lint", move |ctx, inputs| {
            let rule: Rule = inputs.get(0)?;
            let len: Length = inputs.get(1)?;
            let mut unknown = Vec::new();
            for word in rule.body.split_whitespace() {
                if word.starts_with('@') && ctx.get::<Rule>(&word[1..])?.is_none() {
                    unknown.push(word[1..].to_owned());
                }
            }
            Ok(json!({ "long": len.n as usize > limit, "unknown": unknown }))
        })
}

fn upper() -> rederive::RuntimeNode {
    NodeBuilder::new("upper")
        .input::<Rule>()
        .version("1")
        .output(|_, inputs| {
            let rule: Rule = inputs.get(0)?;
            Ok(Upper {
                text: rule.body.to_uppercase(),
            })
        })
}

/// This binary's graph with `nodes` added.
fn try_graph(nodes: Vec<rederive::RuntimeNode>) -> rederive::Result<Graph> {
    common::graph_with_nodes(nodes)
}

fn graph(nodes: Vec<rederive::RuntimeNode>) -> Graph {
    try_graph(nodes).unwrap()
}

fn rule(name: &str, body: &str) -> Rule {
    Rule {
        name: name.into(),
        body: body.into(),
    }
}

#[test]
fn a_json_node_computes_reads_and_follows_its_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.db");
    let db = Db::open_with(&path, graph(vec![lint(5, "v1"), upper()])).unwrap();
    db.put_all(vec![rule("a", "short"), rule("b", "a longer body @c")])
        .unwrap();
    db.refresh().unwrap();
    assert_eq!(
        db.get_json("Lint", "a").unwrap(),
        json!({ "long": false, "unknown": [] })
    );
    assert_eq!(
        db.get_json("Lint", "b").unwrap(),
        json!({ "long": true, "unknown": ["c"] })
    );
    assert_eq!(db.get::<Upper>("a").unwrap().text, "SHORT");
    // The read of a missing rule is recorded: creating it makes `b` stale.
    db.put(rule("c", "x")).unwrap();
    assert_eq!(
        db.explain_id(db.graph().table_id("Lint").unwrap(), &"b".into())
            .unwrap(),
        Staleness::ReadChanged {
            table: "Rule".into(),
            key: "c".into()
        }
    );
    db.refresh().unwrap();
    assert_eq!(
        db.get_json("Lint", "b").unwrap(),
        json!({ "long": true, "unknown": [] })
    );
}

#[test]
fn a_new_code_version_makes_just_its_rows_stale() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.db");
    {
        let db = Db::open_with(&path, graph(vec![lint(5, "v1"), upper()])).unwrap();
        db.put_all(vec![rule("a", "short"), rule("b", "longer")])
            .unwrap();
        db.refresh().unwrap();
    }
    // The rule's source changed: a new version, a new closure.
    let db = Db::open_with(&path, graph(vec![lint(10, "v2"), upper()])).unwrap();
    let lint_id = db.graph().table_id("Lint").unwrap();
    assert_eq!(
        db.explain_id(lint_id, &"a".into()).unwrap(),
        Staleness::CodeChanged {
            node: "lint".into()
        }
    );
    assert_eq!(db.explain::<Upper>("a").unwrap(), Staleness::Fresh);
    let report = db.refresh().unwrap();
    assert_eq!(report.table("Lint").calls(), 2, "{report:?}");
    assert_eq!(report.table("Upper").calls(), 0, "{report:?}");
    assert_eq!(report.table("Length").calls(), 0, "{report:?}");
    assert_eq!(db.get_json("Lint", "b").unwrap()["long"], json!(false));
}

#[test]
fn the_graph_checks_apply_to_run_time_nodes() {
    // A second producer of a table a function produces.
    let twin = NodeBuilder::new("twin")
        .input::<Rule>()
        .version("1")
        .output(|_, _| Ok(Length { n: 0 }));
    let e = try_graph(vec![twin]).unwrap_err().to_string();
    assert!(e.contains("Length") && e.contains("twin"), "{e}");
    // A node writing an input table.
    let writer = NodeBuilder::new("writer")
        .input::<Length>()
        .output(|_, _| Ok(rule("x", "y")));
    let e = try_graph(vec![writer]).unwrap_err().to_string();
    assert!(e.contains("writer"), "{e}");
}

#[test]
fn registered_nodes_are_in_every_later_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.db");
    dynamic::register(
        NodeBuilder::new("shout")
            .input::<Rule>()
            .version("1")
            .output_json("Shout", |_, inputs| {
                let rule: Rule = inputs.get(0)?;
                Ok(json!(format!("{}!", rule.body)))
            }),
    );
    let db = Db::open(&path).unwrap();
    db.put(rule("a", "hi")).unwrap();
    assert_eq!(db.get_json("Shout", "a").unwrap(), json!("hi!"));
    assert!(db.status().unwrap().iter().any(|s| s.table == "Shout"));
    assert!(dynamic::unregister("Shout"));
}
