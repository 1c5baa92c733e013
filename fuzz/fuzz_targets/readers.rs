#![no_main]
//! The body is `fathom_fuzzing::readers` (crates/fuzzing), shared with the
//! corpus replay test.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fathom_fuzzing::readers(data));
