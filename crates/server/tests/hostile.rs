//! Hostile and careless clients: huge messages held half-sent, huge
//! strings, bytes that are not protobuf, and connections that say nothing.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use fathom_server::client::Client;
use fathom_server::status::MAX_STATUS_MESSAGE;
use fathom_server::{Limits, ServeConfig};
use tokio::io::AsyncReadExt;
use tonic::Code;

/// A gRPC call by hand over HTTP/2: its headers, then `body`, ending the
/// stream only when `end` is set. Returns the grpc-status and grpc-message
/// of the answer (from its headers or trailers), or `None` when no answer
/// came within `limit`.
async fn raw_call(
    addr: std::net::SocketAddr,
    path: &str,
    body: Bytes,
    end: bool,
    limit: Duration,
) -> Option<(String, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (answer, mut send) = client.send_request(req, false).unwrap();
    send.send_data(body, end).unwrap();
    let answer = async {
        let resp = answer.await.unwrap();
        let field = |h: &http::HeaderMap, k: &str| {
            h.get(k).map(|v| v.to_str().unwrap_or_default().to_string())
        };
        if let Some(code) = field(resp.headers(), "grpc-status") {
            let message = field(resp.headers(), "grpc-message").unwrap_or_default();
            return (code, message);
        }
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            chunk.unwrap();
        }
        let trailers = body.trailers().await.unwrap().unwrap_or_default();
        let message = field(&trailers, "grpc-message").unwrap_or_default();
        (field(&trailers, "grpc-status").unwrap_or_default(), message)
    };
    let out = tokio::time::timeout(limit, answer).await.ok();
    drop(send);
    conn.abort();
    out
}

/// A gRPC frame header: not compressed, `len` bytes follow.
fn frame_header(len: u32) -> Vec<u8> {
    let mut h = vec![0u8];
    h.extend_from_slice(&len.to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_the_concurrency_cap_is_refused_before_its_message_is_read() {
    let _heavy = HEAVY.lock().await;
    let (server, client) = serve(
        &[("slow", prebuilt("slow"))],
        None,
        config(slow_limits(1), false),
    )
    .await;
    let busy = {
        let c = client.clone();
        tokio::spawn(async move { c.batch_search("slow", &slow_batch(), 10, SLOW_EF).await })
    };
    eventually(
        "the slow call in flight",
        Duration::from_secs(10),
        || async { server.in_flight() >= 1 },
    )
    .await;
    // A 10 MB message, of which only the first kilobyte is sent: refused
    // at once, without waiting for (and buffering) the rest.
    let mut body = frame_header(10_000_000);
    body.extend_from_slice(&[0u8; 1000]);
    let answer = raw_call(
        server.local_addr(),
        "/fathom.v1.Retrieval/Search",
        Bytes::from(body),
        false,
        Duration::from_secs(3),
    )
    .await;
    let (code, message) = answer.expect("an answer before the message was sent whole");
    assert_eq!(code, "8", "{message}");
    busy.await.unwrap().unwrap();
    let metrics = server.metrics().render();
    assert!(
        metrics.contains(
            "fathom_requests_total{code=\"RESOURCE_EXHAUSTED\",index=\"\",method=\"Search\"} 1"
        ),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_in_flight_are_bounded() {
    let limits = Limits {
        max_message_bytes: 1 << 20,
        max_inflight_bytes: 1 << 20,
        ..Limits::default()
    };
    let (server, _client) = serve(&[("items", prebuilt("v0"))], None, config(limits, false)).await;
    let addr = server.local_addr();
    // One call holds 900 kB of a 1 MB message, unfinished.
    let holder = tokio::spawn(async move {
        let mut body = frame_header(1_000_000);
        body.extend_from_slice(&vec![0u8; 900_000]);
        let path = "/fathom.v1.Retrieval/Search";
        raw_call(addr, path, Bytes::from(body), false, Duration::from_secs(5)).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A whole 200 kB message does not fit beside it: shed, not decoded.
    let mut body = frame_header(200_000);
    body.extend_from_slice(&vec![0u8; 200_000]);
    let (code, message) = raw_call(
        addr,
        "/fathom.v1.Retrieval/BatchSearch",
        Bytes::from(body),
        true,
        Duration::from_secs(5),
    )
    .await
    .expect("an answer");
    assert_eq!(code, "8", "{message}");
    assert!(message.contains("max-inflight-bytes"), "{message}");
    holder.abort();
    // Once the holder is gone its bytes are free again.
    let (code, message) = raw_call(
        addr,
        "/fathom.v1.Retrieval/ListIndexes",
        Bytes::from(frame_header(0)),
        true,
        Duration::from_secs(5),
    )
    .await
    .expect("an answer");
    assert_eq!(code, "0", "{message}");
    // The holder's stream reset and the server's release of its body race
    // the next call; on a loaded machine give them a few seconds.
    let mut body = frame_header(200_000);
    body.extend_from_slice(&vec![0u8; 200_000]);
    let body = Bytes::from(body);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, _) = raw_call(
            addr,
            "/fathom.v1.Retrieval/BatchSearch",
            body.clone(),
            true,
            Duration::from_secs(5),
        )
        .await
        .expect("an answer");
        if code != "8" {
            break;
        }
        assert!(Instant::now() < deadline, "the budget was not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_strings_are_not_echoed() {
    let (server, client) = serve(
        &[("items", prebuilt("v0"))],
        None,
        config(Limits::default(), false),
    )
    .await;
    let id = "x".repeat(15_000_000);
    let e = client.get_items("items", &[id]).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(
        e.to_string().len() <= MAX_STATUS_MESSAGE + 40,
        "{}",
        e.to_string().len()
    );

    let name = "n".repeat(1 << 20);
    let q = queries(1, DIM, 2).remove(0);
    let e = client.search(&name, &q, 5, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(
        e.to_string().len() <= MAX_STATUS_MESSAGE + 40,
        "{}",
        e.to_string().len()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_protobuf_are_invalid_argument() {
    let (server, _client) = serve(
        &[("items", prebuilt("v0"))],
        None,
        config(Limits::default(), false),
    )
    .await;
    let garbage = [0xffu8; 12];
    let mut body = frame_header(garbage.len() as u32);
    body.extend_from_slice(&garbage);
    for method in ["Search", "BatchSearch", "GetItems", "Reload"] {
        let (code, message) = raw_call(
            server.local_addr(),
            &format!("/fathom.v1.Retrieval/{method}"),
            Bytes::from(body.clone()),
            true,
            Duration::from_secs(5),
        )
        .await
        .expect("an answer");
        assert_eq!(code, "3", "{method}: {message}");
    }
    // A well-formed empty message still gets the handler's own answer.
    let (code, _) = raw_call(
        server.local_addr(),
        "/fathom.v1.Retrieval/ListIndexes",
        Bytes::from(frame_header(0)),
        true,
        Duration::from_secs(5),
    )
    .await
    .expect("an answer");
    assert_eq!(code, "0");
    server.shutdown().await.unwrap();
}

/// Read from `s` until it is closed (`true`) or `limit` passes (`false`).
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_idle_ones_closed() {
    let config = ServeConfig {
        max_connections: 3,
        idle_timeout: Some(Duration::from_millis(300)),
        ..config(Limits::default(), false)
    };
    let (server, _) = serve(&[("items", prebuilt("v0"))], None, config).await;
    // The harness's own client connection timed out idle meanwhile, or will.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let addr = server.local_addr();
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "a connection over the cap was kept open"
    );
    for s in &mut silent {
        assert!(
            closed_within(s, Duration::from_secs(3)).await,
            "an idle connection was kept open"
        );
    }
    // Room again, and a working client is not cut while it works.
    let client = Client::connect(&format!("http://{addr}"), Duration::from_secs(5))
        .await
        .unwrap();
    let q = queries(1, DIM, 2).remove(0);
    for _ in 0..20 {
        assert_eq!(client.search("items", &q, 5, 0).await.unwrap().len(), 5);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = server.metrics().render();
    assert!(
        metrics.contains("fathom_connections_refused_total 1"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}
