//! What can be wrong with a graph. Kept apart from the graph itself so that
//! the error type can name graph problems without depending on the graph.

use std::fmt;

/// One problem with a graph. [`Graph::new`](super::Graph::new) reports all of them at once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GraphProblem {
    /// Two row types share one table name.
    DuplicateTable {
        /// The table name.
        table: String,
        /// The Rust paths of the row types.
        types: Vec<String>,
    },
    /// More than one function produces the table.
    DuplicateProducer {
        /// The table.
        table: String,
        /// The functions.
        functions: Vec<String>,
    },
    /// A function reads a derived table that no function produces.
    MissingProducer {
        /// The table nobody produces.
        table: String,
        /// The function that reads it.
        reader: String,
    },
    /// A function writes an input table.
    WritesInput {
        /// The function.
        function: String,
        /// The input table.
        table: String,
    },
    /// A dependency cycle; `steps` walks it as (function, table it reads).
    Cycle {
        /// The cycle in words.
        description: String,
        /// The tables in the cycle, sorted.
        tables: Vec<String>,
    },
    /// A table description that no `#[derive(Row)]` would produce (a
    /// hand-assembled graph): an input table without a valid key column.
    InvalidTable {
        /// The table.
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// A function whose inputs have different roots.
    MixedRoots {
        /// The function.
        function: String,
        /// The two roots.
        roots: (String, String),
    },
}

impl fmt::Display for GraphProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphProblem::DuplicateTable { table, types } => {
                write!(f, "two row types are named `{table}`: {}", types.join(" and "))
            }
            GraphProblem::DuplicateProducer { table, functions } => write!(
                f,
                "`{table}` is produced by more than one function: {}",
                quoted(functions)
            ),
            GraphProblem::MissingProducer { table, reader } => write!(
                f,
                "`{reader}` reads `{table}`, which is neither an input table nor produced by any function"
            ),
            GraphProblem::WritesInput { function, table } => write!(
                f,
                "`{function}` returns the input table `{table}`; input tables are written only by users"
            ),
            GraphProblem::Cycle { description, .. } => write!(f, "dependency cycle: {description}"),
                        GraphProblem::InvalidTable { table, reason } => write!(f, "table `{table}` is invalid: {reason}"),
            GraphProblem::MixedRoots { function, roots } => write!(
                f,
                "the inputs of `{function}` have different roots: `{}` and `{}`",
                roots.0, roots.1
            ),
        }
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
