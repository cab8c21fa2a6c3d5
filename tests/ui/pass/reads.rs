//! Declared reads are not edges of the table graph: a table may read
//! itself, and two tables may read each other, without a cycle error.
use rederive::{derive_table, Graph, Row};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Def {
    #[row(key)]
    pub name: String,
    pub body: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Linked {
    pub code: String,
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Lint {
    pub n: i64,
}

#[derive_table(reads = [Linked, Lint])]
fn link(d: &Def) -> Linked {
    Linked {
        code: d.body.clone(),
    }
}

#[derive_table(reads = [Linked])]
fn lint(l: &Linked) -> Lint {
    Lint {
        n: l.code.len() as i64,
    }
}

fn main() {
    let g = Graph::from_registry().unwrap();
    let id = |n: &str| g.table_id(n).unwrap();
    assert_eq!(g.table(id("Linked")).reads, vec![id("Linked"), id("Lint")]);
    assert_eq!(g.table(id("Lint")).reads, vec![id("Linked")]);
}
