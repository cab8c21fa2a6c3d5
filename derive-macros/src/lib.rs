//! Procedural macros for rederive. Use them through the `rederive` crate:
//! `#[derive(rederive::Row)]` and `#[rederive::derive_table]`.
//!
//! Each macro parses its input, validates it (collecting every error, each
//! spanned on the offending tokens), and expands. On invalid input it emits
//! the errors *and* a fallback expansion, so that the user sees the real
//! error rather than a cascade of "not a row type" errors at every use.
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
    debug_dump("derive(Row)", row::expand(input)).into()
}

/// Turns a function into a derived table. See the `rederive` crate.
#[proc_macro_attribute]
pub fn derive_table(args: TokenStream, item: TokenStream) -> TokenStream {
    debug_dump("derive_table", table::expand(args.into(), item.into())).into()
}

fn debug_dump(what: &str, tokens: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    if std::env::var_os("REDERIVE_DEBUG_EXPAND").is_some() {
        eprintln!("--- rederive {what} expansion ---\n{tokens}\n");
    }
    tokens
}
