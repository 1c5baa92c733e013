//! Health, reflection, metrics and graceful shutdown.
#![allow(unused_imports)]

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::{synth, Index, Metric, SearchParams};
use fathom_server::catalog::{Catalog, LoadOptions};
use fathom_server::client::{Client, ClientError};
use fathom_server::proto as pb;
use fathom_server::{self as server, Limits, RunningServer, SearchThreads, ServeConfig};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let (server, client) = serve(
        &[("items", prebuilt("v0"))],
        None,
        config(Limits::default(), false),
    )
    .await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();

    let mut health = HealthClient::new(channel.clone());
    for service in ["", server::SERVICE_NAME] {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }

    {
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = reflection
            .server_reflection_info(tokio_stream::once(req))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("unexpected reflection answer {resp:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.iter().any(|n| n == "fathom.v1.Retrieval"),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n == "grpc.health.v1.Health"),
            "{names:?}"
        );
    }
    {
        // grpcurl's default protocol.
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "fathom.v1.Retrieval".into(),
            )),
        };
        let mut stream = reflection
            .server_reflection_info(tokio_stream::once(req))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        assert!(
            matches!(resp.message_response, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
            "{resp:?}"
        );
    }

    // Metrics over plain HTTP, after one search, one miss and a batch of 3.
    let q = queries(1, DIM, 4).remove(0);
    client.search("items", &q, 5, 0).await.unwrap();
    let miss = client.search("nope", &q, 5, 0).await.unwrap_err();
    assert_eq!(miss.code(), Code::NotFound, "{miss}");
    client
        .batch_search("items", &queries(3, DIM, 5), 5, 0)
        .await
        .unwrap();
    let body = http_get(server.metrics_addr().unwrap(), "/metrics").await;
    let format_version = Index::open(prebuilt("v0"))
        .unwrap()
        .snapshot()
        .format_version();
    let build_info = format!(
        "fathom_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let index_info = format!(
        "fathom_index_info{{dim=\"{DIM}\",format_version=\"{format_version}\",index=\"items\",metric=\"cosine\",storage=\"f32\"}} 1"
    );
    for want in [
        build_info.as_str(),
        index_info.as_str(),
        // One Search and three BatchSearch queries.
        "fathom_search_distances_count{index=\"items\"} 4",
        "fathom_search_expansions_count{index=\"items\"} 4",
        "fathom_search_distances_bucket{index=\"items\",le=\"16\"}",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        "fathom_requests_total{code=\"OK\",index=\"items\",method=\"Search\"} 1",
        "fathom_requests_total{code=\"NOT_FOUND\",index=\"\",method=\"Search\"} 1",
        "fathom_request_duration_seconds_bucket{code=\"OK\",index=\"items\",method=\"Search\",le=",
        "fathom_requests_in_flight 0",
        "fathom_index_items{index=\"items\"} 2000",
        "fathom_index_file_bytes{index=\"items\"}",
        "fathom_index_reloads_total{index=\"items\"} 0",
        "fathom_index_reload_failures_total{index=\"items\"} 0",
    ] {
        assert!(body.contains(want), "metrics lack {want:?}:\n{body}");
    }
    // Every search computed some distances and expanded some nodes.
    for sum in [
        "fathom_search_distances_sum",
        "fathom_search_expansions_sum",
    ] {
        let line = body
            .lines()
            .find(|l| l.starts_with(sum))
            .unwrap_or_else(|| panic!("no {sum}:\n{body}"));
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v >= 4.0, "{line}");
    }
    server.shutdown().await.unwrap();
}

#[test]
fn graceful_shutdown_finishes_in_flight_calls() {
    run_watched(
        "graceful_shutdown_finishes_in_flight_calls",
        Duration::from_secs(180),
        graceful_shutdown(),
    );
}

async fn graceful_shutdown() {
    let _heavy = HEAVY.lock().await;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let (server, client) = serve(
        &[("slow", prebuilt("slow"))],
        None,
        config(slow_limits(8), false),
    )
    .await;
    let addr = server.local_addr();
    let other = Client::connect(&addr.to_string(), Duration::from_secs(5))
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(30));
    let q = queries(1, SLOW_DIM, 3).remove(0);
    other.search("slow", &q, 10, 0).await.unwrap();
    let health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );

    let in_flight = {
        let c = client.clone();
        tokio::spawn(async move { c.batch_search("slow", &slow_batch(), 10, SLOW_EF).await })
    };
    eventually(
        "the slow call to be in flight",
        Duration::from_secs(10),
        || async { server.in_flight() >= 1 },
    )
    .await;
    // A health watch opened before shutdown sees SERVING, then NOT_SERVING
    // once shutdown begins (a check could race the GOAWAY instead).
    let mut watch = health
        .clone()
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the health watch's first status within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(server.shutdown());
    // Health turns NOT_SERVING and new calls are refused while the slow
    // call is still running.
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("health to report NOT_SERVING within 5 s")
        .expect("the health watch stays open")
        .expect("a status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    assert!(
        !in_flight.is_finished(),
        "the slow call ended before shutdown began"
    );
    // Refused by the handler, or at the transport when the GOAWAY got there
    // first: UNAVAILABLE either way.
    let refused = other.search("slow", &q, 10, 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // The in-flight call completes with its full answer.
    let results = tokio::time::timeout(Duration::from_secs(120), in_flight)
        .await
        .expect("the in-flight call ends within 120 s")
        .unwrap()
        .expect("in-flight call completes");
    assert_eq!(results.len(), SLOW_BATCH);
    assert!(results.iter().all(|r| r.len() == 10));
    stopping.await.unwrap().unwrap();
    // And the port no longer accepts connections.
    let gone = Client::connect(&addr.to_string(), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(gone, ClientError::Connect { .. }), "{gone:?}");
    assert_eq!(gone.code(), Code::Unavailable);
}

/// Calls sent while the server shuts down are UNAVAILABLE (retry
/// elsewhere), whether the server's handler refused them or the server's
/// GOAWAY crossed them on the wire (the client once reported that as
/// INTERNAL). The crossing is a race, so many calls are sent at the moment
/// shutdown begins, in many rounds.
#[test]
fn calls_crossing_a_shutdown_are_unavailable() {
    run_watched(
        "calls_crossing_a_shutdown_are_unavailable",
        Duration::from_secs(300),
        calls_crossing_a_shutdown(),
    );
}

async fn calls_crossing_a_shutdown() {
    let _heavy = HEAVY.lock().await;
    let q = queries(1, SLOW_DIM, 3).remove(0);
    let batch: Vec<Vec<f32>> = slow_batch().into_iter().take(20).collect();
    let mut refused = 0;
    for round in 0..80 {
        let (server, client) = serve(
            &[("slow", prebuilt("slow"))],
            None,
            config(slow_limits(64), false),
        )
        .await;
        let other = Client::connect(&server.local_addr().to_string(), Duration::from_secs(5))
            .await
            .unwrap()
            .with_timeout(Duration::from_secs(20));
        other.search("slow", &q, 10, 0).await.unwrap();
        // Keeps the server in its shutdown while the calls arrive.
        let in_flight = {
            let (c, batch) = (client.clone(), batch.clone());
            tokio::spawn(async move { c.batch_search("slow", &batch, 10, SLOW_EF).await })
        };
        eventually(
            "the batch to be in flight",
            Duration::from_secs(10),
            || async { server.in_flight() >= 1 },
        )
        .await;
        let stopping = tokio::spawn(server.shutdown());
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let (other, q) = (other.clone(), q.clone());
                tokio::spawn(async move { other.search("slow", &q, 10, 0).await })
            })
            .collect();
        // A call that ran before the shutdown task did is answered.
        for call in calls {
            if let Err(e) = call.await.unwrap() {
                assert_eq!(e.code(), Code::Unavailable, "round {round}: {e:?}");
                refused += 1;
            }
        }
        tokio::time::timeout(Duration::from_secs(30), in_flight)
            .await
            .expect("the in-flight batch ends")
            .unwrap()
            .expect("the in-flight batch completes");
        stopping.await.unwrap().unwrap();
    }
    assert!(refused > 80, "only {refused} of 640 calls were refused");
}
