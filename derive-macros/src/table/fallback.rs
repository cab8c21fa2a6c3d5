//! What an invalid `#[derive_table]` function expands to, beside its errors:
//! the function exactly as written, so that its callers still compile, and
//! no node.
//!
//! (No stub `Table` impl for the output either: two invalid functions
//! returning one type would make two stubs, and a conflict between them.)

use super::ast::Function;
use proc_macro2::TokenStream;
use quote::ToTokens;

/// The function, unchanged.
pub fn fallback(f: &Function) -> TokenStream {
    f.item.to_token_stream()
}
