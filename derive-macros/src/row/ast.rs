//! The shape of a `#[derive(Row)]` struct and its `#[row(..)]` attributes.
//! A malformed or misplaced attribute is reported here; the rules about
//! the struct as a whole are `valid.rs`'s.

use crate::ctxt::Ctxt;
use quote::quote;
use syn::{Data, DeriveInput, Fields, Ident, Type};

/// A struct under `#[derive(Row)]`.
pub struct RowStruct<'a> {
    pub input: &'a DeriveInput,
    /// `#[row(input)]`.
    pub is_input: bool,
    pub body: Body<'a>,
}

/// What the struct holds.
pub enum Body<'a> {
    Named(Vec<Field<'a>>),
    Tuple(&'a Fields),
    Unit,
    Enum(syn::token::Enum),
    Union(syn::token::Union),
}

/// A named field, a column.
pub struct Field<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
    /// `#[row(key)]`.
    pub key: bool,
    /// `#[row(json)]`.
    pub json: bool,
}

impl<'a> RowStruct<'a> {
    /// Reads the struct, reporting attribute errors to `cx`.
    pub fn parse(cx: &mut Ctxt, input: &'a DeriveInput) -> Self {
        let is_input = parse_struct_attrs(cx, input);
        let body = match &input.data {
            Data::Struct(s) => match &s.fields {
                Fields::Named(named) => Body::Named(
                    named
                        .named
                        .iter()
                        .filter_map(|f| Field::parse(cx, f))
                        .collect(),
                ),
                Fields::Unnamed(_) => Body::Tuple(&s.fields),
                Fields::Unit => Body::Unit,
            },
            Data::Enum(e) => Body::Enum(e.enum_token),
            Data::Union(u) => Body::Union(u.union_token),
        };
        RowStruct {
            input,
            is_input,
            body,
        }
    }

    /// The table's name: the struct's.
    pub fn name(&self) -> String {
        self.input.ident.to_string()
    }
}

impl<'a> Field<'a> {
    fn parse(cx: &mut Ctxt, f: &'a syn::Field) -> Option<Self> {
        let mut field = Field {
            ident: f.ident.as_ref()?,
            ty: &f.ty,
            key: false,
            json: false,
        };
        for attr in f.attrs.iter().filter(|a| a.path().is_ident("row")) {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("key") {
                    if field.key {
                        cx.error_spanned_by(&meta.path, "duplicate `#[row(key)]`");
                    }
                    field.key = true;
                    Ok(())
                } else if meta.path.is_ident("json") {
                    if field.json {
                        cx.error_spanned_by(&meta.path, "duplicate `#[row(json)]`");
                    }
                    field.json = true;
                    Ok(())
                } else if meta.path.is_ident("input") {
                    Err(meta.error("`#[row(input)]` belongs on the struct, not on a field"))
                } else {
                    Err(meta.error(format!(
                        "unknown row attribute `{}`; on a field the options are `#[row(key)]` and `#[row(json)]`",
                        path_name(&meta.path)
                    )))
                }
            });
            if let Err(e) = result {
                cx.push(e);
            }
        }
        Some(field)
    }

    /// The column's name: the field's, without `r#`.
    pub fn column(&self) -> String {
        let s = self.ident.to_string();
        s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
    }
}

/// Reads `#[row(input)]`; reports anything else.
fn parse_struct_attrs(cx: &mut Ctxt, input: &DeriveInput) -> bool {
    let mut is_input = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("row")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("input") {
                if is_input {
                    cx.error_spanned_by(&meta.path, "duplicate `#[row(input)]`");
                }
                is_input = true;
                Ok(())
            } else if meta.path.is_ident("key") || meta.path.is_ident("json") {
                Err(meta.error(format!(
                    "`#[row({})]` belongs on a field, not on the struct",
                    path_name(&meta.path)
                )))
            } else {
                Err(meta.error(format!(
                    "unknown row attribute `{}`; on a struct the only one is `#[row(input)]`",
                    path_name(&meta.path)
                )))
            }
        });
        if let Err(e) = result {
            cx.push(e);
        }
    }
    is_input
}

fn path_name(path: &syn::Path) -> String {
    quote!(#path).to_string().replace(' ', "")
}
