//! The options of `#[derive_table(...)]`: `version = N`, `files = [..]`,
//! `settle = ".."`.

use crate::ctxt::Ctxt;
use proc_macro2::TokenStream;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprArray, ExprLit, Lit, LitStr, Meta, Token};

#[derive(Debug, Default, PartialEq)]
pub struct Options {
    pub version: u64,
    pub files: Vec<String>,
    /// Milliseconds.
    pub settle_ms: u64,
}

const KNOWN: &str =
    "the options are `version = N`, `files = [\"glob\", ..]` and `settle = \"30s\"`";

struct MetaList(Punctuated<Meta, Token![,]>);

impl Parse for MetaList {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        Punctuated::parse_terminated(input).map(MetaList)
    }
}

pub fn parse(cx: &mut Ctxt, args: TokenStream) -> Options {
    let mut options = Options::default();
    let list = match MetaList::parse.parse2(args) {
        Ok(list) => list.0,
        Err(e) => {
            cx.push(syn::Error::new(
                e.span(),
                format!("malformed `#[derive_table]` options: {e}; {KNOWN}"),
            ));
            return options;
        }
    };
    let mut seen: Vec<String> = Vec::new();
    for meta in list {
        let name = meta
            .path()
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        if seen.contains(&name) {
            cx.error_spanned_by(meta.path(), format!("duplicate option `{name}`"));
            continue;
        }
        let Meta::NameValue(nv) = &meta else {
            match name.as_str() {
                "version" | "files" | "settle" => {
                    cx.error_spanned_by(&meta, format!("option `{name}` needs a value: {KNOWN}"))
                }
                _ => cx.error_spanned_by(meta.path(), format!("unknown option; {KNOWN}")),
            }
            continue;
        };
        seen.push(name.clone());
        match name.as_str() {
            "version" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Int(i), ..
                }) => match i.base10_parse::<u64>() {
                    Ok(v) => options.version = v,
                    Err(_) => cx.error_spanned_by(
                        i,
                        "`version` must be a whole number from 0 to 18446744073709551615",
                    ),
                },
                other => {
                    cx.error_spanned_by(other, "`version` takes an integer, e.g. `version = 2`")
                }
            },
            "files" => {
                match &nv.value {
                    Expr::Array(ExprArray { elems, .. }) => {
                        for elem in elems {
                            match elem {
                            Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => match check_glob(s) {
                                Ok(()) => options.files.push(s.value()),
                                Err(e) => cx.push(e),
                            },
                            other => cx.error_spanned_by(
                                other,
                                "`files` takes string literals, e.g. `files = [\"grammar/*.txt\"]`",
                            ),
                        }
                        }
                    }
                    other => cx.error_spanned_by(
                        other,
                        "`files` takes a list of globs, e.g. `files = [\"grammar/*.txt\"]`",
                    ),
                }
            }
            "settle" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => match parse_duration_ms(&s.value()) {
                    Ok(ms) => options.settle_ms = ms,
                    Err(why) => cx.error_spanned_by(s, format!("invalid `settle` duration: {why}")),
                },
                other => cx.error_spanned_by(
                    other,
                    "`settle` takes a duration string, e.g. `settle = \"30s\"`",
                ),
            },
            _ => cx.error_spanned_by(&nv.path, format!("unknown option `{name}`; {KNOWN}")),
        }
    }
    options
}

fn check_glob(s: &LitStr) -> syn::Result<()> {
    let value = s.value();
    if value.is_empty() {
        return Err(syn::Error::new_spanned(s, "an empty glob matches nothing"));
    }
    if value.starts_with('/') {
        return Err(syn::Error::new_spanned(
            s,
            "`files` globs are relative to the crate's directory (the one with Cargo.toml); remove the leading `/`",
        ));
    }
    Ok(())
}

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"2h"` (a whole number and a unit).
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return Err(format!(
            "`{s}` does not start with a number; write e.g. \"30s\""
        ));
    }
    let (number, unit) = s.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{number}` is too large"))?;
    let factor = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("`{s}` has no unit; use ms, s, m or h")),
        other => return Err(format!("unknown unit `{other}`; use ms, s, m or h")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse_ok(args: TokenStream) -> Options {
        let mut cx = Ctxt::default();
        let o = parse(&mut cx, args);
        assert!(
            !cx.has_errors(),
            "unexpected error: {}",
            cx.into_compile_errors()
        );
        o
    }

    fn parse_err(args: TokenStream) -> String {
        let mut cx = Ctxt::default();
        let _ = parse(&mut cx, args);
        assert!(cx.has_errors(), "expected an error");
        cx.into_compile_errors().to_string()
    }

    #[test]
    fn empty_options() {
        assert_eq!(parse_ok(quote!()), Options::default());
    }

    #[test]
    fn every_option() {
        let o = parse_ok(quote!(
            version = 2,
            files = ["grammar/*.txt", "x.toml"],
            settle = "30s"
        ));
        assert_eq!(o.version, 2);
        assert_eq!(
            o.files,
            vec!["grammar/*.txt".to_owned(), "x.toml".to_owned()]
        );
        assert_eq!(o.settle_ms, 30_000);
        // A trailing comma is fine.
        assert_eq!(parse_ok(quote!(version = 7,)).version, 7);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert!(parse_duration_ms("s").unwrap_err().contains("number"));
        assert!(parse_duration_ms("30").unwrap_err().contains("no unit"));
        assert!(parse_duration_ms("30 days")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration_ms("99999999999999999999s").is_err());
        assert!(parse_duration_ms("9999999999999999h")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn errors() {
        assert!(parse_err(quote!(colour = 3)).contains("unknown option `colour`"));
        assert!(parse_err(quote!(colour)).contains("unknown option"));
        assert!(parse_err(quote!(version)).contains("needs a value"));
        assert!(parse_err(quote!(version = "2")).contains("takes an integer"));
        let neg = parse_err(quote!(version = -1));
        assert!(neg.contains("whole number"), "{neg}");
        assert!(parse_err(quote!(version = 99999999999999999999999)).contains("whole number"));
        assert!(parse_err(quote!(files = "a.txt")).contains("list of globs"));
        assert!(parse_err(quote!(files = [1])).contains("string literals"));
        assert!(parse_err(quote!(files = [""])).contains("empty glob"));
        assert!(parse_err(quote!(files = ["/etc/x"])).contains("relative"));
        assert!(parse_err(quote!(settle = 30)).contains("duration string"));
        assert!(parse_err(quote!(settle = "soon")).contains("invalid `settle`"));
        assert!(parse_err(quote!(version = 1, version = 2)).contains("duplicate option `version`"));
        assert!(parse_err(quote!(version = 1 files = [])).contains("malformed"));
    }
}
