//! `#[derive_table]`: parse the function, validate it, and expand to the
//! function itself plus its node: the compile-time graph checks, the
//! type-erased body, and the `inventory` registration.

use crate::ctxt::Ctxt;
use crate::hash::code_hash;
use crate::options::{self, Options};
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, PathArguments, ReturnType, Type};

/// A validated `#[derive_table]` function.
struct TableFn {
    item: ItemFn,
    /// The row types of the parameters (behind the `&`).
    inputs: Vec<Type>,
    /// The whole return type.
    ret: Type,
    /// The row type produced (`R` of `R` or `Result<R, E>`).
    output: Type,
    options: Options,
}

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
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
    let parsed = parse(&mut cx, item.clone(), options);
    match parsed {
        Some(f) if !cx.has_errors() => expand_fn(&f),
        _ => {
            // The errors, and the function unchanged so that its callers
            // still compile and only the real error shows.
            let errors = cx.into_compile_errors();
            quote! { #errors #item }
        }
    }
}

fn parse(cx: &mut Ctxt, item: ItemFn, options: Options) -> Option<TableFn> {
    let sig = &item.sig;
    if let Some(a) = &sig.asyncness {
        cx.error_spanned_by(a, "a `#[derive_table]` function cannot be `async`: rederive runs it on its own worker threads");
    }
    if let Some(u) = &sig.unsafety {
        cx.error_spanned_by(u, "a `#[derive_table]` function cannot be `unsafe`");
    }
    if let Some(c) = &sig.constness {
        cx.error_spanned_by(c, "a `#[derive_table]` function cannot be `const`");
    }
    if let Some(v) = &sig.variadic {
        cx.error_spanned_by(v, "a `#[derive_table]` function cannot be variadic");
    }
    // Lifetime parameters are harmless (`fn f<'a>(s: &'a Source)`); type and
    // const parameters would make one function many tables.
    let generic = sig
        .generics
        .params
        .iter()
        .any(|p| !matches!(p, syn::GenericParam::Lifetime(_)));
    if generic || sig.generics.where_clause.is_some() {
        cx.error_spanned_by(
            &sig.generics,
            "a `#[derive_table]` function cannot be generic: each function is one table of the graph",
        );
    }

    let mut inputs = Vec::new();
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(r) => cx.error_spanned_by(
                r,
                "a `#[derive_table]` function cannot take `self`: write a free function whose parameters are `&Row`",
            ),
            FnArg::Typed(pt) => match &*pt.ty {
                Type::Reference(r) if matches!(*r.elem, Type::ImplTrait(_)) => cx.error_spanned_by(
                    &r.elem,
                    "name the input's row type: `impl Trait` makes the function generic",
                ),
                Type::Reference(r) if r.mutability.is_none() => inputs.push((*r.elem).clone()),
                Type::Reference(r) => cx.error_spanned_by(
                    r,
                    "parameters are read-only: take the input row by shared reference (`&Row`), not `&mut`",
                ),
                other => cx.error_spanned_by(
                    other,
                    format!(
                        "take the input row by shared reference: `&{}`",
                        other.to_token_stream().to_string().replace(' ', "")
                    ),
                ),
            },
        }
    }
    if sig.inputs.is_empty() {
        cx.error_spanned_by(
            &sig.ident,
            format!(
                "`{}` has no parameters: a `#[derive_table]` function reads at least one row, e.g. `fn {}(src: &Source) -> Out`",
                sig.ident, sig.ident
            ),
        );
    }

    let ret = match &sig.output {
        ReturnType::Default => {
            cx.error_spanned_by(
                &sig.ident,
                format!("`{}` returns nothing: a `#[derive_table]` function returns a row type, or `Result<Row, E>`", sig.ident),
            );
            return None;
        }
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let output = match output_row(&ret).and_then(reject_known_non_rows) {
        Ok(t) => t,
        Err(e) => {
            cx.push(e);
            return None;
        }
    };
    Some(TableFn {
        item,
        inputs,
        ret,
        output,
        options,
    })
}

/// The produced row type: `R` for `-> R`, and for `-> Result<R, E>`
/// (any path whose last segment is `Result`, such as `anyhow::Result<R>`).
fn output_row(ret: &Type) -> syn::Result<Type> {
    match ret {
        Type::Path(tp) if tp.qself.is_none() => {
            let Some(last) = tp.path.segments.last() else {
                return Ok(ret.clone());
            };
            if last.ident != "Result" {
                return Ok(ret.clone());
            }
            if let PathArguments::AngleBracketed(args) = &last.arguments {
                if let Some(GenericArgument::Type(t)) = args.args.first() {
                    return Ok(t.clone());
                }
            }
            Err(syn::Error::new_spanned(
                ret,
                "write the produced row type inside the `Result`: `Result<Row, E>`",
            ))
        }
        Type::Reference(_) => Err(syn::Error::new_spanned(
            ret,
            "return the row by value, not by reference",
        )),
        Type::ImplTrait(_) => Err(syn::Error::new_spanned(
            ret,
            "return a concrete row type, not `impl Trait`",
        )),
        Type::Tuple(t) if t.elems.is_empty() => Err(syn::Error::new_spanned(
            ret,
            "a `#[derive_table]` function returns a row type, not `()`",
        )),
        _ => Ok(ret.clone()),
    }
}

/// Types from the standard library can never be rows; say so directly rather
/// than through the orphan-rule error their `Produced` impl would cause.
fn reject_known_non_rows(ty: Type) -> syn::Result<Type> {
    const STD: &[&str] = &[
        "bool", "char", "str", "String", "Vec", "Option", "Box", "HashMap", "BTreeMap", "HashSet",
        "BTreeSet", "f32", "f64", "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32",
        "u64", "u128", "usize",
    ];
    if let Type::Path(tp) = &ty {
        if let Some(last) = tp.path.segments.last() {
            if STD.contains(&last.ident.to_string().as_str()) {
                return Err(syn::Error::new_spanned(
                    &ty,
                    format!(
                        "`{}` is not a row type: return a struct with `#[derive(Row)]` (a table has named columns)",
                        ty.to_token_stream().to_string().replace(' ', "")
                    ),
                ));
            }
        }
    }
    Ok(ty)
}

fn expand_fn(f: &TableFn) -> TokenStream {
    let item = &f.item;
    let fn_ident = &item.sig.ident;
    let fn_name = fn_ident.to_string();
    let output = &f.output;
    let ret = &f.ret;
    let hash = code_hash({
        let mut t = item.sig.to_token_stream();
        item.block.to_tokens(&mut t);
        t
    });
    let depth_const = format_ident!("{}_depth", fn_ident, span = fn_ident.span());

    let input_depths = f.inputs.iter().map(|ty| {
        quote_spanned! {ty.span()=> <#ty as ::rederive::__private::Table>::DEPTH }
    });
    let first = &f.inputs[0];
    let root_checks = f.inputs.iter().skip(1).map(|ty| {
        quote_spanned! {ty.span()=>
            const _: () = __rd::assert_same_root::<
                <#first as __rd::Rooted>::Root,
                <#ty as __rd::Rooted>::Root,
            >();
        }
    });
    let input_infos = f.inputs.iter().map(|ty| quote!(&<#ty as __rd::Row>::TABLE));
    let n = f.inputs.len();
    let vars: Vec<_> = (0..n).map(|i| format_ident!("__in{}", i)).collect();
    let decodes = f.inputs.iter().zip(&vars).map(|(ty, v)| {
        quote! {
            let #v = <#ty as __rd::Row>::decode(#v).map_err(|e| {
                ::std::format!("cannot decode input row of `{}`: {}", <#ty as __rd::Row>::TABLE.name, e)
            })?;
        }
    });
    let call_args = vars.iter().map(|v| quote!(&#v));
    let version = f.options.version;
    let files = &f.options.files;
    let settle_ms = f.options.settle_ms;
    let output_check = quote_spanned! {output.span()=>
        #[automatically_derived]
        impl __rd::Produced for #output {
            type FirstInput = #first;
            const DEPTH: usize = #depth_const;
        }
    };
    let ret_check = quote_spanned! {ret.span()=>
        fn __outcome(value: #ret) -> ::core::result::Result<#output, ::std::string::String> {
            <#ret as __rd::IntoOutcome<#output>>::into_outcome(value)
        }
    };

    quote! {
        #item

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        const #depth_const: usize = 1 + ::rederive::__private::max_depth(&[#(#input_depths),*]);

        const _: () = {
            use ::rederive::__private as __rd;

            #output_check
            #(#root_checks)*
            #ret_check

            fn __compute(
                inputs: ::std::vec::Vec<::std::vec::Vec<__rd::Value>>,
            ) -> ::core::result::Result<::std::vec::Vec<__rd::Value>, ::std::string::String> {
                let found = inputs.len();
                let [#(#vars),*]: [::std::vec::Vec<__rd::Value>; #n] = inputs
                    .try_into()
                    .map_err(|_| ::std::format!("`{}` takes {} inputs, got {}", #fn_name, #n, found))?;
                #(#decodes)*
                let out = __outcome(#fn_ident(#(#call_args),*))?;
                <#output as __rd::Row>::encode(&out)
            }

            __rd::inventory::submit! {
                __rd::NodeDef {
                    name: #fn_name,
                    module: ::core::module_path!(),
                    output: &<#output as __rd::Row>::TABLE,
                    inputs: &[#(#input_infos),*],
                    code_hash: #hash,
                    version: #version,
                    files: &[#(#files),*],
                    base_dir: ::core::env!("CARGO_MANIFEST_DIR"),
                    settle_ms: #settle_ms,
                    compute: __compute,
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn err(args: TokenStream, item: TokenStream) -> String {
        let out = expand(args, item).to_string();
        assert!(out.contains("compile_error"), "expected an error in: {out}");
        out
    }

    fn ok(args: TokenStream, item: TokenStream) -> String {
        let out = expand(args, item).to_string();
        assert!(!out.contains("compile_error"), "unexpected error in: {out}");
        out
    }

    #[test]
    fn accepts_plain_and_result_returns() {
        let out = ok(
            quote!(),
            quote!(
                fn parse(src: &Source) -> Ast {
                    todo!()
                }
            ),
        );
        assert!(out.contains("impl __rd :: Produced for Ast"));
        let out = ok(
            quote!(version = 3),
            quote!(
                fn parse(src: &Source, x: &Other) -> Result<Ast, String> {
                    todo!()
                }
            ),
        );
        assert!(out.contains("impl __rd :: Produced for Ast"));
        assert!(out.contains("version : 3u64"));
        assert!(out.contains("assert_same_root"));
        let out = ok(
            quote!(),
            quote!(
                fn parse(src: &Source) -> anyhow::Result<Ast> {
                    todo!()
                }
            ),
        );
        assert!(out.contains("impl __rd :: Produced for Ast"));
    }

    #[test]
    fn lifetime_parameters_are_fine() {
        let out = ok(
            quote!(),
            quote!(
                fn f<'a>(s: &'a S, t: &'a U) -> T {
                    todo!()
                }
            ),
        );
        assert!(out.contains("impl __rd :: Produced for T"));
    }

    #[test]
    fn options_reach_the_descriptor() {
        let out = ok(
            quote!(files = ["a/*.txt"], settle = "2s"),
            quote!(
                fn f(s: &S) -> T {
                    todo!()
                }
            ),
        );
        assert!(out.contains("\"a/*.txt\""));
        assert!(out.contains("settle_ms : 2000u64"));
    }

    #[test]
    fn code_hash_ignores_attributes_and_comments() {
        let a = ok(
            quote!(),
            quote!(
                fn f(s: &S) -> T {
                    T { n: s.n }
                }
            ),
        );
        let b = ok(
            quote!(),
            quote!(
                #[doc = "doc"]
                fn f(s: &S) -> T {
                    T { n: s.n }
                }
            ),
        );
        let c = ok(
            quote!(),
            quote!(
                fn f(s: &S) -> T {
                    T { n: s.n + 1 }
                }
            ),
        );
        let hash_of = |s: &str| s.split("code_hash : \"").nth(1).unwrap()[..16].to_owned();
        assert_eq!(hash_of(&a), hash_of(&b));
        assert_ne!(hash_of(&a), hash_of(&c));
    }

    #[test]
    fn every_error_path() {
        assert!(err(
            quote!(),
            quote!(
                fn f() -> T {
                    todo!()
                }
            )
        )
        .contains("has no parameters"));
        assert!(err(
            quote!(),
            quote!(
                fn f(s: S) -> T {
                    todo!()
                }
            )
        )
        .contains("shared reference"));
        assert!(err(
            quote!(),
            quote!(
                fn f(s: &mut S) -> T {
                    todo!()
                }
            )
        )
        .contains("not `&mut`"));
        assert!(err(
            quote!(),
            quote!(
                fn f(&self) -> T {
                    todo!()
                }
            )
        )
        .contains("cannot take `self`"));
        assert!(err(
            quote!(),
            quote!(
                fn f<X>(s: &X) -> T {
                    todo!()
                }
            )
        )
        .contains("cannot be generic"));
        assert!(err(
            quote!(),
            quote!(
                fn f(s: &S) -> T
                where
                    S: Sized,
                {
                    todo!()
                }
            )
        )
        .contains("cannot be generic"));
        assert!(err(
            quote!(),
            quote!(
                async fn f(s: &S) -> T {
                    todo!()
                }
            )
        )
        .contains("`async`"));
        assert!(err(
            quote!(),
            quote!(
                unsafe fn f(s: &S) -> T {
                    todo!()
                }
            )
        )
        .contains("`unsafe`"));
        assert!(err(
            quote!(),
            quote!(
                const fn f(s: &S) -> T {
                    todo!()
                }
            )
        )
        .contains("`const`"));
        assert!(err(
            quote!(),
            quote!(
                fn f(s: &S) {
                    todo!()
                }
            )
        )
        .contains("returns nothing"));
        assert!(err(
            quote!(),
            quote!(
                fn f(s: &S) -> () {
                    todo!()
                }
            )
        )
        .contains("not `()`"));
        assert!(err(
            quote!(),
            quote!(
                fn f(s: &S) -> &T {
                    todo!()
                }
            )
        )
        .contains("by value"));
        assert!(err(
            quote!(),
            quote!(
                fn f(s: &S) -> impl Sized {
                    todo!()
                }
            )
        )
        .contains("impl Trait"));
        assert!(err(
            quote!(),
            quote!(
                fn f(s: &S) -> Result {
                    todo!()
                }
            )
        )
        .contains("inside the `Result`"));
        assert!(err(
            quote!(bogus = 1),
            quote!(
                fn f(s: &S) -> T {
                    todo!()
                }
            )
        )
        .contains("unknown option"));
        assert!(err(
            quote!(),
            quote!(
                struct NotAFn;
            )
        )
        .contains("free function"));
    }

    #[test]
    fn reports_all_errors_at_once() {
        let out = err(
            quote!(bogus = 1),
            quote!(
                async fn f(s: S) -> T {
                    todo!()
                }
            ),
        );
        assert!(out.contains("unknown option"));
        assert!(out.contains("`async`"));
        assert!(out.contains("shared reference"));
    }
}
