//! The HTTP listener's limits on a real server (issue 17: 200 half-open sockets stayed open
//! forever, and at a low descriptor limit `/healthz` stopped answering):
//! - a connection that never finishes its request head is closed after the header-read timeout;
//! - at `max_connections` open (WebSockets count) the next connection gets a 503 saying why,
//!   and once one closes the server answers again.

mod common;

use common::realtime::{connect, recv_type};
use common::{ServerOptions, TestServer, http_get, metric};

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const CONFIG: &str = "[asr]\nenabled = false\n[llm]\nenabled = false\n[tts]\nenabled = false\n\
                      [server]\nmax_connections = 3\nheader_read_timeout_ms = 500\n";

/// Reads until the server closes the connection; how long that took, and what it sent.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let start = tokio::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(start + limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (start.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("still open after {limit:?}"),
        }
    }
}

#[tokio::test]
async fn a_slow_or_silent_client_is_closed_after_the_header_timeout() {
    let server = TestServer::start(ServerOptions {
        config: CONFIG,
        ..ServerOptions::default()
    })
    .await;
    // Half a request head, then nothing.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    // A connection that sends nothing at all.
    let mut silent = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    let (slow_after, _) = until_closed(&mut slow, Duration::from_secs(10)).await;
    let (silent_after, _) = until_closed(&mut silent, Duration::from_secs(10)).await;
    eprintln!("closed after {slow_after:?} (slow) and {silent_after:?} (silent)");
    assert!(slow_after >= Duration::from_millis(400), "{slow_after:?}");
    // A whole request is still served.
    let reply = http_get(server.port, "/healthz").await;
    assert_eq!(reply.split(' ').nth(1), Some("200"), "{reply}");
}

#[tokio::test]
async fn past_max_connections_a_new_connection_gets_503_and_healthz_recovers() {
    let server = TestServer::start(ServerOptions {
        config: CONFIG,
        ..ServerOptions::default()
    })
    .await;
    // Three WebSocket sessions hold the three connections (upgraded: no header timeout).
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let mut ws = connect(server.port, false).await;
        recv_type(&mut ws, "session.created").await;
        sessions.push(ws);
    }
    let mut fourth = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    fourth
        .write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let (_, reply) = until_closed(&mut fourth, Duration::from_secs(5)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("too_many_connections"), "{reply}");

    // One session ends: its connection's place is free again.
    let mut ws = sessions.pop().expect("a session");
    ws.close(None).await.expect("close");
    drop(ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let mut s = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .expect("connect");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
        let (_, reply) = until_closed(&mut s, Duration::from_secs(5)).await;
        let reply = String::from_utf8_lossy(&reply).to_string();
        if reply.split(' ').nth(1) == Some("200") {
            break reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never answered again: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        metric(
            &metrics,
            "antiphon_http_connections_refused_total{transport=\"http\"}"
        ) >= 1,
        "{metrics}"
    );
    // The two sessions' sockets and this request's.
    assert_eq!(
        metric(&metrics, "antiphon_http_connections{transport=\"http\"}"),
        3,
        "{metrics}"
    );
}
