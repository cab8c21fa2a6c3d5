//! rederive (facade, being written).
pub use rederive_itc as itc;
pub use rederive_macros::{derive_table, Row};
#[doc(hidden)]
pub use rederive_runtime::__private;
pub use rederive_runtime::*;
