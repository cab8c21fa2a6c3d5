//! rederive facade (placeholder).
pub use rederive_itc as itc;
