use rederive::{derive_table, Row};

#[derive(Row)]
#[row(input)]
pub struct Source { #[row(key)] pub name: String, pub text: String }

#[derive_table]
fn length(src: &Source) -> usize { src.text.len() }

pub struct NoDisplay;

#[derive(Row)]
pub struct Out { pub n: i64 }

#[derive_table]
fn fallible(src: &Source) -> Result<Out, NoDisplay> { Ok(Out { n: src.text.len() as i64 }) }

fn main() {}
