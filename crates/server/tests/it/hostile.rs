//! Hostile and careless clients: huge messages held half-sent, huge
//! strings, bytes that are not protobuf, and connections that say nothing.

use crate::common;

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
        timeouts: fathom_server::ConnectionTimeouts {
            idle: Some(Duration::from_millis(300)),
            ..Default::default()
        },
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
    // At the cap, a new connection takes the place of the one idle longest.
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut silent[0], Duration::from_millis(250)).await,
        "the oldest idle connection was not closed to make room"
    );
    // Idle ones are closed after the idle timeout.
    for s in silent.iter_mut().skip(1).chain([&mut extra]) {
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
    drop(client);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // When every open connection has a call running, a new one is refused.
    let mut busy = Vec::new();
    for _ in 0..3 {
        let (mut h2c, driver) = h2_connection(addr, DEFAULT_WINDOW).await;
        let call = start_call(&mut h2c, addr, "/fathom.v1.Retrieval/Search", None);
        busy.push((h2c, driver, call));
    }
    eventually("three calls running", Duration::from_secs(5), || async {
        server.in_flight() == 3
    })
    .await;
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "a connection over the cap was kept open while every open one was busy"
    );
    let metrics = server.metrics().render();
    assert!(
        metrics.contains("fathom_connections_refused_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fathom_connections_evicted_total 1"),
        "{metrics}"
    );
    drop(busy);
    server.shutdown().await.unwrap();
}

/// A gRPC message: the frame header, then `msg` encoded.
fn grpc_message(msg: &impl prost::Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut framed = frame_header(body.len() as u32);
    framed.extend_from_slice(&body);
    Bytes::from(framed)
}

/// HTTP/2's default stream window.
const DEFAULT_WINDOW: u32 = 65_535;

/// An HTTP/2 connection by hand, with stream windows of `window` bytes (0:
/// its client never reads what it is sent, so no answer's message reaches
/// it), and the task driving it.
async fn h2_connection(
    addr: std::net::SocketAddr,
    window: u32,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (client.ready().await.unwrap(), driver)
}

/// Start a call on `client`: its headers, then `body` unless it is `None`
/// (a call whose message never comes).
fn start_call(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: std::net::SocketAddr,
    path: &str,
    body: Option<Bytes>,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (answer, mut send) = client.send_request(req, false).unwrap();
    if let Some(body) = body {
        send.send_data(body, true).unwrap();
    }
    (answer, send)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_answers_hold_their_slots_until_the_send_timeout_closes_the_connection() {
    let limits = Limits {
        max_concurrency: 8,
        max_calls_per_connection: 4,
        max_batch: 4096,
        ..Limits::default()
    };
    let config = ServeConfig {
        timeouts: fathom_server::ConnectionTimeouts {
            send: Duration::from_secs(2),
            ..Default::default()
        },
        ..config(limits, false)
    };
    let (server, client) = serve(&[("items", prebuilt("v0"))], None, config).await;
    let addr = server.local_addr();
    let (mut unread, driver) = h2_connection(addr, 0).await;
    // Each answer holds every item: tens of kB, which a window of 0 blocks.
    let ids: Vec<String> = (1..=N).map(|i| format!("v0:{i:06}")).collect();
    let get = grpc_message(&fathom_server::proto::GetItemsRequest {
        index: "items".into(),
        ids,
    });
    let mut calls = Vec::new();
    for _ in 0..6 {
        calls.push(start_call(
            &mut unread,
            addr,
            "/fathom.v1.Retrieval/GetItems",
            Some(get.clone()),
        ));
    }
    // Four answers wait unread, each holding its slot; the connection's
    // share is spent, so its two other calls are refused.
    eventually(
        "four unread answers counted in flight",
        Duration::from_secs(5),
        || async { server.in_flight() == 4 },
    )
    .await;
    let mut refused = 0;
    let mut waiting = Vec::new();
    for (answer, send) in calls {
        let resp = tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .expect("headers in time")
            .expect("an answer");
        match resp.headers().get("grpc-status").map(|v| v.as_bytes()) {
            Some(b"8") => refused += 1,
            Some(other) => panic!("unexpected status {other:?}"),
            None => waiting.push((resp, send)),
        }
    }
    assert_eq!(refused, 2, "calls over the connection's share are refused");
    assert_eq!(server.in_flight(), 4, "unread answers keep their slots");
    // Other clients still have slots.
    let q = queries(1, DIM, 2).remove(0);
    assert_eq!(client.search("items", &q, 5, 0).await.unwrap().len(), 5);
    // The connection that reads nothing is closed after the send timeout,
    // and its slots come back.
    eventually(
        "the connection with unread answers closed",
        Duration::from_secs(8),
        || async { driver.is_finished() },
    )
    .await;
    eventually("slots given back", Duration::from_secs(5), || async {
        server.in_flight() == 0
    })
    .await;
    drop(waiting);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_whose_message_never_comes_cannot_hold_every_slot() {
    let limits = Limits {
        max_concurrency: 16,
        max_calls_per_connection: 4,
        request_body_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (server, client) = serve(&[("items", prebuilt("v0"))], None, config(limits, false)).await;
    let addr = server.local_addr();
    // Three connections open ten calls each, headers only.
    let mut held = Vec::new();
    for _ in 0..3 {
        let (mut h2c, driver) = h2_connection(addr, DEFAULT_WINDOW).await;
        let mut calls = Vec::new();
        for _ in 0..10 {
            calls.push(start_call(
                &mut h2c,
                addr,
                "/fathom.v1.Retrieval/Search",
                None,
            ));
        }
        held.push((h2c, driver, calls));
    }
    // Each connection holds its share of the slots, and the gauge says so.
    eventually(
        "the body-less calls counted in flight",
        Duration::from_secs(5),
        || async { server.in_flight() == 12 },
    )
    .await;
    // A new client is served meanwhile.
    let q = queries(1, DIM, 2).remove(0);
    assert_eq!(client.search("items", &q, 5, 0).await.unwrap().len(), 5);
    // A call whose message never comes ends at the body timeout.
    let mut codes = Vec::new();
    for (_, _, calls) in &mut held {
        for (answer, _) in calls.drain(..) {
            let resp = tokio::time::timeout(Duration::from_secs(5), answer)
                .await
                .expect("an answer in time")
                .expect("an answer");
            let code = match resp.headers().get("grpc-status") {
                Some(c) => c.to_str().unwrap().to_string(),
                None => {
                    let mut body = resp.into_body();
                    while body.data().await.is_some() {}
                    let trailers = body.trailers().await.unwrap().unwrap_or_default();
                    trailers
                        .get("grpc-status")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default()
                }
            };
            codes.push(code);
        }
    }
    assert_eq!(codes.iter().filter(|c| *c == "4").count(), 12, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| *c == "8").count(), 18, "{codes:?}");
    eventually("slots given back", Duration::from_secs(5), || async {
        server.in_flight() == 0
    })
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_make_room_for_new_clients() {
    let config = ServeConfig {
        max_connections: 4,
        timeouts: fathom_server::ConnectionTimeouts {
            first_request: Duration::from_secs(30),
            ..Default::default()
        },
        ..config(Limits::default(), false)
    };
    let (server, _) = serve(&[("items", prebuilt("v0"))], None, config).await;
    let addr = server.local_addr();
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Every place is taken by a socket that says nothing; a new client is
    // served all the same, in place of the one idle for longest.
    let client = Client::connect(&format!("http://{addr}"), Duration::from_secs(5))
        .await
        .unwrap();
    let q = queries(1, DIM, 2).remove(0);
    assert_eq!(client.search("items", &q, 5, 0).await.unwrap().len(), 5);
    assert!(
        closed_within(&mut silent[0], Duration::from_secs(2)).await,
        "the oldest idle socket was kept open"
    );
    let metrics = server.metrics().render();
    assert!(
        !metrics.contains("fathom_connections_evicted_total 0"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_request_is_closed() {
    let config = ServeConfig {
        timeouts: fathom_server::ConnectionTimeouts {
            first_request: Duration::from_millis(500),
            ..Default::default()
        },
        ..config(Limits::default(), false)
    };
    let (server, _) = serve(&[("items", prebuilt("v0"))], None, config).await;
    let addr = server.local_addr();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Bytes trickled slowly never make a request.
    let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let trickling = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for b in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
            if trickle.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "a silent connection was kept past the first-request timeout"
    );
    tokio::time::timeout(Duration::from_secs(8), trickling)
        .await
        .expect("the trickling connection was closed")
        .unwrap();
    server.shutdown().await.unwrap();
}
