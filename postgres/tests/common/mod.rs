//! The graph the backend tests share: an input table `Src` (integer key,
//! text body) and `Len`, derived from it by a function each test file
//! chooses.

use rederive_runtime::graph::Graph;
use rederive_runtime::node::ComputeFn;
use rederive_runtime::row::{ColumnDef, TableInfo};
use rederive_runtime::value::SqlType;
use rederive_runtime::NodeDef;

pub const fn col(name: &'static str, ty: SqlType) -> ColumnDef {
    ColumnDef {
        name,
        ty,
        nullable: false,
        json: false,
    }
}

pub static SRC: TableInfo = TableInfo {
    name: "Src",
    type_path: "Src",
    input: true,
    columns: &[col("id", SqlType::Integer), col("body", SqlType::Text)],
    key: Some(0),
};

static LEN: TableInfo = TableInfo {
    name: "Len",
    type_path: "Len",
    input: false,
    columns: &[col("len", SqlType::Integer)],
    key: None,
};

static LEN_INPUTS: &[&TableInfo] = &[&SRC];

/// `Src` and `Len`, computed by `compute` (code version `code`).
pub fn graph(module: &'static str, code: &'static str, compute: ComputeFn) -> Graph {
    let node = NodeDef {
        name: "len",
        module,
        output: &LEN,
        inputs: LEN_INPUTS,
        reads: &[],
        code_hash: code,
        version: 0,
        files: &[],
        base_dir: ".",
        settle_ms: 0,
        compute,
    };
    Graph::new(vec![&SRC], vec![node]).expect("a valid graph")
}
