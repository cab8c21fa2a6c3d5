//! The backend conformance suite: the contract of [`super`]'s traits as
//! tests, run against any [`Backend`].
//!
//! Each case opens a new, empty database through a [`Harness`], builds a
//! small graph by hand (an input table `Src` with integer keys; `Len`
//! derived from it; `Twice` downstream of `Len`, declaring reads of `Len`
//! and `Tag`; `Pair` reading both `Src` and `Len`; and a second root,
//! `Tag`, with text keys and its derived `TagLen`), and checks one part of
//! the contract: revisions and epochs, input writes, reads, change pages,
//! guarded writes and early cutoff, deletes, recorded reads, fences,
//! heartbeats and releases, watermarks, the catalog, and the change token.
//! A case panics with a message naming what the backend got wrong.
//!
//! # Running it against a backend
//!
//! In the backend's crate, add a test file (say `tests/conformance.rs`)
//! that expands [`conformance_tests!`](crate::conformance_tests) with a
//! name and a closure (or function) that makes a [`Harness`]. It expands to
//! a module of that name with one `#[test]` per case, so that a failure
//! names its case:
//!
//! ```no_run
//! use rederive_runtime::sqlite::SqliteStore;
//! use rederive_runtime::storage::conformance::Harness;
//! use rederive_runtime::storage::Backend;
//!
//! rederive_runtime::conformance_tests!(sqlite_memory, || Harness {
//!     // Each call must open a new, empty database on the clock it is given.
//!     open: Box::new(|clock| {
//!         let store = SqliteStore::open_in_memory_with_clock(clock)?;
//!         Ok(Box::new(store) as Box<dyn Backend>)
//!     }),
//!     // A private database: no second connection can see it.
//!     shared: false,
//! });
//! # fn main() {}
//! ```
//!
//! The closure may also return `Option<Harness>`: `None` skips every case,
//! for a backend whose server is not available on this machine (the
//! closure reports that the cases skipped, and why; it should fail instead
//! where the server is required, as on CI).
//!
//! A backend whose databases other connections can open (a file, a server)
//! sets `shared: true` and must return a [`Backend::connector`]: the cases
//! about leases then put the second worker on a second connection, and the
//! change-token case runs (it is skipped for private databases). The
//! connector's connections must follow the same clock. A server backend
//! can give each call of `open` a fresh schema or database of its own, so
//! that cases run in parallel.
//!
//! Time is a [`ManualClock`]: the cases expire leases by advancing it, never
//! by waiting. Every case can also be run by hand (each is a public
//! function taking a [`Harness`]), or all at once with [`run_all`].

mod build;
mod catalog;
mod leases;
mod outcomes;
mod progress;
mod reads;
mod rows;

pub use build::{
    changed_in_range_tells, is_empty_tells, new_rows_fall_back_to_the_guard,
    orphans_after_a_delete, scan_page_in_key_order,
};
pub use catalog::{catalog_apply_and_drop, catalog_schema_changes};
pub use leases::{heartbeat_extends_one_worker, release_and_running, row_fence, table_fence};
pub use outcomes::{delete_cascades, deleted_root_is_rejected, early_cutoff, write_guard};
pub use progress::{
    change_token, connections_and_clock, load_if_settled, watermarks_never_lowered,
};
pub use reads::{readers_follow_changes_creations_and_deletes, reads_are_recorded_with_the_row};
pub use rows::{
    changed_page_visits_each_row_once, equal_puts_keep_changed_at, keys_and_counts,
    load_values_and_statuses, revisions_and_epochs,
};

use super::{Backend, Fence, Outcome, OutcomeKind, Pass, Revision, RowState, Values, Written};
use crate::clock::ManualClock;
use crate::error::Result;
use crate::graph::{Graph, TableId};
use crate::node::NodeDef;
use crate::row::{ColumnDef, TableInfo};
use crate::value::{Key, SqlType, Value};
use std::sync::Arc;
use std::time::Duration;

/// Opens a new, empty database on a clock (see [`Harness::open`]).
pub type Open = Box<dyn Fn(Arc<ManualClock>) -> Result<Box<dyn Backend>>>;

/// One conformance case: panics when the backend breaks the contract.
pub type Case = fn(&Harness);

/// How the suite opens databases of one backend.
pub struct Harness {
    /// Opens a new, empty database (no other call of `open` sees it) whose
    /// leases and change times follow `clock`.
    pub open: Open,
    /// Whether other connections can open the databases `open` makes:
    /// then [`Backend::connector`] must return `Some` (else `None`), and the
    /// cases use a second connection where the engine would.
    pub shared: bool,
}

/// Every case, by name, in the order [`run_all`] runs them (and
/// [`conformance_tests!`](crate::conformance_tests) lists them).
pub const CASES: &[(&str, Case)] = &[
    ("revisions_and_epochs", revisions_and_epochs),
    ("equal_puts_keep_changed_at", equal_puts_keep_changed_at),
    ("load_values_and_statuses", load_values_and_statuses),
    (
        "changed_page_visits_each_row_once",
        changed_page_visits_each_row_once,
    ),
    ("keys_and_counts", keys_and_counts),
    ("write_guard", write_guard),
    ("early_cutoff", early_cutoff),
    ("deleted_root_is_rejected", deleted_root_is_rejected),
    ("delete_cascades", delete_cascades),
    ("row_fence", row_fence),
    ("table_fence", table_fence),
    ("heartbeat_extends_one_worker", heartbeat_extends_one_worker),
    ("release_and_running", release_and_running),
    ("watermarks_never_lowered", watermarks_never_lowered),
    ("load_if_settled", load_if_settled),
    ("change_token", change_token),
    ("connections_and_clock", connections_and_clock),
    ("catalog_apply_and_drop", catalog_apply_and_drop),
    ("catalog_schema_changes", catalog_schema_changes),
    ("is_empty_tells", is_empty_tells),
    ("scan_page_in_key_order", scan_page_in_key_order),
    ("changed_in_range_tells", changed_in_range_tells),
    (
        "new_rows_fall_back_to_the_guard",
        new_rows_fall_back_to_the_guard,
    ),
    ("orphans_after_a_delete", orphans_after_a_delete),
    (
        "reads_are_recorded_with_the_row",
        reads_are_recorded_with_the_row,
    ),
    (
        "readers_follow_changes_creations_and_deletes",
        readers_follow_changes_creations_and_deletes,
    ),
];

/// Runs every case, one after the other; the first failure panics with
/// its case's name.
pub fn run_all(h: &Harness) {
    for (name, case) in CASES {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(h))) {
            let msg = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!("conformance case `{name}` failed: {msg}");
        }
    }
}

/// Expands to a module with one `#[test]` per conformance case, each
/// running it against the backend that `$harness` (a closure or function
/// returning a [`Harness`](crate::storage::conformance::Harness), or an
/// `Option` of one: `None` skips the cases) opens.
/// See [the suite's docs](crate::storage::conformance).
#[macro_export]
macro_rules! conformance_tests {
    ($name:ident, $harness:expr $(,)?) => {
        $crate::conformance_tests!(@cases $name, $harness, [
            revisions_and_epochs,
            equal_puts_keep_changed_at,
            load_values_and_statuses,
            changed_page_visits_each_row_once,
            keys_and_counts,
            write_guard,
            early_cutoff,
            deleted_root_is_rejected,
            delete_cascades,
            row_fence,
            table_fence,
            heartbeat_extends_one_worker,
            release_and_running,
            watermarks_never_lowered,
            load_if_settled,
            change_token,
            connections_and_clock,
            catalog_apply_and_drop,
            catalog_schema_changes,
            is_empty_tells,
            scan_page_in_key_order,
            changed_in_range_tells,
            new_rows_fall_back_to_the_guard,
            orphans_after_a_delete,
            reads_are_recorded_with_the_row,
            readers_follow_changes_creations_and_deletes,
        ]);
    };
    (@cases $name:ident, $harness:expr, [$($case:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            /// The harness, or `None` when the backend cannot run here
            /// (the harness says why): then every case skips.
            fn harness() -> ::std::option::Option<$crate::storage::conformance::Harness> {
                ($harness)().into()
            }

            $(
                #[test]
                fn $case() {
                    if let ::std::option::Option::Some(h) = harness() {
                        $crate::storage::conformance::$case(&h);
                    }
                }
            )*

            #[test]
            fn every_case_is_expanded() {
                let expanded = [$(stringify!($case)),*];
                let listed: Vec<&str> = $crate::storage::conformance::CASES
                    .iter()
                    .map(|(name, _)| *name)
                    .collect();
                assert_eq!(expanded.as_slice(), listed.as_slice());
            }
        }
    };
}

// ---------------------------------------------------------------------------
// The graph every case uses.

/// How long leases last in the cases (the clock is advanced past it).
pub(crate) const TTL: Duration = Duration::from_secs(30);
/// A second.
pub(crate) const SEC: Duration = Duration::from_secs(1);
/// Where the clock starts.
pub(crate) const START_MS: i64 = 1_700_000_000_000;
/// The code version results are written with.
pub(crate) const CODE: &str = "code-1";

const fn col(name: &'static str, ty: SqlType, nullable: bool) -> ColumnDef {
    ColumnDef {
        name,
        ty,
        nullable,
        json: false,
    }
}

const fn input(name: &'static str, columns: &'static [ColumnDef]) -> TableInfo {
    TableInfo {
        name,
        type_path: name,
        input: true,
        columns,
        key: Some(0),
    }
}

const fn derived(name: &'static str, columns: &'static [ColumnDef]) -> TableInfo {
    TableInfo {
        name,
        type_path: name,
        input: false,
        columns,
        key: None,
    }
}

const SRC_COLUMNS: &[ColumnDef] = &[
    col("id", SqlType::Integer, false),
    col("body", SqlType::Text, false),
];
const SRC_WIDE_COLUMNS: &[ColumnDef] = &[
    col("id", SqlType::Integer, false),
    col("body", SqlType::Text, false),
    col("extra", SqlType::Integer, true),
];
const SRC_NARROW_COLUMNS: &[ColumnDef] = &[col("id", SqlType::Integer, false)];
const TAG_COLUMNS: &[ColumnDef] = &[
    col("name", SqlType::Text, false),
    col("note", SqlType::Text, true),
    col("score", SqlType::Real, false),
    col("data", SqlType::Blob, true),
];
const LEN_COLUMNS: &[ColumnDef] = &[col("len", SqlType::Integer, false)];
const LEN_WIDE_COLUMNS: &[ColumnDef] = &[
    col("len", SqlType::Integer, false),
    col("ratio", SqlType::Real, true),
];
const PAIR_COLUMNS: &[ColumnDef] = &[
    col("s", SqlType::Text, false),
    col("extra", SqlType::Integer, true),
];
const INT_COLUMN: &[ColumnDef] = &[col("v", SqlType::Integer, false)];

/// The input table: `id` (key), `body`.
pub(crate) static SRC: TableInfo = input("Src", SRC_COLUMNS);
/// `Src` with a nullable column added at its end.
pub(crate) static SRC_WIDE: TableInfo = input("Src", SRC_WIDE_COLUMNS);
/// `Src` without `body`: a change that would lose input data.
pub(crate) static SRC_NARROW: TableInfo = input("Src", SRC_NARROW_COLUMNS);
/// The second root: `name` (text key), `note` (nullable), `score`, `data`.
pub(crate) static TAG: TableInfo = input("Tag", TAG_COLUMNS);
/// Derived from `Src`: `len`.
pub(crate) static LEN: TableInfo = derived("Len", LEN_COLUMNS);
/// `Len` with another row type.
pub(crate) static LEN_WIDE: TableInfo = derived("Len", LEN_WIDE_COLUMNS);
/// Derived from `Len`: `v`.
pub(crate) static TWICE: TableInfo = derived("Twice", INT_COLUMN);
/// Derived from `Src` and `Len`: `s`, `extra` (nullable).
pub(crate) static PAIR: TableInfo = derived("Pair", PAIR_COLUMNS);
/// Derived from `Tag`: `v`.
pub(crate) static TAG_LEN: TableInfo = derived("TagLen", INT_COLUMN);
/// An input table of another program.
pub(crate) static OTHER: TableInfo = input("Other", SRC_COLUMNS);

fn computes_nothing(
    _: &crate::ctx::Ctx<'_>,
    _: Vec<Vec<Value>>,
) -> std::result::Result<Vec<Value>, String> {
    Err("the conformance suite computes nothing".into())
}

fn node(name: &'static str, inputs: &[&'static TableInfo], output: &'static TableInfo) -> NodeDef {
    NodeDef {
        name,
        module: "conformance",
        output,
        inputs: Box::leak(inputs.to_vec().into_boxed_slice()),
        reads: &[],
        code_hash: "0",
        version: 0,
        files: &[],
        base_dir: ".",
        settle_ms: 0,
        compute: computes_nothing,
    }
}

/// `n` declaring reads of `reads`.
fn reading(mut n: NodeDef, reads: &[&'static TableInfo]) -> NodeDef {
    n.reads = Box::leak(reads.to_vec().into_boxed_slice());
    n
}

/// The suite's graph, with these row types for `Src` and `Len`, with or
/// without `TagLen`.
pub(crate) fn graph_with(src: &'static TableInfo, len: &'static TableInfo, tag_len: bool) -> Graph {
    let mut nodes = vec![
        node("len", &[src], len),
        reading(node("twice", &[len], &TWICE), &[len, &TAG]),
        node("pair", &[src, len], &PAIR),
    ];
    if tag_len {
        nodes.push(node("tag_len", &[&TAG], &TAG_LEN));
    }
    Graph::new(vec![src, &TAG], nodes).expect("the suite's graph is valid")
}

/// The code version of every derived table (`None` for inputs).
pub(crate) fn codes(graph: &Graph, code: &str) -> Vec<Option<String>> {
    graph
        .tables()
        .iter()
        .map(|t| (!t.info.input).then(|| code.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------
// The fixture.

/// One case's database, clock and graph.
pub(crate) struct Fx {
    /// The connection the case works on.
    pub db: Box<dyn Backend>,
    /// A second connection to the same database, for shared backends.
    second: Option<Box<dyn Backend>>,
    /// The clock both connections follow.
    pub clock: Arc<ManualClock>,
    /// The suite's graph.
    pub g: Graph,
    pub src: TableId,
    pub len: TableId,
    pub twice: TableId,
    pub pair: TableId,
    pub tag: TableId,
    pub tag_len: TableId,
}

impl Fx {
    /// A new database with the suite's tables (`schema`), or none.
    fn open(h: &Harness, schema: bool) -> Result<Fx> {
        let clock = Arc::new(ManualClock::new(START_MS));
        let db = (h.open)(clock.clone())?;
        assert_eq!(
            db.connector().is_some(),
            h.shared,
            "Backend::connector must be Some exactly for a shared backend (Harness::shared)"
        );
        let g = graph_with(&SRC, &LEN, true);
        if schema {
            db.apply_schema(&g, &codes(&g, CODE))?;
        }
        let second = match db.connector() {
            Some(c) => Some(c.connect()?),
            None => None,
        };
        let id = |name: &str| g.table_id(name).expect("a table of the suite");
        Ok(Fx {
            src: id("Src"),
            len: id("Len"),
            twice: id("Twice"),
            pair: id("Pair"),
            tag: id("Tag"),
            tag_len: id("TagLen"),
            db,
            second,
            clock,
            g,
        })
    }

    /// The other connection: a second one for shared backends, else the
    /// same (a private database has one connection; its leases still
    /// hold between owners).
    pub fn other(&self) -> &dyn Backend {
        self.second.as_deref().unwrap_or(&*self.db)
    }

    /// The second connection, for shared backends.
    pub fn second(&self) -> Option<&dyn Backend> {
        self.second.as_deref()
    }

    /// A table's name.
    pub fn name(&self, id: TableId) -> &'static str {
        self.g.table(id).info.name
    }

    /// Writes `Src` rows `(id, body)`.
    pub fn put(&self, rows: &[(i64, &str)]) -> Result<Revision> {
        put_src(&*self.db, rows)
    }

    /// Writes `Tag` rows `(name, note, score)` (`data` is the name's bytes).
    pub fn put_tags(&self, rows: &[(&str, Option<&str>, f64)]) -> Result<Revision> {
        let rows: Vec<Vec<Value>> = rows.iter().map(|r| tag_row(r.0, r.1, r.2)).collect();
        self.db.put_rows(&TAG, &rows)
    }

    /// Writes results as a refresh pass would, without fence.
    pub fn write(&self, id: TableId, outcomes: &[Outcome]) -> Result<Vec<Written>> {
        self.write_as(&*self.db, id, outcomes, Pass::Refresh, &Fence::Unfenced)
    }

    /// Writes results through `db`, in `pass`, under `fence`.
    pub fn write_as(
        &self,
        db: &dyn Backend,
        id: TableId,
        outcomes: &[Outcome],
        pass: Pass,
        fence: &Fence,
    ) -> Result<Vec<Written>> {
        db.write_outcomes(&self.g, id, CODE, outcomes, pass, fence, Revision::ZERO)
    }

    /// The state of one key in one table, with its values.
    pub fn state(&self, id: TableId, key: impl Into<Key>) -> Result<Option<RowState>> {
        let mut states = self.db.load(&self.g, &[id], &key.into(), Values::All)?;
        assert_eq!(states.len(), 1, "load returns one state per table");
        Ok(states.pop().flatten())
    }

    /// The state of a row that must exist.
    pub fn must(&self, id: TableId, key: impl Into<Key>) -> Result<RowState> {
        let key = key.into();
        Ok(self
            .state(id, key.clone())?
            .unwrap_or_else(|| panic!("no row {key} in `{}`", self.name(id))))
    }
}

/// Writes `Src` rows `(id, body)` through `db`.
pub(crate) fn put_src(db: &dyn Backend, rows: &[(i64, &str)]) -> Result<Revision> {
    let rows: Vec<Vec<Value>> = rows.iter().map(|&(k, b)| vec![int(k), text(b)]).collect();
    db.put_rows(&SRC, &rows)
}

/// A `Tag` row.
pub(crate) fn tag_row(name: &str, note: Option<&str>, score: f64) -> Vec<Value> {
    vec![
        text(name),
        note.map(text).unwrap_or(Value::Null),
        Value::Real(score),
        Value::Blob(name.as_bytes().to_vec()),
    ]
}

/// Runs a case on a database with the suite's tables.
pub(crate) fn run(h: &Harness, body: impl FnOnce(&Fx) -> Result<()>) {
    run_fx(h, true, body)
}

/// Runs a case on a new database without tables.
pub(crate) fn run_bare(h: &Harness, body: impl FnOnce(&Fx) -> Result<()>) {
    run_fx(h, false, body)
}

fn run_fx(h: &Harness, schema: bool, body: impl FnOnce(&Fx) -> Result<()>) {
    let fx = Fx::open(h, schema).unwrap_or_else(|e| panic!("opening the database failed: {e}"));
    if let Err(e) = body(&fx) {
        panic!("the backend returned an error: {e}");
    }
}

/// An integer value.
pub(crate) fn int(i: i64) -> Value {
    Value::Integer(i)
}

/// A text value.
pub(crate) fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// A successful result.
pub(crate) fn ok(key: impl Into<Key>, ins: &[Revision], values: Vec<Value>) -> Outcome {
    Outcome {
        key: key.into(),
        new: false,
        ins: ins.to_vec(),
        reads: Vec::new(),
        kind: OutcomeKind::Ok(values),
    }
}

/// A failed result.
pub(crate) fn failed(key: impl Into<Key>, ins: &[Revision], message: &str) -> Outcome {
    Outcome {
        key: key.into(),
        new: false,
        ins: ins.to_vec(),
        reads: Vec::new(),
        kind: OutcomeKind::Error(message.to_owned()),
    }
}

/// A blocked result.
pub(crate) fn blocked(
    key: impl Into<Key>,
    ins: &[Revision],
    table: &str,
    origin: impl Into<Key>,
) -> Outcome {
    Outcome {
        key: key.into(),
        new: false,
        ins: ins.to_vec(),
        reads: Vec::new(),
        kind: OutcomeKind::Blocked {
            table: table.to_owned(),
            key: origin.into(),
        },
    }
}

/// Keys, by reference, as the lease methods take them.
pub(crate) fn refs(keys: &[Key]) -> Vec<&Key> {
    keys.iter().collect()
}

/// Integer keys.
pub(crate) fn ints(keys: &[i64]) -> Vec<Key> {
    keys.iter().map(|&k| Key::Int(k)).collect()
}
