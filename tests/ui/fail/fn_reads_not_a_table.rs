use rederive::{derive_table, Ctx, Row};

#[derive(Row)]
#[row(input)]
pub struct Def {
    #[row(key)]
    pub name: String,
}

#[derive(Row)]
pub struct Linked {
    pub n: i64,
}

pub struct NotARow;

#[derive_table(reads = [NotARow])]
fn link(d: &Def, _ctx: &Ctx) -> Linked {
    Linked { n: d.name.len() as i64 }
}

fn main() {}
