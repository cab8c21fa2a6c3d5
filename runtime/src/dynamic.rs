//! Computations defined at run time: nodes registered without the macro,
//! with a name, input tables, declared reads, an output table (a row type,
//! or a generic JSON row), a code version supplied by the caller (the hash
//! of a rule written in the user's own language, say) and a closure.
//!
//! [`register`] adds a node to this process's graph: every later
//! [`crate::Db::open`] (and the CLI) has it, checked like the macro's
//! nodes. A new code version makes just that node's rows stale.

use crate::ctx::Ctx;
use crate::node::NodeDef;
use crate::row::{ColumnDef, Row, Table, TableInfo};
use crate::value::{SqlType, Value};
use std::fmt;
use std::sync::{Arc, Mutex};

/// The body of a run-time node: the input rows (encoded, in input order)
/// to the encoded output row.
pub type DynCompute =
    dyn Fn(&Ctx<'_>, Vec<Vec<Value>>) -> Result<Vec<Value>, String> + Send + Sync + 'static;

/// A closure shared by the graphs that include its node.
#[derive(Clone)]
pub struct Closure(pub(crate) Arc<DynCompute>);

impl fmt::Debug for Closure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Closure")
    }
}

/// A node defined at run time (see [`NodeBuilder`]).
#[derive(Debug, Clone)]
pub struct RuntimeNode {
    pub(crate) def: NodeDef,
    pub(crate) compute: Closure,
}

impl RuntimeNode {
    /// The node's description, as the graph sees it.
    pub fn def(&self) -> &NodeDef {
        &self.def
    }
}

/// The input rows a run-time node's closure is called with.
#[derive(Debug)]
pub struct Inputs {
    rows: Vec<Vec<Value>>,
    tables: &'static [&'static TableInfo],
}

impl Inputs {
    /// Input number `i` (in the order of [`NodeBuilder::input`]), decoded
    /// as `T`, which must be that input's row type.
    pub fn get<T: Row>(&self, i: usize) -> Result<T, String> {
        let Some(info) = self.tables.get(i) else {
            return Err(format!(
                "the node has {} inputs, not {}",
                self.tables.len(),
                i + 1
            ));
        };
        if info.type_path != T::TABLE.type_path {
            return Err(format!(
                "input {i} is a `{}` row, not a `{}` row",
                info.name,
                T::TABLE.name
            ));
        }
        T::decode(self.rows[i].clone())
    }

    /// Input number `i`, encoded (its columns in field order).
    pub fn values(&self, i: usize) -> Option<&[Value]> {
        self.rows.get(i).map(Vec::as_slice)
    }
}

/// Builds a [`RuntimeNode`].
///
/// Building a node leaks its names and its table's description (a few
/// hundred bytes), which the graph keeps for the life of the process:
/// build each node once (and again only when it changes), not at every
/// open.
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: String,
    inputs: Vec<&'static TableInfo>,
    reads: Vec<&'static TableInfo>,
    version: String,
}

/// The one column of a generic JSON row.
static JSON_COLUMNS: [ColumnDef; 1] = [ColumnDef {
    name: "value",
    ty: SqlType::Text,
    nullable: false,
    json: true,
}];

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl NodeBuilder {
    /// A node named `name` (for messages, like a function's name).
    pub fn new(name: impl Into<String>) -> NodeBuilder {
        NodeBuilder {
            name: name.into(),
            inputs: Vec::new(),
            reads: Vec::new(),
            version: String::new(),
        }
    }

    /// Adds an input table: the closure gets its row of each key (all
    /// inputs share a root, as for the macro's functions).
    pub fn input<T: Table>(mut self) -> NodeBuilder {
        self.inputs.push(T::INFO);
        self
    }

    /// Declares a table the closure may read any row of through its `ctx`.
    pub fn reads<T: Table>(mut self) -> NodeBuilder {
        if !self.reads.contains(&T::INFO) {
            self.reads.push(T::INFO);
        }
        self
    }

    /// The code version (for example a hash of the rule's source): when it
    /// changes, the node's rows are stale.
    pub fn version(mut self, version: impl Into<String>) -> NodeBuilder {
        self.version = version.into();
        self
    }

    /// The node, producing rows of `O` (a `#[derive(Row)]` type that no
    /// function produces).
    pub fn output<O: Row>(
        self,
        f: impl Fn(&Ctx<'_>, &Inputs) -> Result<O, String> + Send + Sync + 'static,
    ) -> RuntimeNode {
        let info: &'static TableInfo = Box::leak(Box::new(O::TABLE));
        let (def, tables) = self.def(info);
        RuntimeNode {
            compute: Closure(Arc::new(move |ctx, rows| {
                let inputs = Inputs { rows, tables };
                f(ctx, &inputs)?.encode()
            })),
            def,
        }
    }

    /// The node, producing a generic JSON row in a table named `table`
    /// (one column, `value`; read it with [`crate::Db::get_json`]).
    pub fn output_json(
        self,
        table: impl Into<String>,
        f: impl Fn(&Ctx<'_>, &Inputs) -> Result<serde_json::Value, String> + Send + Sync + 'static,
    ) -> RuntimeNode {
        let table = table.into();
        let info: &'static TableInfo = Box::leak(Box::new(TableInfo {
            name: leak(table.clone()),
            type_path: leak(format!("<run time>::{table}")),
            input: false,
            columns: &JSON_COLUMNS,
            key: None,
        }));
        let (def, tables) = self.def(info);
        RuntimeNode {
            compute: Closure(Arc::new(move |ctx, rows| {
                let inputs = Inputs { rows, tables };
                let value = f(ctx, &inputs)?;
                Ok(vec![crate::value::json_to_value(&value)?])
            })),
            def,
        }
    }

    fn def(self, output: &'static TableInfo) -> (NodeDef, &'static [&'static TableInfo]) {
        let inputs: &'static [&'static TableInfo] = Box::leak(self.inputs.into_boxed_slice());
        let reads: &'static [&'static TableInfo] = Box::leak(self.reads.into_boxed_slice());
        let def = NodeDef {
            name: leak(self.name),
            module: "<run time>",
            output,
            inputs,
            reads,
            code_hash: leak(format!("run time: {}", self.version)),
            version: 0,
            files: &[],
            base_dir: "",
            settle_ms: 0,
            compute: registered_at_run_time,
        };
        (def, inputs)
    }
}

/// The `compute` of a run-time node's [`NodeDef`]: never called (the
/// engine calls the node's closure).
fn registered_at_run_time(_: &Ctx<'_>, _: Vec<Vec<Value>>) -> Result<Vec<Value>, String> {
    Err("a node registered at run time is computed by its closure".into())
}

/// The nodes registered in this process.
static REGISTERED: Mutex<Vec<RuntimeNode>> = Mutex::new(Vec::new());

/// Adds a node to this process's graph (replacing a node registered
/// before for the same output table): every later open has it.
pub fn register(node: RuntimeNode) {
    let mut nodes = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    nodes.retain(|n| n.def.output.name != node.def.output.name);
    nodes.push(node);
}

/// Removes the node registered for an output table; returns whether there
/// was one.
pub fn unregister(output_table: &str) -> bool {
    let mut nodes = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    let before = nodes.len();
    nodes.retain(|n| n.def.output.name != output_table);
    nodes.len() != before
}

/// The nodes registered at run time in this process.
pub fn registered() -> Vec<RuntimeNode> {
    REGISTERED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
