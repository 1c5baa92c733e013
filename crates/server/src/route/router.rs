//! The routed indexes and their shards: made at start, with each group's
//! shard learned from its `ListIndexes`, and kept healthy by checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fathom_engine::distance::Metric;
use fathom_engine::shards::{shard_of, Centroids};
use futures_util::future::join_all;
use tonic::{Request, Status};

use super::replica::{Replica, ShardGroup};
use super::{IndexRoute, RouteError, RouteOptions};
use crate::client::Client;
use crate::metrics::Metrics;
use crate::proto as pb;

/// One routed index: its shards in shard order.
pub struct RoutedIndex {
    pub name: String,
    pub(super) groups: Vec<ShardGroup>,
    pub(super) metric: Metric,
    pub(super) dim: u32,
    /// Shards placed by kmeans: their centroids, in shard order.
    pub(super) centroids: Option<Centroids>,
}

impl RoutedIndex {
    /// The shards that may hold `id`: its key's shard, or every shard when
    /// items are placed by similarity.
    pub(super) fn holders(&self, id: &str) -> Vec<usize> {
        match self.centroids {
            None => vec![shard_of(id, self.groups.len() as u32) as usize],
            Some(_) => (0..self.groups.len()).collect(),
        }
    }
}

/// Every routed index.
pub struct Router {
    pub(super) indexes: BTreeMap<String, Arc<RoutedIndex>>,
    pub(super) options: RouteOptions,
    pub(super) metrics: std::sync::OnceLock<Arc<Metrics>>,
}

impl Router {
    /// Make the shard clients and learn, from each group's ListIndexes,
    /// which shard it serves: groups are ordered by it, and a set where two
    /// groups claim one shard or one is missing is refused.
    pub async fn connect(
        routes: Vec<IndexRoute>,
        options: RouteOptions,
    ) -> Result<Router, RouteError> {
        let mut indexes = BTreeMap::new();
        for route in routes {
            let mut groups = Vec::new();
            for addrs in &route.shards {
                let mut replicas = Vec::new();
                for addr in addrs {
                    let clients = (0..options.connections_per_replica.max(1))
                        .map(|_| {
                            Client::connect_lazy(
                                addr,
                                options.connect_timeout,
                                &options.shard_security,
                            )
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| RouteError::Client {
                            addr: addr.clone(),
                            reason: e.to_string(),
                        })?;
                    replicas.push(Arc::new(Replica::new(addr.clone(), clients)));
                }
                groups.push(ShardGroup::new(replicas));
            }
            let index = learn(&route.name, groups, options.learn_timeout).await?;
            indexes.insert(route.name.clone(), Arc::new(index));
        }
        Ok(Router {
            indexes,
            options,
            metrics: std::sync::OnceLock::new(),
        })
    }

    pub(crate) fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    pub fn indexes(&self) -> impl Iterator<Item = &RoutedIndex> {
        self.indexes.values().map(|i| &**i)
    }

    /// Check every replica's health every `health_interval` until
    /// `shutdown` says stop: a replica not SERVING is chosen only when no
    /// replica of its shard is.
    pub(crate) fn spawn_health(self: &Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let router = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(router.options.health_interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let checks = router.indexes.values().flat_map(|i| {
                    i.groups.iter().enumerate().flat_map(move |(s, g)| {
                        g.replicas
                            .iter()
                            .map(move |r| (i.name.clone(), s, Arc::clone(r)))
                    })
                });
                let interval = router.options.health_interval;
                let metrics = router.metrics.get().cloned();
                join_all(checks.map(|(name, s, r)| {
                    let metrics = metrics.clone();
                    async move {
                        let up = check_health(&r, interval).await;
                        if up != r.is_up() {
                            tracing::info!(index = %name, shard = s, replica = %r.addr, up, "replica health changed");
                        }
                        r.set_up(up);
                        if let Some(m) = metrics {
                            m.replica_up(&name, s, &r.addr, up);
                        }
                    }
                }))
                .await;
            }
        });
    }

    pub(super) fn index(&self, name: &str) -> Result<&Arc<RoutedIndex>, Status> {
        self.indexes
            .get(name)
            .ok_or_else(|| Status::not_found(format!("no index named {name:?}")))
    }

    pub(super) fn deadline<T>(&self, req: &Request<T>) -> Instant {
        let arrived = crate::service::deadline::arrival(req);
        crate::service::deadline::deadline_of(req.metadata(), arrived)
            .unwrap_or(arrived + self.options.default_timeout)
    }
}

async fn check_health(r: &Replica, timeout: Duration) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let mut client = HealthClient::new(r.client().channel());
    let mut req = Request::new(tonic_health::pb::HealthCheckRequest {
        service: crate::SERVICE_NAME.into(),
    });
    req.set_timeout(timeout);
    matches!(
        tokio::time::timeout(timeout, client.check(req)).await,
        Ok(Ok(resp)) if resp.get_ref().status == ServingStatus::Serving as i32
    )
}

/// Ask the groups of index `name` which shard each serves, until each has
/// answered or `timeout` passes.
async fn learn(
    name: &str,
    groups: Vec<ShardGroup>,
    timeout: Duration,
) -> Result<RoutedIndex, RouteError> {
    let bad = |reason: String| RouteError::Shards {
        index: name.to_string(),
        reason,
    };
    let until = Instant::now() + timeout;
    let mut learned: Vec<Option<pb::IndexInfo>> = vec![None; groups.len()];
    loop {
        for (g, group) in groups.iter().enumerate() {
            if learned[g].is_some() {
                continue;
            }
            for r in &group.replicas {
                let mut c = r.client().raw();
                let mut req = Request::new(pb::ListIndexesRequest {});
                req.set_timeout(Duration::from_secs(2));
                if let Ok(Ok(list)) =
                    tokio::time::timeout(Duration::from_secs(2), c.list_indexes(req)).await
                {
                    match list
                        .into_inner()
                        .indexes
                        .into_iter()
                        .find(|i| i.name == name)
                    {
                        Some(info) => {
                            learned[g] = Some(info);
                            break;
                        }
                        None => return Err(bad(format!("{} does not serve {name:?}", r.addr))),
                    }
                }
            }
        }
        if learned.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() >= until {
            let missing: Vec<String> = learned
                .iter()
                .zip(&groups)
                .filter(|(l, _)| l.is_none())
                .map(|(_, g)| {
                    g.replicas
                        .iter()
                        .map(|r| r.addr.clone())
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect();
            return Err(bad(format!(
                "no replica answered ListIndexes within {timeout:?}: {}",
                missing.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let infos: Vec<pb::IndexInfo> = learned.into_iter().flatten().collect();
    let n = groups.len() as u32;
    let mut order: Vec<Option<usize>> = vec![None; groups.len()];
    for (g, info) in infos.iter().enumerate() {
        let (shard, shards) = if info.shards == 0 {
            (0, 1)
        } else {
            (info.shard, info.shards)
        };
        if shards != n {
            return Err(bad(format!(
                "group {g} serves shard {shard} of {shards}, and {n} groups are given"
            )));
        }
        if let Some(other) = order[shard as usize] {
            return Err(bad(format!(
                "groups {other} and {g} both serve shard {shard}"
            )));
        }
        order[shard as usize] = Some(g);
        if info.dim != infos[0].dim || info.metric != infos[0].metric {
            return Err(bad(format!(
                "group {g} holds {}-d {} vectors, group 0 {}-d {}",
                info.dim, info.metric, infos[0].dim, infos[0].metric
            )));
        }
    }
    let metric = infos[0]
        .metric
        .parse::<Metric>()
        .map_err(|e| bad(e.to_string()))?;
    let dim = infos[0].dim;
    let kmeans = infos.iter().filter(|i| i.partition == "kmeans").count();
    let centroids = if kmeans == 0 {
        None
    } else if kmeans < infos.len() {
        return Err(bad(format!(
            "{kmeans} of {} groups serve shards placed by kmeans, the others by hash",
            infos.len()
        )));
    } else {
        let mut rows = vec![0f32; infos.len() * dim as usize];
        for (g, info) in infos.iter().enumerate() {
            if info.centroid.len() != dim as usize {
                return Err(bad(format!(
                    "group {g} reports a centroid of {} values for {dim}-d vectors",
                    info.centroid.len()
                )));
            }
            let s = info.shard as usize * dim as usize;
            rows[s..s + dim as usize].copy_from_slice(&info.centroid);
        }
        Some(Centroids {
            dim: dim as usize,
            metric,
            rows,
        })
    };
    let mut groups: Vec<Option<ShardGroup>> = groups.into_iter().map(Some).collect();
    let ordered = order
        .into_iter()
        .map(|g| {
            groups[g.expect("every shard is claimed once")]
                .take()
                .expect("taken once")
        })
        .collect();
    Ok(RoutedIndex {
        name: name.to_string(),
        groups: ordered,
        metric,
        dim,
        centroids,
    })
}
