use rederive::Row;

#[derive(Row)]
pub struct Pair(i64, i64);

#[derive(Row)]
pub struct Nothing;

fn main() {}
