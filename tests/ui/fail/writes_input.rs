use rederive::{derive_table, Row};

#[derive(Row)]
#[row(input)]
pub struct Source { #[row(key)] pub name: String, pub text: String }

#[derive(Row)]
#[row(input)]
pub struct Note { #[row(key)] pub name: String, pub text: String }

#[derive_table]
fn make_note(src: &Source) -> Note { Note { name: src.name.clone(), text: src.text.clone() } }

fn main() {}
