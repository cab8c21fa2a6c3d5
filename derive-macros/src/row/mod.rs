//! `#[derive(Row)]`: parse (`ast`), validate (`valid`), expand (`expand`),
//! and on invalid input, the errors beside a fallback (`fallback`).

mod ast;
mod expand;
mod fallback;
mod valid;

use crate::ctxt::Ctxt;
use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

/// The expansion of `#[derive(Row)]` on `input`.
pub fn derive(input: &DeriveInput) -> TokenStream {
    let mut cx = Ctxt::default();
    let row = ast::RowStruct::parse(&mut cx, input);
    valid::check(&mut cx, &row);
    if cx.has_errors() {
        let errors = cx.into_compile_errors();
        let fallback = fallback::fallback(&row);
        return quote! { #errors #fallback };
    }
    expand::expand(&row)
}

#[cfg(test)]
mod tests;
