//! Criterion benches of fathom-engine live in `benches/`; this crate has no library code.
