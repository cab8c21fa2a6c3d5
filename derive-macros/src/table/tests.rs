//! Unit tests of `#[derive_table]`'s expansion; what users see is tested by
//! the trybuild snapshots in `tests/ui`.

use super::derive as expand;
use proc_macro2::TokenStream;
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
    assert!(out.contains("output : Ast"), "{out}");
    let out = ok(
        quote!(version = 3),
        quote!(
            fn parse(src: &Source, x: &Other) -> Result<Ast, String> {
                todo!()
            }
        ),
    );
    assert!(out.contains("output : Ast"), "{out}");
    assert!(out.contains("version : 3u64"));
    assert!(out.contains("inputs : [Source , Other]"), "{out}");
    let out = ok(
        quote!(),
        quote!(
            fn parse(src: &Source) -> anyhow::Result<Ast> {
                todo!()
            }
        ),
    );
    assert!(out.contains("output : Ast"), "{out}");
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
    assert!(out.contains("output : T"), "{out}");
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

/// Stored databases hold code hashes: a function's hash must never change.
/// The value was computed by the macro as it was before its restructuring.
/// (The function is a string so that `cargo fmt` cannot change its tokens.)
#[test]
fn code_hash_is_pinned() {
    let item =
        "/// doc\n#[inline]\nfn parse<'a>(src: &'a Source, x: &Other) -> Result<Ast, String> { \
                let n = src.text.len() as i64; \
                Ok(Ast { items: n + x.n, name: \"x\".to_string(), r: 1.5, c: 'c', v: [1u8; 2] }) }";
    let out = ok(quote!(), item.parse().unwrap());
    assert!(out.contains("code_hash : \"5b542a7b27dd7e60\""), "{out}");
}

#[test]
fn the_function_is_kept_as_written() {
    let item = quote!(
        /// Docs.
        pub fn f<'a>(s: &'a S) -> T {
            T { n: s.n }
        }
    );
    let out = ok(quote!(), item.clone());
    assert!(out.starts_with(&item.to_string()), "{out}");
}

#[test]
fn invalid_functions_are_kept_as_written() {
    let item = quote!(
        fn f(s: S) -> T {
            T { n: s.n }
        }
    );
    let out = err(quote!(), item.clone());
    assert!(out.contains(&item.to_string()), "{out}");
    // No node.
    assert!(!out.contains("__private"), "{out}");
}

#[test]
fn invalid_options_still_expand_the_node() {
    let out = err(
        quote!(version = "2"),
        quote!(
            fn f(s: &S) -> T {
                todo!()
            }
        ),
    );
    assert!(out.contains("code_hash"), "{out}");
    assert!(out.contains("version : 0u64"), "{out}");
}

#[test]
fn the_node_follows_the_function_s_cfg() {
    let out = ok(
        quote!(),
        quote!(
            #[cfg(feature = "x")]
            #[inline]
            fn f(s: &S) -> T {
                todo!()
            }
        ),
    );
    let node = out.split_once("const _").unwrap().0;
    assert!(
        node.trim_end().ends_with("# [cfg (feature = \"x\")]"),
        "{out}"
    );
}
