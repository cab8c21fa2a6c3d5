use rederive::{derive_table, Row};

#[derive(Row)]
pub struct Ast { pub items: i64 }

#[derive(Row)]
pub struct Bytecode { pub size: i64 }

#[derive_table]
fn compile(ast: &Ast) -> Bytecode { Bytecode { size: ast.items } }

fn main() {}
