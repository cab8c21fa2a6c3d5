use rederive::Row;
use std::collections::HashMap;

#[derive(Row)]
pub struct Stats { pub counts: HashMap<String, i64>, pub total: i64 }

fn main() {}
