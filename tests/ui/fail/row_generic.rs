use rederive::Row;

#[derive(Row)]
pub struct Wrapper<T> { pub value: T }

fn main() {}
