//! The shape of a `#[derive_table]` function, read from its signature without
//! judging it (that is `valid.rs`'s work).

use syn::{FnArg, GenericArgument, ItemFn, PathArguments, ReturnType, Type, TypeReference};

/// A function under `#[derive_table]`.
pub struct Function {
    pub item: ItemFn,
    pub params: Vec<Param>,
    pub ret: Ret,
}

/// One parameter, by what it takes.
pub enum Param {
    /// `x: &Row`: the row type.
    Row(Type),
    /// `ctx: &Ctx`: the context cross-row reads go through (any path
    /// whose last segment is `Ctx`).
    Ctx(Type),
    /// `&self`, `self`, ..
    Receiver(syn::Receiver),
    /// `x: &mut Row`.
    Mutable(TypeReference),
    /// `x: &impl Trait`: the `impl Trait`.
    ImplTrait(Type),
    /// `x: Row`, or any other type that is not a reference.
    ByValue(Type),
}

/// What the function returns.
pub enum Ret {
    /// No `->`.
    Nothing,
    /// `-> ret`, producing the row type `row` (`R` for `R`, `Result<R, E>`
    /// and any other `..::Result<R, ..>`).
    Row { ret: Box<Type>, row: Box<Type> },
    /// `-> ret` where no row type can be read: `-> Result`, `-> &R`, ..
    Unreadable(Box<Type>),
}

impl Function {
    pub fn from_item(item: ItemFn) -> Self {
        let params = item.sig.inputs.iter().map(Param::from_arg).collect();
        let ret = match &item.sig.output {
            ReturnType::Default => Ret::Nothing,
            ReturnType::Type(_, ty) => match output_row(ty) {
                Some(row) => Ret::Row {
                    ret: ty.clone(),
                    row: Box::new(row),
                },
                None => Ret::Unreadable(ty.clone()),
            },
        };
        Function { item, params, ret }
    }

    /// The row types of the parameters, when every parameter is a `&Row`
    /// (or the `&Ctx`, which is skipped).
    pub fn input_rows(&self) -> Option<Vec<&Type>> {
        self.params
            .iter()
            .filter(|p| !matches!(p, Param::Ctx(_)))
            .map(|p| match p {
                Param::Row(ty) => Some(ty),
                _ => None,
            })
            .collect()
    }

    /// The `ctx: &Ctx` parameters (one, in a valid function).
    pub fn ctx_params(&self) -> impl Iterator<Item = (usize, &Type)> {
        self.params.iter().enumerate().filter_map(|(i, p)| match p {
            Param::Ctx(ty) => Some((i, ty)),
            _ => None,
        })
    }

    /// The produced row type, when it can be read.
    pub fn output_row(&self) -> Option<&Type> {
        match &self.ret {
            Ret::Row { row, .. } => Some(row),
            _ => None,
        }
    }
}

impl Param {
    fn from_arg(arg: &FnArg) -> Self {
        match arg {
            FnArg::Receiver(r) => Param::Receiver(r.clone()),
            FnArg::Typed(pt) => match &*pt.ty {
                Type::Reference(r) if matches!(*r.elem, Type::ImplTrait(_)) => {
                    Param::ImplTrait((*r.elem).clone())
                }
                Type::Reference(r) if r.mutability.is_some() => Param::Mutable(r.clone()),
                Type::Reference(r) if is_ctx(&r.elem) => Param::Ctx((*r.elem).clone()),
                Type::Reference(r) => Param::Row((*r.elem).clone()),
                other => Param::ByValue(other.clone()),
            },
        }
    }
}

/// Whether a type names the context (`Ctx`, `rederive::Ctx`, `Ctx<'_>`).
fn is_ctx(ty: &Type) -> bool {
    match ty {
        Type::Path(tp) if tp.qself.is_none() => {
            tp.path.segments.last().is_some_and(|s| s.ident == "Ctx")
        }
        Type::Paren(p) => is_ctx(&p.elem),
        _ => false,
    }
}

/// `R` for `-> R`, and for `-> Result<R, E>` (any path whose last segment is
/// `Result`, such as `anyhow::Result<R>`). `None` for `-> Result` without
/// arguments, references, `impl Trait` and `()`: `valid.rs` says why.
fn output_row(ret: &Type) -> Option<Type> {
    match ret {
        Type::Path(tp) if tp.qself.is_none() => {
            let Some(last) = tp.path.segments.last() else {
                return Some(ret.clone());
            };
            if last.ident != "Result" {
                return Some(ret.clone());
            }
            match &last.arguments {
                PathArguments::AngleBracketed(args) => match args.args.first() {
                    Some(GenericArgument::Type(t)) => Some(t.clone()),
                    _ => None,
                },
                _ => None,
            }
        }
        Type::Reference(_) | Type::ImplTrait(_) => None,
        Type::Tuple(t) if t.elems.is_empty() => None,
        Type::Paren(p) => output_row(&p.elem),
        _ => Some(ret.clone()),
    }
}
