use rederive::Row;

#[derive(Row)]
#[row(inputs)]
pub struct Misspelled { pub text: String }

#[derive(Row)]
#[row(input)]
pub struct BadField { #[row(key)] pub id: i64, #[row(jsonb)] pub data: String, #[row(input)] pub x: i64 }

#[derive(Row)]
#[row(key)]
pub struct KeyOnStruct { pub id: i64 }

#[derive(Row)]
pub struct Reserved { pub __status: i64 }

fn main() {}
