use rederive::{derive_table, Row};

#[derive(Row)]
pub struct Out { pub n: i64 }

#[derive_table]
fn length(text: &String) -> Out { Out { n: text.len() as i64 } }

fn main() {}
