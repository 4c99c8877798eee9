//! Runs the real `antiphon serve` binary on 127.0.0.1:0 and talks the Realtime protocol to it
//! over WebSocket, as a client would. No engines are wired, so this covers the protocol, auth,
//! limits, manual turns and session lifecycle.

mod common;

use common::realtime::{KEY, connect, recv_type, request, send};
use common::{TestServer, http_get};

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

fn sessions_gauge(metrics: &str) -> i64 {
    metrics
        .lines()
        .find(|l| l.starts_with("antiphon_sessions{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Issue 17: a connection that sends nothing does not hold a session slot forever.
#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let config = format!("{}[server]\nidle_timeout_s = 1\n", common::NO_ENGINES);
    let server = TestServer::start(common::ServerOptions {
        config: &config,
        ..common::ServerOptions::default()
    })
    .await;
    let mut ws = connect(server.port, false).await;
    recv_type(&mut ws, "session.created").await;
    let error = tokio::time::timeout(Duration::from_secs(10), recv_type(&mut ws, "error"))
        .await
        .expect("closed within the timeout");
    assert_eq!(error["error"]["code"], "session_idle_timeout");
    // The slot is back: the sessions gauge returns to zero.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = http_get(server.port, "/metrics").await;
        if sessions_gauge(&metrics) == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn auth_is_required_and_checked() {
    let server = TestServer::without_engines().await;
    for key in [None, Some("wrong-key")] {
        match connect_async(request(server.port, key, false)).await {
            Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
            other => panic!("expected 401, got {:?}", other.map(|_| ())),
        }
    }
    // Browsers pass the key as a subprotocol; the server must select `realtime`.
    let mut req = format!("ws://127.0.0.1:{}/v1/realtime", server.port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("realtime, openai-insecure-api-key.{KEY}")
            .parse()
            .unwrap(),
    );
    let (mut ws, resp) = connect_async(req).await.expect("subprotocol key accepted");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "realtime");
    recv_type(&mut ws, "session.created").await;
    // Health and metrics need no key.
    let health = http_get(server.port, "/healthz").await;
    assert!(
        health.contains(" 200 OK") && health.contains("\"status\":\"ok\""),
        "{health}"
    );
}

#[tokio::test]
async fn session_created_and_updated_in_both_dialects() {
    let server = TestServer::without_engines().await;

    let mut ga = connect(server.port, false).await;
    let created = recv_type(&mut ga, "session.created").await;
    assert_eq!(created["session"]["type"], "realtime");
    assert!(
        created["session"]["id"]
            .as_str()
            .unwrap()
            .starts_with("sess_")
    );
    assert_eq!(
        created["session"]["audio"]["input"]["format"],
        json!({"type": "audio/pcm", "rate": 24000})
    );
    send(
        &mut ga,
        json!({"type": "session.update", "session": {
            "type": "realtime",
            "instructions": "Be terse.",
            "audio": {"input": {"format": {"type": "audio/pcma"}, "turn_detection": null},
                      "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}}
        }}),
    )
    .await;
    let updated = recv_type(&mut ga, "session.updated").await;
    let s = &updated["session"];
    assert_eq!(s["instructions"], "Be terse.");
    assert_eq!(s["audio"]["input"]["format"]["type"], "audio/pcma");
    assert_eq!(s["audio"]["input"]["turn_detection"], Value::Null);
    assert_eq!(s["audio"]["output"]["format"]["type"], "audio/pcmu");
    assert_eq!(s["audio"]["output"]["voice"], "marin");

    let mut beta = connect(server.port, true).await;
    let created = recv_type(&mut beta, "session.created").await;
    assert_eq!(created["session"]["input_audio_format"], "pcm16");
    // The server's default turn detection is semantic_vad (config `[session] turn_detection`).
    assert_eq!(created["session"]["turn_detection"]["type"], "semantic_vad");
    assert_eq!(created["session"]["turn_detection"]["eagerness"], "auto");
    send(&mut beta, json!({"type": "session.update", "event_id": "u1", "session": {
        "input_audio_format": "g711_ulaw", "turn_detection": {"type": "server_vad", "silence_duration_ms": 800}
    }}))
    .await;
    let updated = recv_type(&mut beta, "session.updated").await;
    assert_eq!(updated["session"]["input_audio_format"], "g711_ulaw");
    assert_eq!(
        updated["session"]["turn_detection"]["silence_duration_ms"],
        800
    );
    assert_eq!(updated["session"]["turn_detection"]["threshold"], 0.5);
}

/// Issue 17: a frame over the hard size limit used to drop the TCP connection without a word;
/// now the client gets a Close frame with 1009 (message too big).
#[tokio::test]
async fn an_oversized_frame_gets_a_close_frame_saying_why() {
    use futures_util::StreamExt;
    let server = TestServer::without_engines().await;
    let mut ws = connect(server.port, false).await;
    recv_type(&mut ws, "session.created").await;
    let huge = "A".repeat(17 << 20);
    // The server may close while the frame is still going out: a send error is fine.
    let _ = ws.send(Message::Text(huge.into())).await;
    let close = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => continue,
                Err(e) => panic!("connection dropped without a Close frame: {e}"),
            }
        }
        None
    })
    .await
    .expect("a Close frame in time")
    .expect("a Close frame with a code");
    assert_eq!(u16::from(close.code), 1009, "{close:?}");
}

#[tokio::test]
async fn bad_input_gets_errors_and_the_session_continues() {
    let server = TestServer::without_engines().await;
    let mut ws = connect(server.port, false).await;
    recv_type(&mut ws, "session.created").await;

    ws.send(Message::Text("{not json".into())).await.unwrap();
    let e = recv_type(&mut ws, "error").await;
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(e["error"]["code"], "invalid_json");

    send(
        &mut ws,
        json!({"type": "no.such.event", "event_id": "evt_7"}),
    )
    .await;
    let e = recv_type(&mut ws, "error").await;
    assert_eq!(e["error"]["code"], "unknown_event_type");
    assert_eq!(e["error"]["event_id"], "evt_7");

    send(
        &mut ws,
        json!({"type": "input_audio_buffer.append", "event_id": "evt_8", "audio": "not base64!"}),
    )
    .await;
    let e = recv_type(&mut ws, "error").await;
    assert_eq!(e["error"]["code"], "invalid_base64");
    assert_eq!(e["error"]["event_id"], "evt_8");

    let big = "A".repeat(1_500_000);
    send(
        &mut ws,
        json!({"type": "input_audio_buffer.append", "audio": big}),
    )
    .await;
    let e = recv_type(&mut ws, "error").await;
    assert_eq!(e["error"]["code"], "message_too_large");

    ws.send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    let e = recv_type(&mut ws, "error").await;
    assert_eq!(e["error"]["code"], "binary_not_supported");

    send(
        &mut ws,
        json!({"type": "session.update", "session": {"instructions": "still here"}}),
    )
    .await;
    let u = recv_type(&mut ws, "session.updated").await;
    assert_eq!(u["session"]["instructions"], "still here");
}

#[tokio::test]
async fn manual_turns_run_without_engines() {
    let server = TestServer::without_engines().await;
    let mut ws = connect(server.port, false).await;
    recv_type(&mut ws, "session.created").await;
    send(&mut ws, json!({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": null}}}})).await;
    recv_type(&mut ws, "session.updated").await;

    send(
        &mut ws,
        json!({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}}),
    )
    .await;
    let added = recv_type(&mut ws, "conversation.item.added").await;
    let first_id = added["item"]["id"].as_str().unwrap().to_string();
    assert_eq!(added["item"]["content"][0]["text"], "hello");
    recv_type(&mut ws, "conversation.item.done").await;

    send(
        &mut ws,
        json!({"type": "input_audio_buffer.commit", "event_id": "c0"}),
    )
    .await;
    let e = recv_type(&mut ws, "error").await;
    assert_eq!(e["error"]["code"], "input_audio_buffer_commit_empty");

    // 100 ms of 24 kHz pcm16 silence.
    let audio = base64_encode(&vec![0u8; 4800]);
    send(
        &mut ws,
        json!({"type": "input_audio_buffer.append", "audio": audio}),
    )
    .await;
    send(&mut ws, json!({"type": "input_audio_buffer.commit"})).await;
    let c = recv_type(&mut ws, "input_audio_buffer.committed").await;
    assert_eq!(c["previous_item_id"], first_id.as_str());
    let added = recv_type(&mut ws, "conversation.item.added").await;
    assert_eq!(added["item"]["content"][0]["type"], "input_audio");

    send(
        &mut ws,
        json!({"type": "input_audio_buffer.append", "audio": audio}),
    )
    .await;
    send(&mut ws, json!({"type": "input_audio_buffer.clear"})).await;
    recv_type(&mut ws, "input_audio_buffer.cleared").await;

    send(&mut ws, json!({"type": "conversation.item.truncate", "event_id": "t1", "item_id": "item_nope", "content_index": 0, "audio_end_ms": 10})).await;
    let e = recv_type(&mut ws, "error").await;
    assert_eq!(e["error"]["code"], "item_not_found");
    assert_eq!(e["error"]["event_id"], "t1");

    send(
        &mut ws,
        json!({"type": "response.create", "event_id": "r1"}),
    )
    .await;
    let e = recv_type(&mut ws, "error").await;
    assert_eq!(e["error"]["code"], "engine_unavailable");
    assert_eq!(e["error"]["event_id"], "r1");

    send(&mut ws, json!({"type": "response.cancel"})).await;
    let e = recv_type(&mut ws, "error").await;
    assert_eq!(e["error"]["code"], "response_cancel_not_active");

    send(
        &mut ws,
        json!({"type": "conversation.item.delete", "item_id": first_id}),
    )
    .await;
    let d = recv_type(&mut ws, "conversation.item.deleted").await;
    assert_eq!(d["item_id"], first_id.as_str());
}

#[tokio::test]
async fn abrupt_disconnect_frees_the_session() {
    let server = TestServer::without_engines().await;
    let mut a = connect(server.port, false).await;
    let mut b = connect(server.port, true).await;
    recv_type(&mut a, "session.created").await;
    recv_type(&mut b, "session.created").await;
    let metrics = http_get(server.port, "/metrics").await;
    assert_eq!(sessions_gauge(&metrics), 2, "{metrics}");
    assert!(
        metrics.contains("antiphon_turns_total") && metrics.contains("transport=\"websocket\"")
    );

    // Drop the TCP connections without a close handshake.
    drop(a);
    drop(b);
    let mut gauge = -1;
    for _ in 0..100 {
        gauge = sessions_gauge(&http_get(server.port, "/metrics").await);
        if gauge == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gauge, 0, "sessions gauge did not return to 0");
    // And the server still takes new sessions.
    let mut c = connect(server.port, false).await;
    recv_type(&mut c, "session.created").await;
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
