//! The arithmetic: distance metrics and storage types with their SIMD
//! kernels, the AVX-512 VNNI i8 kernels, and borrowed rows of vectors.

pub mod distance;
pub mod vectors;
mod vnni;
