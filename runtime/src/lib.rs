//! The rederive runtime. Users depend on the `rederive` facade crate, which
//! re-exports what is public here.
#![warn(missing_docs)]

pub mod catalog;
pub mod cli;
pub mod clock;
pub mod code;
pub mod engine;
pub mod error;
pub mod graph;
pub mod judge;
pub mod lease;
pub mod node;
pub mod report;
pub mod row;
pub mod sqlite;
pub mod staleness;
pub mod storage;
pub mod value;
pub mod watch;

pub use engine::Db;
pub use error::{Error, Result};
pub use graph::{Graph, GraphProblem};
pub use node::{NodeDef, TableDef};
pub use report::{FailedRow, Report, TableReport, TableStatus};
pub use row::{ColumnDef, Derived, Input, Produced, Rooted, Row, Table, TableInfo};
pub use staleness::{StaleRow, Staleness};
pub use value::{Column, Key, SqlType, Value};

/// Items used by generated code. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::node::{ComputeFn, NodeDef, TableDef};
    pub use crate::row::{
        max_depth, ColumnDef, Derived, DerivedKind, Input, InputKind, IntoOutcome, Produced,
        RootByKind, Rooted, Row, SameRoot, Table, TableByKind, TableInfo,
    };
    pub use crate::value::{json_from_value, json_to_value, Column, KeyColumn, SqlType, Value};
    pub use inventory;

    /// Compile-time check that two inputs share a root.
    pub const fn assert_same_root<First, This: SameRoot<First>>() {}
    /// Compile-time check that a field type can be a key column.
    pub const fn assert_key_column<T: KeyColumn>() {}
}
