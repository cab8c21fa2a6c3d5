//! The rules a `#[derive_table]` function must follow that the macro can
//! check by itself. Each broken rule is one error, spanned on the token to
//! change, in words that say what to write instead.
//!
//! What only the compiler knows (is this type a table? does anyone produce
//! it? do the inputs share a root? is there a cycle?) is checked by the
//! expansion, through the traits of `rederive::row`.

use super::ast::{Function, Param, Ret};
use crate::ctxt::Ctxt;
use quote::ToTokens;
use syn::{Signature, Type};

/// Reports every broken rule of `f` to `cx`.
pub fn check(cx: &mut Ctxt, f: &Function) {
    check_qualifiers(cx, &f.item.sig);
    check_generics(cx, &f.item.sig);
    for param in &f.params {
        check_param(cx, param);
    }
    for (_, ty) in f.ctx_params().skip(1) {
        cx.error_spanned_by(
            ty,
            "a `#[derive_table]` function takes one `ctx: &Ctx` at most: every read goes through it",
        );
    }
    if f.input_rows().is_some_and(|rows| rows.is_empty()) {
        let name = &f.item.sig.ident;
        let what = if f.params.is_empty() {
            "has no parameters"
        } else {
            "takes only a `ctx`"
        };
        cx.error_spanned_by(
            name,
            format!(
                "`{name}` {what}: a `#[derive_table]` function reads at least one row, e.g. `fn {name}(src: &Source) -> Out`"
            ),
        );
    }
    check_ret(cx, f);
}

fn check_qualifiers(cx: &mut Ctxt, sig: &Signature) {
    if let Some(a) = &sig.asyncness {
        cx.error_spanned_by(
            a,
            "a `#[derive_table]` function cannot be `async`: rederive runs it on its own worker threads",
        );
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
}

/// Lifetime parameters are harmless (`fn f<'a>(s: &'a Source)`); type and
/// const parameters would make one function many tables.
fn check_generics(cx: &mut Ctxt, sig: &Signature) {
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
}

fn check_param(cx: &mut Ctxt, param: &Param) {
    match param {
        Param::Row(_) | Param::Ctx(_) => {}
        Param::Receiver(r) => cx.error_spanned_by(
            r,
            "a `#[derive_table]` function cannot take `self`: write a free function whose parameters are `&Row`",
        ),
        Param::ImplTrait(t) => cx.error_spanned_by(
            t,
            "name the input's row type: `impl Trait` makes the function generic",
        ),
        Param::Mutable(r) => cx.error_spanned_by(
            r,
            "parameters are read-only: take the input row by shared reference (`&Row`), not `&mut`",
        ),
        Param::ByValue(ty) => cx.error_spanned_by(
            ty,
            format!("take the input row by shared reference: `&{}`", text(ty)),
        ),
    }
}

fn check_ret(cx: &mut Ctxt, f: &Function) {
    let name = &f.item.sig.ident;
    match &f.ret {
        Ret::Nothing => cx.error_spanned_by(
            name,
            format!("`{name}` returns nothing: a `#[derive_table]` function returns a row type, or `Result<Row, E>`"),
        ),
        Ret::Unreadable(ret) => cx.error_spanned_by(ret, unreadable_ret(ret)),
        Ret::Row { row, .. } => {
            if let Some(why) = known_non_row(row) {
                cx.error_spanned_by(row, why);
            }
        }
    }
}

fn unreadable_ret(ret: &Type) -> &'static str {
    match ret {
        Type::Reference(_) => "return the row by value, not by reference",
        Type::ImplTrait(_) => "return a concrete row type, not `impl Trait`",
        Type::Tuple(_) => "a `#[derive_table]` function returns a row type, not `()`",
        _ => "write the produced row type inside the `Result`: `Result<Row, E>`",
    }
}

/// Types from the standard library can never be rows; say so directly rather
/// than through the trait errors their `Table` impl would cause.
fn known_non_row(ty: &Type) -> Option<String> {
    const STD: &[&str] = &[
        "bool", "char", "str", "String", "Vec", "Option", "Box", "HashMap", "BTreeMap", "HashSet",
        "BTreeSet", "f32", "f64", "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32",
        "u64", "u128", "usize",
    ];
    let Type::Path(tp) = ty else {
        return None;
    };
    let last = tp.path.segments.last()?;
    STD.contains(&last.ident.to_string().as_str()).then(|| {
        format!(
            "`{}` is not a row type: return a struct with `#[derive(Row)]` (a table has named columns)",
            text(ty)
        )
    })
}

/// A type as the user would write it.
fn text(ty: &Type) -> String {
    ty.to_token_stream().to_string().replace(' ', "")
}
