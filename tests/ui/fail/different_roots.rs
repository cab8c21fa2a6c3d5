use rederive::{derive_table, Row};

#[derive(Row)]
#[row(input)]
pub struct Document { #[row(key)] pub path: String, pub text: String }

#[derive(Row)]
#[row(input)]
pub struct User { #[row(key)] pub id: i64, pub name: String }

#[derive(Row)]
pub struct Words { pub n: i64 }

#[derive(Row)]
pub struct Greeting { pub text: String }

#[derive_table]
fn count_words(doc: &Document) -> Words { Words { n: doc.text.split_whitespace().count() as i64 } }

#[derive_table]
fn greet(words: &Words, user: &User) -> Greeting {
    Greeting { text: format!("{} wrote {} words", user.name, words.n) }
}

fn main() {}
