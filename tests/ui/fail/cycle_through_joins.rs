use rederive::{derive_table, Row};

#[derive(Row)]
#[row(input)]
pub struct Src { #[row(key)] pub k: i64 }
#[derive(Row)]
pub struct A { pub n: i64 }
#[derive(Row)]
pub struct B { pub n: i64 }
#[derive(Row)]
pub struct C { pub n: i64 }
#[derive(Row)]
pub struct D { pub n: i64 }

// One error, naming the three functions of the cycle (not `fd`).
#[derive_table]
fn fa(c: &C, s: &Src) -> A { A { n: c.n + s.k } }
#[derive_table]
fn fb(a: &A) -> B { B { n: a.n } }
#[derive_table]
fn fc(b: &B, s: &Src) -> C { C { n: b.n + s.k } }
#[derive_table]
fn fd(b: &B, c: &C) -> D { D { n: b.n + c.n } }

fn main() {}
