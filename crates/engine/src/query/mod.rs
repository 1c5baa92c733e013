//! Queries: an open index and its search front door, the planner of a
//! filtered search, the admit-check, retrieval calls over several indexes
//! with examples and exclusions, the top-k merge, external ids, and the
//! exact scan.

pub mod admit;
pub mod exact;
pub mod ids;
pub mod index;
pub mod planner;
pub mod recommend;
pub mod retrieve;
pub mod topk;
