//! Measuring the engine: seeded clustered data, and recall and speed.

pub mod eval;
pub mod synth;
