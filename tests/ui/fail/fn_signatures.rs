use rederive::{derive_table, Row};

#[derive(Row)]
#[row(input)]
pub struct Source { #[row(key)] pub name: String, pub text: String }

#[derive(Row)]
pub struct Out { pub n: i64 }

#[derive_table]
fn no_params() -> Out { Out { n: 0 } }

#[derive_table]
fn by_value(src: Source) -> Out { Out { n: src.text.len() as i64 } }

#[derive_table]
fn by_mut(src: &mut Source) -> Out { Out { n: src.text.len() as i64 } }

#[derive_table]
fn generic<T>(src: &Source, _t: &T) -> Out { Out { n: src.text.len() as i64 } }

#[derive_table]
async fn asynchronous(src: &Source) -> Out { Out { n: src.text.len() as i64 } }

#[derive_table]
fn returns_nothing(src: &Source) { let _ = src; }

pub struct Thing;
impl Thing {
    #[derive_table]
    fn method(&self, src: &Source) -> Out { Out { n: src.text.len() as i64 } }
}

fn main() {}
