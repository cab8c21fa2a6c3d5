//! Procedural macros for rederive. Use them through the `rederive` crate:
//! `#[derive(rederive::Row)]` and `#[rederive::derive_table]`.
//!
//! Each macro is laid out as parse → validate → expand, with a fallback
//! (the `ast`, `valid`, `expand` and `fallback` modules of `row` and
//! `table`). Validation collects every error, each spanned on the offending
//! tokens; on invalid input the macro emits the errors *and* a fallback
//! expansion, so that the user sees the real error rather than a cascade of
//! "not a row type" errors at every use.
//!
//! The macros stay thin: the code they generate is written once, as
//! `macro_rules!` templates in the runtime (`rederive_runtime::__private`),
//! and the macros pass tokens to them.
//!
//! Set `REDERIVE_DEBUG_EXPAND=1` while compiling to print every expansion.

use proc_macro::TokenStream;

mod ctxt;
mod hash;
mod options;
mod row;
mod table;

/// Maps a struct with named fields to a table. See the `rederive` crate.
#[proc_macro_derive(Row, attributes(row))]
pub fn derive_row(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    debug_dump("derive(Row)", row::derive(&input)).into()
}

/// Turns a function into a derived table. See the `rederive` crate.
///
/// The function's parameters are `&Row` (input or derived tables, joined
/// on their common root key) and it returns a row type `R`, or
/// `Result<R, E>` with `E: Display`. Options, all optional:
///
#[doc = options::for_each_option!(options::options_doc)]
#[proc_macro_attribute]
pub fn derive_table(args: TokenStream, item: TokenStream) -> TokenStream {
    debug_dump("derive_table", table::derive(args.into(), item.into())).into()
}

fn debug_dump(what: &str, tokens: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    if std::env::var_os("REDERIVE_DEBUG_EXPAND").is_some() {
        eprintln!("--- rederive {what} expansion ---\n{tokens}\n");
    }
    tokens
}
