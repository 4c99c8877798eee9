//! The one Realtime API test client: connect to `/v1/realtime`, send and receive JSON events,
//! encode and decode pcm16 audio. Used by every test that talks to a server as an agent
//! builder's app would.

use std::time::Duration;

use base64::Engine as _;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// The public demo key a server without `server.api_keys` accepts.
pub const KEY: &str = "antiphon-demo-key";

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The upgrade request: bearer `key` if any, the beta dialect's header if `beta`.
pub fn request(port: u16, key: Option<&str>, beta: bool) -> Request {
    let mut req = format!("ws://127.0.0.1:{port}/v1/realtime?model=test")
        .into_client_request()
        .expect("a valid URL");
    if let Some(k) = key {
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {k}").parse().expect("header"),
        );
    }
    if beta {
        req.headers_mut()
            .insert("OpenAI-Beta", "realtime=v1".parse().expect("header"));
    }
    req
}

/// A session with the demo key.
pub async fn connect(port: u16, beta: bool) -> Ws {
    let (ws, _) = connect_async(request(port, Some(KEY), beta))
        .await
        .expect("connect");
    ws
}

/// Like [`connect`], but retries a 503 for up to 5 s: a session that just closed may hold
/// its engine leases a moment longer.
pub async fn connect_when_free(port: u16) -> Ws {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match connect_async(request(port, Some(KEY), false)).await {
            Ok((ws, _)) => return ws,
            Err(tungstenite::Error::Http(r))
                if r.status() == 503 && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("connect: {e:?}"),
        }
    }
}

/// The next JSON event before `deadline` (pings and binary frames skipped).
pub async fn recv_until<S>(rx: &mut S, deadline: tokio::time::Instant) -> Value
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout_at(deadline, rx.next())
            .await
            .expect("server event before the deadline")
            .expect("stream open")
            .expect("no ws error");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).expect("server sends JSON");
        }
    }
}

/// The next JSON event within 5 s.
pub async fn recv<S>(rx: &mut S) -> Value
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    recv_until(rx, tokio::time::Instant::now() + Duration::from_secs(5)).await
}

/// The next event, which must be of type `expected` and carry an `event_id`.
pub async fn recv_type<S>(rx: &mut S, expected: &str) -> Value
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let v = recv(rx).await;
    assert_eq!(v["type"], expected, "got {v}");
    assert!(
        v["event_id"].as_str().is_some_and(|s| !s.is_empty()),
        "event_id missing in {v}"
    );
    v
}

/// Sends one client event.
pub async fn send<S>(tx: &mut S, v: Value)
where
    S: Sink<Message> + Unpin,
    S::Error: std::fmt::Debug,
{
    tx.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// f32 samples as base64 pcm16 (what `input_audio_buffer.append` carries).
pub fn pcm16(samples: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(samples.len() * 2);
    antiphon_kernels::pcm::f32_to_pcm16le(samples, &mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An audio delta's base64 pcm16 as f32 samples.
pub fn decode_pcm16(b64: &str) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("audio delta is base64");
    let mut out = Vec::with_capacity(bytes.len() / 2);
    antiphon_kernels::pcm::pcm16le_to_f32(&bytes, &mut out);
    out
}
