//! **rederive** keeps derived data up to date.
//!
//! Plain Rust functions annotated with [`derive_table`] become tables of
//! results in SQLite. When an input row or a function's code changes,
//! rederive knows which stored results are stale and why, and recomputes
//! only those: all of them with [`Db::refresh`], or one key on demand with
//! [`Db::get`]. A recomputation that yields the same value as before stops
//! there (*early cutoff*): the rows downstream stay fresh.
//!
//! ```
//! use rederive::{derive_table, Db, Row, Staleness};
//!
//! #[derive(Row)]
//! #[row(input)] // rows that users write
//! pub struct Source { #[row(key)] pub name: String, pub text: String }
//!
//! #[derive(Row, Debug, PartialEq)]
//! pub struct Words { pub count: i64 }
//!
//! #[derive(Row, Debug, PartialEq)]
//! pub struct Verdict { pub long: bool }
//!
//! #[derive_table] // table `Words`, one row per `Source` row
//! fn count(src: &Source) -> Words {
//!     Words { count: src.text.split_whitespace().count() as i64 }
//! }
//!
//! #[derive_table]
//! fn judge(w: &Words) -> Result<Verdict, String> {
//!     if w.count == 0 { return Err("empty text".into()) }
//!     Ok(Verdict { long: w.count > 3 })
//! }
//!
//! fn main() -> rederive::Result<()> {
//!     let db = Db::open_in_memory()?;           // or Db::open("project.db")
//!     db.put(Source { name: "a".into(), text: "one two".into() })?;
//!     db.put(Source { name: "b".into(), text: "".into() })?;
//!
//!     let report = db.refresh()?;                // every missing and stale row
//!     assert_eq!((report.computed, report.failed, report.blocked), (3, 1, 0));
//!     assert_eq!(db.get::<Verdict>("a")?, Verdict { long: false });
//!     assert!(db.get::<Verdict>("b").is_err());  // the error is stored, with its message
//!
//!     // Same word count: `Words` is recomputed, equal, and `Verdict` stays fresh.
//!     db.put(Source { name: "a".into(), text: "three four".into() })?;
//!     assert_eq!(
//!         db.explain::<Words>("a")?,
//!         Staleness::InputChanged { table: "Source".into(), key: "a".into() }
//!     );
//!     let report = db.refresh()?;
//!     assert_eq!((report.computed, report.unchanged), (0, 1));
//!     assert_eq!(db.explain::<Verdict>("a")?, Staleness::Fresh);
//!     Ok(())
//! }
//! ```
//!
//! # Tables and columns
//!
//! `#[derive(Row)]` maps a struct with named fields to a table: integers and
//! `bool` become INTEGER columns, floats REAL, `String` TEXT, `Vec<u8>` BLOB,
//! `Option<T>` a nullable column, and a field marked `#[row(json)]` any serde
//! type stored as JSON text. `#[row(input)]` marks a table that users write;
//! it has exactly one `#[row(key)]` field, `i64` or `String`. Every derived
//! table is keyed by the key of its *root* input row.
//!
//! # Functions
//!
//! `#[derive_table]` goes on a free function whose parameters are `&Row`
//! and whose return is a row type `R` or `Result<R, E>` with `E: Display`.
//! Several parameters are joined on their common root key. Options:
//! `version = N` (bump by hand), `files = ["glob", ..]` (files the function
//! depends on, relative to the crate's directory; their contents are part of
//! the code version), `settle = "30s"` (wait until the root row has been
//! unchanged that long). The function's *code version* is a hash of its
//! tokens, the `version`, and the declared files' contents.
//!
//! The compiler checks the graph: a dependency cycle, two functions
//! producing one table, an input that no function produces, a function whose
//! inputs have different roots, or a function that returns an input table are
//! compile errors. [`Db::open`] checks the graph again at run time.
//!
//! # Errors are results
//!
//! A function's `Err` and panics are stored with their message; rows
//! downstream of a failed row are *blocked* and not run. Both are retried
//! when an input or the code changes.
//!
//! # Running
//!
//! [`Db::refresh`] runs functions in parallel on all cores, outside any
//! write transaction, and writes results in batches. Several threads and
//! processes can refresh one database file: rows are claimed with leases
//! (extended while functions run, taken over when a worker dies), and a
//! result is stored only while its lease is held and only if it was computed
//! from inputs at least as new as the stored row's. [`watch::watch`] keeps a
//! database fresh as inputs and declared files change.
//!
//! # The CLI
//!
//! A program that declares tables embeds the command line with
//! [`cli::main`]: `status`, `refresh`, `get TABLE KEY`, `explain TABLE KEY`,
//! `errors`, `retry`, `prune`, `graph --format dot|mermaid` and `watch`, each with
//! `--json`, over `--db PATH`.
//!
//! # Cross-row reads
//!
//! A function may read rows of any key, of tables it declares in
//! `reads`, through a [`Ctx`] argument: a compiler stage that inlines the
//! definitions a definition calls. Each read is recorded; a change to a
//! row read (or its creation, or deletion) makes the reader stale, a read
//! row recomputed to an equal value leaves it fresh, and a definition that
//! reaches itself is stored as a `cycle` error in every row of the cycle.
//! Before a function is called, the rows it read last time are brought up
//! to date: a function that reads the same rows as last time is called
//! once per `refresh` and per `get`.
//!
//! ```
//! use rederive::{derive_table, Ctx, Db, Row};
//!
//! #[derive(Row)]
//! #[row(input)]
//! pub struct Def { #[row(key)] pub name: String, pub calls: String }
//!
//! #[derive(Row, Debug, PartialEq)]
//! pub struct Size { pub n: i64 }
//!
//! // The size of a definition with every definition it calls inlined.
//! #[derive_table(reads = [Size])]
//! fn size(def: &Def, ctx: &Ctx) -> Result<Size, String> {
//!     let mut n = 1;
//!     for callee in def.calls.split_whitespace() {
//!         // `?`: a failed callee, or a recursive call, fails this row too.
//!         n += ctx.get::<Size>(callee)?.map_or(0, |s| s.n);
//!     }
//!     Ok(Size { n })
//! }
//!
//! # fn main() -> rederive::Result<()> {
//! let db = Db::open_in_memory()?;
//! db.put_all(vec![
//!     Def { name: "main".into(), calls: "helper helper".into() },
//!     Def { name: "helper".into(), calls: "".into() },
//! ])?;
//! assert_eq!(db.get::<Size>("main")?, Size { n: 3 });
//! db.put(Def { name: "helper".into(), calls: "main".into() })?;
//! let err = db.get::<Size>("main").unwrap_err().to_string();
//! assert!(err.contains("cycle"), "{err}");
//! # Ok(())
//! # }
//! ```
//!
//! # Replicas
//!
//! [`itc`] is the Interval Tree Clock library that replicas of a database
//! will use to version input rows.
#![warn(missing_docs)]

pub use rederive_itc as itc;
pub use rederive_macros::{derive_table, Row};
/// The PostgreSQL backend (cargo feature `postgres`): linking it in is what
/// lets [`Db::open`] take `postgres://` URLs. The feature `postgres-tls`
/// adds encrypted connections (`?sslmode=verify-full&sslrootcert=...`, as
/// libpq reads them; see the backend's documentation).
#[cfg(feature = "postgres")]
pub use rederive_postgres as postgres;
pub use rederive_runtime::{
    catalog, cli, clock, code, ctx, dynamic, engine, error, graph, judge, node, replica, report,
    row, sqlite, staleness, storage, value, watch, Column, ColumnDef, Ctx, Db, Derived, Error,
    FailedRow, Graph, GraphProblem, Input, Inputs, Key, NodeBuilder, NodeDef, Produced, ReadError,
    Report, Result, Rooted, Row, RuntimeNode, SqlType, StaleRow, Staleness, Table, TableDef,
    TableInfo, TableReport, TableStatus, Value,
};

#[doc(hidden)]
pub use rederive_runtime::__private;

/// The README's example, compiled as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
