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
    check_ctx_and_reads(&mut cx, &function, &options);
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

/// A `ctx` needs declared reads to read anything, and declared reads need
/// a `ctx` to be read through.
fn check_ctx_and_reads(cx: &mut Ctxt, f: &ast::Function, options: &options::Options) {
    let name = &f.item.sig.ident;
    match (f.ctx_params().next(), options.reads.is_empty()) {
        (Some((_, ty)), true) => cx.error_spanned_by(
            ty,
            format!(
                "`{name}` takes a `ctx` but declares no reads: list the tables it reads with `#[derive_table(reads = [Table, ..])]`"
            ),
        ),
        (None, false) => cx.error_spanned_by(
            name,
            format!(
                "`{name}` declares reads but takes no `ctx`: add a parameter `ctx: &Ctx` and read rows with `ctx.get::<Table>(key)`"
            ),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
