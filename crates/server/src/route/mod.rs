//! `fathom route`: the `fathom.v1.Retrieval` service over sharded indexes.
//! A call fans out to one replica of every shard ([`replica`]), and the
//! shards' answers go through the engine's one top-k merge and pick, so a
//! routed call means what the same call means over one index holding the
//! union: filters and exclusions apply per shard, seeds by id are fetched
//! from their owning shard and sent as vectors, and group caps, diversity
//! and `min_per_index` are applied once, after the merge.
//!
//! A shard with no replica answering before the call's deadline leaves the
//! call partial: it answers in time with the other shards' hits and says
//! so (`shards_answered` < `shards_total`), unless `require_complete`.

pub mod config;
mod replica;
mod router;
mod service;

use std::time::Duration;

pub use self::config::{ConfigError, IndexRoute};
pub use self::replica::Hedge;
pub use self::router::{RoutedIndex, Router};
pub use self::service::RouterService;
use crate::client::Security;

/// How a router reaches and uses its shards.
#[derive(Debug, Clone)]
pub struct RouteOptions {
    pub hedge: Hedge,
    /// TLS and token toward the shard servers.
    pub shard_security: Security,
    pub connect_timeout: Duration,
    /// The deadline of a call that sets none.
    pub default_timeout: Duration,
    /// How often every replica's health is checked.
    pub health_interval: Duration,
    /// How long start-up waits for a replica of every shard to say which
    /// shard it serves.
    pub learn_timeout: Duration,
    /// HTTP/2 connections to each replica, taken in turn.
    pub connections_per_replica: usize,
    /// Shards placed by kmeans: how many a call searches (the nearest its
    /// query) when it does not say; 0 searches every shard.
    pub probe: usize,
}

impl Default for RouteOptions {
    fn default() -> Self {
        RouteOptions {
            hedge: Hedge::Auto {
                floor: Duration::from_millis(3),
            },
            shard_security: Security::default(),
            connect_timeout: Duration::from_secs(2),
            default_timeout: Duration::from_secs(2),
            health_interval: Duration::from_secs(1),
            learn_timeout: Duration::from_secs(60),
            // 4 × a server's default 64 calls per connection.
            connections_per_replica: 4,
            probe: 0,
        }
    }
}

/// Why a router could not start.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("shard client {addr}: {reason}")]
    Client { addr: String, reason: String },
    #[error("index {index:?}: {reason}")]
    Shards { index: String, reason: String },
}
