//! What `#[derive(Row)]` and `#[derive_table]` expand to, written once, here.
//!
//! The proc macros (crate `rederive-macros`) parse and validate their input,
//! then pass plain tokens to the two `macro_rules!` templates below (the
//! salsa way). So the layout of [`NodeDef`], [`TableInfo`] and of every
//! generated impl lives in this crate only, beside the types it builds.
//!
//! Not public API: the macros' contract with this module may change in any
//! release. Set `REDERIVE_DEBUG_EXPAND=1` while compiling to print what the
//! proc macros pass to these templates.

pub use crate::ctx::Ctx;
pub use crate::node::{ComputeFn, NodeDef, TableDef};
pub use crate::row::{
    ColumnDef, Derived, DerivedKind, GraphNode, Input, InputKind, IntoOutcome, Row, Storable,
    Table, TableInfo,
};
pub use crate::value::{json_from_value, json_to_value, Column, KeyColumn, SqlType, Value};
pub use crate::{__rederive_row as row, __rederive_table as table};
pub use inventory;

/// Compile-time check that a field type can be a key column.
pub const fn assert_key_column<T: KeyColumn>() {}

/// Expands `#[derive(Row)]`: the [`Row`] impl, the kind marker, the
/// [`Table`] impl of an input table, and the registration.
///
/// ```text
/// row! {
///     type: Source, name: "Source", kind: input, key: [0, String],
///     columns: [ { field: name, name: "name", ty: String, as: column }, .. ],
///     count: 2,
/// }
/// ```
///
/// `as` is `column` (through [`Storable`]) or `json`. The `fallback` form
/// (`row! { fallback type: T, name: "T", kind: input }`) is emitted beside
/// the errors of an invalid struct, so that its uses do not fail again.
#[doc(hidden)]
#[macro_export]
macro_rules! __rederive_row {
    (
        type: $ty:ident,
        name: $name:literal,
        kind: $kind:ident,
        key: [$($key:literal, $key_type:ty)?],
        columns: [$({ field: $field:ident, name: $column:literal, ty: $fty:ty, as: $as:ident }),* $(,)?],
        count: $count:literal $(,)?
    ) => {
        const _: () = {
            use $crate::__private as __rd;

            #[automatically_derived]
            #[diagnostic::do_not_recommend]
            impl __rd::Row for $ty {
                type Kind = $crate::__rederive_row!(@kind $kind);
                const TABLE: __rd::TableInfo = __rd::TableInfo {
                    name: $name,
                    type_path: ::core::concat!(::core::module_path!(), "::", $name),
                    input: $crate::__rederive_row!(@is_input $kind),
                    columns: &[$($crate::__rederive_row!(@column $as $column $fty)),*],
                    key: $crate::__rederive_row!(@key $($key)?),
                };

                fn encode(
                    &self,
                ) -> ::core::result::Result<::std::vec::Vec<__rd::Value>, ::std::string::String> {
                    ::core::result::Result::Ok(::std::vec![$(
                        $crate::__rederive_row!(@encode $as $fty, &self.$field)
                            .map_err(|e| ::std::format!("column `{}`: {}", $column, e))?
                    ),*])
                }

                fn decode(
                    values: ::std::vec::Vec<__rd::Value>,
                ) -> ::core::result::Result<Self, ::std::string::String> {
                    let found = values.len();
                    let [$($field),*]: [__rd::Value; $count] = values.try_into().map_err(|_| {
                        ::std::format!("table `{}` has {} columns, found {}", $name, $count, found)
                    })?;
                    ::core::result::Result::Ok(Self {$(
                        $field: $crate::__rederive_row!(@decode $as $fty, $field).map_err(|e| {
                            ::std::format!("column `{}` of `{}`: {}", $column, $name, e)
                        })?
                    ),*})
                }
            }

            $crate::__rederive_row!(@kind_impls $kind $ty);
            $(__rd::assert_key_column::<$key_type>();)?

            __rd::inventory::submit! { __rd::TableDef(&<$ty as __rd::Row>::TABLE) }
        };
    };

    (fallback type: $ty:ident, name: $name:literal, kind: $kind:ident $(,)?) => {
        const _: () = {
            use $crate::__private as __rd;

            #[diagnostic::do_not_recommend]
            impl __rd::Row for $ty {
                type Kind = $crate::__rederive_row!(@kind $kind);
                const TABLE: __rd::TableInfo = __rd::TableInfo {
                    name: $name,
                    type_path: $name,
                    input: $crate::__rederive_row!(@is_input $kind),
                    columns: &[],
                    key: ::core::option::Option::None,
                };
                fn encode(
                    &self,
                ) -> ::core::result::Result<::std::vec::Vec<__rd::Value>, ::std::string::String> {
                    ::core::unreachable!()
                }
                fn decode(
                    _: ::std::vec::Vec<__rd::Value>,
                ) -> ::core::result::Result<Self, ::std::string::String> {
                    ::core::unreachable!()
                }
            }

            $crate::__rederive_row!(@kind_impls $kind $ty);
        };
    };

    (@kind input) => { $crate::__private::InputKind };
    (@kind derived) => { $crate::__private::DerivedKind };
    (@is_input input) => { true };
    (@is_input derived) => { false };
    (@key) => { ::core::option::Option::None };
    (@key $key:literal) => { ::core::option::Option::Some($key) };

    // `do_not_recommend`: a type that is not a table gets our message, not
    // a list of the types that are.
    // The `where` clause holds, and makes this impl exclusive of the one a
    // `#[derive_table]` function returning `$ty` would add (whose own
    // `where` clause says `Kind = DerivedKind`): that mistake gets one
    // error, from the function's check, not an ambiguity as well.
    (@kind_impls input $ty:ident) => {
        #[diagnostic::do_not_recommend]
        impl __rd::Input for $ty {}
        #[diagnostic::do_not_recommend]
        impl __rd::Table for $ty
        where
            for<'__rederive> $ty: __rd::Row<Kind = __rd::InputKind>,
        {
            const NODE: __rd::GraphNode = __rd::GraphNode::input(&<$ty as __rd::Row>::TABLE);
        }
    };
    (@kind_impls derived $ty:ident) => {
        #[diagnostic::do_not_recommend]
        impl __rd::Derived for $ty {}
    };

    // Through `Storable`, not `Column`: see `Storable`.
    (@column column $column:literal $fty:ty) => {
        $crate::__private::ColumnDef {
            name: $column,
            ty: <$fty as $crate::__private::Storable>::SQL,
            nullable: <$fty as $crate::__private::Storable>::NULLABLE,
            json: false,
        }
    };
    (@column json $column:literal $fty:ty) => {
        $crate::__private::ColumnDef {
            name: $column,
            ty: $crate::__private::SqlType::Text,
            nullable: false,
            json: true,
        }
    };
    (@encode column $fty:ty, $value:expr) => {
        <$fty as $crate::__private::Storable>::to_value($value)
    };
    (@encode json $fty:ty, $value:expr) => {
        $crate::__private::json_to_value::<$fty>($value)
    };
    (@decode column $fty:ty, $value:expr) => {
        <$fty as $crate::__private::Storable>::from_value($value)
    };
    (@decode json $fty:ty, $value:expr) => {
        $crate::__private::json_from_value::<$fty>($value)
    };
}

/// Expands `#[derive_table]`. The proc macro emits, in a `const _` block:
///
/// ```text
/// impl Table for Output where for<'r> Output: Derived {   // spanned on the function
///     table! { @node inputs: [Input, ..], output: Output }
/// }
/// table! { function: f, name: "f", inputs: [Input, ..], .. }
/// ```
///
/// * The output table's [`Table`] impl, whose [`GraphNode`] is one deeper
///   than the deepest input. Its header is the proc macro's, not this
///   template's, because the compiler names an impl by the place of its
///   header: so its notes (a dependency cycle) point at the function. Its
///   `where` clause never holds for an input table (whose own impl comes
///   from `#[derive(Row)]`); the check below says why.
/// * A constant that checks the graph at compile time: the output is a
///   derived table, the inputs share a root, and (by evaluating the inputs'
///   nodes) there is no dependency cycle.
/// * The type-erased body and its `inventory` registration.
///
/// Every use of an input type goes through [`Table`], so that a type that
/// is not a table gets one error, on the parameter, in our words.
#[doc(hidden)]
#[macro_export]
macro_rules! __rederive_table {
    (@node inputs: [$($input:ty),+ $(,)?], output: $output:ty $(,)?) => {
        const NODE: $crate::__private::GraphNode = {
            // An input that is not a table fails here, in our words; the
            // same error from `__rederive_node_of`'s bound, at the same
            // place, is then not reported again (nor its "required by").
            $(let _ = <$input as $crate::__private::Table>::INFO;)+
            $crate::__private::GraphNode::derived(
                &<$output as $crate::__private::Row>::TABLE,
                [$(__rederive_node_of::<$input>()),+],
            )
        };
    };

    (
        function: $function:ident,
        name: $name:literal,
        inputs: [$($input:ty),+ $(,)?],
        vars: [$($var:ident),+ $(,)?],
        count: $count:literal,
        ctx: $ctx:ident,
        args: [$($arg:expr),+ $(,)?],
        returns: $ret:ty,
        output: $output:ty,
        code_hash: $hash:literal,
        version: $version:literal,
        files: [$($file:literal),* $(,)?],
        settle_ms: $settle_ms:literal,
        reads: [$($read:ty),* $(,)?] $(,)?
    ) => {
        // Reads a table's node through a generic function rather than as a
        // constant of the caller: then a cycle is reported in two notes per
        // table instead of four.
        const fn __rederive_node_of<T: $crate::__private::Table>() -> $crate::__private::GraphNode {
            <T as $crate::__private::Table>::NODE
        }

        // The graph's checks (see `@node` for the `let`s).
        const _: () = {
            let () = <$output as $crate::__private::Derived>::IS_DERIVED;
            $(let _ = <$input as $crate::__private::Table>::INFO;)+
            $(let _ = <$read as $crate::__private::Table>::INFO;)*
            $crate::__private::check_roots($name, [$(__rederive_node_of::<$input>()),+]);
        };

        #[allow(unused_variables)]
        fn __rederive_compute(
            $ctx: &$crate::__private::Ctx<'_>,
            inputs: ::std::vec::Vec<::std::vec::Vec<$crate::__private::Value>>,
        ) -> ::core::result::Result<::std::vec::Vec<$crate::__private::Value>, ::std::string::String> {
            use $crate::__private as __rd;
            // First, so that an output that is not a row type gets this
            // error only, not also "not a row type" from `encode` below.
            let () = <$output as __rd::Derived>::IS_DERIVED;
            let found = inputs.len();
            let [$($var),+]: [::std::vec::Vec<__rd::Value>; $count] =
                inputs.try_into().map_err(|_| {
                    ::std::format!("`{}` takes {} inputs, got {}", $name, $count, found)
                })?;
            $(
                let $var = <$input as __rd::Table>::decode_input($var).map_err(|e| {
                    ::std::format!(
                        "cannot decode input row of `{}`: {}",
                        <$input as __rd::Table>::INFO.name,
                        e
                    )
                })?;
            )+
            let out = <$ret as __rd::IntoOutcome<$output>>::into_outcome($function($($arg),+))?;
            <$output as __rd::Row>::encode(&out)
        }

        $crate::__private::inventory::submit! {
            $crate::__private::NodeDef {
                name: $name,
                module: ::core::module_path!(),
                output: {
                    let () = <$output as $crate::__private::Derived>::IS_DERIVED;
                    &<$output as $crate::__private::Row>::TABLE
                },
                inputs: &[$(<$input as $crate::__private::Table>::INFO),+],
                reads: &[$(<$read as $crate::__private::Table>::INFO),*],
                code_hash: $hash,
                version: $version,
                files: &[$($file),*],
                base_dir: ::core::env!("CARGO_MANIFEST_DIR"),
                settle_ms: $settle_ms,
                compute: __rederive_compute,
            }
        }
    };
}

/// Compile-time check that the inputs of `function` share a root (they are
/// joined on its key). Panics, as a compile error, naming both roots.
#[track_caller]
pub const fn check_roots<const N: usize>(function: &str, inputs: [GraphNode; N]) {
    let mut i = 1;
    while i < N {
        if !same_table(inputs[0].root, inputs[i].root) {
            different_roots(function, &inputs[0], &inputs[i]);
        }
        i += 1;
    }
}

const fn same_table(a: &TableInfo, b: &TableInfo) -> bool {
    let (a, b) = (a.type_path.as_bytes(), b.type_path.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[track_caller]
const fn different_roots(function: &str, first: &GraphNode, other: &GraphNode) -> ! {
    let (first_root, other_root) = (first.root, other.root);
    let message = Message::new()
        .push("the inputs of `")
        .push(function)
        .push("` have different roots: `")
        .push(first.table.name)
        .push("` is keyed by `")
        .push(first_root.name)
        .push("`, `")
        .push(other.table.name)
        .push("` by `")
        .push(other_root.name)
        .push("`; which rows of `")
        .push(first_root.name)
        .push("` and `")
        .push(other_root.name)
        .push("` belong together is not defined");
    panic!("{}", message.as_str())
}

/// A message built at compile time (`format!` is not available there).
struct Message {
    bytes: [u8; 1024],
    len: usize,
}

impl Message {
    const fn new() -> Self {
        Message {
            bytes: [0; 1024],
            len: 0,
        }
    }

    /// Appends `s`, or as much of it as fits.
    const fn push(mut self, s: &str) -> Self {
        let s = s.as_bytes();
        let mut i = 0;
        while i < s.len() && self.len < self.bytes.len() {
            self.bytes[self.len] = s[i];
            self.len += 1;
            i += 1;
        }
        self
    }

    const fn as_str(&self) -> &str {
        let (bytes, _) = self.bytes.split_at(self.len);
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            // Cut inside a character: keep what precedes it.
            Err(e) => match core::str::from_utf8(bytes.split_at(e.valid_up_to()).0) {
                Ok(s) => s,
                Err(_) => "",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn table(name: &'static str, type_path: &'static str, input: bool) -> TableInfo {
        TableInfo {
            name,
            type_path,
            input,
            columns: &[],
            key: None,
        }
    }

    static DOC: TableInfo = table("Document", "app::Document", true);
    static USER: TableInfo = table("User", "app::User", true);
    static WORDS: TableInfo = table("Words", "app::Words", false);
    static OUT: TableInfo = table("Out", "app::Out", false);

    #[test]
    fn a_derived_node_is_one_deeper_and_keyed_by_its_first_input_s_root() {
        let doc = GraphNode::input(&DOC);
        let words = GraphNode::derived(&WORDS, [doc]);
        assert_eq!((words.depth, words.root.name), (1, "Document"));
        let out = GraphNode::derived(&OUT, [doc, words, GraphNode::input(&USER)]);
        assert_eq!((out.depth, out.root.name), (2, "Document"));
    }

    #[test]
    fn roots_compare_by_type_path() {
        check_roots(
            "f",
            [
                GraphNode::input(&DOC),
                GraphNode::derived(&WORDS, [GraphNode::input(&DOC)]),
            ],
        );
        let twin = table("Document", "other::Document", true);
        assert!(!same_table(&DOC, &twin));
    }

    #[test]
    fn different_roots_name_the_function_and_both_roots() {
        let words = GraphNode::derived(&WORDS, [GraphNode::input(&DOC)]);
        let panic =
            std::panic::catch_unwind(|| check_roots("greet", [words, GraphNode::input(&USER)]))
                .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert_eq!(
            message,
            "the inputs of `greet` have different roots: `Words` is keyed by `Document`, `User` by `User`; \
             which rows of `Document` and `User` belong together is not defined"
        );
    }

    #[test]
    fn a_long_message_is_cut_on_a_character_boundary() {
        let long = "é".repeat(600);
        let message = Message::new().push("x").push(&long);
        assert_eq!(message.as_str().len(), 1023);
        assert!(message.as_str().ends_with('é'));
    }
}
