use rederive::{derive_table, Row};

#[derive(Row)]
#[row(input)]
pub struct Source { #[row(key)] pub name: String, pub text: String }

#[derive(Row)]
pub struct Length { pub n: i64 }

#[derive_table]
fn count_bytes(s: &Source) -> Length { Length { n: s.text.len() as i64 } }

#[derive_table]
fn count_chars(s: &Source) -> Length { Length { n: s.text.chars().count() as i64 } }

fn main() {}
