//! `/v1/twilio` against the real `antiphon serve` binary with no engines wired: auth, stream
//! order, bad input and hang-ups, spoken by a small Rust client in Twilio's message shapes.
//! (The spoken turn, TTFB and barge-in through real engines and a third-party Twilio
//! simulator are in twilio_streamdouble.rs.)

#![allow(
    clippy::unwrap_used,
    reason = "an integration test: a failed unwrap is a failed test"
)]

mod common;

use common::{NO_ENGINES, ServerOptions, TestServer, http_get, metric};

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

const KEY: &str = "antiphon-demo-key";
const SID: &str = "MZ0123456789abcdef0123456789abcdef";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn error_count(metrics: &str, code: &str) -> i64 {
    metric(
        metrics,
        &format!("antiphon_twilio_protocol_errors_total{{transport=\"twilio\",code=\"{code}\"}}"),
    )
}

async fn twilio_sessions(port: u16) -> i64 {
    metric(
        &http_get(port, "/metrics").await,
        "antiphon_sessions{transport=\"twilio\"}",
    )
}

async fn open(port: u16, query: &str) -> Ws {
    let (ws, _) = connect_async(format!("ws://127.0.0.1:{port}/v1/twilio{query}"))
        .await
        .expect("connect");
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

fn connected() -> Value {
    json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
}

fn start_msg(encoding: &str, rate: u32, params: Value) -> Value {
    json!({
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC0123456789abcdef0123456789abcdef",
            "streamSid": SID,
            "callSid": "CA0123456789abcdef0123456789abcdef",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": encoding, "sampleRate": rate, "channels": 1},
            "customParameters": params
        },
        "streamSid": SID
    })
}

fn media(seq: u32, ts: u32) -> Value {
    json!({
        "event": "media",
        "sequenceNumber": seq.to_string(),
        "media": {"track": "inbound", "chunk": seq.to_string(), "timestamp": ts.to_string(),
                  // 160 bytes of mu-law silence.
                  "payload": "/".repeat(212) + "/w=="},
        "streamSid": SID
    })
}

/// Waits for the server to close the socket; returns the close code (None: no close frame).
async fn closed_with(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("server closes in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return None,
        }
    }
}

/// Polls until the Twilio sessions gauge reads `n` (sessions end asynchronously).
async fn wait_sessions(port: u16, n: i64) {
    for _ in 0..100 {
        if twilio_sessions(port).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("twilio sessions gauge never reached {n}");
}

#[tokio::test]
async fn key_is_checked_in_custom_parameters_or_on_the_upgrade() {
    let server = TestServer::without_engines().await;
    let port = server.port;

    // A wrong key offered on the upgrade is refused before it.
    match connect_async(format!("ws://127.0.0.1:{port}/v1/twilio?api_key=wrong")).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }

    // No key anywhere: refused at `start`, no session opened.
    for params in [json!({}), json!({"api_key": "wrong"})] {
        let mut ws = open(port, "").await;
        send(&mut ws, connected()).await;
        send(&mut ws, start_msg("audio/x-mulaw", 8000, params)).await;
        assert_eq!(closed_with(&mut ws).await, Some(CloseCode::Policy));
    }
    let m = http_get(port, "/metrics").await;
    assert_eq!(
        metric(
            &m,
            "antiphon_sessions_refused_total{transport=\"twilio\",reason=\"auth\"}"
        ),
        3,
        "{m}"
    );
    assert_eq!(twilio_sessions(port).await, 0);

    // The key as a <Parameter>: a session opens; `stop` ends it with a normal close.
    let mut ws = open(port, "").await;
    send(&mut ws, connected()).await;
    send(
        &mut ws,
        start_msg(
            "audio/x-mulaw",
            8000,
            json!({"api_key": KEY, "caller": "x"}),
        ),
    )
    .await;
    send(&mut ws, media(2, 0)).await;
    wait_sessions(port, 1).await;
    send(
        &mut ws,
        json!({"event": "stop", "sequenceNumber": "3", "streamSid": SID,
               "stop": {"accountSid": "AC1", "callSid": "CA1"}}),
    )
    .await;
    assert_eq!(closed_with(&mut ws).await, Some(CloseCode::Normal));
    wait_sessions(port, 0).await;

    // The key on the upgrade (for clients that can send one): no parameter needed.
    let mut ws = open(port, &format!("?api_key={KEY}")).await;
    send(&mut ws, start_msg("audio/x-mulaw", 8000, json!({}))).await;
    wait_sessions(port, 1).await;
    drop(ws);
    wait_sessions(port, 0).await;
}

/// Twilio's own signer: `RequestValidator` from the `twilio` Python SDK (PyPI twilio==9.13.0,
/// installed without its HTTP dependencies by tests/twilio/setup-venv.sh).
fn twilio_sdk_signature(auth_token: &str, url: &str) -> String {
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/twilio-venv/bin/python");
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import sys; from twilio.request_validator import RequestValidator; \
             print(RequestValidator(sys.argv[1]).compute_signature(sys.argv[2], {}))",
            auth_token,
            url,
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): run tests/twilio/setup-venv.sh (scripts/test.sh does)",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "twilio SDK signer failed (is twilio==9.13.0 in the venv? tests/twilio/setup-venv.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn open_signed(port: u16, signature: Option<&str>) -> Result<Ws, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://127.0.0.1:{port}/v1/twilio")
        .into_client_request()
        .unwrap();
    if let Some(signature) = signature {
        request
            .headers_mut()
            .insert("X-Twilio-Signature", signature.parse().unwrap());
    }
    connect_async(request).await.map(|(ws, _)| ws)
}

#[tokio::test]
async fn with_an_auth_token_only_twilio_signed_upgrades_get_through() {
    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    let config = format!("{NO_ENGINES}[twilio]\nauth_token = \"{TOKEN}\"\n");
    let server = TestServer::start(ServerOptions {
        config: &config,
        ..ServerOptions::default()
    })
    .await;
    let port = server.port;
    // What Twilio would sign for this server: the <Stream url> as the proxy-less server sees it.
    let url = format!("wss://127.0.0.1:{port}/v1/twilio");
    let forbidden = |result: Result<Ws, tungstenite::Error>| match result {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    };
    forbidden(open_signed(port, None).await);
    forbidden(open_signed(port, Some(&twilio_sdk_signature("wrong-token", &url))).await);
    forbidden(
        open_signed(
            port,
            Some(&twilio_sdk_signature(TOKEN, &format!("{url}/other"))),
        )
        .await,
    );
    forbidden(open_signed(port, Some("not base64 at all")).await);
    let m = http_get(port, "/metrics").await;
    assert_eq!(
        metric(
            &m,
            "antiphon_sessions_refused_total{transport=\"twilio\",reason=\"signature\"}"
        ),
        4,
        "{m}"
    );

    // Signed by Twilio's SDK with the right token: the call goes on as usual (key at `start`).
    let mut ws = open_signed(port, Some(&twilio_sdk_signature(TOKEN, &url)))
        .await
        .expect("a signed upgrade is accepted");
    send(&mut ws, connected()).await;
    send(
        &mut ws,
        start_msg("audio/x-mulaw", 8000, json!({"api_key": KEY})),
    )
    .await;
    wait_sessions(port, 1).await;
    drop(ws);
    wait_sessions(port, 0).await;
}

#[tokio::test]
async fn bad_input_is_rejected_counted_and_the_call_goes_on() {
    let server = TestServer::without_engines().await;
    let port = server.port;
    let mut ws = open(port, "").await;
    send(&mut ws, connected()).await;
    // Before `start`: media is out of order.
    send(&mut ws, media(1, 0)).await;
    send(
        &mut ws,
        start_msg("audio/x-mulaw", 8000, json!({"api_key": KEY})),
    )
    .await;
    wait_sessions(port, 1).await;
    for text in [
        "{not json".to_string(),
        json!({"event": "ringing"}).to_string(),
        json!({"event": "media", "streamSid": SID,
               "media": {"timestamp": "20", "payload": "!!!"}})
        .to_string(),
        json!({"event": "media", "streamSid": "MZother",
               "media": {"timestamp": "20", "payload": ""}})
        .to_string(),
        json!({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "55"}}).to_string(),
        json!({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "5"}}).to_string(),
        start_msg("audio/x-mulaw", 8000, json!({"api_key": KEY})).to_string(),
        // Over the 64 KiB decode limit, under the socket's hard limit.
        json!({"event": "media", "streamSid": SID,
               "media": {"timestamp": "20", "payload": "A".repeat(100_000)}})
        .to_string(),
    ] {
        ws.send(Message::Text(text.into())).await.expect("send");
    }
    ws.send(Message::Binary(vec![0xFF; 160].into()))
        .await
        .expect("send");
    // Still alive: media flows and the metrics tell every rejection apart.
    send(&mut ws, media(9, 20)).await;
    let mut counted = false;
    for _ in 0..100 {
        let m = http_get(port, "/metrics").await;
        if error_count(&m, "binary_frame") == 1 {
            for code in [
                "event_before_start",
                "malformed_json",
                "unknown_event",
                "invalid_base64",
                "wrong_stream_sid",
                "invalid_dtmf",
                "duplicate_start",
                "message_too_large",
            ] {
                assert_eq!(error_count(&m, code), 1, "{code}: {m}");
            }
            assert_eq!(
                metric(&m, "antiphon_dtmf_total{transport=\"twilio\"}"),
                1,
                "{m}"
            );
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counted, "rejections were not counted");
    assert_eq!(twilio_sessions(port).await, 1);

    // A hang-up without `stop` ends the session and is counted too.
    drop(ws);
    wait_sessions(port, 0).await;
    let m = http_get(port, "/metrics").await;
    assert_eq!(error_count(&m, "disconnect_without_stop"), 1, "{m}");
}

/// Issue 17: a burst of DTMF (more than the session's 256-input queue) used to drop keys;
/// now every one reaches the session, in order, and the call goes on.
#[tokio::test]
async fn a_dtmf_burst_loses_no_key() {
    const KEYS: i64 = 2000;
    let server = TestServer::without_engines().await;
    let port = server.port;
    let mut ws = open(port, "").await;
    send(&mut ws, connected()).await;
    send(
        &mut ws,
        start_msg("audio/x-mulaw", 8000, json!({"api_key": KEY})),
    )
    .await;
    wait_sessions(port, 1).await;
    for n in 0..KEYS {
        let digit = char::from(b'0' + (n % 10) as u8).to_string();
        let msg = json!({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": digit}});
        ws.feed(Message::Text(msg.to_string().into()))
            .await
            .expect("queue a DTMF message");
    }
    ws.flush().await.expect("send the burst");
    send(&mut ws, media(2, 20)).await;
    let mut reached = 0;
    for _ in 0..200 {
        reached = metric(
            &http_get(port, "/metrics").await,
            "antiphon_dtmf_total{transport=\"twilio\"}",
        );
        if reached == KEYS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reached, KEYS, "keys that reached the session");
    assert_eq!(twilio_sessions(port).await, 1, "the call goes on");
}

/// A frame over the socket's hard limit (1 MiB) ends the call with a Close frame that says
/// why (1009), not a dropped connection.
#[tokio::test]
async fn an_oversized_frame_gets_a_close_frame() {
    let server = TestServer::without_engines().await;
    let mut ws = open(server.port, "").await;
    send(&mut ws, connected()).await;
    // The server may answer and close while the frame is still being written: the rest of the
    // write then fails (broken pipe), and the Close frame is already waiting to be read.
    if let Err(e) = ws.send(Message::Text("x".repeat(2 << 20).into())).await {
        assert!(
            matches!(&e, tungstenite::Error::Io(io) if matches!(io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)),
            "send: {e:?}"
        );
    }
    assert_eq!(closed_with(&mut ws).await, Some(CloseCode::Size));
}

#[tokio::test]
async fn a_stream_in_another_format_is_closed_as_unsupported() {
    let server = TestServer::without_engines().await;
    let mut ws = open(server.port, "").await;
    send(&mut ws, connected()).await;
    send(
        &mut ws,
        start_msg("audio/l16", 16000, json!({"api_key": KEY})),
    )
    .await;
    assert_eq!(closed_with(&mut ws).await, Some(CloseCode::Unsupported));
    let m = http_get(server.port, "/metrics").await;
    assert_eq!(error_count(&m, "unsupported_media_format"), 1, "{m}");
    assert_eq!(twilio_sessions(server.port).await, 0);
}
