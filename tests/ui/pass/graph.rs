//! A graph that compiles: inputs, derived tables, options, Result returns,
//! a two-input function, JSON and optional columns.
use rederive::{derive_table, Row};
use serde::{Deserialize, Serialize};

#[derive(Row, Debug, Clone, PartialEq)]
#[row(input)]
pub struct Source {
    #[row(key)]
    pub name: String,
    pub text: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Tree { Leaf(i64), Node(Vec<Tree>) }

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Ast { pub items: i64, #[row(json)] pub tree: Tree }

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Bytecode { pub code: Vec<u8>, pub optimized: bool, pub ratio: f64 }

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Output { pub text: String }

#[derive_table]
fn parse(src: &Source) -> Result<Ast, String> {
    let items = src.text.split_whitespace().count() as i64;
    Ok(Ast { items, tree: Tree::Leaf(items) })
}

#[derive_table(version = 2, files = ["tests/ui/pass/*.rs"], settle = "30s")]
fn compile(ast: &Ast) -> Bytecode {
    Bytecode { code: vec![ast.items as u8], optimized: false, ratio: 1.0 }
}

#[derive_table]
fn run(ast: &Ast, code: &Bytecode) -> Output {
    Output { text: format!("{} {:?}", ast.items, code.code) }
}

#[derive(Row, Debug, Clone, PartialEq)]
pub struct Lengths { pub text: i64, pub note: Option<i64> }

/// Lifetime parameters are fine; so are destructuring patterns.
#[derive_table]
fn lengths<'a>(Source { text, note, .. }: &'a Source) -> Lengths {
    Lengths { text: text.len() as i64, note: note.as_ref().map(|n| n.len() as i64) }
}

fn main() {
    // The functions stay callable as written.
    let src = Source { name: "main".into(), text: "a b c".into(), note: None };
    let ast = parse(&src).unwrap();
    assert_eq!(ast.items, 3);
    let out = run(&ast, &compile(&ast));
    assert_eq!(out.text, "3 [3]");
}
