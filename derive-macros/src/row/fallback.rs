//! What an invalid `#[derive(Row)]` struct expands to, beside its errors:
//! impls without columns, so that the struct's uses (as a parameter, in
//! `db.put`) do not fail again with "not a row type".

use super::ast::RowStruct;
use super::expand::kind;
use proc_macro2::TokenStream;
use quote::quote;

/// The stub impls (none for a generic type: they could not name it).
pub fn fallback(row: &RowStruct) -> TokenStream {
    if !row.input.generics.params.is_empty() {
        return TokenStream::new();
    }
    let ident = &row.input.ident;
    let name = row.name();
    let kind = kind(row);
    quote! {
        ::rederive::__private::row! { fallback type: #ident, name: #name, kind: #kind }
    }
}
