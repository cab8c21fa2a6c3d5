use rederive::{derive_table, Row};

#[derive(Row)]
#[row(input)]
pub struct Source { #[row(key)] pub name: String, pub text: String }

#[derive(Row)]
pub struct A { pub n: i64 }
#[derive(Row)]
pub struct B { pub n: i64 }
#[derive(Row)]
pub struct C { pub n: i64 }
#[derive(Row)]
pub struct D { pub n: i64 }

#[derive_table(verison = 2)]
fn a(src: &Source) -> A { A { n: src.text.len() as i64 } }

#[derive_table(version = "two")]
fn b(src: &Source) -> B { B { n: src.text.len() as i64 } }

#[derive_table(files = "grammar/*.txt", settle = "soon")]
fn c(src: &Source) -> C { C { n: src.text.len() as i64 } }

#[derive_table(version = 1, version = 2)]
fn d(src: &Source) -> D { D { n: src.text.len() as i64 } }

fn main() {}
