//! The command-line interface, end to end: runs the built `toy_lang` example
//! (which embeds `rederive::cli::main()` and adds `define NAME SOURCE`) as a
//! child process, each test on its own database in its own temporary
//! directory.
//!
//! Exit codes checked throughout: 0 ok, 1 failures present where the command
//! reports them, 2 usage or database errors.
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

mod common;

#[cfg(unix)]
use common::cli::interrupt;
use common::cli::{finish_within, spawn_lines, toy_lang, KillOnDrop, Run};

/// A temporary directory with a database path in it (not created).
struct Sandbox {
    dir: tempfile::TempDir,
    /// A file path, or a database URL.
    db: PathBuf,
    /// The program under test: `toy_lang`, or the `workers` example.
    bin: &'static Path,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = dir.path().join("x.db");
        Sandbox {
            dir,
            db,
            bin: toy_lang(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `toy_lang` command run in the sandbox, with `REDERIVE_DB` unset.
    fn bare(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin);
        cmd.args(args)
            .current_dir(self.path())
            .env_remove("REDERIVE_DB")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `toy_lang ARGS` with `REDERIVE_DB` pointing at the sandbox's
    /// database (the only way to point `define` and the demo at it).
    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = self.bare(args);
        cmd.env("REDERIVE_DB", &self.db);
        Run::new(common::cli::output_within(cmd, 120, args), args)
    }

    /// Runs `toy_lang ARGS --db <database>` with `REDERIVE_DB` unset.
    fn run_db(&self, args: &[&str]) -> Run {
        let mut cmd = self.bare(args);
        cmd.arg("--db").arg(&self.db);
        Run::new(common::cli::output_within(cmd, 120, args), args)
    }

    /// `define NAME SOURCE` (through `$REDERIVE_DB`), asserting exit 0.
    #[track_caller]
    fn define(&self, name: &str, source: &str) {
        let r = self.run(&["define", name, source]);
        r.code(0);
        assert_eq!(r.stdout, "", "define prints nothing");
    }

    /// `get TABLE KEY --json`'s row, asserting exit 0.
    #[track_caller]
    fn get(&self, table: &str, key: &str) -> Json {
        let r = self.run_db(&["get", table, key, "--json"]);
        let j = r.code(0).json();
        assert_eq!(j["table"], table);
        // A text key comes back as a string, an integer key as a number.
        assert_same_key(&j, key);
        j["row"].clone()
    }

    /// `explain TABLE KEY --json`'s staleness, asserting exit 0.
    #[track_caller]
    fn explain(&self, table: &str, key: &str) -> Json {
        let r = self.run_db(&["explain", table, key, "--json"]);
        let j = r.code(0).json();
        assert_eq!(j["table"], table);
        assert_same_key(&j, key);
        assert!(j["staleness"]["state"].is_string(), "{j}");
        j["staleness"].clone()
    }

    /// `status --json` as a map from table name to its counts.
    #[track_caller]
    fn status(&self, expected_code: i32) -> serde_json::Map<String, Json> {
        let j = self
            .run_db(&["status", "--json"])
            .code(expected_code)
            .json();
        let tables = j.as_array().expect("status --json is an array");
        tables
            .iter()
            .map(|t| {
                (
                    t["table"].as_str().expect("table name").to_owned(),
                    t.clone(),
                )
            })
            .collect()
    }
}

/// Asserts that a command's JSON names the key given on its command line:
/// a text key comes back as a string, an integer key as a number.
#[track_caller]
fn assert_same_key(j: &Json, key: &str) {
    assert!(
        j["key"] == key || j["key"].as_i64().is_some_and(|k| k.to_string() == key),
        "expected key {key:?}: {j}"
    );
}

const TABLES: [&str; 6] = [
    "Definition",
    "Ast",
    "Linked",
    "Checked",
    "Bytecode",
    "Value",
];
/// Input tables with no rows in most tests (lint rules).
const EMPTY_INPUTS: [&str; 1] = ["Rule"];
const STATUS_FIELDS: [&str; 10] = [
    "table", "input", "rows", "fresh", "stale", "missing", "failed", "blocked", "running",
    "settling",
];

fn count(status: &serde_json::Map<String, Json>, table: &str, field: &str) -> u64 {
    status[table][field]
        .as_u64()
        .unwrap_or_else(|| panic!("status {table}.{field} is not a count: {}", status[table]))
}

fn sorted_blocks(error: &Json) -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = error["blocks"]
        .as_array()
        .expect("blocks is an array")
        .iter()
        .map(|b| {
            (
                b[0].as_str().expect("blocked table").to_owned(),
                b[1].as_str().expect("blocked key").to_owned(),
            )
        })
        .collect();
    blocks.sort();
    blocks
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = items
        .iter()
        .map(|(t, k)| (t.to_string(), k.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn demo_uses_rederive_db_and_leaves_the_working_directory_alone() {
    let sb = Sandbox::new();
    let r = sb.run(&[]);
    // The demo prints `status`, whose failures are there on purpose; it exits 0.
    r.code(0)
        .stdout_has("refresh: 21 computed, 0 unchanged, 3 failed, 6 blocked")
        .stdout_has("answer = 42")
        .stdout_has("area = 27")
        .stdout_has("big = 231")
        .stdout_has("broken: `Value` \"broken\" is blocked by the failed row `Ast` \"broken\"")
        .stdout_has("ratio: `Value` \"ratio\" failed: division by zero")
        .stdout_has("zero: `Value` \"zero\" is blocked by the failed row `Checked` \"zero\"")
        .stdout_has("Definition (input)");
    assert!(sb.db.exists(), "the demo wrote $REDERIVE_DB");
    let entries: Vec<_> = std::fs::read_dir(sb.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("toy_lang"))
        .collect();
    assert!(entries.is_empty(), "no toy_lang.db in the cwd: {entries:?}");

    let status = sb.status(1);
    assert_eq!(count(&status, "Definition", "rows"), 6);
    assert_eq!(count(&status, "Value", "fresh"), 3);
    assert_eq!(count(&status, "Value", "failed"), 1);
    assert_eq!(count(&status, "Value", "blocked"), 2);

    let errors = sb.run_db(&["errors", "--json"]).code(1).json();
    let mut found: Vec<(String, String)> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["message"].is_string(), "{e}");
            assert!(e["blocks"].is_array(), "{e}");
            (
                e["table"].as_str().unwrap().to_owned(),
                e["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        pairs(&[("Ast", "broken"), ("Checked", "zero"), ("Value", "ratio")])
    );

    // Running it again on the same database: same definitions, nothing to do.
    sb.run(&[])
        .code(0)
        .stdout_has("refresh: 0 computed")
        .stdout_has("answer = 42");
}

#[test]
fn a_missing_database_is_an_error_not_created() {
    let sb = Sandbox::new();
    let commands: [&[&str]; 5] = [
        &["status"],
        &["get", "Value", "answer"],
        &["explain", "Value", "answer"],
        &["errors"],
        &["retry"],
    ];
    let shown = sb.db.display().to_string();
    for args in commands {
        let r = sb.run_db(args);
        r.code(2).stderr_has("does not exist").stderr_has(&shown);
        assert_eq!(r.stdout, "", "{args:?}: nothing on stdout");

        let mut with_json = args.to_vec();
        with_json.push("--json");
        let r = sb.run_db(&with_json);
        let j = r.code(2).json();
        let message = j["error"].as_str().expect("{\"error\": message}");
        assert!(message.contains("does not exist"), "{message}");
        assert!(message.contains(&shown), "{message}");

        // Through $REDERIVE_DB too.
        sb.run(args).code(2).stderr_has("does not exist");
        assert!(!sb.db.exists(), "{args:?} created the database");
    }
}

#[test]
fn refresh_creates_an_empty_database() {
    let sb = Sandbox::new();
    sb.run_db(&["refresh"])
        .code(0)
        .stdout_has("0 computed, 0 unchanged, 0 failed, 0 blocked");
    assert!(sb.db.exists());

    let status = sb.status(0);
    assert_eq!(
        status.len(),
        TABLES.len() + EMPTY_INPUTS.len(),
        "{status:?}"
    );
    for table in TABLES.into_iter().chain(EMPTY_INPUTS) {
        let t = &status[table];
        for field in STATUS_FIELDS {
            assert!(!t[field].is_null(), "status {table} lacks {field}: {t}");
        }
        assert_eq!(t["input"], table == "Definition" || table == "Rule");
        for field in &STATUS_FIELDS[2..] {
            assert_eq!(t[field], 0, "{table}.{field}: {t}");
        }
    }
    let r = sb.run_db(&["status"]);
    r.code(0)
        .stdout_has("table")
        .stdout_has("fresh")
        .stdout_has("settling")
        .stdout_has("Definition (input)");
    for table in TABLES {
        r.stdout_has(table);
    }

    sb.run_db(&["errors"]).code(0).stdout_has("no failed rows");
    assert_eq!(sb.run_db(&["errors", "--json"]).code(0).json(), json!([]));
    sb.run_db(&["retry"]).code(0).stdout_has("0 failed");
    assert_eq!(sb.run_db(&["retry", "--json"]).code(0).json()["failed"], 0);
}

#[test]
fn define_explain_refresh_get() {
    let sb = Sandbox::new();
    sb.define("answer", "6 * 7");
    sb.define("area", "3 * (4 + 5)");
    assert!(sb.db.exists(), "define creates the database");

    assert_eq!(sb.explain("Value", "area"), json!({"state": "missing"}));
    sb.run_db(&["explain", "Value", "area"])
        .code(0)
        .stdout_has("Value \"area\": missing");
    assert_eq!(sb.explain("Definition", "area"), json!({"state": "fresh"}));
    let status = sb.status(0);
    assert_eq!(count(&status, "Definition", "rows"), 2);
    assert_eq!(count(&status, "Value", "missing"), 2);
    assert_eq!(count(&status, "Value", "rows"), 0);

    sb.run_db(&["refresh"])
        .code(0)
        .stdout_has("Value: 2 computed, 0 unchanged, 0 failed, 0 blocked")
        .stdout_has("10 computed, 0 unchanged, 0 failed, 0 blocked");
    let r = sb.run_db(&["get", "Value", "answer", "--json"]);
    assert_eq!(
        r.code(0).json(),
        json!({"table": "Value", "key": "answer", "row": {"value": 42}})
    );
    // Without --json: the row alone, as pretty JSON.
    assert_eq!(
        sb.run_db(&["get", "Value", "area"]).code(0).json(),
        json!({"value": 27})
    );
    assert_eq!(
        sb.get("Definition", "area"),
        json!({"name": "area", "source": "3 * (4 + 5)"})
    );
    // JSON columns come back as JSON, not as strings.
    assert_eq!(
        sb.get("Bytecode", "answer"),
        json!({"ops": [{"Push": 6}, {"Push": 7}, "Mul"]})
    );
    assert_eq!(sb.explain("Value", "area"), json!({"state": "fresh"}));
    sb.run_db(&["explain", "Value", "area"])
        .code(0)
        .stdout_has("Value \"area\": fresh");
    let status = sb.status(0);
    for table in TABLES {
        assert_eq!(count(&status, table, "fresh"), 2, "{table}");
    }

    // Change the input: every stage of `area` is stale, and says why.
    sb.define("area", "2 * (4 + 5)");
    assert_eq!(
        sb.explain("Ast", "area"),
        json!({"state": "input_changed", "table": "Definition", "key": "area"})
    );
    assert_eq!(
        sb.explain("Checked", "area"),
        json!({"state": "upstream_stale", "table": "Linked", "key": "area"})
    );
    let value = sb.explain("Value", "area");
    assert_eq!(value["state"], "upstream_stale", "{value}");
    assert_eq!(value["key"], "area");
    sb.run_db(&["explain", "Value", "area"])
        .code(0)
        .stdout_has("Value \"area\": stale");
    sb.run_db(&["explain", "Ast", "area"])
        .code(0)
        .stdout_has("stale: input `Definition` \"area\" changed");
    assert_eq!(sb.explain("Value", "answer"), json!({"state": "fresh"}));
    assert_eq!(count(&sb.status(0), "Ast", "stale"), 1);

    // Refresh recomputes `area` only; `Checked` (the depth) is unchanged, so
    // early cutoff keeps it.
    let report = sb.run_db(&["refresh", "--json"]).code(0).json();
    assert_eq!(report["computed"], 4, "{report}");
    assert_eq!(report["unchanged"], 1, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["tables"]["Checked"]["unchanged"], 1, "{report}");
    assert_eq!(report["tables"]["Value"]["computed"], 1, "{report}");
    assert_eq!(sb.get("Value", "area"), json!({"value": 18}));
    assert_eq!(sb.explain("Value", "area"), json!({"state": "fresh"}));

    sb.run_db(&["refresh"])
        .code(0)
        .stdout_has("0 computed, 0 unchanged, 0 failed, 0 blocked");
}

#[test]
fn get_computes_a_stale_row_on_demand() {
    let sb = Sandbox::new();
    sb.define("x", "1 + 2");
    assert_eq!(sb.explain("Value", "x"), json!({"state": "missing"}));
    assert_eq!(sb.get("Value", "x"), json!({"value": 3}));
    assert_eq!(sb.explain("Value", "x"), json!({"state": "fresh"}));
    sb.define("x", "(1 + 2) * 5");
    assert_eq!(sb.get("Value", "x"), json!({"value": 15}));
    assert_eq!(sb.explain("Value", "x"), json!({"state": "fresh"}));
}

#[test]
fn a_syntax_error_fails_in_ast_blocks_its_stages_and_is_fixed() {
    let sb = Sandbox::new();
    sb.define("ok", "2 + 3");
    sb.define("bad", "1 +");
    sb.run_db(&["refresh"])
        .code(1)
        .stdout_has("Ast: 1 computed, 0 unchanged, 1 failed, 0 blocked")
        .stdout_has("1 failed");

    // errors: the failed row, its message and what it blocks; exit 1.
    let errors = sb.run_db(&["errors", "--json"]).code(1).json();
    let errors = errors.as_array().expect("errors --json is an array");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(e["table"], "Ast");
    assert_eq!(e["key"], "bad");
    assert_eq!(e["message"], "syntax error: unexpected end of input");
    assert_eq!(
        sorted_blocks(e),
        pairs(&[
            ("Linked", "bad"),
            ("Checked", "bad"),
            ("Bytecode", "bad"),
            ("Value", "bad")
        ])
    );
    sb.run_db(&["errors"])
        .code(1)
        .stdout_has("Ast \"bad\": syntax error: unexpected end of input")
        .stdout_has("blocks Linked \"bad\"")
        .stdout_has("blocks Checked \"bad\"")
        .stdout_has("blocks Bytecode \"bad\"")
        .stdout_has("blocks Value \"bad\"");

    // status: exit 1 while failures are present.
    let status = sb.status(1);
    assert_eq!(count(&status, "Ast", "failed"), 1);
    assert_eq!(count(&status, "Ast", "fresh"), 1);
    for table in ["Linked", "Checked", "Bytecode", "Value"] {
        assert_eq!(count(&status, table, "blocked"), 1, "{table}");
        assert_eq!(count(&status, table, "fresh"), 1, "{table}");
    }
    sb.run_db(&["status"]).code(1);

    // explain: failed with the message, and blocked naming the failed row.
    assert_eq!(
        sb.explain("Ast", "bad"),
        json!({"state": "failed", "message": "syntax error: unexpected end of input"})
    );
    assert_eq!(
        sb.explain("Value", "bad"),
        json!({"state": "blocked", "table": "Ast", "key": "bad"})
    );
    sb.run_db(&["explain", "Value", "bad"])
        .code(0)
        .stdout_has("blocked: `Ast` \"bad\" failed");

    // get: exit 1 with the reason; the healthy row is unaffected.
    let r = sb.run_db(&["get", "Value", "bad"]);
    r.code(1)
        .stderr_has("`Value` \"bad\" is blocked by the failed row `Ast` \"bad\"");
    assert_eq!(r.stdout, "");
    let j = sb.run_db(&["get", "Value", "bad", "--json"]).code(1).json();
    assert_eq!(j["table"], "Value");
    assert_eq!(j["key"], "bad");
    assert!(j["error"].as_str().unwrap().contains("blocked"), "{j}");
    let j = sb.run_db(&["get", "Ast", "bad", "--json"]).code(1).json();
    assert_eq!(
        j["error"],
        "`Ast` \"bad\" failed: syntax error: unexpected end of input"
    );
    assert_eq!(sb.get("Value", "ok"), json!({"value": 5}));

    // retry: still fails, so exit 1.
    sb.run_db(&["retry"]).code(1).stdout_has("1 failed");
    let report = sb.run_db(&["retry", "--json"]).code(1).json();
    assert_eq!(report["failed"], 1, "{report}");
    assert_eq!(report["tables"]["Ast"]["failed"], 1, "{report}");
    sb.run_db(&["errors"]).code(1);

    // Fix the definition: refresh succeeds and unblocks the later stages.
    sb.define("bad", "1 + 1");
    assert_eq!(
        sb.explain("Ast", "bad"),
        json!({"state": "input_changed", "table": "Definition", "key": "bad"})
    );
    let report = sb.run_db(&["refresh", "--json"]).code(0).json();
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["blocked"], 0, "{report}");
    assert_eq!(sb.get("Value", "bad"), json!({"value": 2}));
    assert_eq!(sb.explain("Value", "bad"), json!({"state": "fresh"}));
    sb.run_db(&["errors"]).code(0).stdout_has("no failed rows");
    assert_eq!(sb.run_db(&["errors", "--json"]).code(0).json(), json!([]));
    let status = sb.status(0);
    for table in TABLES {
        assert_eq!(count(&status, table, "fresh"), 2, "{table}");
    }
    sb.run_db(&["retry"]).code(0).stdout_has("0 failed");
}

#[test]
fn failures_in_later_stages_block_only_what_follows() {
    let sb = Sandbox::new();
    sb.define("zero", "1 / 0"); // rejected by `check`
    sb.define("ratio", "10 / (5 - 5)"); // fails in `evaluate`
    let report = sb.run_db(&["refresh", "--json"]).code(1).json();
    assert_eq!(report["failed"], 2, "{report}");
    assert_eq!(report["tables"]["Checked"]["failed"], 1, "{report}");
    assert_eq!(report["tables"]["Value"]["failed"], 1, "{report}");

    let errors = sb.run_db(&["errors", "--json"]).code(1).json();
    let errors = errors.as_array().unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let zero = errors.iter().find(|e| e["key"] == "zero").expect("zero");
    assert_eq!(zero["table"], "Checked");
    assert_eq!(zero["message"], "division by zero");
    assert_eq!(
        sorted_blocks(zero),
        pairs(&[("Bytecode", "zero"), ("Value", "zero")])
    );
    let ratio = errors.iter().find(|e| e["key"] == "ratio").expect("ratio");
    assert_eq!(ratio["table"], "Value");
    assert_eq!(ratio["message"], "division by zero: 10 / 0");
    assert_eq!(ratio["blocks"], json!([]));

    assert_eq!(sb.explain("Ast", "zero"), json!({"state": "fresh"}));
    assert_eq!(
        sb.explain("Bytecode", "zero"),
        json!({"state": "blocked", "table": "Checked", "key": "zero"})
    );
    assert_eq!(sb.explain("Bytecode", "ratio"), json!({"state": "fresh"}));
    sb.run_db(&["retry"]).code(1).stdout_has("2 failed");
}

#[test]
fn unknown_tables_and_keys() {
    let sb = Sandbox::new();
    sb.define("answer", "6 * 7");
    let known = "the tables are: Ast, Bytecode, Checked, Definition, Linked, Rule, Value";
    for command in ["get", "explain"] {
        sb.run_db(&[command, "Nope", "answer"])
            .code(2)
            .stderr_has("no table named `Nope`")
            .stderr_has(known);
        let j = sb
            .run_db(&[command, "Nope", "answer", "--json"])
            .code(2)
            .json();
        let message = j["error"].as_str().expect("{\"error\": message}");
        assert!(message.contains("`Nope`") && message.contains(known), "{j}");

        // Table names are exact.
        sb.run_db(&[command, "value", "answer"])
            .code(2)
            .stderr_has("no table named `value`");

        // The key is text (Definition.name is a String): a key that is not
        // there is an error, not an empty row.
        for table in ["Value", "Definition"] {
            sb.run_db(&[command, table, "nosuch"])
                .code(2)
                .stderr_has("no row \"nosuch\"");
            let j = sb
                .run_db(&[command, table, "nosuch", "--json"])
                .code(2)
                .json();
            assert!(
                j["error"].as_str().unwrap().contains("no row \"nosuch\""),
                "{j}"
            );
        }
        // Keys are exact too (no trimming, no case folding).
        sb.run_db(&[command, "Value", "Answer"]).code(2);
        sb.run_db(&[command, "Value", " answer"]).code(2);
    }
    // A numeric-looking key is still a text key.
    sb.define("42", "40 + 2");
    assert_eq!(sb.get("Value", "42"), json!({"value": 42}));
}

#[test]
fn graph_as_dot_and_mermaid() {
    let sb = Sandbox::new();
    let dot = sb.run_db(&["graph", "--format", "dot"]);
    dot.code(0);
    assert!(dot.stdout.starts_with("digraph"), "{}", dot.stdout);
    for edge in [
        "\"Definition\" -> \"Ast\" [label=\"parse\"]",
        "\"Ast\" -> \"Linked\" [label=\"link\"]",
        "\"Linked\" -> \"Checked\"",
        "\"Linked\" -> \"Bytecode\"",
        "\"Checked\" -> \"Bytecode\"",
        "\"Bytecode\" -> \"Value\" [label=\"evaluate\"]",
    ] {
        dot.stdout_has(edge);
    }
    dot.stdout_has("\"Definition\" [shape=box]");
    assert!(dot.stdout.trim_end().ends_with('}'), "{}", dot.stdout);
    // dot is the default format.
    assert_eq!(sb.run_db(&["graph"]).code(0).stdout, dot.stdout);

    let j = sb
        .run_db(&["graph", "--format", "dot", "--json"])
        .code(0)
        .json();
    assert_eq!(j, json!({"format": "dot", "graph": dot.stdout}));

    let mermaid = sb.run_db(&["graph", "--format", "mermaid"]);
    mermaid
        .code(0)
        .stdout_has("Definition[/Definition/]")
        .stdout_has("Definition -->|parse| Ast")
        .stdout_has("Ast -->|link| Linked")
        .stdout_has("Linked -->|check| Checked")
        .stdout_has("Checked -->|compile| Bytecode")
        .stdout_has("Bytecode -->|evaluate| Value");
    assert!(
        mermaid.stdout.starts_with("flowchart"),
        "{}",
        mermaid.stdout
    );
    let j = sb
        .run_db(&["graph", "--json", "--format", "mermaid"])
        .code(0)
        .json();
    assert_eq!(j, json!({"format": "mermaid", "graph": mermaid.stdout}));

    // The graph comes from the program, not the database: none is created.
    assert!(!sb.db.exists());

    render_with_graphviz(&dot.stdout);
}

/// Renders DOT with Graphviz's `dot -Tsvg` when it is installed (CI installs
/// it, so there its absence is a failure).
fn render_with_graphviz(dot: &str) {
    use std::io::Write;
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let spawned = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                !ci,
                "CI is set but Graphviz's `dot` is not on PATH (CI installs graphviz)"
            );
            eprintln!("note: Graphviz's `dot` is not on PATH; not rendering the DOT output");
            return;
        }
        Err(e) => panic!("cannot run `dot -Tsvg`: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot.as_bytes())
        .expect("write to dot");
    let out = child.wait_with_output().expect("dot -Tsvg");
    let svg = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dot -Tsvg failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(svg.contains("<svg"), "dot -Tsvg printed no SVG:\n{svg}");
    for table in TABLES {
        assert!(svg.contains(table), "the SVG lacks {table}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let sb = Sandbox::new();
    sb.define("answer", "6 * 7");
    let cases: [(&[&str], &str); 9] = [
        (&["frob"], "unrecognized subcommand 'frob'"),
        (&["get", "Value"], "<KEY>"),
        (&["get"], "<TABLE>"),
        (&["explain"], "<TABLE>"),
        (&["graph", "--format", "png"], "invalid value 'png'"),
        (&["status", "extra"], "unexpected argument 'extra'"),
        (&["status", "--frob"], "unexpected argument '--frob'"),
        // Options without a command.
        (&["--json"], "requires a subcommand"),
        // `define` takes exactly NAME and SOURCE; otherwise the CLI sees an
        // unknown command.
        (&["define", "answer"], "unrecognized subcommand 'define'"),
    ];
    for (args, message) in cases {
        let r = sb.run_db(args);
        r.code(2)
            .stderr_has("error: ")
            .stderr_has(message)
            .stderr_has("try '--help'");
        assert_eq!(r.stdout, "", "{args:?}");
    }
    sb.run(&["define", "a", "1", "extra"]).code(2);
    sb.run(&["--db"]).code(2).stderr_has("--db <PATH|URL>");
    // Nothing above changed the database.
    assert_eq!(sb.get("Definition", "answer")["source"], "6 * 7");
    assert_eq!(count(&sb.status(0), "Definition", "rows"), 1);

    let help = sb.run_db(&["--help"]);
    help.code(0);
    for command in [
        "status", "refresh", "get", "explain", "errors", "retry", "graph",
    ] {
        help.stdout_has(command);
    }
    help.stdout_has("--db").stdout_has("--json");
    sb.run_db(&["get", "--help"])
        .code(0)
        .stdout_has("<TABLE>")
        .stdout_has("<KEY>");
    sb.run_db(&["--version"]).code(0).stdout_has("0.1.0");
}

#[test]
fn db_flag_env_var_and_default_path() {
    let sb = Sandbox::new();
    let other = sb.path().join("other.db");
    let other_arg = other.to_str().unwrap();

    // `define` and the CLI use $REDERIVE_DB ...
    sb.define("answer", "6 * 7");
    assert!(sb.db.exists());
    sb.run(&["refresh"])
        .code(0)
        .stdout_has("5 computed, 0 unchanged");
    assert_eq!(
        sb.run(&["get", "Value", "answer", "--json"]).code(0).json()["row"],
        json!({"value": 42})
    );

    // ... unless --db is given, before or after the command.
    let r = sb.run(&["--db", other_arg, "status"]);
    r.code(2).stderr_has("does not exist").stderr_has(other_arg);
    sb.run(&["refresh", "--db", other_arg])
        .code(0)
        .stdout_has("0 computed");
    assert!(other.exists());
    let j = sb
        .run(&["--json", "--db", other_arg, "status"])
        .code(0)
        .json();
    assert_eq!(j[0]["table"], "Definition");
    assert_eq!(j[0]["rows"], 0);
    sb.run(&["get", "Value", "answer", "--db", other_arg])
        .code(2)
        .stderr_has("no row");
    assert_eq!(count(&sb.status(0), "Definition", "rows"), 1);

    // Neither: `<program>.db` in the working directory.
    let default = sb.path().join("toy_lang.db");
    let out = sb.bare(&["status"]).output().unwrap();
    Run::new(out, &["status"])
        .code(2)
        .stderr_has("toy_lang.db")
        .stderr_has("does not exist");
    let out = sb.bare(&["define", "here", "1 + 1"]).output().unwrap();
    Run::new(out, &["define"]).code(0);
    assert!(default.exists(), "define wrote ./toy_lang.db");
    let out = sb
        .bare(&["get", "Value", "here", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        Run::new(out, &["get"]).code(0).json()["row"],
        json!({"value": 2})
    );
    // The other databases did not see it.
    sb.run(&["get", "Value", "here"])
        .code(2)
        .stderr_has("no row");
}

#[test]
fn a_file_that_is_not_a_database_is_exit_2() {
    let sb = Sandbox::new();
    std::fs::write(
        &sb.db,
        "this is not SQLite, just some text that is long enough\n".repeat(100),
    )
    .unwrap();
    let commands: [&[&str]; 6] = [
        &["status"],
        &["refresh"],
        &["get", "Value", "answer"],
        &["explain", "Value", "answer"],
        &["errors"],
        &["retry"],
    ];
    for args in commands {
        sb.run_db(args)
            .code(2)
            .stderr_has("is not a rederive database");
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let j = sb.run_db(&with_json).code(2).json();
        assert!(
            j["error"]
                .as_str()
                .unwrap()
                .contains("is not a rederive database"),
            "{j}"
        );
    }
    sb.run(&["define", "a", "1"])
        .code(2)
        .stderr_has("error: ")
        .stderr_has("is not a rederive database");
    // watch gives up at once rather than waiting for changes.
    for json in [false, true] {
        let (child, _lines) = spawn_watch(&sb, json);
        let r = finish_within(child, 20, "watch on a bad file", &["watch"]);
        r.code(2);
        if !json {
            r.stderr_has("is not a rederive database");
        }
    }
    // A directory where the file should be.
    let dir_db = sb.path().join("dir.db");
    std::fs::create_dir(&dir_db).unwrap();
    let out = sb
        .bare(&["refresh", "--db", dir_db.to_str().unwrap()])
        .output()
        .unwrap();
    Run::new(out, &["refresh"]).code(2).stderr_has("error: ");
}

/// `toy_lang watch --db <database> [--json]`, with its stdout lines sent
/// to the returned channel as they come.
fn spawn_watch(sb: &Sandbox, json: bool) -> (KillOnDrop, std::sync::mpsc::Receiver<String>) {
    let mut args = vec!["watch", "--db", sb.db.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    spawn_lines(sb.bare(&args))
}

#[cfg(unix)]
#[test]
fn watch_refreshes_on_another_process_s_write_and_stops_on_ctrl_c() {
    use std::time::Duration;

    let sb = Sandbox::new();
    sb.define("w", "2 * 3");
    let (child, rx) = spawn_watch(&sb, true);
    // The next `refreshed` event with the given cause.
    let next_refresh = |cause: &str| -> Json {
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("no `{cause}` refresh from watch ({e})"));
            let event: Json = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("watch printed invalid JSON ({e}): {line}"));
            if event["event"] == "refreshed" && event["cause"] == cause {
                return event;
            }
        }
    };

    let start = next_refresh("start");
    assert_eq!(start["report"]["computed"], 5, "{start}");
    assert_eq!(sb.explain("Value", "w"), json!({"state": "fresh"}));

    // Another process writes an input row; watch refreshes it (`explain`
    // computes nothing, so a fresh row here was computed by watch). The
    // pause lets watch take its baseline `data_version` after the start
    // refresh first.
    std::thread::sleep(Duration::from_millis(300));
    sb.define("w", "2 * 3 * 7");
    // (Other processes merely opening the database, like `explain` above,
    // may also wake it up, for a refresh with nothing to do.)
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let input = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "watch never recomputed the changed definition"
        );
        let event = next_refresh("input");
        assert_eq!(event["report"]["failed"], 0, "{event}");
        if event["report"]["computed"].as_u64().unwrap() > 0 {
            break event;
        }
    };
    assert_eq!(input["report"]["tables"]["Value"]["computed"], 1, "{input}");
    assert_eq!(sb.explain("Value", "w"), json!({"state": "fresh"}));
    assert_eq!(sb.get("Value", "w"), json!({"value": 42}));
    interrupt(child);

    // Text mode: a line per refresh that did something, and the start.
    let (child, rx) = spawn_watch(&sb, false);
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("watch prints the start refresh");
    assert_eq!(
        line,
        "refresh (start): 0 computed, 0 unchanged, 0 failed, 0 blocked"
    );
    interrupt(child);
}

/// Another program's database, made here with its own little graph.
mod other_program {
    use rederive::{derive_table, Row};
    #[derive(Row, Debug, Clone, PartialEq)]
    #[row(input)]
    pub struct Invoice {
        #[row(key)]
        pub id: i64,
        pub cents: i64,
    }
    #[derive(Row, Debug, Clone, PartialEq)]
    pub struct Euros {
        pub euros: f64,
    }
    #[derive_table]
    pub fn euros(i: &Invoice) -> Euros {
        Euros {
            euros: i.cents as f64 / 100.0,
        }
    }

    pub fn make(path: &std::path::Path) {
        let node = *rederive::node::registered_nodes()
            .into_iter()
            .find(|n| n.name == "euros")
            .unwrap();
        let graph = rederive::Graph::new(vec![&<Invoice as Row>::TABLE], vec![node]).unwrap();
        let db = rederive::Db::open_with(path, graph).unwrap();
        db.put(Invoice { id: 7, cents: 1250 }).unwrap();
        db.refresh().unwrap();
    }
}

#[test]
fn another_programs_database_is_refused_and_left_alone() {
    let sb = Sandbox::new();
    other_program::make(&sb.db);
    let before = common::sqlite_tables(&sb.db);
    for args in [
        &["status"][..],
        &["errors"],
        &["explain", "Value", "answer"],
        &["get", "Value", "answer"],
        &["refresh"],
    ] {
        sb.run_db(args)
            .code(2)
            .stderr_has("another program")
            .stderr_has("Invoice");
        assert_eq!(
            common::sqlite_tables(&sb.db),
            before,
            "{args:?} changed the file"
        );
    }
}

#[test]
fn status_reports_leftover_tables_and_prune_drops_them() {
    let sb = Sandbox::new();
    sb.run_db(&["refresh"]).code(0);
    // A table left by a function this program no longer has.
    let conn = rusqlite::Connection::open(&sb.db).unwrap();
    conn.execute_batch(
        "CREATE TABLE \"Gone\"(__key TEXT PRIMARY KEY, n INTEGER) STRICT;
         INSERT INTO \"Gone\" VALUES ('a', 1);
         INSERT INTO rederive_tables(name, input, columns, code) VALUES ('Gone', 0, 'n INTEGER', 'x');
         CREATE TABLE \"OldInput\"(k TEXT PRIMARY KEY) STRICT;
         INSERT INTO rederive_tables(name, input, columns, code) VALUES ('OldInput', 1, 'k TEXT', NULL);",
    )
    .unwrap();
    drop(conn);
    sb.run_db(&["status"])
        .stdout_has("leftover table `Gone` (1 rows)")
        .stdout_has("leftover input table `OldInput` (0 rows)");
    sb.run_db(&["prune"])
        .code(0)
        .stdout_has("dropped `Gone`")
        .stdout_has("kept input table `OldInput`");
    let names = common::sqlite_tables(&sb.db);
    assert!(!names.contains(&"Gone".to_owned()), "{names:?}");
    assert!(names.contains(&"OldInput".to_owned()), "{names:?}");
    sb.run_db(&["prune", "--inputs"])
        .code(0)
        .stdout_has("dropped `OldInput`");
    assert!(!common::sqlite_tables(&sb.db).contains(&"OldInput".to_owned()));
    sb.run_db(&["prune"]).stdout_has("no leftover tables");
}

#[test]
fn definitions_call_each_other_and_rules_extend_the_language() {
    let sb = Sandbox::new();
    sb.define("area", "3 * (4 + 5)");
    sb.define("twice", "area * 2");
    sb.define("other", "6 * 7");
    sb.run_db(&["refresh"]).code(0);
    assert_eq!(sb.get("Value", "twice"), json!({"value": 54}));

    // Editing a callee recomputes exactly its callers' links.
    sb.define("area", "1 + 1");
    assert_eq!(
        sb.explain("Linked", "twice"),
        json!({"state": "upstream_stale", "table": "Linked", "key": "area"})
    );
    let report = sb.run_db(&["refresh", "--json"]).code(0).json();
    assert_eq!(report["tables"]["Linked"]["computed"], 2, "{report}");
    assert_eq!(sb.get("Value", "twice"), json!({"value": 4}));
    assert_eq!(sb.get("Value", "other"), json!({"value": 42}));

    // Recursion is a cycle, in every row of it.
    sb.define("ping", "pong + 1");
    sb.define("pong", "ping + 1");
    sb.run_db(&["refresh"]).code(1);
    let errors = sb.run_db(&["errors", "--json"]).code(1).json();
    let cycle = "cycle: `Linked` \"ping\" -> `Linked` \"pong\" -> `Linked` \"ping\"";
    for key in ["ping", "pong"] {
        let e = errors
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["table"] == "Linked" && e["key"] == key)
            .unwrap_or_else(|| panic!("no error for {key}: {errors}"));
        assert_eq!(e["message"], cycle, "{e}");
    }
    // An unknown callee is an error until it is defined.
    sb.define("late", "later + 1");
    sb.run_db(&["refresh"]).code(1);
    sb.define("later", "1");
    sb.run_db(&["refresh"]).code(1);
    assert_eq!(sb.get("Value", "late"), json!({"value": 2}));

    // A rule written in the language becomes a table of its own.
    sb.run_db(&["rule", "small", "3 * 3"]).code(0);
    sb.run_db(&["refresh"]).code(1);
    assert_eq!(
        sb.get("Lint_small", "twice"),
        json!({"value": {"nodes": 5, "limit": 9, "ok": true}})
    );
    // Editing the rule recomputes its table only.
    sb.run_db(&["rule", "small", "2"]).code(0);
    let report = sb.run_db(&["refresh", "--json"]).code(1).json();
    assert_eq!(
        report["computed"], report["tables"]["Lint_small"]["computed"],
        "{report}"
    );
    assert_eq!(
        sb.get("Lint_small", "twice"),
        json!({"value": {"nodes": 5, "limit": 2, "ok": false}})
    );
}

/// The whole CLI on a PostgreSQL database (`--db postgres://...` and
/// `$REDERIVE_DB`), through the `workers` example built with the facade's
/// `postgres` feature: writing inputs, status, refresh, get, explain,
/// errors, and watch woken by another process's write.
#[cfg(unix)]
#[test]
fn the_cli_runs_on_postgres() {
    use std::time::Duration;
    let Some(url) = common::postgres_db("cli") else {
        return;
    };
    static WORKERS: OnceLock<PathBuf> = OnceLock::new();
    let bin = WORKERS.get_or_init(|| common::example("workers", &["postgres"]));
    let sb = Sandbox {
        dir: tempfile::tempdir().expect("a temporary directory"),
        db: PathBuf::from(&url),
        bin,
    };
    // What `render` and `thumbnail` compute, worked out here.
    let label = |id: i64| format!("#{:06}", (id * 7919 + 1) % 1_000_003);
    let table = |status: &serde_json::Map<String, Json>, t: &str| -> (u64, u64, u64) {
        (
            count(status, t, "rows"),
            count(status, t, "fresh"),
            count(status, t, "missing"),
        )
    };

    sb.run_db(&["scenes", "4"]).code(0);
    let status = sb.status(0);
    assert_eq!(table(&status, "Render"), (0, 0, 4));
    sb.run_db(&["refresh"]).code(0);
    let status = sb.status(0);
    assert_eq!(table(&status, "Render"), (4, 4, 0));
    assert_eq!(table(&status, "Thumbnail"), (4, 4, 0));
    assert_eq!(sb.get("Thumbnail", "2"), json!({ "label": label(2) }));
    assert_eq!(sb.explain("Render", "3"), json!({ "state": "fresh" }));
    sb.run_db(&["errors"]).code(0);

    // Watch, pointed at the database by `$REDERIVE_DB`, refreshes what
    // another process writes.
    let mut cmd = sb.bare(&["watch", "--json"]);
    cmd.env("REDERIVE_DB", &url);
    let (child, rx) = spawn_lines(cmd);
    let next_refresh = |cause: &str| -> Json {
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("no `{cause}` refresh from watch ({e})"));
            let event: Json = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("watch printed invalid JSON ({e}): {line}"));
            if event["event"] == "refreshed" && event["cause"] == cause {
                return event;
            }
        }
    };
    assert_eq!(next_refresh("start")["report"]["computed"], 0);
    sb.run_db(&["scenes", "6"]).code(0);
    let input = next_refresh("input");
    assert_eq!(
        input["report"]["tables"]["Render"]["computed"], 2,
        "{input}"
    );
    assert_eq!(
        input["report"]["tables"]["Thumbnail"]["computed"], 2,
        "{input}"
    );
    interrupt(child);
    assert_eq!(sb.get("Thumbnail", "5"), json!({ "label": label(5) }));
    assert_eq!(table(&sb.status(0), "Thumbnail"), (6, 6, 0));

    // A worker computing in the background (150 rows of 40 ms on two
    // threads: seconds): `status` says which worker runs how many rows.
    sb.run_db(&["scenes", "150"]).code(0);
    let worker = KillOnDrop(sb.bare(&["refresh", "--db", &url]).spawn().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let line = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "status never showed the worker"
        );
        let text = sb.run_db(&["status"]);
        if let Some(line) = text
            .code(0)
            .stdout
            .lines()
            .find(|l| l.starts_with("Render: "))
        {
            break line.to_owned();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // `Render: N rows running on WORKER (N)`.
    let (n, rest) = line["Render: ".len()..]
        .split_once(" rows running on ")
        .unwrap_or_else(|| panic!("{line}"));
    let (name, each) = rest.rsplit_once(" (").unwrap_or_else(|| panic!("{line}"));
    assert_eq!(format!("{n})"), each, "one worker runs them all: {line}");
    assert!(n.parse::<u64>().unwrap() > 0, "{line}");
    let status = sb.status(0);
    let render = &status["Render"];
    let workers = render["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 1, "{render}");
    assert_eq!(workers[0]["worker"], name, "{render}");
    assert!(workers[0]["rows"].as_u64().unwrap() > 0, "{render}");
    assert_eq!(workers[0]["rows"], render["running"], "{render}");
    finish_within(worker, 120, "the background worker", &["refresh"]).code(0);
    let status = sb.status(0);
    assert_eq!(table(&status, "Thumbnail"), (150, 150, 0));
    assert_eq!(status["Render"]["workers"], json!([]));

    // A server that is not there: exit 2, naming where it looked.
    let nowhere = "postgres://rederive@127.0.0.1:1/nowhere";
    let out = sb.bare(&["status", "--db", nowhere]).output().unwrap();
    Run::new(out, &["status"])
        .code(2)
        .stderr_has("cannot connect to postgres://rederive@127.0.0.1:1/nowhere");
}
