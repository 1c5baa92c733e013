//! The command line's integration tests, in one binary: each module runs the
//! `fathom` binary (or the library under it) as a user would.

mod common;

mod alias;
mod bench;
mod build_signal;
mod capture;
mod cli;
mod damage;
mod demo;
mod experiments;
mod query;
mod recall;
mod route;
mod secure;
mod sharding;
