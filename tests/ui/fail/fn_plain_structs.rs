use rederive::{derive_table, Row};

#[derive(Row)]
#[row(input)]
pub struct Source { #[row(key)] pub name: String, pub text: String }

#[derive(Row)]
pub struct Out { pub n: i64 }

// Structs without `#[derive(Row)]`: one error each, where they are used.
pub struct Settings { pub scale: i64 }
pub struct Summary { pub n: i64 }

#[derive_table]
fn scaled(src: &Source, settings: &Settings) -> Out { Out { n: src.text.len() as i64 * settings.scale } }

#[derive_table]
fn summarize(src: &Source) -> Summary { Summary { n: src.text.len() as i64 } }

fn main() {}
