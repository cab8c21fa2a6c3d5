//! Registration of tables and functions (nodes) through `inventory`.

use crate::ctx::Ctx;
use crate::row::TableInfo;
use crate::value::Value;

/// The type-erased body of a node: decodes its input rows (one per input, in
/// parameter order), calls the user's function (with the context its
/// cross-row reads go through), and encodes the result. An `Err` carries
/// the function's error message (or a decoding error).
pub type ComputeFn = fn(&Ctx<'_>, Vec<Vec<Value>>) -> Result<Vec<Value>, String>;

/// A function annotated with `#[derive_table]`: one node of the graph.
#[derive(Debug, Clone, Copy)]
pub struct NodeDef {
    /// The function's name.
    pub name: &'static str,
    /// The module the function is defined in.
    pub module: &'static str,
    /// The table the function produces.
    pub output: &'static TableInfo,
    /// The tables the function reads, in parameter order.
    pub inputs: &'static [&'static TableInfo],
    /// The tables the function may read any row of through its `ctx`
    /// (`#[derive_table(reads = [..])]`), each once.
    pub reads: &'static [&'static TableInfo],
    /// Hash of the function's tokens (signature and body).
    pub code_hash: &'static str,
    /// The manual `version = N` option (0 when absent).
    pub version: u64,
    /// The `files = [..]` globs, relative to `base_dir`.
    pub files: &'static [&'static str],
    /// The directory `files` are resolved against (the crate's manifest dir).
    pub base_dir: &'static str,
    /// The `settle = ".."` option, in milliseconds (0 when absent).
    pub settle_ms: u64,
    /// The function itself, type-erased.
    pub compute: ComputeFn,
}

/// A table declared with `#[derive(Row)]`.
#[derive(Debug, Clone, Copy)]
pub struct TableDef(pub &'static TableInfo);

inventory::collect!(NodeDef);
inventory::collect!(TableDef);

/// Every table registered in this binary.
pub fn registered_tables() -> Vec<&'static TableInfo> {
    inventory::iter::<TableDef>
        .into_iter()
        .map(|t| t.0)
        .collect()
}

/// Every node registered in this binary.
pub fn registered_nodes() -> Vec<&'static NodeDef> {
    inventory::iter::<NodeDef>.into_iter().collect()
}
