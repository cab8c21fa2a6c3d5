//! Unit tests of `#[derive(Row)]`'s expansion; what users see is tested by
//! the trybuild snapshots in `tests/ui`.

use super::derive;
use quote::quote;

fn out(input: proc_macro2::TokenStream) -> String {
    derive(&syn::parse2(input).unwrap()).to_string()
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
    assert!(o.contains("kind : input"), "{o}");
    assert!(o.contains("key : [0usize , String]"), "{o}");
    let o = out(quote!(
        struct Ast {
            items: i64,
            #[row(json)]
            tree: Tree,
            r#type: String,
        }
    ));
    assert!(!o.contains("compile_error"), "{o}");
    assert!(o.contains("kind : derived"), "{o}");
    assert!(o.contains("key : []"), "{o}");
    assert!(
        o.contains("{ field : tree , name : \"tree\" , ty : Tree , as : json }"),
        "{o}"
    );
    assert!(
        o.contains("{ field : items , name : \"items\" , ty : i64 , as : column }"),
        "{o}"
    );
    // Raw identifiers become plain column names.
    assert!(o.contains("field : r#type , name : \"type\""), "{o}");
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
        #[row(input)]
        struct F {
            #[row(key)]
            x: f64,
        }
    ))
    .contains("`f64` cannot be a key column"));
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
    assert!(
        o.contains("row ! { fallback type : NoKey , name : \"NoKey\" , kind : input }"),
        "{o}"
    );
}
