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

#[derive(Row)]
pub struct Sized2 {
    pub n: i64,
}

#[derive(Row)]
pub struct Only {
    pub n: i64,
}

#[derive(Row)]
pub struct Twice {
    pub n: i64,
}

// A ctx with nothing declared to read through it.
#[derive_table]
fn link(d: &Def, _ctx: &Ctx) -> Linked {
    Linked { n: d.name.len() as i64 }
}

// Reads declared, and no ctx to read them with.
#[derive_table(reads = [Linked])]
fn size(d: &Def) -> Sized2 {
    Sized2 { n: d.name.len() as i64 }
}

// A ctx alone reads no row of its own.
#[derive_table(reads = [Linked])]
fn only(_ctx: &Ctx) -> Only {
    Only { n: 0 }
}

// Two contexts.
#[derive_table(reads = [Linked])]
fn twice(d: &Def, _a: &Ctx, _b: &Ctx) -> Twice {
    Twice { n: d.name.len() as i64 }
}

fn main() {}
