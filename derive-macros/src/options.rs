//! The options of `#[derive_table(...)]`, declared once in [`for_each_option`]:
//! their parsing, the error messages that list them and the macro's
//! documentation are all generated from that list.

use crate::ctxt::Ctxt;
use proc_macro2::TokenStream;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprArray, ExprLit, Lit, LitStr, Meta, Token};

/// The option list: `Variant name "example" "what it does";` for each option.
/// Calls `$then!` with the list.
macro_rules! for_each_option {
    ($($then:ident)::+) => {
        $($then)::+! {
            Version version "version = 2"
                "a number bumped by hand when the function's meaning changes without its tokens changing; part of the code version";
            Files files "files = [\"grammar/*.txt\"]"
                "globs of files the function depends on, relative to the crate's directory; their contents are part of the code version";
            Settle settle "settle = \"30s\""
                "compute a row only once its root row has been unchanged this long (units: ms, s, m, h)";
            Reads reads "reads = [Linked]"
                "tables whose rows, of any key, the function may read besides its arguments (declared reads: they are not edges of the table graph, so a table may read itself)";
        }
    };
}
pub(crate) use for_each_option;

/// The options as a Markdown list, for the macro's documentation.
macro_rules! options_doc {
    ($($variant:ident $name:ident $example:literal $doc:literal;)*) => {
        concat!($("- `", $example, "`: ", $doc, ".\n"),*)
    };
}
pub(crate) use options_doc;

macro_rules! define_option_name {
    ($($variant:ident $name:ident $example:literal $doc:literal;)*) => {
        /// The name of an option.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum OptionName {
            $($variant),*
        }

        impl OptionName {
            /// Every option, in the documented order.
            pub const ALL: &'static [OptionName] = &[$(OptionName::$variant),*];

            /// The name as written in `#[derive_table(..)]`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(OptionName::$variant => stringify!($name)),*
                }
            }

            /// An example of the option, for messages.
            pub fn example(self) -> &'static str {
                match self {
                    $(OptionName::$variant => $example),*
                }
            }
        }
    };
}
for_each_option!(define_option_name);

impl OptionName {
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|o| o.as_str() == name)
    }

    /// The option `name` is a misspelling of, if any (at most two edits).
    fn closest(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .map(|o| (edit_distance(name, o.as_str()), o))
            .filter(|(d, _)| *d <= 2)
            .min_by_key(|(d, _)| *d)
            .map(|(_, o)| o)
    }
}

/// Levenshtein distance (insertions, deletions, substitutions).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// "the options are `version = 2`, `files = [..]` and `settle = ".."`".
fn known() -> String {
    let examples: Vec<String> = OptionName::ALL
        .iter()
        .map(|o| format!("`{}`", o.example()))
        .collect();
    match examples.split_last() {
        Some((last, [])) => format!("the only option is {last}"),
        Some((last, rest)) => format!("the options are {} and {last}", rest.join(", ")),
        None => "`#[derive_table]` takes no options".to_owned(),
    }
}

/// The parsed options; a missing or invalid option keeps its default.
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    pub version: u64,
    pub files: Vec<String>,
    /// Milliseconds.
    pub settle_ms: u64,
    /// The declared reads, as written.
    pub reads: Vec<syn::Path>,
}

struct MetaList(Punctuated<Meta, Token![,]>);

impl Parse for MetaList {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        Punctuated::parse_terminated(input).map(MetaList)
    }
}

/// Parses the attribute's arguments, reporting every error to `cx`.
pub fn parse(cx: &mut Ctxt, args: TokenStream) -> Options {
    let mut options = Options::default();
    let list = match MetaList::parse.parse2(args) {
        Ok(list) => list.0,
        Err(e) => {
            let known = known();
            cx.push(syn::Error::new(
                e.span(),
                format!("malformed `#[derive_table]` options: {e}; {known}"),
            ));
            return options;
        }
    };
    let mut seen: Vec<OptionName> = Vec::new();
    for meta in list {
        let ident = meta.path().get_ident().map(|i| i.to_string());
        let Some(name) = ident.as_deref().and_then(OptionName::from_name) else {
            let shown = match ident.as_deref() {
                Some(i) => match OptionName::closest(i) {
                    Some(o) => format!(" `{i}` (did you mean `{}`?)", o.as_str()),
                    None => format!(" `{i}`"),
                },
                None => String::new(),
            };
            cx.error_spanned_by(meta.path(), format!("unknown option{shown}; {}", known()));
            continue;
        };
        if seen.contains(&name) {
            cx.error_spanned_by(meta.path(), format!("duplicate option `{}`", name.as_str()));
            continue;
        }
        seen.push(name);
        let Meta::NameValue(nv) = &meta else {
            cx.error_spanned_by(
                &meta,
                format!(
                    "option `{}` needs a value, e.g. `{}`",
                    name.as_str(),
                    name.example()
                ),
            );
            continue;
        };
        match name {
            OptionName::Version => parse_version(cx, &nv.value, &mut options),
            OptionName::Files => parse_files(cx, &nv.value, &mut options),
            OptionName::Settle => parse_settle(cx, &nv.value, &mut options),
            OptionName::Reads => parse_reads(cx, &nv.value, &mut options),
        }
    }
    options
}

fn parse_version(cx: &mut Ctxt, value: &Expr, options: &mut Options) {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => match i.base10_parse::<u64>() {
            Ok(v) => options.version = v,
            Err(_) => cx.error_spanned_by(
                i,
                "`version` must be a whole number from 0 to 18446744073709551615",
            ),
        },
        other => cx.error_spanned_by(other, "`version` takes an integer, e.g. `version = 2`"),
    }
}

fn parse_files(cx: &mut Ctxt, value: &Expr, options: &mut Options) {
    let Expr::Array(ExprArray { elems, .. }) = value else {
        cx.error_spanned_by(
            value,
            "`files` takes a list of globs, e.g. `files = [\"grammar/*.txt\"]`",
        );
        return;
    };
    for elem in elems {
        match elem {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => match check_glob(s) {
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

fn parse_reads(cx: &mut Ctxt, value: &Expr, options: &mut Options) {
    let Expr::Array(ExprArray { elems, .. }) = value else {
        cx.error_spanned_by(
            value,
            "`reads` takes a list of row types, e.g. `reads = [Linked]`",
        );
        return;
    };
    for elem in elems {
        match elem {
            Expr::Path(p) if p.qself.is_none() => {
                if options.reads.contains(&p.path) {
                    cx.error_spanned_by(p, "this table is listed twice in `reads`");
                } else {
                    options.reads.push(p.path.clone());
                }
            }
            other => cx.error_spanned_by(other, "`reads` takes row types, e.g. `reads = [Linked]`"),
        }
    }
}

fn parse_settle(cx: &mut Ctxt, value: &Expr, options: &mut Options) {
    match value {
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
    }
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
    fn declared_reads() {
        let o = parse_ok(quote!(reads = [Linked, crate::defs::Def]));
        let names: Vec<String> = o
            .reads
            .iter()
            .map(|p| quote::ToTokens::to_token_stream(p).to_string())
            .collect();
        assert_eq!(names, ["Linked", "crate :: defs :: Def"]);
        assert!(parse_err(quote!(reads = Linked)).contains("list of row types"));
        assert!(parse_err(quote!(reads = ["Linked"])).contains("takes row types"));
        assert!(parse_err(quote!(reads = [Linked, Linked])).contains("listed twice"));
        assert!(parse_err(quote!(read = [Linked])).contains("did you mean `reads`?"));
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
    fn every_documented_example_parses() {
        for name in OptionName::ALL {
            let example: TokenStream = name.example().parse().unwrap();
            parse_ok(example);
        }
        let doc = for_each_option!(options_doc);
        for name in OptionName::ALL {
            assert!(doc.contains(name.example()), "{doc}");
        }
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
        let unknown = parse_err(quote!(colour = 3));
        assert!(unknown.contains("unknown option `colour`"), "{unknown}");
        assert!(
            unknown.contains(
                "`version = 2`, `files = [\\\"grammar/*.txt\\\"]`, `settle = \\\"30s\\\"` and `reads = [Linked]`"
            ),
            "{unknown}"
        );
        assert!(parse_err(quote!(colour)).contains("unknown option"));
        let typo = parse_err(quote!(verison = 2));
        assert!(
            typo.contains("`verison` (did you mean `version`?)"),
            "{typo}"
        );
        assert!(parse_err(quote!(setle = "1s")).contains("did you mean `settle`?"));
        assert!(!parse_err(quote!(colour = 1)).contains("did you mean"));
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
