//! `#[derive(Row)]`: parse, validate, expand.

use crate::ctxt::Ctxt;
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Ident, Type};

/// A parsed field.
struct Field {
    ident: Ident,
    ty: Type,
    key: bool,
    json: bool,
}

/// A parsed row struct.
struct RowStruct {
    ident: Ident,
    input: bool,
    fields: Vec<Field>,
}

pub fn expand(input: DeriveInput) -> TokenStream {
    let mut cx = Ctxt::default();
    let mut input_table = false;
    let parsed = parse(&mut cx, &input, &mut input_table);
    let errors = cx.has_errors();
    let compile_errors = cx.into_compile_errors();
    match parsed {
        Some(row) if !errors => expand_row(&row),
        _ => {
            let fallback = fallback(&input, input_table);
            quote! { #compile_errors #fallback }
        }
    }
}

/// Column names of ours begin with `__`, table names of ours with `rederive_`.
fn reserved_column(name: &str) -> bool {
    name.starts_with("__")
}

fn reserved_table(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("rederive_") || lower.starts_with("sqlite_")
}

fn parse(cx: &mut Ctxt, input: &DeriveInput, input_table: &mut bool) -> Option<RowStruct> {
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("row")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("input") {
                if *input_table {
                    cx.error_spanned_by(&meta.path, "duplicate `#[row(input)]`");
                }
                *input_table = true;
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

    if !input.generics.params.is_empty() {
        cx.error_spanned_by(
            &input.generics,
            "a row type cannot be generic: each row type is one table",
        );
    }
    if reserved_table(&input.ident.to_string()) {
        cx.error_spanned_by(
            &input.ident,
            "table names beginning with `rederive_` or `sqlite_` are reserved",
        );
    }

    let named = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => named,
            Fields::Unnamed(_) => {
                cx.error_spanned_by(
                    &s.fields,
                    "`#[derive(Row)]` needs named fields: each field is a column",
                );
                return None;
            }
            Fields::Unit => {
                cx.error_spanned_by(
                    &input.ident,
                    "`#[derive(Row)]` needs a struct with named fields, not a unit struct",
                );
                return None;
            }
        },
        Data::Enum(e) => {
            cx.error_spanned_by(
                e.enum_token,
                "`#[derive(Row)]` works on structs with named fields, not enums; to store an enum in a column, mark the field `#[row(json)]`",
            );
            return None;
        }
        Data::Union(u) => {
            cx.error_spanned_by(
                u.union_token,
                "`#[derive(Row)]` works on structs with named fields, not unions",
            );
            return None;
        }
    };

    let mut fields = Vec::new();
    for f in &named.named {
        let Some(ident) = f.ident.clone() else {
            continue;
        };
        let mut field = Field {
            ident,
            ty: f.ty.clone(),
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
        let name = column_name(&field.ident);
        if reserved_column(&name) {
            cx.error_spanned_by(
                &field.ident,
                format!("column `{name}`: names beginning with `__` are reserved for rederive"),
            );
        }
        if field.key && field.json {
            cx.error_spanned_by(
                &field.ident,
                "a key column cannot be `#[row(json)]`: keys are `i64` or `String`",
            );
        }
        fields.push(field);
    }

    let keys: Vec<&Field> = fields.iter().filter(|f| f.key).collect();
    if *input_table {
        match keys.len() {
            0 => cx.error_spanned_by(
                &input.ident,
                format!(
                    "input table `{}` has no key: mark exactly one field (`i64` or `String`) with `#[row(key)]`",
                    input.ident
                ),
            ),
            1 => {}
            _ => {
                for k in &keys[1..] {
                    cx.error_spanned_by(
                        &k.ident,
                        format!(
                            "input table `{}` has more than one key: `#[row(key)]` is already on `{}`",
                            input.ident, keys[0].ident
                        ),
                    );
                }
            }
        }
    } else {
        for k in &keys {
            cx.error_spanned_by(
                &k.ident,
                format!(
                    "`#[row(key)]` on the derived table `{}`: derived rows are keyed by their root row's key; \
                     only input tables (`#[row(input)]`) declare a key",
                    input.ident
                ),
            );
        }
    }

    Some(RowStruct {
        ident: input.ident.clone(),
        input: *input_table,
        fields,
    })
}

fn path_name(path: &syn::Path) -> String {
    quote!(#path).to_string().replace(' ', "")
}

fn column_name(ident: &Ident) -> String {
    let s = ident.to_string();
    s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
}

fn expand_row(row: &RowStruct) -> TokenStream {
    let ident = &row.ident;
    let name = ident.to_string();
    let input = row.input;
    let kind = if input {
        quote!(__rd::InputKind)
    } else {
        quote!(__rd::DerivedKind)
    };
    let n = row.fields.len();

    let columns = row.fields.iter().map(|f| {
        let name = column_name(&f.ident);
        let ty = &f.ty;
        if f.json {
            quote! { __rd::ColumnDef { name: #name, ty: __rd::SqlType::Text, nullable: false, json: true } }
        } else {
            quote_spanned! {ty.span()=>
                __rd::ColumnDef {
                    name: #name,
                    ty: <#ty as __rd::Column>::SQL,
                    nullable: <#ty as __rd::Column>::NULLABLE,
                    json: false,
                }
            }
        }
    });

    let key = match row.fields.iter().position(|f| f.key) {
        Some(i) => quote!(::core::option::Option::Some(#i)),
        None => quote!(::core::option::Option::None),
    };
    let key_check = row.fields.iter().filter(|f| f.key).map(|f| {
        let ty = &f.ty;
        quote_spanned! {ty.span()=> const _: () = __rd::assert_key_column::<#ty>(); }
    });

    let encode = row.fields.iter().map(|f| {
        let field = &f.ident;
        let name = column_name(field);
        if f.json {
            quote! {
                __rd::json_to_value(&self.#field)
                    .map_err(|e| ::std::format!("column `{}`: {}", #name, e))?
            }
        } else {
            let ty = &f.ty;
            quote_spanned! {ty.span()=>
                <#ty as __rd::Column>::to_value(&self.#field)
                    .map_err(|e| ::std::format!("column `{}`: {}", #name, e))?
            }
        }
    });

    let vars: Vec<Ident> = (0..n).map(|i| format_ident!("__v{}", i)).collect();
    let decode = row.fields.iter().zip(&vars).map(|(f, var)| {
        let field = &f.ident;
        let column = column_name(field);
        let ty = &f.ty;
        let read = if f.json {
            quote! { __rd::json_from_value::<#ty>(#var) }
        } else {
            quote_spanned! {ty.span()=> <#ty as __rd::Column>::from_value(#var) }
        };
        quote! {
            #field: #read.map_err(|e| ::std::format!("column `{}` of `{}`: {}", #column, #name, e))?
        }
    });

    let input_impl = if input {
        quote! { impl __rd::Input for #ident {} }
    } else {
        quote! { impl __rd::Derived for #ident {} }
    };

    quote! {
        const _: () = {
            use ::rederive::__private as __rd;

            impl __rd::Row for #ident {
                type Kind = #kind;
                const TABLE: __rd::TableInfo = __rd::TableInfo {
                    name: #name,
                    type_path: ::core::concat!(::core::module_path!(), "::", #name),
                    input: #input,
                    columns: &[#(#columns),*],
                    key: #key,
                };

                fn encode(&self) -> ::core::result::Result<::std::vec::Vec<__rd::Value>, ::std::string::String> {
                    ::core::result::Result::Ok(::std::vec![#(#encode),*])
                }

                fn decode(values: ::std::vec::Vec<__rd::Value>) -> ::core::result::Result<Self, ::std::string::String> {
                    let found = values.len();
                    let [#(#vars),*]: [__rd::Value; #n] = values.try_into().map_err(|_| {
                        ::std::format!("table `{}` has {} columns, found {}", #name, #n, found)
                    })?;
                    ::core::result::Result::Ok(Self { #(#decode),* })
                }
            }

            #input_impl
            #(#key_check)*

            __rd::inventory::submit! { __rd::TableDef(&<#ident as __rd::Row>::TABLE) }
        };
    }
}

/// Emitted beside the errors so that uses of the type do not cascade.
fn fallback(input: &DeriveInput, input_table: bool) -> TokenStream {
    if !input.generics.params.is_empty() {
        return TokenStream::new();
    }
    let ident = &input.ident;
    let name = ident.to_string();
    let (kind, marker) = if input_table {
        (
            quote!(__rd::InputKind),
            quote!(impl __rd::Input for #ident {}),
        )
    } else {
        (
            quote!(__rd::DerivedKind),
            quote!(impl __rd::Derived for #ident {}),
        )
    };
    quote! {
        const _: () = {
            use ::rederive::__private as __rd;
            impl __rd::Row for #ident {
                type Kind = #kind;
                const TABLE: __rd::TableInfo = __rd::TableInfo {
                    name: #name, type_path: #name, input: #input_table, columns: &[], key: ::core::option::Option::None,
                };
                fn encode(&self) -> ::core::result::Result<::std::vec::Vec<__rd::Value>, ::std::string::String> {
                    ::core::unreachable!()
                }
                fn decode(_: ::std::vec::Vec<__rd::Value>) -> ::core::result::Result<Self, ::std::string::String> {
                    ::core::unreachable!()
                }
            }
            #marker
        };
    }
}

#[cfg(test)]
mod tests {
    use super::expand;
    use quote::quote;

    fn out(input: proc_macro2::TokenStream) -> String {
        expand(syn::parse2(input).unwrap()).to_string()
    }

    fn err(input: proc_macro2::TokenStream) -> String {
        let o = out(input);
        assert!(o.contains("compile_error"), "expected an error in {o}");
        o
    }

    #[test]
    fn input_and_derived_rows() {
        let o = out(quote!(
            #[row(input)]
            struct Source {
                #[row(key)]
                name: String,
                text: String,
                n: Option<i64>,
            }
        ));
        assert!(!o.contains("compile_error"), "{o}");
        assert!(o.contains("impl __rd :: Input for Source"));
        assert!(o.contains("key : :: core :: option :: Option :: Some (0usize)"));
        assert!(o.contains("assert_key_column :: < String >"));
        let o = out(quote!(
            struct Ast {
                items: i64,
                #[row(json)]
                tree: Tree,
                r#type: String,
            }
        ));
        assert!(!o.contains("compile_error"), "{o}");
        assert!(o.contains("impl __rd :: Derived for Ast"));
        assert!(o.contains("json_to_value"));
        // Raw identifiers become plain column names.
        assert!(o.contains("name : \"type\""));
    }

    #[test]
    fn every_error_path() {
        assert!(err(quote!(
            enum E {
                A,
            }
        ))
        .contains("not enums"));
        assert!(err(quote!(union U { a: u8 })).contains("not unions"));
        assert!(err(quote!(
            struct T(i64);
        ))
        .contains("named fields"));
        assert!(err(quote!(
            struct U;
        ))
        .contains("not a unit struct"));
        assert!(err(quote!(
            struct G<T> {
                t: T,
            }
        ))
        .contains("cannot be generic"));
        assert!(err(quote!(
            #[row(input)]
            struct NoKey {
                a: i64,
            }
        ))
        .contains("has no key"));
        assert!(err(quote!(
            #[row(input)]
            struct Two {
                #[row(key)]
                a: i64,
                #[row(key)]
                b: String,
            }
        ))
        .contains("more than one key"));
        assert!(err(quote!(
            struct D {
                #[row(key)]
                a: i64,
            }
        ))
        .contains("derived table"));
        assert!(err(quote!(
            #[row(inputs)]
            struct S {
                a: i64,
            }
        ))
        .contains("unknown row attribute `inputs`"));
        assert!(err(quote!(
            #[row(key)]
            struct S {
                a: i64,
            }
        ))
        .contains("belongs on a field"));
        assert!(err(quote!(
            struct S {
                #[row(jsn)]
                a: i64,
            }
        ))
        .contains("unknown row attribute `jsn`"));
        assert!(err(quote!(
            struct S {
                #[row(input)]
                a: i64,
            }
        ))
        .contains("belongs on the struct"));
        assert!(err(quote!(
            #[row(input)]
            #[row(input)]
            struct S {
                #[row(key)]
                a: i64,
            }
        ))
        .contains("duplicate"));
        assert!(err(quote!(
            struct S {
                #[row(json, json)]
                a: i64,
            }
        ))
        .contains("duplicate"));
        assert!(err(quote!(
            #[row(input)]
            struct S {
                #[row(key, json)]
                a: i64,
            }
        ))
        .contains("cannot be `#[row(json)]`"));
        assert!(err(quote!(
            struct S {
                __status: i64,
            }
        ))
        .contains("reserved"));
        assert!(err(quote!(
            struct rederive_meta {
                a: i64,
            }
        ))
        .contains("reserved"));
    }

    #[test]
    fn errors_come_with_a_fallback_impl() {
        // So that uses of the type elsewhere do not cascade into more errors.
        let o = err(quote!(
            #[row(input)]
            struct NoKey {
                a: i64,
            }
        ));
        assert!(o.contains("impl __rd :: Row for NoKey"));
        assert!(o.contains("impl __rd :: Input for NoKey"));
    }
}
