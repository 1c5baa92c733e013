//! A small Rust client for a `fathom serve` server: a thin wrapper over the
//! generated tonic client that adds a connect timeout, an optional per-call
//! deadline, and plain Rust types in and out.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fathom_server::client::ClientError> {
//! use std::time::Duration;
//! let client = fathom_server::client::Client::connect("http://127.0.0.1:50051", Duration::from_secs(2))
//!     .await?
//!     .with_timeout(Duration::from_millis(200));
//! let item = client.get_items("tracks", &["track:000042"]).await?.remove(0);
//! for hit in client.search("tracks", &item.vector, 10, 0).await? {
//!     println!("{} {:.4}", hit.id, hit.distance);
//! }
//! # Ok(()) }
//! ```
//!
//! Calls take `&self` and may run concurrently: the client is a cheap
//! handle on one HTTP/2 connection. Open several clients for several
//! connections.
//!
//! For a server with `--tls-cert` or `--tokens`, connect with
//! [`Client::connect_with`] and a [`Security`]: an `https://` target (or any
//! target with a CA or client certificate given) speaks TLS, and a token is
//! sent as `authorization: Bearer TOKEN` with every call.

use std::path::Path;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use crate::proto as pb;
use crate::proto::{
    retrieval_client::RetrievalClient, BatchSearchRequest, DeleteRequest, GetItemsRequest,
    ListIndexesRequest, ReloadRequest, SearchRequest,
};
pub use crate::proto::{DeleteResponse, Hit, IndexInfo, Item};

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid target {target:?}: {reason}")]
    BadTarget { target: String, reason: String },

    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },

    /// A TLS file that cannot be read, or a token that cannot be a header.
    #[error("{0}")]
    Security(String),

    /// The server (or the transport) answered with a non-OK status.
    #[error("{}: {}", crate::status::code_name(.0.code()), .0.message())]
    Rpc(Status),
}

impl From<Status> for ClientError {
    fn from(s: Status) -> ClientError {
        ClientError::Rpc(s)
    }
}

impl ClientError {
    /// The gRPC status code: `UNAVAILABLE` for connection failures.
    pub fn code(&self) -> Code {
        match self {
            ClientError::BadTarget { .. } | ClientError::Security(_) => Code::InvalidArgument,
            ClientError::Connect { .. } => Code::Unavailable,
            ClientError::Rpc(s) => s.code(),
        }
    }
}

/// An error and its sources as one line, each cause once: transport errors
/// repeat their source's text in their own message ("tcp connect error:
/// tcp connect error: ..."), so a source already said is skipped.
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !reason.contains(&text) {
            reason = format!("{reason}: {text}");
        }
        source = s.source();
    }
    reason
}

/// Whether `s` came from the transport (the connection), not the server.
fn broken_connection(s: &Status) -> bool {
    std::error::Error::source(s).is_some_and(|e| e.is::<tonic::transport::Error>())
}

/// Whether `s` is a stream the server refused with a graceful GOAWAY.
fn refused_by_goaway(s: &Status) -> bool {
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away()
                && h2.is_remote()
                && matches!(
                    h2.reason(),
                    Some(h2::Reason::NO_ERROR | h2::Reason::REFUSED_STREAM)
                );
        }
        source = e.source();
    }
    false
}

/// The keys of `ids` (`xxh3_64` of each id, seed 0), as exclusions are
/// best sent: `exclude_keys` cost 8 bytes an id, and a router forwards them
/// without hashing again.
pub fn keys<S: AsRef<str>>(ids: &[S]) -> Vec<u64> {
    ids.iter()
        .map(|id| fathom_engine::shards::key(id.as_ref()))
        .collect()
}

/// TLS and token settings of a client; the default is plaintext, no token.
#[derive(Clone, Default)]
pub struct Security {
    /// PEM of the CA that signed the server's certificate. Without it an
    /// `https://` target is checked against the system's roots.
    pub tls_ca: Option<Vec<u8>>,
    /// PEM certificate chain and key, for a server with `--tls-client-ca`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Sent as `authorization: Bearer TOKEN`.
    pub token: Option<String>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls_ca", &self.tls_ca.is_some())
            .field("identity", &self.identity.is_some())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Security {
    /// Read the PEM files named (a CA, a client certificate and its key).
    pub fn from_files(
        tls_ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        token: Option<String>,
    ) -> Result<Security, ClientError> {
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| ClientError::Security(format!("cannot read {}: {e}", p.display())))
        };
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => {
                return Err(ClientError::Security(
                    "a client certificate needs its key, and a key its certificate".into(),
                ))
            }
        };
        Ok(Security {
            tls_ca: tls_ca.map(read).transpose()?,
            identity,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    fn tls(&self) -> bool {
        self.tls_ca.is_some() || self.identity.is_some()
    }
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<redacted>)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

impl Bearer {
    fn new(token: Option<&str>) -> Result<Bearer, ClientError> {
        let Some(token) = token else {
            return Ok(Bearer(None));
        };
        let mut v: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::Security("a token must be visible ASCII".into()))?;
        v.set_sensitive(true);
        Ok(Bearer(Some(v)))
    }
}

/// A connection to a fathom server.
#[derive(Clone, Debug)]
pub struct Client {
    inner: RetrievalClient<InterceptedService<Channel, Bearer>>,
    channel: Channel,
    timeout: Option<Duration>,
    /// The connection speaks TLS (for what a failure says).
    tls: bool,
}

/// Extra time the client waits past a call's deadline for the server's own
/// DEADLINE_EXCEEDED before giving up itself.
const CLIENT_SLACK: Duration = Duration::from_millis(100);

impl Client {
    /// Connect to `target` (`http://host:port`, or `host:port`), failing
    /// after `connect_timeout` rather than hanging.
    pub async fn connect(target: &str, connect_timeout: Duration) -> Result<Client, ClientError> {
        Client::connect_with(target, connect_timeout, &Security::default()).await
    }

    /// As [`connect`](Client::connect), with TLS and a token: TLS for an
    /// `https://` target, or when a CA or client certificate is given.
    pub async fn connect_with(
        target: &str,
        connect_timeout: Duration,
        security: &Security,
    ) -> Result<Client, ClientError> {
        let (endpoint, tls) = Client::endpoint(target, connect_timeout, security)?;
        let bearer = Bearer::new(security.token.as_deref())?;
        let channel = match tokio::time::timeout(connect_timeout, endpoint.connect()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let reason = cause_chain(&e);
                return Err(ClientError::Connect {
                    target: target.to_string(),
                    reason,
                });
            }
            Err(_) => {
                return Err(ClientError::Connect {
                    target: target.to_string(),
                    reason: format!("timed out after {connect_timeout:?}"),
                })
            }
        };
        Ok(Client::wrap(channel, bearer, tls))
    }

    /// As [`connect_with`](Client::connect_with), connecting on the first
    /// call and again whenever the connection breaks (resolving a host name
    /// each time, as a pod that moved needs): a router's client of a shard
    /// that may not be up yet.
    pub fn connect_lazy(
        target: &str,
        connect_timeout: Duration,
        security: &Security,
    ) -> Result<Client, ClientError> {
        let (endpoint, tls) = Client::endpoint(target, connect_timeout, security)?;
        let bearer = Bearer::new(security.token.as_deref())?;
        Ok(Client::wrap(endpoint.connect_lazy(), bearer, tls))
    }

    /// The endpoint of `target` with its TLS settings, and whether it
    /// speaks TLS.
    fn endpoint(
        target: &str,
        connect_timeout: Duration,
        security: &Security,
    ) -> Result<(Endpoint, bool), ClientError> {
        let bad = |reason: String| ClientError::BadTarget {
            target: target.to_string(),
            reason,
        };
        let uri = match target.split_once("://") {
            Some(("http", rest)) if security.tls() => format!("https://{rest}"),
            Some(_) => target.to_string(),
            None if security.tls() => format!("https://{target}"),
            None => format!("http://{target}"),
        };
        let tls = uri.starts_with("https://");
        let endpoint = Endpoint::from_shared(uri).map_err(|e| bad(e.to_string()))?;
        let mut endpoint = endpoint.connect_timeout(connect_timeout).tcp_nodelay(true);
        if tls {
            let mut config = ClientTlsConfig::new();
            config = match &security.tls_ca {
                Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
                None => config.with_native_roots(),
            };
            if let Some((cert, key)) = &security.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| bad(cause_chain(&e)))?;
        }
        Ok((endpoint, tls))
    }

    /// The channel under this client, for other services on the same
    /// connection (the health service).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Wrap an existing channel (no token).
    pub fn from_channel(channel: Channel) -> Client {
        Client::wrap(channel, Bearer(None), false)
    }

    fn wrap(channel: Channel, bearer: Bearer, tls: bool) -> Client {
        Client {
            channel: channel.clone(),
            inner: RetrievalClient::with_interceptor(channel, bearer)
                .max_decoding_message_size(usize::MAX),
            timeout: None,
            tls,
        }
    }

    /// Give every call this deadline (sent as `grpc-timeout`, so the server
    /// stops work past it too).
    pub fn with_timeout(mut self, per_call: Duration) -> Client {
        self.timeout = Some(per_call);
        self
    }

    /// The generated client (sending the token), for anything this wrapper
    /// does not cover.
    pub fn raw(&self) -> RetrievalClient<InterceptedService<Channel, Bearer>> {
        self.inner.clone()
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        if let Some(t) = self.timeout {
            req.set_timeout(t);
        }
        req
    }

    /// What to add to a broken connection's error: a plaintext client cut
    /// off is often talking to a server that expects TLS (its alert reads
    /// as a broken pipe, a reset, a cancelled stream or a malformed frame,
    /// depending on timing).
    fn hint(&self) -> &'static str {
        if self.tls {
            ""
        } else {
            " (if the server serves TLS, use an https:// target, with --tls-ca for a private CA)"
        }
    }

    /// Await a call, bounded by the per-call deadline plus a little slack.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, ClientError> {
        let result = match self.timeout {
            None => call.await,
            Some(t) => match tokio::time::timeout(t + CLIENT_SLACK, call).await {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within {t:?} (client-side deadline)"
                ))),
            },
        };
        match result {
            Ok(r) => Ok(r.into_inner()),
            // tonic's channel enforces `grpc-timeout` on its own side too and
            // reports it as CANCELLED "Timeout expired"; gRPC says a missed
            // deadline is DEADLINE_EXCEEDED, whichever side noticed it.
            Err(s) if s.code() == Code::Cancelled && s.message() == "Timeout expired" => {
                Err(Status::deadline_exceeded("deadline exceeded (client-side)").into())
            }
            // tonic reports a connection that closed under a call (a server
            // going away) as CANCELLED; gRPC says a broken connection is
            // UNAVAILABLE, which is also what tells a caller to retry.
            Err(s) if s.code() == Code::Cancelled && broken_connection(&s) => Err(
                Status::unavailable(format!("connection closed: {}{}", s.message(), self.hint()))
                    .into(),
            ),
            // A connection that failed under the call (a TLS alert, say: a
            // server wanting a client certificate says so only after the
            // handshake) comes as UNKNOWN "transport error"; it is
            // UNAVAILABLE, with its cause.
            Err(s) if s.code() == Code::Unknown && broken_connection(&s) => {
                Err(Status::unavailable(format!(
                    "connection failed: {}{}",
                    cause_chain(&s),
                    self.hint()
                ))
                .into())
            }
            // A call sent as the server's GOAWAY crossed it on the wire was
            // never processed (HTTP/2 says so of streams above the GOAWAY's
            // last id), so it is safe to retry: UNAVAILABLE, not the
            // INTERNAL "h2 protocol error" tonic makes of it.
            Err(s) if refused_by_goaway(&s) => Err(Status::unavailable(format!(
                "the server is going away; the call was not processed: {}",
                cause_chain(&s)
            ))
            .into()),
            // A connection that broke as an HTTP/2 protocol error (tonic's
            // INTERNAL): the peer is not speaking this client's protocol,
            // most often TLS to a plaintext client.
            Err(s)
                if s.code() == Code::Internal
                    && !self.tls
                    && cause_chain(&s).contains("h2 protocol error") =>
            {
                Err(Status::unavailable(format!(
                    "connection failed: {}{}",
                    cause_chain(&s),
                    self.hint()
                ))
                .into())
            }
            Err(s) => Err(s.into()),
        }
    }

    /// The `k` nearest items of `vector`; `ef = 0` uses the index default.
    pub async fn search(
        &self,
        index: &str,
        vector: &[f32],
        k: u32,
        ef: u32,
    ) -> Result<Vec<Hit>, ClientError> {
        self.search_with(SearchRequest {
            index: index.to_string(),
            vector: vector.to_vec(),
            k,
            ef,
            ..SearchRequest::default()
        })
        .await
    }

    /// A search with every option of the contract (filter, ...).
    pub async fn search_with(&self, req: SearchRequest) -> Result<Vec<Hit>, ClientError> {
        Ok(self.search_response(req).await?.hits)
    }

    /// As [`Self::search_with`], the whole response: with the index that
    /// served it (`variant`) and the shards it covers.
    pub async fn search_response(
        &self,
        req: SearchRequest,
    ) -> Result<crate::proto::SearchResponse, ClientError> {
        let req = self.request(req);
        let mut c = self.inner.clone();
        self.bounded(c.search(req)).await
    }

    /// Several queries in one call; one result list per query, in order.
    pub async fn batch_search<Q: AsRef<[f32]>>(
        &self,
        index: &str,
        queries: &[Q],
        k: u32,
        ef: u32,
    ) -> Result<Vec<Vec<Hit>>, ClientError> {
        let req = self.request(BatchSearchRequest {
            index: index.to_string(),
            queries: queries
                .iter()
                .map(|q| pb::Query {
                    vector: q.as_ref().to_vec(),
                    ..pb::Query::default()
                })
                .collect(),
            k,
            ef,
            ..BatchSearchRequest::default()
        });
        let mut c = self.inner.clone();
        let resp = self.bounded(c.batch_search(req)).await?;
        Ok(resp.results.into_iter().map(|r| r.hits).collect())
    }

    /// The stored vectors of `ids` (normalized under cosine), in order.
    pub async fn get_items<S: AsRef<str>>(
        &self,
        index: &str,
        ids: &[S],
    ) -> Result<Vec<Item>, ClientError> {
        let req = self.request(GetItemsRequest {
            index: index.to_string(),
            ids: ids.iter().map(|s| s.as_ref().to_string()).collect(),
        });
        let mut c = self.inner.clone();
        Ok(self.bounded(c.get_items(req)).await?.items)
    }

    /// Every served index, sorted by name.
    pub async fn list_indexes(&self) -> Result<Vec<IndexInfo>, ClientError> {
        let req = self.request(ListIndexesRequest {});
        let mut c = self.inner.clone();
        Ok(self.bounded(c.list_indexes(req)).await?.indexes)
    }

    /// Reload one index, or every index with `None`.
    pub async fn reload(&self, index: Option<&str>) -> Result<Vec<IndexInfo>, ClientError> {
        let req = self.request(ReloadRequest {
            index: index.unwrap_or_default().to_string(),
        });
        let mut c = self.inner.clone();
        Ok(self.bounded(c.reload(req)).await?.indexes)
    }

    /// Delete `ids` from a layered index: durable and applied when this
    /// returns Ok.
    pub async fn delete<S: AsRef<str>>(
        &self,
        index: &str,
        ids: &[S],
    ) -> Result<DeleteResponse, ClientError> {
        let req = self.request(DeleteRequest {
            index: index.to_string(),
            ids: ids.iter().map(|s| s.as_ref().to_string()).collect(),
        });
        let mut c = self.inner.clone();
        self.bounded(c.delete(req)).await
    }

    /// Point `alias` at `index` (`None` removes it); needs the admin role.
    pub async fn set_alias(
        &self,
        alias: &str,
        index: Option<&str>,
    ) -> Result<crate::proto::SetAliasResponse, ClientError> {
        let req = self.request(crate::proto::SetAliasRequest {
            alias: alias.to_string(),
            index: index.unwrap_or_default().to_string(),
        });
        let mut c = self.inner.clone();
        self.bounded(c.set_alias(req)).await
    }
}

#[cfg(test)]
mod tests {
    use super::cause_chain;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_are_named_once() {
        let e = E(
            "transport error",
            Some(Box::new(E(
                "tcp connect error",
                Some(Box::new(E(
                    "tcp connect error",
                    Some(Box::new(E("Connection refused (os error 111)", None))),
                ))),
            ))),
        );
        assert_eq!(
            cause_chain(&e),
            "transport error: tcp connect error: Connection refused (os error 111)"
        );
    }
}
