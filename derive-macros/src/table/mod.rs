//! `#[derive_table]`: parse (`ast`), validate (`valid`), expand (`expand`),
//! and on invalid input, the errors beside a fallback (`fallback`).

mod ast;
mod expand;
mod fallback;
mod valid;

use crate::ctxt::Ctxt;
use crate::options;
use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;

/// The expansion of `#[derive_table(args)] item`.
pub fn derive(args: TokenStream, item: TokenStream) -> TokenStream {
    let item: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let msg = syn::Error::new(
                e.span(),
                "`#[derive_table]` goes on a free function: `fn name(input: &Row, ..) -> Row`",
            )
            .to_compile_error();
            return quote! { #msg #item };
        }
    };
    let mut cx = Ctxt::default();
    let options = options::parse(&mut cx, args);
    let function = ast::Function::from_item(item);
    let mut signature = Ctxt::default();
    valid::check(&mut signature, &function);
    if signature.has_errors() {
        cx.push_all(signature);
        let errors = cx.into_compile_errors();
        let fallback = fallback::fallback(&function);
        return quote! { #errors #fallback };
    }
    // Invalid options leave the signature, and so the node, sound: expand
    // it (with the options' defaults) to report the graph's errors too.
    let errors = cx.into_compile_errors();
    let expanded = expand::expand(&function, &options);
    quote! { #errors #expanded }
}

#[cfg(test)]
mod tests;
