//! The rederive runtime. Users depend on the `rederive` facade crate, which
//! re-exports what is public here.
#![warn(missing_docs)]

pub mod catalog;
pub mod cli;
pub mod clock;
pub mod code;
pub mod ctx;
pub mod dynamic;
pub mod engine;
pub mod error;
pub mod graph;
pub mod judge;
pub mod lease;
pub mod node;
pub mod replica;
pub mod report;
pub mod row;
pub mod sqlite;
pub mod staleness;
pub mod storage;
pub mod value;
pub mod watch;

pub use ctx::{Ctx, ReadError};
pub use dynamic::{register, Inputs, NodeBuilder, RuntimeNode};
pub use engine::Db;
pub use error::{Error, Result};
pub use graph::{Graph, GraphProblem};
pub use node::{NodeDef, TableDef};
pub use report::{FailedRow, Report, TableReport, TableStatus};
pub use row::{ColumnDef, Derived, Input, Produced, Rooted, Row, Table, TableInfo};
pub use staleness::{StaleRow, Staleness};
pub use value::{Column, Key, SqlType, Value};

/// Items used by generated code, and the templates of that code. Not
/// public API.
#[doc(hidden)]
#[path = "plumbing.rs"]
pub mod __private;
