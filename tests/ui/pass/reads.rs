//! Declared reads are not edges of the table graph: a table may read
//! itself, and two tables may read each other, without a cycle error.
use rederive::{derive_table, Ctx, Graph, Row};

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
fn link(d: &Def, ctx: &Ctx) -> Result<Linked, String> {
    let callee = ctx.get::<Linked>(d.body.as_str())?;
    Ok(Linked {
        code: callee.map_or(d.body.clone(), |c| c.code),
    })
}

// The context may come first, and be named by its path.
#[derive_table(reads = [Linked])]
fn lint(ctx: &rederive::Ctx<'_>, l: &Linked) -> Lint {
    Lint {
        n: l.code.len() as i64 + i64::from(ctx.get::<Linked>("main").is_ok()),
    }
}

fn main() {
    let g = Graph::from_registry().unwrap();
    let id = |n: &str| g.table_id(n).unwrap();
    assert_eq!(g.table(id("Linked")).reads, vec![id("Linked"), id("Lint")]);
    assert_eq!(g.table(id("Lint")).reads, vec![id("Linked")]);
}
