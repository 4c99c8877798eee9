//! Graceful drain on a real server (issue 19): SIGTERM or `POST /admin/drain` stops admission
//! (new WebSocket sessions 503 `server_draining`, `/readyz` 503 with `draining: true`) while
//! the session in progress keeps going; the reply that was playing completes, and the process
//! exits 0 once its last call ends. When the grace runs out first, the client gets an `error`
//! event `server_shutting_down` and a Close frame 1001 before the process exits 0.
//! (The SIP side of the same is in `sip_call.rs`.)

mod common;

use common::realtime::{KEY, connect, recv_type, recv_until, request, send};
use common::{
    CI_LLM, NO_ENGINES, ServerOptions, TestServer, http_get, http_post, json_body, status_of,
};

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::{self, Message};

/// A new session is refused with 503 and the `server_draining` code.
async fn assert_new_sessions_refused(port: u16) {
    match connect_async(request(port, Some(KEY), false)).await {
        Err(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 503);
            let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("server_draining"), "{body}");
        }
        Ok(_) => panic!("a draining server admitted a new session"),
        Err(e) => panic!("expected a 503, got {e:?}"),
    }
}

async fn assert_draining_not_ready(port: u16) {
    let readyz = http_get(port, "/readyz").await;
    assert_eq!(status_of(&readyz), 503, "{readyz}");
    assert_eq!(json_body(&readyz)["draining"], true, "{readyz}");
    let healthz = http_get(port, "/healthz").await;
    assert_eq!(status_of(&healthz), 200, "draining is alive: {healthz}");
}

/// The server exits, with status 0, within 10 s (`when` says after what).
async fn assert_exits_0(server: &mut TestServer, when: &str) {
    let status = server
        .exit_status(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("the server did not exit {when}"));
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn sigterm_lets_the_reply_in_progress_finish_then_exits_0() {
    let config = format!("[server]\ndrain_grace_s = 120\n{CI_LLM}max_tokens = 48\n");
    let mut server = TestServer::start(ServerOptions {
        config: &config,
        ..ServerOptions::default()
    })
    .await;
    let port = server.port;
    let mut ws = connect(port, false).await;
    recv_type(&mut ws, "session.created").await;
    send(
        &mut ws,
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Tell me three facts about the moon."}]}}),
    )
    .await;
    send(&mut ws, json!({"type": "response.create"})).await;

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut deltas_before = 0;
    while deltas_before == 0 {
        let ev = recv_until(&mut ws, deadline).await;
        match ev["type"].as_str() {
            Some("response.output_audio.delta") => deltas_before += 1,
            Some("response.done") => panic!("the reply ended before any audio: {ev}"),
            _ => {}
        }
    }
    server.terminate();
    // The drain begins at once: nobody new is admitted, readiness says so.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_draining_not_ready(port).await;
    assert_new_sessions_refused(port).await;

    let mut deltas_after = 0;
    let done = loop {
        let ev = recv_until(&mut ws, deadline).await;
        match ev["type"].as_str() {
            Some("response.output_audio.delta") => deltas_after += 1,
            Some("response.done") => break ev,
            Some("error") => panic!("the session was told to end during its reply: {ev}"),
            _ => {}
        }
    };
    assert_eq!(
        done["response"]["status"], "completed",
        "the reply completes during the drain: {done}"
    );
    assert!(deltas_after > 0, "reply audio kept coming after SIGTERM");
    assert_eq!(
        server.exit_status(Duration::from_millis(500)).await,
        None,
        "the server waits while a call is open"
    );
    ws.close(None).await.expect("close");
    assert_exits_0(&mut server, "once its last call ended").await;
}

#[tokio::test]
async fn when_the_grace_runs_out_the_client_is_told_and_the_server_exits_0() {
    let config =
        format!("[server]\ndrain_grace_s = 1\nadmin_keys = [\"admin-secret\"]\n{NO_ENGINES}");
    let mut server = TestServer::start(ServerOptions {
        config: &config,
        ..ServerOptions::default()
    })
    .await;
    let port = server.port;
    let mut ws = connect(port, false).await;
    recv_type(&mut ws, "session.created").await;

    // The admin endpoint takes the admin key only (not an API key, not none).
    for key in [None, Some(KEY)] {
        let r = http_post(port, "/admin/drain", key).await;
        assert_eq!(status_of(&r), 401, "{r}");
    }
    let r = http_post(port, "/admin/drain", Some("admin-secret")).await;
    assert_eq!(status_of(&r), 202, "{r}");
    let body = json_body(&r);
    assert_eq!(body["draining"], true);
    assert_eq!(body["open_calls"], 1);
    assert_draining_not_ready(port).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let ev = recv_until(&mut ws, deadline).await;
    assert_eq!(ev["type"], "error", "{ev}");
    assert_eq!(ev["error"]["code"], "server_shutting_down", "{ev}");
    let close = tokio::time::timeout_at(deadline, ws.next())
        .await
        .expect("a close frame in time");
    match close {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1001, "going away: {frame:?}");
        }
        other => panic!("expected a Close frame, got {other:?}"),
    }
    assert_exits_0(&mut server, "after the grace").await;
}

#[tokio::test]
async fn without_admin_keys_the_drain_endpoint_is_off() {
    let server = TestServer::without_engines().await;
    let r = http_post(server.port, "/admin/drain", Some(KEY)).await;
    assert_eq!(status_of(&r), 403, "{r}");
    assert_eq!(json_body(&r)["error"]["code"], "admin_disabled");
    let readyz = http_get(server.port, "/readyz").await;
    assert_eq!(json_body(&readyz)["draining"], false, "{readyz}");
}
