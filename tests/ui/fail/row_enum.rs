use rederive::Row;

#[derive(Row)]
pub enum Shape { Circle, Square }

fn main() {}
