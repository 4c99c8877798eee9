//! The IO half of one simulated caller: opens the WebSocket, configures the session, then sends
//! a 20 ms frame every 20 ms (real-time pace, as a microphone would) and hands every server
//! event to the [`SessionCore`], stamped with its arrival instant.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::clips::{FRAME_MS, FRAME_SAMPLES};
use crate::record::{ErrorKind, ErrorRecord, TurnRecord};
use crate::session::{Frame, SessionCore, SessionPlan};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a session connects and configures itself.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub key: Option<String>,
    /// `max_output_tokens` in `session.update` (server default when `None`).
    pub max_output_tokens: Option<u32>,
    pub instructions: Option<String>,
    /// `audio.input.transcription.model`; `None` leaves transcription off (no ASR latency).
    pub transcription_model: Option<String>,
    /// `audio.input.turn_detection` to ask for (`{"type": "server_vad"}`, `{"type":
    /// "semantic_vad", "eagerness": "high"}`, …); `None` keeps the server's default.
    pub turn_detection: Option<Value>,
}

/// Reads `--turn-detection`: `default` (the server's), `server_vad`, `server_vad:<ms>`
/// (silence duration), `semantic_vad` or `semantic_vad:<eagerness>`.
pub fn parse_turn_detection(s: &str) -> Result<Option<Value>, String> {
    let (kind, arg) = s.split_once(':').map_or((s, None), |(k, a)| (k, Some(a)));
    match (kind, arg) {
        ("default", None) => Ok(None),
        ("server_vad", None) => Ok(Some(json!({"type": "server_vad"}))),
        ("server_vad", Some(ms)) => {
            let ms: u32 = ms
                .parse()
                .map_err(|_| format!("server_vad:{ms}: silence must be whole milliseconds"))?;
            Ok(Some(
                json!({"type": "server_vad", "silence_duration_ms": ms}),
            ))
        }
        ("semantic_vad", None) => Ok(Some(json!({"type": "semantic_vad"}))),
        ("semantic_vad", Some(e)) if ["low", "medium", "high", "auto"].contains(&e) => {
            Ok(Some(json!({"type": "semantic_vad", "eagerness": e})))
        }
        _ => Err(format!(
            "unknown turn detection {s:?}: default, server_vad[:ms], semantic_vad[:low|medium|high|auto]"
        )),
    }
}

/// Everything one session produced.
#[derive(Debug, Default)]
pub struct SessionOutcome {
    pub turns: Vec<TurnRecord>,
    pub errors: Vec<ErrorRecord>,
    /// Seconds the socket was open (the denominator of CPU per session-minute).
    pub connected_s: f64,
    /// Largest delay of a frame behind its real-time schedule: a loaded client skews results.
    pub max_send_lag_ms: f64,
}

/// How long the handshake plus `session.update` round trip may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// A client this far behind its frame schedule resynchronises instead of bursting.
const RESYNC_AFTER: Duration = Duration::from_millis(200);

fn pcm16_base64(samples: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(samples.len() * 2);
    antiphon_kernels::pcm::f32_to_pcm16le(samples, &mut bytes);
    BASE64.encode(bytes)
}

fn session_update(endpoint: &Endpoint) -> Value {
    let mut input = json!({
        "format": {"type": "audio/pcm", "rate": 24000},
    });
    if let Some(td) = &endpoint.turn_detection {
        input["turn_detection"] = td.clone();
    }
    if let Some(model) = &endpoint.transcription_model {
        input["transcription"] = json!({ "model": model });
    }
    let mut session = json!({
        "type": "realtime",
        "audio": {
            "input": input,
            "output": {"format": {"type": "audio/pcm", "rate": 24000}},
        },
    });
    if let Some(n) = endpoint.max_output_tokens {
        session["max_output_tokens"] = json!(n);
    }
    if let Some(i) = &endpoint.instructions {
        session["instructions"] = json!(i);
    }
    json!({"type": "session.update", "session": session})
}

async fn next_json(ws: &mut Ws) -> Result<Value, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str()).map_err(|e| format!("bad JSON: {e}"));
            }
            Some(Ok(Message::Close(c))) => return Err(format!("closed: {c:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection ended".into()),
        }
    }
}

/// Connects and waits for `session.updated`.
async fn open(endpoint: &Endpoint) -> Result<Ws, String> {
    let mut req = endpoint
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("bad request for {}: {e}", endpoint.url))?;
    if let Some(key) = &endpoint.key {
        let value = format!("Bearer {key}")
            .parse()
            .map_err(|e| format!("API key is not a valid header value: {e}"))?;
        req.headers_mut().insert("Authorization", value);
    }
    let (mut ws, _) = connect_async(req).await.map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => format!("HTTP {}", r.status()),
        other => other.to_string(),
    })?;
    let created = next_json(&mut ws).await?;
    if created["type"] != "session.created" {
        return Err(format!("expected session.created, got {created}"));
    }
    ws.send(Message::Text(session_update(endpoint).to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let v = next_json(&mut ws).await?;
        match v["type"].as_str() {
            Some("session.updated") => return Ok(ws),
            Some("error") => return Err(format!("session.update refused: {v}")),
            _ => {}
        }
    }
}

/// Runs one session: waits until `start_at`, connects, speaks its plan, stops by `hard_stop`.
pub async fn run_session(
    endpoint: &Endpoint,
    plan: SessionPlan,
    start_at: tokio::time::Instant,
    hard_stop: tokio::time::Instant,
) -> SessionOutcome {
    tokio::time::sleep_until(start_at).await;
    let origin = plan.origin;
    let index = plan.index;
    let mut outcome = SessionOutcome::default();
    let opened = tokio::time::timeout(SETUP_TIMEOUT, open(endpoint)).await;
    let mut ws = match opened {
        Ok(Ok(ws)) => ws,
        failed => {
            let message = match failed {
                Ok(Err(m)) => m,
                _ => format!("no session.updated within {} s", SETUP_TIMEOUT.as_secs()),
            };
            outcome.errors.push(ErrorRecord {
                session: index,
                turn: None,
                at_ms: Instant::now()
                    .saturating_duration_since(origin)
                    .as_secs_f64()
                    * 1000.0,
                kind: ErrorKind::Connect,
                message,
            });
            return outcome;
        }
    };
    let connected = Instant::now();
    let mut core = SessionCore::new(plan, connected);
    let mut next_frame = tokio::time::Instant::now();
    let frame = Duration::from_millis(FRAME_MS);
    let silence = vec![0.0f32; FRAME_SAMPLES];
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(hard_stop) => {
                core.on_closed(Instant::now(), ErrorKind::Timeout,
                    "the step's hard deadline passed".into());
                break;
            }
            () = tokio::time::sleep_until(next_frame) => {
                let now = tokio::time::Instant::now();
                outcome.max_send_lag_ms = outcome
                    .max_send_lag_ms
                    .max(now.saturating_duration_since(next_frame).as_secs_f64() * 1000.0);
                let audio = match core.next_frame(now.into_std()) {
                    None => break,
                    Some(Frame::Speech(s)) => pcm16_base64(s),
                    Some(Frame::Silence) => pcm16_base64(&silence),
                };
                let msg = json!({"type": "input_audio_buffer.append", "audio": audio});
                if let Err(e) = ws.send(Message::Text(msg.to_string().into())).await {
                    core.on_closed(Instant::now(), ErrorKind::Closed, format!("send: {e}"));
                    break;
                }
                next_frame += frame;
                if next_frame + RESYNC_AFTER < tokio::time::Instant::now() {
                    next_frame = tokio::time::Instant::now();
                }
            }
            msg = ws.next() => {
                let now = Instant::now();
                match msg {
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(t.as_str()) {
                        Ok(v) => core.on_event(now, &v),
                        Err(e) => {
                            core.on_closed(now, ErrorKind::Protocol, format!("bad JSON: {e}"));
                            break;
                        }
                    },
                    Some(Ok(Message::Close(c))) => {
                        core.on_closed(now, ErrorKind::Closed, format!("server closed: {c:?}"));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        core.on_closed(now, ErrorKind::Closed, e.to_string());
                        break;
                    }
                    None => {
                        core.on_closed(now, ErrorKind::Closed, "connection ended".into());
                        break;
                    }
                }
            }
        }
    }
    let _ = ws.close(None).await;
    outcome.connected_s = connected.elapsed().as_secs_f64();
    let (turns, errors) = core.into_records();
    outcome.turns = turns;
    outcome.errors.extend(errors);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_detection_choices() {
        assert_eq!(parse_turn_detection("default"), Ok(None));
        assert_eq!(
            parse_turn_detection("server_vad:300"),
            Ok(Some(
                json!({"type": "server_vad", "silence_duration_ms": 300})
            ))
        );
        assert_eq!(
            parse_turn_detection("semantic_vad:high"),
            Ok(Some(json!({"type": "semantic_vad", "eagerness": "high"})))
        );
        assert!(parse_turn_detection("semantic_vad:eager").is_err());
        assert!(parse_turn_detection("server_vad:soon").is_err());
        assert!(parse_turn_detection("vad").is_err());
    }

    #[test]
    fn session_update_is_ga_pcm_24k_with_server_vad() {
        let v = session_update(&Endpoint {
            url: String::new(),
            key: None,
            max_output_tokens: Some(60),
            instructions: None,
            transcription_model: Some("m".into()),
            turn_detection: Some(json!({"type": "server_vad"})),
        });
        assert_eq!(v["type"], "session.update");
        let input = &v["session"]["audio"]["input"];
        assert_eq!(input["format"]["type"], "audio/pcm");
        assert_eq!(input["format"]["rate"], 24000);
        assert_eq!(input["turn_detection"]["type"], "server_vad");
        assert_eq!(input["transcription"]["model"], "m");
        assert_eq!(v["session"]["max_output_tokens"], 60);
        assert!(v["session"].get("instructions").is_none());
    }

    #[test]
    fn pcm16_is_little_endian_and_clamped() {
        // Full scale is 32768: 0.5 is exactly 0x4000; +1.0 and -2.0 saturate.
        let b = BASE64.decode(pcm16_base64(&[0.0, 0.5, 1.0, -2.0])).unwrap();
        assert_eq!(b, [0, 0, 0x00, 0x40, 0xff, 0x7f, 0x00, 0x80]);
    }
}
