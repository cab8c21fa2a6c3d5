//! The graph of tables and functions: collected from the registry (or
//! assembled by hand), validated, sorted, and printed.
//!
//! The compiler already rejects cycles, duplicate producers and mixed roots
//! within one crate; the graph checks them again at run time because a graph
//! can be assembled across crates or by hand.

use crate::error::{Error, Result};
use crate::node::{registered_nodes, registered_tables, NodeDef};
use crate::row::TableInfo;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Index of a table in a [`Graph`].
pub type TableId = usize;

/// One problem with a graph. [`Graph::new`] reports all of them at once.
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
    /// 0 for inputs, else one more than the deepest input.
    pub depth: usize,
}

/// A validated, topologically sorted graph.
#[derive(Debug, Clone)]
pub struct Graph {
    tables: Vec<TableNode>,
    nodes: Vec<NodeDef>,
    by_name: BTreeMap<&'static str, TableId>,
    order: Vec<TableId>,
}

impl Graph {
    /// Collects every table and function registered in this binary.
    pub fn from_registry() -> Result<Graph> {
        let nodes = registered_nodes().into_iter().copied().collect();
        Graph::new(registered_tables(), nodes)
    }

    /// Builds a graph from explicit tables and nodes (tables that nodes
    /// mention are added as needed), reporting every problem at once.
    pub fn new(tables: Vec<&'static TableInfo>, mut nodes: Vec<NodeDef>) -> Result<Graph> {
        let mut problems = Vec::new();
        nodes.sort_by(|a, b| (a.output.name, a.name).cmp(&(b.output.name, b.name)));

        // Tables, by name, deduplicated (the same type may be listed twice).
        let mut infos: BTreeMap<&'static str, Vec<&'static TableInfo>> = BTreeMap::new();
        let mentioned = nodes
            .iter()
            .flat_map(|n| std::iter::once(n.output).chain(n.inputs.iter().copied()));
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
            by_name.insert(*name, table_nodes.len());
            table_nodes.push(TableNode {
                info: same[0],
                root: table_nodes.len(),
                producer: None,
                inputs: Vec::new(),
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
                    table: table_nodes[*table].info.name.to_owned(),
                    functions: list.iter().map(|&i| nodes[i].name.to_owned()).collect(),
                });
            }
            let t = &mut table_nodes[*table];
            t.producer = Some(list[0]);
            t.inputs = nodes[list[0]]
                .inputs
                .iter()
                .map(|i| by_name[i.name])
                .collect();
        }
        for node in &nodes {
            for input in node.inputs {
                let id = by_name[input.name];
                if !input.input && table_nodes[id].producer.is_none() {
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
        for (id, t) in self.tables.iter().enumerate() {
            for &input in &t.inputs {
                readers[input].push(id);
            }
        }
        // `tables` is sorted by name, so a BTreeSet of ids pops by name.
        let mut ready: BTreeSet<TableId> = (0..self.tables.len())
            .filter(|&i| indegree[i] == 0)
            .collect();
        let mut order = Vec::with_capacity(self.tables.len());
        while let Some(id) = ready.pop_first() {
            order.push(id);
            for &reader in &readers[id] {
                indegree[reader] -= 1;
                if indegree[reader] == 0 {
                    ready.insert(reader);
                }
            }
        }
        order
    }

    fn assign_roots_and_depths(&mut self) -> Vec<GraphProblem> {
        let mut problems = Vec::new();
        for &id in &self.order.clone() {
            let inputs = self.tables[id].inputs.clone();
            let Some(&first) = inputs.first() else {
                continue;
            };
            let root = self.tables[first].root;
            for &other in &inputs[1..] {
                let other_root = self.tables[other].root;
                if other_root != root {
                    problems.push(GraphProblem::MixedRoots {
                        function: self.producer(id).map(|n| n.name).unwrap_or("?").to_owned(),
                        roots: (
                            self.tables[root].info.name.to_owned(),
                            self.tables[other_root].info.name.to_owned(),
                        ),
                    });
                }
            }
            let depth = 1 + inputs
                .iter()
                .map(|&i| self.tables[i].depth)
                .max()
                .unwrap_or(0);
            let t = &mut self.tables[id];
            t.root = root;
            t.depth = depth;
        }
        problems
    }

    /// Every table, sorted by name; a [`TableId`] indexes this slice.
    pub fn tables(&self) -> &[TableNode] {
        &self.tables
    }

    /// Every function.
    pub fn nodes(&self) -> &[NodeDef] {
        &self.nodes
    }

    /// One table.
    pub fn table(&self, id: TableId) -> &TableNode {
        &self.tables[id]
    }

    /// The producing function of a table.
    pub fn producer(&self, id: TableId) -> Option<&NodeDef> {
        self.tables[id].producer.map(|i| &self.nodes[i])
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

    /// All tables, inputs first, each after the tables it reads.
    pub fn topological(&self) -> &[TableId] {
        &self.order
    }

    /// The derived tables in topological order.
    pub fn derived_in_order(&self) -> impl Iterator<Item = TableId> + '_ {
        self.order
            .iter()
            .copied()
            .filter(|&id| self.tables[id].producer.is_some())
    }

    /// The tables `id` is computed from, directly or not, in topological
    /// order, followed by `id` itself.
    pub fn ancestry(&self, id: TableId) -> Vec<TableId> {
        let mut needed = vec![false; self.tables.len()];
        let mut stack = vec![id];
        while let Some(t) = stack.pop() {
            if !needed[t] {
                needed[t] = true;
                stack.extend(&self.tables[t].inputs);
            }
        }
        self.order.iter().copied().filter(|&t| needed[t]).collect()
    }

    /// The tables that read `id` directly.
    pub fn readers(&self, id: TableId) -> impl Iterator<Item = TableId> + '_ {
        self.order
            .iter()
            .copied()
            .filter(move |&t| self.tables[t].inputs.contains(&id))
    }

    /// The derived tables whose root is `root`, in topological order.
    pub fn derived_from_root(&self, root: TableId) -> impl Iterator<Item = TableId> + '_ {
        self.derived_in_order()
            .filter(move |&id| self.tables[id].root == root)
    }

    /// The graph in Graphviz DOT: tables are nodes (inputs as boxes),
    /// functions are labelled edges from each input to the output.
    pub fn to_dot(&self) -> String {
        let mut s =
            String::from("digraph rederive {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n");
        for &id in &self.order {
            let t = &self.tables[id];
            let shape = if t.info.input { "box" } else { "ellipse" };
            s.push_str(&format!("  {} [shape={shape}];\n", dot_id(t.info.name)));
        }
        for &id in &self.order {
            if let Some(node) = self.producer(id) {
                for input in node.inputs {
                    s.push_str(&format!(
                        "  {} -> {} [label={}];\n",
                        dot_id(input.name),
                        dot_id(node.output.name),
                        dot_id(node.name)
                    ));
                }
            }
        }
        s.push_str("}\n");
        s
    }

    /// The graph as a Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut s = String::from("flowchart LR\n");
        for &id in &self.order {
            let t = &self.tables[id];
            let name = t.info.name;
            if t.info.input {
                s.push_str(&format!("  {name}[/{name}/]\n"));
            } else {
                s.push_str(&format!("  {name}({name})\n"));
            }
        }
        for &id in &self.order {
            if let Some(node) = self.producer(id) {
                for input in node.inputs {
                    s.push_str(&format!(
                        "  {} -->|{}| {}\n",
                        input.name, node.name, node.output.name
                    ));
                }
            }
        }
        s
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

fn dot_id(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Tarjan's strongly connected components over "table reads table" edges;
/// every component with a cycle is reported, walked in words.
fn find_cycles(tables: &[TableNode], nodes: &[NodeDef]) -> Vec<GraphProblem> {
    struct Tarjan<'a> {
        tables: &'a [TableNode],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<TableId>,
        next: usize,
        components: Vec<Vec<TableId>>,
    }
    impl Tarjan<'_> {
        // Graph depth is bounded by the number of tables a program
        // declares, so recursion is fine here.
        fn visit(&mut self, v: TableId) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.tables[v].inputs {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                self.components.push(component);
            }
        }
    }
    let n = tables.len();
    let mut t = Tarjan {
        tables,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    let mut problems = Vec::new();
    for mut component in t.components {
        let self_loop = component.len() == 1 && tables[component[0]].inputs.contains(&component[0]);
        if component.len() < 2 && !self_loop {
            continue;
        }
        component.sort();
        problems.push(GraphProblem::Cycle {
            description: describe_cycle(tables, nodes, &component),
            tables: component
                .iter()
                .map(|&i| tables[i].info.name.to_owned())
                .collect(),
        });
    }
    problems.sort_by_key(|p| p.to_string());
    problems
}

/// Walks one cycle inside a strongly connected component, starting at its
/// first table by name: "`b` computes `B` from `A`, and `a` computes `A` from `B`".
fn describe_cycle(tables: &[TableNode], nodes: &[NodeDef], component: &[TableId]) -> String {
    let start = component[0];
    let mut walk = vec![start];
    let mut current = start;
    loop {
        // Follow an input that stays in the component; prefer closing the cycle.
        let inputs = &tables[current].inputs;
        let next = if inputs.contains(&start) {
            start
        } else {
            match inputs
                .iter()
                .copied()
                .find(|i| component.contains(i) && !walk.contains(i))
            {
                Some(i) => i,
                None => start,
            }
        };
        if next == start {
            break;
        }
        walk.push(next);
        current = next;
    }
    let steps: Vec<String> = walk
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let read = walk.get(i + 1).copied().unwrap_or(start);
            let f = tables[t].producer.map(|p| nodes[p].name).unwrap_or("?");
            format!(
                "`{f}` computes `{}` from `{}`",
                tables[t].info.name, tables[read].info.name
            )
        })
        .collect();
    steps.join(", and ")
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

    fn compute(_: Vec<Vec<Value>>) -> std::result::Result<Vec<Value>, String> {
        Ok(vec![Value::Integer(0)])
    }

    fn node(name: &str, inputs: &[&'static TableInfo], output: &'static TableInfo) -> NodeDef {
        NodeDef {
            name: Box::leak(name.to_owned().into_boxed_str()),
            module: "test",
            output,
            inputs: Box::leak(inputs.to_vec().into_boxed_slice()),
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
