//! The rules of a row struct: named fields, not generic, no reserved names,
//! exactly one key on an input table (an `i64` or a `String`) and none on a
//! derived one. Each broken rule is one error, on the token to change.

use super::ast::{Body, Field, RowStruct};
use crate::ctxt::Ctxt;
use quote::ToTokens;
use syn::Type;

/// Reports every broken rule of `row` to `cx`.
pub fn check(cx: &mut Ctxt, row: &RowStruct) {
    let input = row.input;
    if !input.generics.params.is_empty() {
        cx.error_spanned_by(
            &input.generics,
            "a row type cannot be generic: each row type is one table",
        );
    }
    if reserved_table(&row.name()) {
        cx.error_spanned_by(
            &input.ident,
            "table names beginning with `rederive_` or `sqlite_` are reserved",
        );
    }
    match &row.body {
        Body::Named(fields) => {
            for field in fields {
                check_field(cx, field);
            }
            check_keys(cx, row, fields);
        }
        Body::Tuple(fields) => cx.error_spanned_by(
            fields,
            "`#[derive(Row)]` needs named fields: each field is a column",
        ),
        Body::Unit => cx.error_spanned_by(
            &input.ident,
            "`#[derive(Row)]` needs a struct with named fields, not a unit struct",
        ),
        Body::Enum(token) => cx.error_spanned_by(
            token,
            "`#[derive(Row)]` works on structs with named fields, not enums; to store an enum in a column, mark the field `#[row(json)]`",
        ),
        Body::Union(token) => cx.error_spanned_by(
            token,
            "`#[derive(Row)]` works on structs with named fields, not unions",
        ),
    }
}

/// Column names of ours begin with `__`.
fn check_field(cx: &mut Ctxt, field: &Field) {
    let name = field.column();
    if name.starts_with("__") {
        cx.error_spanned_by(
            field.ident,
            format!("column `{name}`: names beginning with `__` are reserved for rederive"),
        );
    }
}

/// Table names of ours begin with `rederive_`, SQLite's with `sqlite_`.
fn reserved_table(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("rederive_") || lower.starts_with("sqlite_")
}

fn check_keys(cx: &mut Ctxt, row: &RowStruct, fields: &[Field]) {
    let ident = &row.input.ident;
    let keys: Vec<&Field> = fields.iter().filter(|f| f.key).collect();
    for key in &keys {
        if key.json {
            cx.error_spanned_by(
                key.ident,
                "a key column cannot be `#[row(json)]`: keys are `i64` or `String`",
            );
        } else if let Some(why) = known_non_key(key.ty) {
            cx.error_spanned_by(key.ty, why);
        }
    }
    if !row.is_input {
        for key in &keys {
            cx.error_spanned_by(
                key.ident,
                format!(
                    "`#[row(key)]` on the derived table `{ident}`: derived rows are keyed by their root row's key; \
                     only input tables (`#[row(input)]`) declare a key"
                ),
            );
        }
        return;
    }
    match keys.as_slice() {
        [] => cx.error_spanned_by(
            ident,
            format!(
                "input table `{ident}` has no key: mark exactly one field (`i64` or `String`) with `#[row(key)]`"
            ),
        ),
        [_] => {}
        [first, rest @ ..] => {
            for k in rest {
                cx.error_spanned_by(
                    k.ident,
                    format!(
                        "input table `{ident}` has more than one key: `#[row(key)]` is already on `{}`",
                        first.ident
                    ),
                );
            }
        }
    }
}

/// A key is an `i64` or a `String`. Other standard types are refused here,
/// in our words; other names (an alias of `i64`?) are left to the compiler,
/// through the `KeyColumn` trait.
fn known_non_key(ty: &Type) -> Option<String> {
    const STD: &[&str] = &[
        "bool", "char", "str", "Vec", "Option", "Box", "f32", "f64", "i8", "i16", "i32", "i128",
        "isize", "u8", "u16", "u32", "u64", "u128", "usize",
    ];
    let Type::Path(tp) = ty else {
        return Some(format!(
            "`{}` cannot be a key column: a `#[row(key)]` field is an `i64` or a `String`",
            text(ty)
        ));
    };
    let last = tp.path.segments.last()?;
    STD.contains(&last.ident.to_string().as_str()).then(|| {
        format!(
            "`{}` cannot be a key column: a `#[row(key)]` field is an `i64` or a `String`",
            text(ty)
        )
    })
}

fn text(ty: &Type) -> String {
    ty.to_token_stream().to_string().replace(' ', "")
}
