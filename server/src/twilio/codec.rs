//! Twilio Media Streams JSON messages, both directions, with no I/O.
//!
//! Shapes follow Twilio's "Media Streams - WebSocket Messages" reference: every message is a
//! JSON text frame with an `event` discriminator. Twilio sends `connected`, `start`, `media`,
//! `dtmf`, `mark` and `stop`; a `<Connect><Stream>` (bidirectional) app may send `media`,
//! `mark` and `clear`. Counters (`sequenceNumber`, `media.chunk`, `media.timestamp`) are JSON
//! strings on the wire; we also accept plain numbers, as some Twilio look-alikes send them.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::json;

/// The only audio a Media Stream carries.
pub const MULAW_ENCODING: &str = "audio/x-mulaw";
pub const MULAW_RATE_HZ: u32 = 8000;

/// A message from Twilio, validated (audio base64-decoded, counters parsed).
#[derive(Debug, Clone, PartialEq)]
pub enum TwilioInbound {
    Connected {
        protocol: String,
        version: String,
    },
    Start(StartInfo),
    Media(MediaFrame),
    Dtmf {
        stream_sid: String,
        digit: String,
    },
    /// Twilio played all audio queued before the mark of this name (or a `clear` dropped it).
    Mark {
        stream_sid: String,
        name: String,
    },
    Stop {
        stream_sid: String,
    },
}

/// The `start` message: stream metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct StartInfo {
    pub stream_sid: String,
    pub account_sid: String,
    pub call_sid: String,
    pub tracks: Vec<String>,
    pub media_format: MediaFormat,
    /// `<Parameter name=… value=…/>` pairs of the TwiML `<Stream>`.
    pub custom_parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u32,
}

impl MediaFormat {
    /// Whether this is the one format we pass straight to the session (G.711 mu-law, 8 kHz mono).
    pub fn is_mulaw_8k_mono(&self) -> bool {
        self.encoding.eq_ignore_ascii_case(MULAW_ENCODING)
            && self.sample_rate == MULAW_RATE_HZ
            && self.channels == 1
    }
}

/// One `media` message: caller audio.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaFrame {
    pub stream_sid: String,
    /// `inbound` (the caller) or `outbound`.
    pub track: String,
    pub chunk: u64,
    /// Presentation time of the first sample, ms from the start of the stream.
    pub timestamp_ms: u64,
    /// Raw mu-law bytes.
    pub payload: Vec<u8>,
}

/// A message to Twilio.
#[derive(Debug, Clone, PartialEq)]
pub enum TwilioOutbound {
    /// Mu-law 8 kHz audio to play to the caller (queued behind earlier media).
    Media {
        stream_sid: String,
        payload: Vec<u8>,
    },
    /// Asks Twilio to echo `name` once everything queued before it has played.
    Mark { stream_sid: String, name: String },
    /// Drops every queued, unplayed byte (barge-in).
    Clear { stream_sid: String },
}

/// Why a message from Twilio was not usable. `code` is stable (metrics label, error events).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {len} bytes is over the {limit}-byte limit")]
    TooLarge { len: usize, limit: usize },
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("missing or non-string 'event' field")]
    MissingEvent,
    #[error("unknown event '{0}'")]
    UnknownEvent(String),
    #[error("malformed '{event}' message: {reason}")]
    Malformed { event: &'static str, reason: String },
    #[error("media.payload is not valid base64: {0}")]
    BadBase64(String),
}

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "message_too_large",
            DecodeError::Json(_) => "malformed_json",
            DecodeError::MissingEvent => "missing_event",
            DecodeError::UnknownEvent(_) => "unknown_event",
            DecodeError::Malformed { .. } => "malformed_message",
            DecodeError::BadBase64(_) => "invalid_base64",
        }
    }
}

/// A counter Twilio sends as a string ("42"); a bare number is accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Counter {
    Text(String),
    Number(u64),
}

impl Counter {
    fn value(&self, event: &'static str, field: &str) -> Result<u64, DecodeError> {
        match self {
            Counter::Number(n) => Ok(*n),
            Counter::Text(s) => s.trim().parse().map_err(|_| DecodeError::Malformed {
                event,
                reason: format!("'{field}' is not a non-negative integer: {s:?}"),
            }),
        }
    }
}

// Wire shapes. Unknown fields are ignored: Twilio adds fields over time.

#[derive(Deserialize)]
struct Envelope {
    event: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ConnectedWire {
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartWire {
    start: StartBody,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    stream_sid: String,
    #[serde(default)]
    account_sid: String,
    #[serde(default)]
    call_sid: String,
    #[serde(default)]
    tracks: Vec<String>,
    media_format: MediaFormatWire,
    #[serde(default)]
    custom_parameters: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaFormatWire {
    encoding: String,
    sample_rate: u32,
    channels: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaWire {
    #[serde(default)]
    stream_sid: String,
    media: MediaBody,
}

#[derive(Deserialize)]
struct MediaBody {
    #[serde(default)]
    track: Option<String>,
    #[serde(default)]
    chunk: Option<Counter>,
    timestamp: Counter,
    payload: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DtmfWire {
    #[serde(default)]
    stream_sid: String,
    dtmf: DtmfBody,
}

#[derive(Deserialize)]
struct DtmfBody {
    digit: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MarkWire {
    #[serde(default)]
    stream_sid: String,
    mark: MarkBody,
}

#[derive(Deserialize)]
struct MarkBody {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopWire {
    #[serde(default)]
    stream_sid: String,
}

fn parse<T: for<'de> Deserialize<'de>>(
    value: serde_json::Value,
    event: &'static str,
) -> Result<T, DecodeError> {
    serde_json::from_value(value).map_err(|e| DecodeError::Malformed {
        event,
        reason: e.to_string(),
    })
}

/// Decodes one text message from Twilio. `max_bytes` bounds the message (Twilio's own are a
/// few hundred bytes: 20 ms of audio).
pub fn decode(text: &str, max_bytes: usize) -> Result<TwilioInbound, DecodeError> {
    if text.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            len: text.len(),
            limit: max_bytes,
        });
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    let event = match serde_json::from_value::<Envelope>(value.clone()) {
        Ok(Envelope {
            event: Some(serde_json::Value::String(e)),
        }) => e,
        _ => return Err(DecodeError::MissingEvent),
    };
    Ok(match event.as_str() {
        "connected" => {
            let w: ConnectedWire = parse(value, "connected")?;
            TwilioInbound::Connected {
                protocol: w.protocol,
                version: w.version,
            }
        }
        "start" => {
            let w: StartWire = parse(value, "start")?;
            let b = w.start;
            let custom_parameters = b
                .custom_parameters
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect();
            TwilioInbound::Start(StartInfo {
                stream_sid: b.stream_sid,
                account_sid: b.account_sid,
                call_sid: b.call_sid,
                tracks: b.tracks,
                media_format: MediaFormat {
                    encoding: b.media_format.encoding,
                    sample_rate: b.media_format.sample_rate,
                    channels: b.media_format.channels,
                },
                custom_parameters,
            })
        }
        "media" => {
            let w: MediaWire = parse(value, "media")?;
            let payload = BASE64
                .decode(w.media.payload.as_bytes())
                .map_err(|e| DecodeError::BadBase64(e.to_string()))?;
            TwilioInbound::Media(MediaFrame {
                stream_sid: w.stream_sid,
                track: w.media.track.unwrap_or_else(|| "inbound".into()),
                chunk: match &w.media.chunk {
                    Some(c) => c.value("media", "media.chunk")?,
                    None => 0,
                },
                timestamp_ms: w.media.timestamp.value("media", "media.timestamp")?,
                payload,
            })
        }
        "dtmf" => {
            let w: DtmfWire = parse(value, "dtmf")?;
            TwilioInbound::Dtmf {
                stream_sid: w.stream_sid,
                digit: w.dtmf.digit,
            }
        }
        "mark" => {
            let w: MarkWire = parse(value, "mark")?;
            TwilioInbound::Mark {
                stream_sid: w.stream_sid,
                name: w.mark.name,
            }
        }
        "stop" => {
            let w: StopWire = parse(value, "stop")?;
            TwilioInbound::Stop {
                stream_sid: w.stream_sid,
            }
        }
        _ => return Err(DecodeError::UnknownEvent(truncated(&event, 64))),
    })
}

fn truncated(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// The JSON text of a message to Twilio.
pub fn encode(message: &TwilioOutbound) -> String {
    match message {
        TwilioOutbound::Media {
            stream_sid,
            payload,
        } => json!({
            "event": "media",
            "streamSid": stream_sid,
            "media": {"payload": BASE64.encode(payload)},
        }),
        TwilioOutbound::Mark { stream_sid, name } => json!({
            "event": "mark",
            "streamSid": stream_sid,
            "mark": {"name": name},
        }),
        TwilioOutbound::Clear { stream_sid } => json!({
            "event": "clear",
            "streamSid": stream_sid,
        }),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    // The examples below have the shapes of Twilio's reference page (values shortened).
    const CONNECTED: &str = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
    const START: &str = r#"{
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"FirstName": "Jane", "api_key": "k"}
        },
        "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    }"#;
    const MEDIA: &str = r#"{
        "event": "media",
        "sequenceNumber": "3",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": "/38A"},
        "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    }"#;
    const DTMF: &str = r#"{
        "event": "dtmf",
        "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "sequenceNumber": "5",
        "dtmf": {"track": "inbound_track", "digit": "1"}
    }"#;
    const MARK: &str = r#"{
        "event": "mark",
        "sequenceNumber": "4",
        "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "mark": {"name": "my label"}
    }"#;
    const STOP: &str = r#"{
        "event": "stop",
        "sequenceNumber": "5",
        "stop": {"accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"},
        "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    }"#;
    const SID: &str = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";

    #[test]
    fn decodes_every_documented_message() {
        assert_eq!(
            decode(CONNECTED, LIMIT).unwrap(),
            TwilioInbound::Connected {
                protocol: "Call".into(),
                version: "1.0.0".into()
            }
        );
        let TwilioInbound::Start(s) = decode(START, LIMIT).unwrap() else {
            panic!("start expected");
        };
        assert_eq!(s.stream_sid, SID);
        assert!(s.call_sid.starts_with("CA"));
        assert_eq!(s.tracks, ["inbound"]);
        assert!(s.media_format.is_mulaw_8k_mono());
        assert_eq!(s.custom_parameters["FirstName"], "Jane");
        assert_eq!(s.custom_parameters["api_key"], "k");
        assert_eq!(
            decode(MEDIA, LIMIT).unwrap(),
            TwilioInbound::Media(MediaFrame {
                stream_sid: SID.into(),
                track: "inbound".into(),
                chunk: 1,
                timestamp_ms: 5,
                payload: vec![0xFF, 0x7F, 0x00],
            })
        );
        assert_eq!(
            decode(DTMF, LIMIT).unwrap(),
            TwilioInbound::Dtmf {
                stream_sid: SID.into(),
                digit: "1".into()
            }
        );
        assert_eq!(
            decode(MARK, LIMIT).unwrap(),
            TwilioInbound::Mark {
                stream_sid: SID.into(),
                name: "my label".into()
            }
        );
        assert_eq!(
            decode(STOP, LIMIT).unwrap(),
            TwilioInbound::Stop {
                stream_sid: SID.into()
            }
        );
    }

    #[test]
    fn accepts_numeric_counters_and_rejects_negative_ones() {
        let numeric = r#"{"event":"media","streamSid":"MZ1","media":{"chunk":2,"timestamp":40,"payload":""}}"#;
        let TwilioInbound::Media(m) = decode(numeric, LIMIT).unwrap() else {
            panic!("media expected");
        };
        assert_eq!(
            (m.chunk, m.timestamp_ms, m.track.as_str()),
            (2, 40, "inbound")
        );
        let negative =
            r#"{"event":"media","streamSid":"MZ1","media":{"timestamp":"-20","payload":""}}"#;
        assert_eq!(
            decode(negative, LIMIT).unwrap_err().code(),
            "malformed_message"
        );
    }

    #[test]
    fn reports_bad_input_with_stable_codes() {
        let cases = [
            ("not json", "malformed_json"),
            ("[1,2]", "missing_event"),
            (r#"{"event":7}"#, "missing_event"),
            (r#"{"event":"ringing"}"#, "unknown_event"),
            (r#"{"event":"start","start":{}}"#, "malformed_message"),
            (
                r#"{"event":"media","streamSid":"MZ1","media":{"timestamp":"0"}}"#,
                "malformed_message",
            ),
            (
                r#"{"event":"media","streamSid":"MZ1","media":{"timestamp":"0","payload":"**"}}"#,
                "invalid_base64",
            ),
            (r#"{"event":"mark","mark":{}}"#, "malformed_message"),
            (
                r#"{"event":"dtmf","dtmf":{"digit":5}}"#,
                "malformed_message",
            ),
        ];
        for (text, code) in cases {
            let e = decode(text, LIMIT).expect_err(text);
            assert_eq!(e.code(), code, "{text}: {e}");
        }
        let big = format!(
            r#"{{"event":"media","media":{{"timestamp":"0","payload":"{}"}}}}"#,
            "A".repeat(2000)
        );
        assert_eq!(decode(&big, 1000).unwrap_err().code(), "message_too_large");
    }

    #[test]
    fn encodes_the_documented_outbound_shapes() {
        let media: serde_json::Value = serde_json::from_str(&encode(&TwilioOutbound::Media {
            stream_sid: SID.into(),
            payload: vec![0xFF, 0x7F, 0x00],
        }))
        .unwrap();
        assert_eq!(
            media,
            json!({"event": "media", "streamSid": SID, "media": {"payload": "/38A"}})
        );
        let mark: serde_json::Value = serde_json::from_str(&encode(&TwilioOutbound::Mark {
            stream_sid: SID.into(),
            name: "my label".into(),
        }))
        .unwrap();
        assert_eq!(
            mark,
            json!({"event": "mark", "streamSid": SID, "mark": {"name": "my label"}})
        );
        let clear: serde_json::Value = serde_json::from_str(&encode(&TwilioOutbound::Clear {
            stream_sid: SID.into(),
        }))
        .unwrap();
        assert_eq!(clear, json!({"event": "clear", "streamSid": SID}));
    }

    #[test]
    fn wrong_media_format_is_decoded_then_recognised() {
        let text = START.replace("audio/x-mulaw", "audio/l16");
        let TwilioInbound::Start(s) = decode(&text, LIMIT).unwrap() else {
            panic!("start expected");
        };
        assert!(!s.media_format.is_mulaw_8k_mono());
    }
}
