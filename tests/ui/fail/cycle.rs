use rederive::{derive_table, Row};

#[derive(Row)]
pub struct Alpha { pub n: i64 }

#[derive(Row)]
pub struct Beta { pub n: i64 }

#[derive_table]
fn make_beta(a: &Alpha) -> Beta { Beta { n: a.n } }

#[derive_table]
fn make_alpha(b: &Beta) -> Alpha { Alpha { n: b.n } }

fn main() {}
