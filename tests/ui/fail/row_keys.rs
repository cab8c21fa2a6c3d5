use rederive::Row;

#[derive(Row)]
#[row(input)]
pub struct NoKey { pub text: String }

#[derive(Row)]
#[row(input)]
pub struct TwoKeys { #[row(key)] pub id: i64, #[row(key)] pub name: String }

#[derive(Row)]
pub struct DerivedWithKey { #[row(key)] pub id: i64 }

#[derive(Row)]
#[row(input)]
pub struct FloatKey { #[row(key)] pub x: f64 }

fn main() {}
