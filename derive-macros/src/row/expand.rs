//! The expansion of a valid `#[derive(Row)]` struct: a call of the runtime's
//! `__private::row!` template (see `rederive_runtime::__private`), which
//! writes the impls; this module only gathers its tokens.

use super::ast::{Body, RowStruct};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// The template call. `row` must have passed `valid::check`.
pub fn expand(row: &RowStruct) -> TokenStream {
    let Body::Named(fields) = &row.body else {
        unreachable!("a valid row struct has named fields")
    };
    let ident = &row.input.ident;
    let name = row.name();
    let kind = kind(row);
    let key = fields
        .iter()
        .enumerate()
        .find(|(_, f)| f.key)
        .map(|(i, f)| {
            let ty = f.ty;
            quote!(#i, #ty)
        });
    let count = fields.len();
    let columns = fields.iter().map(|f| {
        let field = f.ident;
        let column = f.column();
        let ty = f.ty;
        let mapping = if f.json {
            format_ident!("json")
        } else {
            format_ident!("column")
        };
        quote! { { field: #field, name: #column, ty: #ty, as: #mapping } }
    });
    quote! {
        ::rederive::__private::row! {
            type: #ident,
            name: #name,
            kind: #kind,
            key: [#key],
            columns: [#(#columns),*],
            count: #count,
        }
    }
}

/// `input` or `derived`, as the template spells them.
pub fn kind(row: &RowStruct) -> proc_macro2::Ident {
    if row.is_input {
        format_ident!("input")
    } else {
        format_ident!("derived")
    }
}
