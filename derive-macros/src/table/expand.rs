//! The expansion of a valid `#[derive_table]` function: the function as
//! written, then its node, written by the runtime's `__private::table!`
//! template (see `rederive_runtime::__private`); this module gathers its
//! tokens, and writes the header of one impl (see [`output_impl`]).

use super::ast::Function;
use crate::hash::code_hash;
use crate::options::Options;
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::{ItemFn, Type};

/// The function and its node. `f` must have passed `valid::check`.
pub fn expand(f: &Function, options: &Options) -> TokenStream {
    let (Some(inputs), Some(output)) = (f.input_rows(), f.output_row()) else {
        unreachable!("expand() is only called on valid functions")
    };
    let super::ast::Ret::Row { ret, .. } = &f.ret else {
        unreachable!("a valid function returns a row")
    };
    let item = &f.item;
    let function = &item.sig.ident;
    let name = function.to_string();
    let vars: Vec<_> = (0..inputs.len())
        .map(|i| format_ident!("__in{}", i))
        .collect();
    let count = inputs.len();
    // The call's arguments, in parameter order: each input row, and the
    // context where the function takes it.
    let ctx = format_ident!("__rederive_ctx");
    let mut rows = vars.iter();
    let args: Vec<TokenStream> = f
        .params
        .iter()
        .map(|p| match p {
            super::ast::Param::Ctx(_) => quote!(#ctx),
            _ => {
                let var = rows.next().expect("one variable per input row");
                quote!(&#var)
            }
        })
        .collect();
    let hash = function_hash(item);
    let Options {
        version,
        files,
        settle_ms,
        reads,
    } = options;
    // Spanned on the function's name: the compiler shows a template's errors
    // and notes where it is called.
    let span = function.span();
    let output_impl = output_impl(
        f,
        output,
        quote_spanned! {span=>
            ::rederive::__private::table! { @node inputs: [#(#inputs),*], output: #output }
        },
    );
    let node = quote_spanned! {span=>
        ::rederive::__private::table! {
            function: #function,
            name: #name,
            inputs: [#(#inputs),*],
            vars: [#(#vars),*],
            count: #count,
            ctx: #ctx,
            args: [#(#args),*],
            returns: #ret,
            output: #output,
            code_hash: #hash,
            version: #version,
            files: [#(#files),*],
            settle_ms: #settle_ms,
            reads: [#(#reads),*],
        }
    };
    // The node exists when the function does.
    let cfgs = item.attrs.iter().filter(|a| a.path().is_ident("cfg"));
    quote! {
        #item

        #(#cfgs)*
        const _: () = {
            #output_impl
            #node
        };
    }
}

/// The hash of the function's signature and body (not its attributes): the
/// code version's main part. Stored databases depend on it: keep it stable.
fn function_hash(item: &ItemFn) -> String {
    let mut tokens = item.sig.to_token_stream();
    item.block.to_tokens(&mut tokens);
    code_hash(tokens)
}

/// The output table's `Table` impl, around `items` (from the template).
///
/// Written here rather than in the template, and spanned on the function's
/// name, because the compiler names an impl by the place of its header
/// (`<impl at src/lib.rs:10:4: 10:13>`): a template's header would name a
/// line of the runtime's source in every note about the impl (a dependency
/// cycle). The `where` clause never holds for an input table, which has its
/// own impl; `do_not_recommend` keeps the impl out of the compiler's lists
/// of "types that are tables" when some other type is not one; the `allow`
/// is for a function defined inside another.
fn output_impl(f: &Function, output: &Type, items: TokenStream) -> TokenStream {
    quote_spanned! {f.item.sig.ident.span()=>
        #[automatically_derived]
        #[allow(non_local_definitions)]
        #[diagnostic::do_not_recommend]
        impl ::rederive::__private::Table for #output
        where
            for<'__rederive> #output: ::rederive::__private::Derived,
        {
            #items
        }
    }
}
