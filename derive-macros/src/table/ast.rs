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

    /// The row types of the parameters, when every parameter is a `&Row`.
    pub fn input_rows(&self) -> Option<Vec<&Type>> {
        self.params
            .iter()
            .map(|p| match p {
                Param::Row(ty) => Some(ty),
                _ => None,
            })
            .collect()
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
                Type::Reference(r) => Param::Row((*r.elem).clone()),
                other => Param::ByValue(other.clone()),
            },
        }
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
