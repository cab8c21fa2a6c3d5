//! The rederive runtime. Users depend on the `rederive` facade crate, which
//! re-exports what is public here.
#![warn(missing_docs)]

pub mod backend;
pub mod cli;
pub mod code;
pub mod engine;
pub mod error;
pub mod graph;
pub mod lease;
pub mod node;
pub mod row;
mod schema;
pub mod staleness;
pub mod store;
pub mod value;
pub mod watch;

pub use engine::Db;
pub use error::{Error, Result};
pub use graph::{Graph, GraphProblem};
pub use node::{NodeDef, TableDef};
pub use row::{ColumnDef, Derived, Input, Produced, Rooted, Row, Table, TableInfo};
pub use staleness::{FailedRow, Report, StaleRow, Staleness, TableReport, TableStatus};
pub use value::{Column, Key, SqlType, Value};

/// Items used by generated code, and the templates of that code. Not
/// public API.
#[doc(hidden)]
#[path = "plumbing.rs"]
pub mod __private;
