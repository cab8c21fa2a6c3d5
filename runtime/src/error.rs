//! The runtime's error type: one enum, with variants a user can act on.

use crate::graph::problem::GraphProblem;
use crate::value::Key;
use std::path::PathBuf;

/// `Result` with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in rederive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registered graph is invalid (cycles, duplicate or missing
    /// producers, inconsistent roots). Every problem is listed.
    #[error("the graph of tables is invalid:\n{}", list(.0))]
    Graph(Vec<GraphProblem>),

    /// The file exists but is not a rederive database.
    #[error("`{path}` is not a rederive database: {reason}")]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },

    /// The database was written by a newer rederive.
    #[error("the database was written by a newer rederive (format {found}; this build reads up to {supported}); upgrade rederive")]
    NewerFormat {
        /// The format version in the file.
        found: i64,
        /// The newest format this build reads.
        supported: i64,
    },

    /// An input table's columns changed in a way that cannot be migrated
    /// without losing input rows.
    #[error("input table `{table}` changed incompatibly: {detail}. Input rows are never dropped: migrate the table by hand, or restore its previous row type")]
    SchemaChanged {
        /// The table.
        table: String,
        /// Which columns differ and how.
        detail: String,
    },

    /// No table of that name is registered.
    #[error("no table named `{name}`{}", suggest(.known))]
    UnknownTable {
        /// The name asked for.
        name: String,
        /// The tables there are.
        known: Vec<String>,
    },

    /// The table is derived, but the operation needs an input table.
    #[error("`{0}` is a derived table; only input tables (`#[row(input)]`) can be written or used as a root")]
    NotAnInput(String),

    /// A key of the wrong type for the table.
    #[error("invalid key {key} for table `{table}`: the key column is {expected}")]
    KeyType {
        /// The table.
        table: String,
        /// The key given.
        key: Key,
        /// The key column's type.
        expected: String,
    },

    /// No row with that key.
    #[error("no row {key} in `{table}`")]
    NotFound {
        /// The table.
        table: String,
        /// The key.
        key: Key,
    },

    /// The row's function returned an error or panicked.
    #[error("`{table}` {key} failed: {message}")]
    Failed {
        /// The table.
        table: String,
        /// The key.
        key: Key,
        /// The stored message.
        message: String,
    },

    /// The row was not computed because a row it depends on failed.
    #[error("`{table}` {key} is blocked by the failed row `{failed_table}` {failed_key}")]
    Blocked {
        /// The table.
        table: String,
        /// The key.
        key: Key,
        /// The failed upstream table.
        failed_table: String,
        /// The failed upstream key.
        failed_key: Key,
    },

    /// A stored value does not decode into the row type.
    #[error("cannot decode `{table}` {key}: {message}")]
    Decode {
        /// The table.
        table: String,
        /// The key.
        key: Key,
        /// What is wrong.
        message: String,
    },

    /// A row could not be encoded (e.g. a JSON column with non-string map keys).
    #[error("cannot encode a `{table}` row: {message}")]
    Encode {
        /// The table.
        table: String,
        /// What is wrong.
        message: String,
    },

    /// A file declared with `files = [..]` could not be read.
    #[error("cannot read `{path}` (declared in `files` of `{node}`): {source}")]
    File {
        /// The node that declared it.
        node: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// An invalid `files` glob.
    #[error("invalid glob `{glob}` in `files` of `{node}`: {message}")]
    Glob {
        /// The node.
        node: String,
        /// The glob.
        glob: String,
        /// What is wrong.
        message: String,
    },

    /// The operation was cancelled (see `Db::cancel_flag`); nothing of the
    /// batch in progress was written.
    #[error("cancelled")]
    Cancelled,

    /// A file watcher could not be set up.
    #[error("cannot watch files: {0}")]
    Watch(String),

    /// The database itself failed (I/O, locking, a corrupt file, a lost
    /// connection). The source is the backend's own error.
    #[error("database error: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The database's rederive tables all belong to another program: two
    /// unrelated graphs must not share one file.
    #[error("the database holds the tables of another program ({}) and none of this program's ({}); open the right database, or a new file", .tables.join(", "), .expected.join(", "))]
    OtherGraph {
        /// The tables the database holds.
        tables: Vec<String>,
        /// This program's tables.
        expected: Vec<String>,
    },

    /// A read-only command met a database whose tables are not (yet) this
    /// program's: it changes nothing, so they must be brought in line first.
    #[error("the database {}; a read-only command changes nothing: run `refresh` first", schema_gap(.missing, .changed))]
    SchemaNotApplied {
        /// This program's tables that the database lacks.
        missing: Vec<String>,
        /// Tables whose stored layout is older than this program's.
        changed: Vec<String>,
    },

    /// A replica operation was refused: the two databases are not replicas
    /// of one another, this replica retired, a file was copied by hand, or a
    /// peer sent something this replica cannot take.
    #[error("replica {replica}: {reason}")]
    Replica {
        /// The replica (its file or URL).
        replica: String,
        /// What is wrong, and what to do.
        reason: String,
    },

    /// A table that the graph still has, or an input table without
    /// permission, was asked to be dropped.
    #[error("`{table}` was not dropped: {reason}")]
    NotDropped {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },
}

fn list(problems: &[GraphProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn schema_gap(missing: &[String], changed: &[String]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "lacks this program's tables {}",
            missing.join(", ")
        ));
    }
    if !changed.is_empty() {
        parts.push(format!("stores older layouts of {}", changed.join(", ")));
    }
    parts.join(" and ")
}

fn suggest(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        format!("; the tables are: {}", known.join(", "))
    }
}
