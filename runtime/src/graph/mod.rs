//! The graph of tables and functions: collected from the registry (or
//! assembled by hand), validated, sorted, and printed.
//!
//! The compiler already rejects cycles, duplicate producers and mixed roots
//! within one crate; the graph checks them again at run time because a graph
//! can be assembled across crates or by hand.

mod cycles;
pub mod problem;
mod render;

use crate::error::{Error, Result};
use crate::node::{registered_nodes, registered_tables, NodeDef};
use crate::row::TableInfo;
use cycles::find_cycles;
pub use problem::GraphProblem;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A table of a [`Graph`]: an index into [`Graph::tables`], typed so that
/// it is never mixed up with another number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId(u32);

impl TableId {
    /// The id of the `index`-th table of [`Graph::tables`].
    pub fn from_index(index: usize) -> TableId {
        TableId(u32::try_from(index).expect("fewer than 2^32 tables"))
    }

    /// The position of this table in [`Graph::tables`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table #{}", self.0)
    }
}

/// A table of the graph.
#[derive(Debug, Clone)]
pub struct TableNode {
    /// The table's static description.
    pub info: &'static TableInfo,
    /// The root table (itself for input tables).
    pub root: TableId,
    /// The producing function (an index into [`Graph::nodes`]), for derived tables.
    pub producer: Option<usize>,
    /// The tables the producer reads, in parameter order.
    pub inputs: Vec<TableId>,
    /// The tables the producer may read any row of through its `ctx`
    /// (declared reads: not edges of the table graph, so they may form
    /// cycles, resolved row by row at run time).
    pub reads: Vec<TableId>,
    /// 0 for inputs, else one more than the deepest input.
    pub depth: usize,
}

/// A validated, topologically sorted graph.
#[derive(Debug, Clone)]
pub struct Graph {
    tables: Vec<TableNode>,
    nodes: Vec<NodeDef>,
    /// The closures of nodes registered at run time, by output table.
    closures: Vec<Option<crate::dynamic::Closure>>,
    by_name: BTreeMap<&'static str, TableId>,
    order: Vec<TableId>,
}

impl Graph {
    /// Collects every table and function registered in this binary.
    pub fn from_registry() -> Result<Graph> {
        let nodes = registered_nodes().into_iter().copied().collect();
        Graph::with_runtime_nodes(registered_tables(), nodes, crate::dynamic::registered())
    }

    /// Like [`Graph::new`], with nodes defined at run time too.
    pub fn with_runtime_nodes(
        tables: Vec<&'static TableInfo>,
        mut nodes: Vec<NodeDef>,
        runtime: Vec<crate::dynamic::RuntimeNode>,
    ) -> Result<Graph> {
        let mut closures = BTreeMap::new();
        for node in runtime {
            closures.insert(node.def.output.name, node.compute);
            nodes.push(node.def);
        }
        let mut graph = Graph::new(tables, nodes)?;
        for (name, closure) in closures {
            let id = graph.table_id(name)?;
            graph.closures[id.index()] = Some(closure);
        }
        Ok(graph)
    }

    /// The closure of a table's producer, when it was defined at run time.
    pub(crate) fn closure(&self, id: TableId) -> Option<&crate::dynamic::Closure> {
        self.closures[id.index()].as_ref()
    }

    /// Builds a graph from explicit tables and nodes (tables that nodes
    /// mention are added as needed), reporting every problem at once.
    pub fn new(tables: Vec<&'static TableInfo>, mut nodes: Vec<NodeDef>) -> Result<Graph> {
        let mut problems = Vec::new();
        nodes.sort_by(|a, b| (a.output.name, a.name).cmp(&(b.output.name, b.name)));

        // Tables, by name, deduplicated (the same type may be listed twice).
        let mut infos: BTreeMap<&'static str, Vec<&'static TableInfo>> = BTreeMap::new();
        let mentioned = nodes.iter().flat_map(|n| {
            std::iter::once(n.output)
                .chain(n.inputs.iter().copied())
                .chain(n.reads.iter().copied())
        });
        for info in tables.into_iter().chain(mentioned) {
            let same = infos.entry(info.name).or_default();
            if !same.contains(&info) {
                same.push(info);
            }
        }
        let mut table_nodes = Vec::new();
        let mut by_name = BTreeMap::new();
        for (name, same) in &infos {
            if let Some(reason) = invalid_table(same[0]) {
                problems.push(GraphProblem::InvalidTable {
                    table: name.to_string(),
                    reason,
                });
            }
            if same.len() > 1 {
                problems.push(GraphProblem::DuplicateTable {
                    table: name.to_string(),
                    types: same.iter().map(|i| format!("`{}`", i.type_path)).collect(),
                });
            }
            let id = TableId::from_index(table_nodes.len());
            by_name.insert(*name, id);
            table_nodes.push(TableNode {
                info: same[0],
                root: id,
                producer: None,
                inputs: Vec::new(),
                reads: Vec::new(),
                depth: 0,
            });
        }

        // Producers.
        let mut producers: BTreeMap<TableId, Vec<usize>> = BTreeMap::new();
        for (i, node) in nodes.iter().enumerate() {
            let out = by_name[node.output.name];
            if node.output.input {
                problems.push(GraphProblem::WritesInput {
                    function: node.name.to_owned(),
                    table: node.output.name.to_owned(),
                });
                continue;
            }
            producers.entry(out).or_default().push(i);
        }
        for (table, list) in &producers {
            if list.len() > 1 {
                problems.push(GraphProblem::DuplicateProducer {
                    table: table_nodes[table.index()].info.name.to_owned(),
                    functions: list.iter().map(|&i| nodes[i].name.to_owned()).collect(),
                });
            }
            let t = &mut table_nodes[table.index()];
            t.producer = Some(list[0]);
            t.inputs = nodes[list[0]]
                .inputs
                .iter()
                .map(|i| by_name[i.name])
                .collect();
            let mut reads: Vec<TableId> = nodes[list[0]]
                .reads
                .iter()
                .map(|i| by_name[i.name])
                .collect();
            reads.sort();
            reads.dedup();
            t.reads = reads;
        }
        for node in &nodes {
            for input in node.inputs.iter().chain(node.reads) {
                let id = by_name[input.name];
                if !input.input && table_nodes[id.index()].producer.is_none() {
                    problems.push(GraphProblem::MissingProducer {
                        table: input.name.to_owned(),
                        reader: node.name.to_owned(),
                    });
                }
            }
        }

        let cycles = find_cycles(&table_nodes, &nodes);
        let has_cycles = !cycles.is_empty();
        problems.extend(cycles);

        let mut graph = Graph {
            closures: vec![None; table_nodes.len()],
            tables: table_nodes,
            nodes,
            by_name,
            order: Vec::new(),
        };
        if !has_cycles {
            graph.order = graph.topological_order();
            problems.extend(graph.assign_roots_and_depths());
        }
        if problems.is_empty() {
            Ok(graph)
        } else {
            Err(Error::Graph(problems))
        }
    }

    /// Kahn's algorithm; ties are broken by depth-first readiness and then
    /// by name, so the order is the same on every run.
    fn topological_order(&self) -> Vec<TableId> {
        let mut indegree: Vec<usize> = self.tables.iter().map(|t| t.inputs.len()).collect();
        let mut readers: Vec<Vec<TableId>> = vec![Vec::new(); self.tables.len()];
        for (id, t) in self.ids().zip(&self.tables) {
            for &input in &t.inputs {
                readers[input.index()].push(id);
            }
        }
        // `tables` is sorted by name, so a BTreeSet of ids pops by name.
        let mut ready: BTreeSet<TableId> =
            self.ids().filter(|i| indegree[i.index()] == 0).collect();
        let mut order = Vec::with_capacity(self.tables.len());
        let mut placed = vec![false; self.tables.len()];
        // Declared reads order too, where they can: a table whose read
        // tables are all placed goes first, so that what is read is
        // computed before its readers (reads may form cycles, so they
        // cannot be hard edges).
        while let Some(id) = ready
            .iter()
            .copied()
            .find(|&t| {
                self.tables[t.index()]
                    .reads
                    .iter()
                    .all(|&r| r == t || placed[r.index()])
            })
            .or_else(|| ready.first().copied())
        {
            ready.remove(&id);
            placed[id.index()] = true;
            order.push(id);
            for &reader in &readers[id.index()] {
                indegree[reader.index()] -= 1;
                if indegree[reader.index()] == 0 {
                    ready.insert(reader);
                }
            }
        }
        order
    }

    fn assign_roots_and_depths(&mut self) -> Vec<GraphProblem> {
        let mut problems = Vec::new();
        for &id in &self.order.clone() {
            let inputs = self.tables[id.index()].inputs.clone();
            let Some(&first) = inputs.first() else {
                continue;
            };
            let root = self.tables[first.index()].root;
            for &other in &inputs[1..] {
                let other_root = self.tables[other.index()].root;
                if other_root != root {
                    problems.push(GraphProblem::MixedRoots {
                        function: self.producer(id).map(|n| n.name).unwrap_or("?").to_owned(),
                        roots: (
                            self.tables[root.index()].info.name.to_owned(),
                            self.tables[other_root.index()].info.name.to_owned(),
                        ),
                    });
                }
            }
            let depth = 1 + inputs
                .iter()
                .map(|&i| self.tables[i.index()].depth)
                .max()
                .unwrap_or(0);
            let t = &mut self.tables[id.index()];
            t.root = root;
            t.depth = depth;
        }
        problems
    }

    /// Every table, sorted by name; [`TableId::index`] is a position in
    /// this slice.
    pub fn tables(&self) -> &[TableNode] {
        &self.tables
    }

    /// The id of every table, in the order of [`Graph::tables`].
    pub fn ids(&self) -> impl Iterator<Item = TableId> {
        (0..self.tables.len()).map(TableId::from_index)
    }

    /// Every function.
    pub fn nodes(&self) -> &[NodeDef] {
        &self.nodes
    }

    /// One table.
    pub fn table(&self, id: TableId) -> &TableNode {
        &self.tables[id.index()]
    }

    /// The producing function of a table.
    pub fn producer(&self, id: TableId) -> Option<&NodeDef> {
        self.tables[id.index()].producer.map(|i| &self.nodes[i])
    }

    /// Looks a table up by name.
    pub fn table_id(&self, name: &str) -> Result<TableId> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| Error::UnknownTable {
                name: name.to_owned(),
                known: self.by_name.keys().map(|k| k.to_string()).collect(),
            })
    }

    /// The type of a table's key: the key column's for an input table, its
    /// root's for a derived table.
    pub fn key_type(&self, id: TableId) -> crate::value::SqlType {
        let root = self.table(self.table(id).root).info;
        root.key_column()
            .map(|c| c.ty)
            .unwrap_or(crate::value::SqlType::Text)
    }

    /// All tables, inputs first, each after the tables it reads.
    pub fn topological(&self) -> &[TableId] {
        &self.order
    }

    /// The derived tables in topological order.
    pub fn derived_in_order(&self) -> impl Iterator<Item = TableId> + '_ {
        self.order
            .iter()
            .copied()
            .filter(|&id| self.tables[id.index()].producer.is_some())
    }

    /// The tables `id` is computed from, directly or not, in topological
    /// order, followed by `id` itself.
    pub fn ancestry(&self, id: TableId) -> Vec<TableId> {
        let mut needed = vec![false; self.tables.len()];
        let mut stack = vec![id];
        while let Some(t) = stack.pop() {
            if !needed[t.index()] {
                needed[t.index()] = true;
                stack.extend(&self.tables[t.index()].inputs);
            }
        }
        self.order
            .iter()
            .copied()
            .filter(|&t| needed[t.index()])
            .collect()
    }

    /// Every table a row of `id` depends on, through inputs and declared
    /// reads, directly or not, in topological order, followed by `id`
    /// itself: the tables whose rows must be settled for `id`'s to be.
    pub fn dependencies(&self, id: TableId) -> Vec<TableId> {
        let mut needed = vec![false; self.tables.len()];
        let mut stack = vec![id];
        while let Some(t) = stack.pop() {
            if !needed[t.index()] {
                needed[t.index()] = true;
                let node = &self.tables[t.index()];
                stack.extend(node.inputs.iter().chain(&node.reads));
            }
        }
        self.order
            .iter()
            .copied()
            .filter(|&t| t != id && needed[t.index()])
            .chain(std::iter::once(id))
            .collect()
    }

    /// Whether `id` is read by a table that comes at or before it in
    /// topological order (itself, or through a cycle of reads): then a
    /// refresh pass can change rows that a table already refreshed read.
    pub fn read_backwards(&self, id: TableId) -> bool {
        let pos = |t: TableId| self.order.iter().position(|&x| x == t);
        self.readers_of(id).any(|r| pos(r) <= pos(id))
    }

    /// The tables that read `id` directly.
    pub fn readers(&self, id: TableId) -> impl Iterator<Item = TableId> + '_ {
        self.order
            .iter()
            .copied()
            .filter(move |&t| self.tables[t.index()].inputs.contains(&id))
    }

    /// The derived tables whose root is `root`, in topological order.
    pub fn derived_from_root(&self, root: TableId) -> impl Iterator<Item = TableId> + '_ {
        self.derived_in_order()
            .filter(move |&id| self.tables[id.index()].root == root)
    }

    /// The derived tables that declare reads of `table`, in topological
    /// order.
    pub fn readers_of(&self, table: TableId) -> impl Iterator<Item = TableId> + '_ {
        self.derived_in_order()
            .filter(move |&id| self.tables[id.index()].reads.contains(&table))
    }

    /// Whether any function declares reads.
    pub fn has_reads(&self) -> bool {
        self.tables.iter().any(|t| !t.reads.is_empty())
    }
}

/// Why a table description cannot be stored, if it cannot.
fn invalid_table(info: &TableInfo) -> Option<String> {
    use crate::value::SqlType;
    match (info.input, info.key) {
        (true, None) => Some("an input table needs a key column".into()),
        (true, Some(i)) => match info.columns.get(i) {
            None => Some(format!(
                "key column {i} is out of range ({} columns)",
                info.columns.len()
            )),
            Some(c) if !matches!(c.ty, SqlType::Integer | SqlType::Text) || c.nullable => Some(
                format!("key column `{}` must be a non-null integer or text", c.name),
            ),
            Some(_) => None,
        },
        (false, Some(_)) => Some("a derived table has no key column of its own".into()),
        (false, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::ColumnDef;
    use crate::value::{SqlType, Value};

    const COLS: &[ColumnDef] = &[ColumnDef {
        name: "n",
        ty: SqlType::Integer,
        nullable: false,
        json: false,
    }];

    fn table(name: &str, input: bool) -> &'static TableInfo {
        Box::leak(Box::new(TableInfo {
            name: Box::leak(name.to_owned().into_boxed_str()),
            type_path: Box::leak(format!("test::{name}").into_boxed_str()),
            input,
            columns: COLS,
            key: input.then_some(0),
        }))
    }

    fn compute(
        _: &crate::ctx::Ctx<'_>,
        _: Vec<Vec<Value>>,
    ) -> std::result::Result<Vec<Value>, String> {
        Ok(vec![Value::Integer(0)])
    }

    fn node(name: &str, inputs: &[&'static TableInfo], output: &'static TableInfo) -> NodeDef {
        NodeDef {
            name: Box::leak(name.to_owned().into_boxed_str()),
            module: "test",
            output,
            inputs: Box::leak(inputs.to_vec().into_boxed_slice()),
            reads: &[],
            code_hash: "0",
            version: 0,
            files: &[],
            base_dir: ".",
            settle_ms: 0,
            compute,
        }
    }

    fn problems(r: Result<Graph>) -> Vec<GraphProblem> {
        match r {
            Err(Error::Graph(p)) => p,
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("expected the graph to be rejected"),
        }
    }

    fn reading(mut n: NodeDef, reads: &[&'static TableInfo]) -> NodeDef {
        n.reads = Box::leak(reads.to_vec().into_boxed_slice());
        n
    }

    #[test]
    fn declared_reads_may_form_cycles_and_are_not_edges() {
        let (src, a, b) = (table("Src", true), table("A", false), table("B", false));
        let nodes = vec![
            // A reads itself and B; B reads A: cycles only through reads.
            reading(node("make_a", &[src], a), &[a, b, b]),
            reading(node("make_b", &[src], b), &[a]),
        ];
        let g = Graph::new(vec![src], nodes).unwrap();
        let (ta, tb) = (g.table_id("A").unwrap(), g.table_id("B").unwrap());
        assert_eq!(g.table(ta).reads, vec![ta, tb], "sorted, each once");
        assert_eq!(g.table(ta).inputs, vec![g.table_id("Src").unwrap()]);
        assert_eq!(g.readers_of(ta).collect::<Vec<_>>(), vec![ta, tb]);
        assert_eq!(g.readers_of(tb).collect::<Vec<_>>(), vec![ta]);
        assert!(g.has_reads());
    }

    #[test]
    fn a_read_of_a_table_nobody_produces_is_reported() {
        let (src, a, ghost) = (table("Src", true), table("A", false), table("Ghost", false));
        let nodes = vec![reading(node("make_a", &[src], a), &[ghost])];
        let p = problems(Graph::new(vec![src], nodes));
        assert!(
            p.iter().any(
                |p| matches!(p, GraphProblem::MissingProducer { table, reader }
                if table == "Ghost" && reader == "make_a")
            ),
            "{p:?}"
        );
    }

    #[test]
    fn two_disjoint_cycles_are_both_reported() {
        let (a, b, c, d, e) = (
            table("A", false),
            table("B", false),
            table("C", false),
            table("D", false),
            table("E", false),
        );
        let src = table("Src", true);
        let nodes = vec![
            node("make_b", &[a], b),
            node("make_a", &[b], a),
            node("make_c", &[d], c),
            node("make_d", &[e], d),
            node("make_e", &[c, src], e),
        ];
        let p = problems(Graph::new(vec![src], nodes));
        let cycles: Vec<_> = p
            .iter()
            .filter(|p| matches!(p, GraphProblem::Cycle { .. }))
            .collect();
        assert_eq!(cycles.len(), 2, "{p:?}");
        let text: Vec<String> = cycles.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            text[0],
            "dependency cycle: `make_a` computes `A` from `B`, and `make_b` computes `B` from `A`"
        );
        assert_eq!(
            text[1],
            "dependency cycle: `make_c` computes `C` from `D`, and `make_d` computes `D` from `E`, and `make_e` computes `E` from `C`"
        );
        let Error::Graph(_) = Graph::new(vec![], vec![node("selfish", &[a], a)]).unwrap_err()
        else {
            unreachable!()
        };
    }

    #[test]
    fn a_self_loop_is_a_cycle() {
        let a = table("A", false);
        let p = problems(Graph::new(vec![], vec![node("again", &[a], a)]));
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].to_string(),
            "dependency cycle: `again` computes `A` from `A`"
        );
    }

    #[test]
    fn duplicate_and_missing_producers_and_input_writes() {
        let (src, a, b, x) = (
            table("Src", true),
            table("A", false),
            table("B", false),
            table("X", false),
        );
        let p = problems(Graph::new(
            vec![src],
            vec![
                node("one", &[src], a),
                node("two", &[src], a),
                node("reads_x", &[x], b),
                node("bad", &[a], src),
            ],
        ));
        let text: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        assert!(
            text.contains(&"`A` is produced by more than one function: `one`, `two`".to_owned()),
            "{text:?}"
        );
        assert!(text.contains(&"`reads_x` reads `X`, which is neither an input table nor produced by any function".to_owned()), "{text:?}");
        assert!(
            text.contains(
                &"`bad` returns the input table `Src`; input tables are written only by users"
                    .to_owned()
            ),
            "{text:?}"
        );
        assert_eq!(text.len(), 3, "{text:?}");
    }

    #[test]
    fn duplicate_table_names() {
        let a1 = table("A", true);
        let a2 = Box::leak(Box::new(TableInfo {
            type_path: "other::A",
            ..*a1
        }));
        let p = problems(Graph::new(vec![a1, a2], vec![]));
        assert_eq!(
            p[0].to_string(),
            "two row types are named `A`: `test::A` and `other::A`"
        );
    }

    #[test]
    fn invalid_hand_made_tables() {
        let good = table("A", true);
        let no_key = Box::leak(Box::new(TableInfo {
            name: "NoKey",
            key: None,
            ..*good
        }));
        let out_of_range = Box::leak(Box::new(TableInfo {
            name: "Far",
            key: Some(5),
            ..*good
        }));
        let keyed_derived = Box::leak(Box::new(TableInfo {
            name: "Keyed",
            input: false,
            key: Some(0),
            ..*good
        }));
        let p = problems(Graph::new(
            vec![no_key, out_of_range, keyed_derived],
            vec![],
        ));
        let text: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            text,
            [
                "table `Far` is invalid: key column 5 is out of range (1 columns)",
                "table `Keyed` is invalid: a derived table has no key column of its own",
                "table `NoKey` is invalid: an input table needs a key column",
            ]
        );
    }

    #[test]
    fn mixed_roots() {
        let (doc, user, words, greeting) = (
            table("Doc", true),
            table("User", true),
            table("Words", false),
            table("Greeting", false),
        );
        let p = problems(Graph::new(
            vec![],
            vec![
                node("count", &[doc], words),
                node("greet", &[words, user], greeting),
            ],
        ));
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].to_string(),
            "the inputs of `greet` have different roots: `Doc` and `User`"
        );
    }

    #[test]
    fn order_roots_depths_and_printing() {
        let (src, ast, code, out) = (
            table("Source", true),
            table("Ast", false),
            table("Bytecode", false),
            table("Output", false),
        );
        let g = Graph::new(
            vec![src],
            vec![
                node("run", &[ast, code], out),
                node("compile", &[ast], code),
                node("parse", &[src], ast),
            ],
        )
        .unwrap();
        let names: Vec<&str> = g
            .topological()
            .iter()
            .map(|&i| g.table(i).info.name)
            .collect();
        assert_eq!(names, ["Source", "Ast", "Bytecode", "Output"]);
        let out_id = g.table_id("Output").unwrap();
        assert_eq!(g.table(g.table(out_id).root).info.name, "Source");
        assert_eq!(g.table(out_id).depth, 3);
        assert_eq!(g.producer(out_id).unwrap().name, "run");
        let dot = g.to_dot();
        assert!(dot.starts_with("digraph rederive {"));
        assert!(dot.contains("\"Source\" [shape=box];"));
        assert!(dot.contains("\"Ast\" -> \"Output\" [label=\"run\"];"));
        assert!(dot.contains("\"Bytecode\" -> \"Output\" [label=\"run\"];"));
        let mermaid = g.to_mermaid();
        assert!(mermaid.contains("  Source[/Source/]\n"));
        assert!(mermaid.contains("  Ast -->|compile| Bytecode\n"));
        let Err(Error::UnknownTable { name, known }) = g.table_id("Nope") else {
            panic!()
        };
        assert_eq!(name, "Nope");
        assert_eq!(known, ["Ast", "Bytecode", "Output", "Source"]);
    }

    #[test]
    fn order_is_deterministic_whatever_the_registration_order() {
        let (s, a, b, c) = (
            table("S", true),
            table("A", false),
            table("B", false),
            table("C", false),
        );
        let mut nodes = vec![
            node("fa", &[s], a),
            node("fb", &[s], b),
            node("fc", &[a, b], c),
        ];
        let first = Graph::new(vec![s], nodes.clone())
            .unwrap()
            .topological()
            .to_vec();
        nodes.reverse();
        let second = Graph::new(vec![s], nodes).unwrap().topological().to_vec();
        assert_eq!(first, second);
    }
}
