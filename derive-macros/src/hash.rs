//! The code hash of a function: a hash of its tokens.
//!
//! Tokens are written out in a canonical form of our own (not
//! `TokenStream::to_string`, whose spacing may change between compiler
//! versions), so whitespace and comments never change the hash.

use proc_macro2::{Delimiter, TokenStream, TokenTree};

pub fn code_hash(tokens: TokenStream) -> String {
    let mut canonical = String::new();
    write_canonical(tokens, &mut canonical);
    let hash = blake3::hash(canonical.as_bytes());
    hash.to_hex()[..16].to_owned()
}

fn write_canonical(tokens: TokenStream, out: &mut String) {
    for tree in tokens {
        match tree {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                write_canonical(g.stream(), out);
                out.push_str(close);
                out.push(' ');
            }
            TokenTree::Ident(i) => {
                out.push_str(&i.to_string());
                out.push(' ');
            }
            TokenTree::Punct(p) => {
                // Spacing is not kept: `x: &A` and `x:&A` differ only in it.
                out.push(p.as_char());
                out.push(' ');
            }
            TokenTree::Literal(l) => {
                out.push_str(&l.to_string());
                out.push(' ');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::code_hash;
    use std::str::FromStr;

    fn h(s: &str) -> String {
        code_hash(proc_macro2::TokenStream::from_str(s).unwrap())
    }

    #[test]
    fn whitespace_and_comments_do_not_count() {
        let a = h("fn f(x: &A) -> B { B { n: x.n + 1 } }");
        let b = h("fn f(x:&A)->B{\n  // a comment\n  B { n: x.n   +  1 } /* more */ }");
        assert_eq!(a, b);
    }

    #[test]
    fn any_token_change_counts() {
        let a = h("fn f(x: &A) -> B { B { n: x.n + 1 } }");
        assert_ne!(a, h("fn f(x: &A) -> B { B { n: x.n + 2 } }"));
        assert_ne!(a, h("fn f(y: &A) -> B { B { n: y.n + 1 } }"));
        assert_ne!(a, h("fn f(x: &A) -> B { B { n: x.n - 1 } }"));
    }

    /// Stored databases hold these hashes: the canonical form must never
    /// change. (The value was computed before the macros were restructured.)
    #[test]
    fn hash_is_pinned() {
        let a = h("fn parse(src: &Source) -> Result<Ast, String> { let n = src.text.len() as i64; Ok(Ast { items: n, name: \"x\".to_string(), r: 1.5, c: 'c' }) }");
        assert_eq!(a, "7ae65a51f8a6e6e2");
    }

    #[test]
    fn hash_is_16_hex_digits() {
        let a = h("fn f() {}");
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
