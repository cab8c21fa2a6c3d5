//! Cycle detection: Tarjan's strongly connected components, each cycle
//! walked in words.

use super::{GraphProblem, TableId, TableNode};
use crate::node::NodeDef;

/// Tarjan's strongly connected components over "table reads table" edges;
/// every component with a cycle is reported, walked in words.
pub(super) fn find_cycles(tables: &[TableNode], nodes: &[NodeDef]) -> Vec<GraphProblem> {
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
            let vi = v.index();
            self.index[vi] = Some(self.next);
            self.low[vi] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[vi] = true;
            for &w in &self.tables[vi].inputs {
                let wi = w.index();
                match self.index[wi] {
                    None => {
                        self.visit(w);
                        self.low[vi] = self.low[vi].min(self.low[wi]);
                    }
                    Some(iw) if self.on_stack[wi] => self.low[vi] = self.low[vi].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[vi]) == self.index[vi] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w.index()] = false;
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
    for v in (0..n).map(TableId::from_index) {
        if t.index[v.index()].is_none() {
            t.visit(v);
        }
    }
    let mut problems = Vec::new();
    for mut component in t.components {
        let self_loop =
            component.len() == 1 && tables[component[0].index()].inputs.contains(&component[0]);
        if component.len() < 2 && !self_loop {
            continue;
        }
        component.sort();
        problems.push(GraphProblem::Cycle {
            description: describe_cycle(tables, nodes, &component),
            tables: component
                .iter()
                .map(|&i| tables[i.index()].info.name.to_owned())
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
        let inputs = &tables[current.index()].inputs;
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
            let f = tables[t.index()]
                .producer
                .map(|p| nodes[p].name)
                .unwrap_or("?");
            format!(
                "`{f}` computes `{}` from `{}`",
                tables[t.index()].info.name,
                tables[read.index()].info.name
            )
        })
        .collect();
    steps.join(", and ")
}
