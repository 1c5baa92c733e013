//! The server's integration tests, in one binary: real servers on loopback,
//! real clients, and raw HTTP/2 for misbehaving ones.

mod common;

mod auth;
mod blocking;
mod filter;
mod hostile;
mod layers;
mod limits;
mod ops;
mod recommend;
mod reload;
mod search;
