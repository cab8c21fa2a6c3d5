//! The graph for humans: Graphviz DOT and Mermaid.

use super::Graph;

impl Graph {
    /// The graph in Graphviz DOT: tables are nodes (inputs as boxes),
    /// functions are labelled edges from each input to the output.
    pub fn to_dot(&self) -> String {
        let mut s =
            String::from("digraph rederive {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n");
        for &id in &self.order {
            let t = self.table(id);
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
            let t = self.table(id);
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

fn dot_id(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}
