//! The backend conformance suite (filled in below).
