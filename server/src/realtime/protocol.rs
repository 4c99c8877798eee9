//! Sans-IO codec for the OpenAI Realtime WebSocket protocol, GA and beta dialects.
//!
//! `decode_client` turns one text message into a validated [`ClientMessage`] or an
//! [`ErrorInfo`] ready to send as an `error` event; `encode_server` turns a [`ServerEvent`] into
//! the JSON text of the connection's dialect. Client payloads are read leniently: both the GA
//! nested `audio.input.format` objects and the beta flat `input_audio_format` strings are
//! accepted in either dialect, and unknown fields are ignored (as OpenAI adds fields often).

use antiphon_models::vad::endpoint::{
    MAX_PREFIX_PADDING_MS, MAX_SILENCE_DURATION_MS, MIN_SILENCE_DURATION_MS,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::session::events::*;

/// Which event names and shapes a connection speaks, fixed at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The GA API (`response.output_audio.delta`, nested `audio` session config).
    Ga,
    /// The beta API, chosen by header `OpenAI-Beta: realtime=v1`.
    Beta,
}

impl Dialect {
    /// Picks the dialect from the value of the `OpenAI-Beta` header, if any.
    pub fn from_beta_header(value: Option<&str>) -> Dialect {
        match value {
            Some(v) if v.split(',').any(|p| p.trim() == "realtime=v1") => Dialect::Beta,
            _ => Dialect::Ga,
        }
    }
}

fn invalid(code: &'static str, message: impl Into<String>, event_id: &Option<String>) -> ErrorInfo {
    ErrorInfo::invalid_request(code, message).with_event_id(event_id.clone())
}

/// Decodes one client text message. Never panics; every failure is an `invalid_request_error`.
pub fn decode_client(text: &str, limits: &Limits) -> Result<ClientMessage, ErrorInfo> {
    if text.len() > limits.max_message_bytes {
        return Err(invalid(
            "message_too_large",
            format!(
                "message of {} bytes exceeds the limit of {} bytes",
                text.len(),
                limits.max_message_bytes
            ),
            &None,
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        invalid(
            "invalid_json",
            format!("message is not valid JSON: {e}"),
            &None,
        )
    })?;
    let Value::Object(mut obj) = value else {
        return Err(invalid(
            "invalid_json",
            "message must be a JSON object",
            &None,
        ));
    };
    let event_id = match obj.remove("event_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(invalid("invalid_value", "event_id must be a string", &None));
        }
    };
    let kind = match obj.remove("type") {
        Some(Value::String(s)) => s,
        _ => {
            return Err(invalid(
                "missing_required_parameter",
                "missing required parameter 'type'",
                &event_id,
            ));
        }
    };
    let body = Value::Object(obj);
    let event = decode_body(&kind, body).map_err(|(code, message)| {
        let mut e = invalid(code, message, &event_id);
        if code == "unknown_event_type" {
            e.param = Some("type".into());
        }
        e
    })?;
    Ok(ClientMessage { event_id, event })
}

type DecodeError = (&'static str, String);

fn fields<T: for<'de> Deserialize<'de>>(kind: &str, body: Value) -> Result<T, DecodeError> {
    serde_json::from_value(body)
        .map_err(|e| ("invalid_value", format!("invalid '{kind}' event: {e}")))
}

fn decode_body(kind: &str, body: Value) -> Result<ClientEvent, DecodeError> {
    Ok(match kind {
        "session.update" => {
            let w: wire::SessionUpdate = fields(kind, body)?;
            ClientEvent::SessionUpdate(session_patch(w.session)?)
        }
        "input_audio_buffer.append" => {
            let w: wire::Append = fields(kind, body)?;
            let audio = BASE64.decode(w.audio.as_bytes()).map_err(|e| {
                (
                    "invalid_base64",
                    format!("'audio' is not valid base64: {e}"),
                )
            })?;
            ClientEvent::AudioAppend { audio }
        }
        "input_audio_buffer.commit" => ClientEvent::AudioCommit,
        "input_audio_buffer.clear" => ClientEvent::AudioClear,
        "output_audio_buffer.clear" => ClientEvent::OutputAudioClear,
        "conversation.item.create" => {
            let w: wire::ItemCreate = fields(kind, body)?;
            ClientEvent::ItemCreate {
                previous_item_id: w.previous_item_id,
                item: client_item(w.item)?,
            }
        }
        "conversation.item.truncate" => {
            let w: wire::Truncate = fields(kind, body)?;
            ClientEvent::ItemTruncate {
                item_id: w.item_id,
                content_index: w.content_index,
                audio_end_ms: w.audio_end_ms,
            }
        }
        "conversation.item.delete" => {
            let w: wire::Delete = fields(kind, body)?;
            ClientEvent::ItemDelete { item_id: w.item_id }
        }
        "response.create" => {
            let w: wire::ResponseCreate = fields(kind, body)?;
            let r = w.response.unwrap_or_default();
            let out_of_band = match r.conversation.as_deref() {
                None | Some("auto") => false,
                Some("none") => true,
                Some(other) => {
                    return Err((
                        "invalid_value",
                        format!("response.conversation must be 'auto' or 'none', got '{other}'"),
                    ));
                }
            };
            ClientEvent::ResponseCreate(ResponseOptions {
                instructions: r.instructions,
                output_modalities: r
                    .output_modalities
                    .or(r.modalities)
                    .map(|m| modalities(&m))
                    .transpose()?,
                out_of_band,
            })
        }
        "response.cancel" => {
            let w: wire::ResponseCancel = fields(kind, body)?;
            ClientEvent::ResponseCancel {
                response_id: w.response_id,
            }
        }
        other => {
            return Err((
                "unknown_event_type",
                format!("unknown event type '{other}'"),
            ));
        }
    })
}

fn modalities(list: &[String]) -> Result<Vec<Modality>, DecodeError> {
    list.iter()
        .map(|m| match m.as_str() {
            "text" => Ok(Modality::Text),
            "audio" => Ok(Modality::Audio),
            other => Err(("invalid_value", format!("unknown modality '{other}'"))),
        })
        .collect()
}

fn format_from_beta(name: &str) -> Result<AudioFormat, DecodeError> {
    match name {
        "pcm16" => Ok(AudioFormat::Pcm16),
        "g711_ulaw" => Ok(AudioFormat::G711Ulaw),
        "g711_alaw" => Ok(AudioFormat::G711Alaw),
        other => Err((
            "invalid_value",
            format!("unsupported audio format '{other}' (pcm16, g711_ulaw, g711_alaw)"),
        )),
    }
}

fn format_from_ga(f: &wire::Format) -> Result<AudioFormat, DecodeError> {
    let format = match f.kind.as_deref() {
        None | Some("audio/pcm") => AudioFormat::Pcm16,
        Some("audio/pcmu") => AudioFormat::G711Ulaw,
        Some("audio/pcma") => AudioFormat::G711Alaw,
        Some(other) => {
            return Err((
                "invalid_value",
                format!("unsupported audio format '{other}' (audio/pcm, audio/pcmu, audio/pcma)"),
            ));
        }
    };
    if let Some(rate) = f.rate
        && rate != u64::from(format.sample_rate())
    {
        return Err((
            "invalid_value",
            format!(
                "unsupported rate {rate} for this format (supported: {})",
                format.sample_rate()
            ),
        ));
    }
    Ok(format)
}

fn turn_detection(v: Value) -> Result<Option<TurnDetectionPatch>, DecodeError> {
    if v.is_null() {
        return Ok(None);
    }
    let w: wire::TurnDetection = serde_json::from_value(v)
        .map_err(|e| ("invalid_value", format!("invalid turn_detection: {e}")))?;
    let eagerness = w
        .eagerness
        .as_deref()
        .map(str::parse::<Eagerness>)
        .transpose()
        .map_err(|e| ("invalid_value", format!("turn_detection.eagerness: {e}")))?;
    let semantic = match w.kind.as_deref() {
        None if eagerness.is_some() => Some(Some(eagerness.unwrap_or_default())),
        None => None,
        Some("server_vad") if eagerness.is_some() => {
            return Err((
                "invalid_value",
                "turn_detection.eagerness is only for type semantic_vad".to_owned(),
            ));
        }
        Some("server_vad") => Some(None),
        Some("semantic_vad") => Some(Some(eagerness.unwrap_or_default())),
        Some(other) => {
            return Err((
                "invalid_value",
                format!(
                    "unsupported turn_detection type '{other}' (server_vad, semantic_vad or null)"
                ),
            ));
        }
    };
    if let Some(t) = w.threshold
        && !(0.0..=1.0).contains(&t)
    {
        return Err((
            "invalid_value",
            format!("turn_detection.threshold {t} is not in 0..1"),
        ));
    }
    if let Some(ms) = w.silence_duration_ms
        && !(MIN_SILENCE_DURATION_MS..=MAX_SILENCE_DURATION_MS).contains(&ms)
    {
        return Err((
            "invalid_value",
            format!(
                "turn_detection.silence_duration_ms {ms} is not within \
                 {MIN_SILENCE_DURATION_MS}..={MAX_SILENCE_DURATION_MS} ms"
            ),
        ));
    }
    if let Some(ms) = w.prefix_padding_ms
        && ms > MAX_PREFIX_PADDING_MS
    {
        return Err((
            "invalid_value",
            format!(
                "turn_detection.prefix_padding_ms {ms} is above the limit of \
                 {MAX_PREFIX_PADDING_MS} ms"
            ),
        ));
    }
    Ok(Some(TurnDetectionPatch {
        semantic,
        threshold: w.threshold,
        prefix_padding_ms: w.prefix_padding_ms,
        silence_duration_ms: w.silence_duration_ms,
        create_response: w.create_response,
        interrupt_response: w.interrupt_response,
    }))
}

fn transcription(v: Value) -> Result<Option<Transcription>, DecodeError> {
    if v.is_null() {
        return Ok(None);
    }
    let w: wire::Transcription = serde_json::from_value(v)
        .map_err(|e| ("invalid_value", format!("invalid input transcription: {e}")))?;
    Ok(Some(Transcription {
        model: w.model,
        language: w.language,
    }))
}

fn voice(v: Value) -> Result<String, DecodeError> {
    match v {
        Value::String(s) => Ok(s),
        Value::Object(o) => match o.get("id") {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(("invalid_value", "voice object needs a string 'id'".into())),
        },
        _ => Err(("invalid_value", "voice must be a string".into())),
    }
}

fn session_patch(s: wire::Session) -> Result<SessionPatch, DecodeError> {
    if let Some(t) = s.kind.as_deref()
        && t != "realtime"
    {
        return Err((
            "invalid_value",
            format!("session.type '{t}' is not supported (only 'realtime')"),
        ));
    }
    let mut patch = SessionPatch {
        model: s.model,
        instructions: s.instructions,
        ..SessionPatch::default()
    };
    // Beta flat fields.
    if let Some(f) = s.input_audio_format.as_deref() {
        patch.input_format = Some(format_from_beta(f)?);
    }
    if let Some(f) = s.output_audio_format.as_deref() {
        patch.output_format = Some(format_from_beta(f)?);
    }
    if let Some(v) = s.voice {
        patch.voice = Some(voice(v)?);
    }
    if let Some(td) = s.turn_detection {
        patch.turn_detection = Some(turn_detection(td)?);
    }
    if let Some(t) = s.input_audio_transcription {
        patch.transcription = Some(transcription(t)?);
    }
    if let Some(m) = s.output_modalities.or(s.modalities) {
        patch.output_modalities = Some(modalities(&m)?);
    }
    if let Some(t) = s.max_output_tokens.or(s.max_response_output_tokens) {
        patch.max_output_tokens = Some(match t {
            Value::String(ref x) if x == "inf" => None,
            Value::Number(ref n) => {
                Some(n.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or((
                    "invalid_value",
                    format!("max_output_tokens {n} out of range"),
                ))?)
            }
            other => {
                return Err((
                    "invalid_value",
                    format!("max_output_tokens must be an integer or 'inf', got {other}"),
                ));
            }
        });
    }
    // GA nested fields win over flat ones when both are present.
    if let Some(audio) = s.audio {
        if let Some(input) = audio.input {
            if let Some(f) = &input.format {
                patch.input_format = Some(format_from_ga(f)?);
            }
            if let Some(td) = input.turn_detection {
                patch.turn_detection = Some(turn_detection(td)?);
            }
            if let Some(t) = input.transcription {
                patch.transcription = Some(transcription(t)?);
            }
        }
        if let Some(output) = audio.output {
            if let Some(f) = &output.format {
                patch.output_format = Some(format_from_ga(f)?);
            }
            if let Some(v) = output.voice {
                patch.voice = Some(voice(v)?);
            }
        }
    }
    Ok(patch)
}

fn client_item(w: wire::Item) -> Result<Item, DecodeError> {
    let id = w.id.unwrap_or_default();
    let kind = match w.kind.as_deref() {
        Some("message") | None => {
            let role = match w.role.as_deref() {
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                Some("system") => Role::System,
                Some(other) => return Err(("invalid_value", format!("unknown role '{other}'"))),
                None => return Err(("missing_required_parameter", "item.role is required".into())),
            };
            let parts = w.content.unwrap_or_default();
            if parts.is_empty() {
                return Err((
                    "missing_required_parameter",
                    "item.content must not be empty".into(),
                ));
            }
            let mut content = Vec::with_capacity(parts.len());
            for p in parts {
                content.push(match p.kind.as_str() {
                    "input_text" => Content::InputText {
                        text: p.text.unwrap_or_default(),
                    },
                    "input_audio" => Content::InputAudio {
                        audio: p
                            .audio
                            .map(|a| {
                                BASE64.decode(a.as_bytes()).map_err(|e| {
                                    (
                                        "invalid_base64",
                                        format!("content audio is not valid base64: {e}"),
                                    )
                                })
                            })
                            .transpose()?,
                        transcript: p.transcript,
                    },
                    "output_text" | "text" => Content::OutputText {
                        text: p.text.unwrap_or_default(),
                    },
                    "output_audio" | "audio" => Content::OutputAudio {
                        transcript: p.transcript.unwrap_or_default(),
                    },
                    other => {
                        return Err((
                            "invalid_value",
                            format!("unsupported content type '{other}'"),
                        ));
                    }
                });
            }
            let ok = content.iter().all(|c| match role {
                Role::User | Role::System => {
                    matches!(c, Content::InputText { .. } | Content::InputAudio { .. })
                        && (role == Role::User || matches!(c, Content::InputText { .. }))
                }
                Role::Assistant => {
                    matches!(c, Content::OutputText { .. } | Content::OutputAudio { .. })
                }
            });
            if !ok {
                return Err((
                    "invalid_value",
                    format!("content type not allowed for role '{}'", role.as_str()),
                ));
            }
            ItemKind::Message { role, content }
        }
        Some("function_call") => ItemKind::FunctionCall {
            call_id: w.call_id.unwrap_or_default(),
            name: w.name.ok_or((
                "missing_required_parameter",
                "function_call needs 'name'".to_string(),
            ))?,
            arguments: w.arguments.unwrap_or_default(),
        },
        Some("function_call_output") => ItemKind::FunctionCallOutput {
            call_id: w.call_id.ok_or((
                "missing_required_parameter",
                "function_call_output needs 'call_id'".to_string(),
            ))?,
            output: w.output.ok_or((
                "missing_required_parameter",
                "function_call_output needs 'output'".to_string(),
            ))?,
        },
        Some(other) => return Err(("invalid_value", format!("unsupported item type '{other}'"))),
    };
    Ok(Item {
        id,
        status: ItemStatus::Completed,
        kind,
    })
}

/// Client-side wire shapes (only the fields we read).
mod wire {
    use serde::Deserialize;
    use serde_json::Value;

    #[derive(Deserialize)]
    pub struct SessionUpdate {
        pub session: Session,
    }

    #[derive(Deserialize, Default)]
    pub struct Session {
        #[serde(rename = "type")]
        pub kind: Option<String>,
        pub model: Option<String>,
        pub instructions: Option<String>,
        pub voice: Option<Value>,
        pub input_audio_format: Option<String>,
        pub output_audio_format: Option<String>,
        // Absent and `null` differ here, so these stay raw `Value`s.
        #[serde(default, deserialize_with = "present")]
        pub turn_detection: Option<Value>,
        #[serde(default, deserialize_with = "present")]
        pub input_audio_transcription: Option<Value>,
        pub modalities: Option<Vec<String>>,
        pub output_modalities: Option<Vec<String>>,
        pub max_output_tokens: Option<Value>,
        pub max_response_output_tokens: Option<Value>,
        pub audio: Option<Audio>,
    }

    #[derive(Deserialize)]
    pub struct Audio {
        pub input: Option<AudioInput>,
        pub output: Option<AudioOutput>,
    }

    #[derive(Deserialize)]
    pub struct AudioInput {
        pub format: Option<Format>,
        #[serde(default, deserialize_with = "present")]
        pub turn_detection: Option<Value>,
        #[serde(default, deserialize_with = "present")]
        pub transcription: Option<Value>,
    }

    #[derive(Deserialize)]
    pub struct AudioOutput {
        pub format: Option<Format>,
        pub voice: Option<Value>,
    }

    #[derive(Deserialize)]
    pub struct Format {
        #[serde(rename = "type")]
        pub kind: Option<String>,
        pub rate: Option<u64>,
    }

    #[derive(Deserialize)]
    pub struct TurnDetection {
        #[serde(rename = "type")]
        pub kind: Option<String>,
        pub eagerness: Option<String>,
        pub threshold: Option<f32>,
        pub prefix_padding_ms: Option<u32>,
        pub silence_duration_ms: Option<u32>,
        pub create_response: Option<bool>,
        pub interrupt_response: Option<bool>,
    }

    #[derive(Deserialize)]
    pub struct Transcription {
        pub model: Option<String>,
        pub language: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Append {
        pub audio: String,
    }

    #[derive(Deserialize)]
    pub struct ItemCreate {
        pub previous_item_id: Option<String>,
        pub item: Item,
    }

    #[derive(Deserialize)]
    pub struct Item {
        pub id: Option<String>,
        #[serde(rename = "type")]
        pub kind: Option<String>,
        pub role: Option<String>,
        pub content: Option<Vec<ContentPart>>,
        pub call_id: Option<String>,
        pub name: Option<String>,
        pub arguments: Option<String>,
        pub output: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct ContentPart {
        #[serde(rename = "type")]
        pub kind: String,
        pub text: Option<String>,
        pub audio: Option<String>,
        pub transcript: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Truncate {
        pub item_id: String,
        pub content_index: u32,
        pub audio_end_ms: u32,
    }

    #[derive(Deserialize)]
    pub struct Delete {
        pub item_id: String,
    }

    #[derive(Deserialize)]
    pub struct ResponseCreate {
        pub response: Option<ResponseParams>,
    }

    #[derive(Deserialize, Default)]
    pub struct ResponseParams {
        pub instructions: Option<String>,
        pub modalities: Option<Vec<String>>,
        pub output_modalities: Option<Vec<String>>,
        pub conversation: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct ResponseCancel {
        pub response_id: Option<String>,
    }

    /// Keeps an explicit `null` as `Some(Value::Null)` (absent stays `None` via `default`).
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        Value::deserialize(d).map(Some)
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// The wire name of a server event in a dialect; `None` when the dialect has no such event.
pub fn server_event_name(event: &ServerEvent, dialect: Dialect) -> Option<&'static str> {
    let beta = dialect == Dialect::Beta;
    Some(match event {
        ServerEvent::SessionCreated(_) => "session.created",
        ServerEvent::SessionUpdated(_) => "session.updated",
        ServerEvent::SpeechStarted { .. } => "input_audio_buffer.speech_started",
        ServerEvent::SpeechStopped { .. } => "input_audio_buffer.speech_stopped",
        ServerEvent::AudioCommitted { .. } => "input_audio_buffer.committed",
        ServerEvent::AudioCleared => "input_audio_buffer.cleared",
        ServerEvent::ItemAdded { .. } if beta => "conversation.item.created",
        ServerEvent::ItemAdded { .. } => "conversation.item.added",
        ServerEvent::ItemDone { .. } if beta => return None,
        ServerEvent::ItemDone { .. } => "conversation.item.done",
        ServerEvent::ItemTruncated { .. } => "conversation.item.truncated",
        ServerEvent::ItemDeleted { .. } => "conversation.item.deleted",
        ServerEvent::TranscriptionDelta { .. } => {
            "conversation.item.input_audio_transcription.delta"
        }
        ServerEvent::TranscriptionCompleted { .. } => {
            "conversation.item.input_audio_transcription.completed"
        }
        ServerEvent::ResponseCreated(_) => "response.created",
        ServerEvent::ResponseDone(_) => "response.done",
        ServerEvent::OutputItemAdded { .. } => "response.output_item.added",
        ServerEvent::OutputItemDone { .. } => "response.output_item.done",
        ServerEvent::ContentPartAdded { .. } => "response.content_part.added",
        ServerEvent::ContentPartDone { .. } => "response.content_part.done",
        ServerEvent::AudioDelta { .. } if beta => "response.audio.delta",
        ServerEvent::AudioDelta { .. } => "response.output_audio.delta",
        ServerEvent::AudioDone { .. } if beta => "response.audio.done",
        ServerEvent::AudioDone { .. } => "response.output_audio.done",
        ServerEvent::TranscriptDelta { .. } if beta => "response.audio_transcript.delta",
        ServerEvent::TranscriptDelta { .. } => "response.output_audio_transcript.delta",
        ServerEvent::TranscriptDone { .. } if beta => "response.audio_transcript.done",
        ServerEvent::TranscriptDone { .. } => "response.output_audio_transcript.done",
        ServerEvent::TextDelta { .. } if beta => "response.text.delta",
        ServerEvent::TextDelta { .. } => "response.output_text.delta",
        ServerEvent::TextDone { .. } if beta => "response.text.done",
        ServerEvent::TextDone { .. } => "response.output_text.done",
        ServerEvent::Error(_) => "error",
        ServerEvent::TurnLatency(_) => "antiphon.turn.latency",
        // Said to the transports that own playout; the WebSocket client plays its own audio.
        ServerEvent::StopPlayout | ServerEvent::AudioOut { .. } => return None,
    })
}

/// Serialises a server event as one JSON text in `dialect`, or `None` when the dialect has no
/// such event (e.g. `conversation.item.done` in beta).
pub fn encode_server(event: &ServerEvent, event_id: &str, dialect: Dialect) -> Option<String> {
    let name = server_event_name(event, dialect)?;
    let mut obj = match encode_body(event, dialect) {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    obj.insert("type".into(), Value::String(name.into()));
    obj.insert("event_id".into(), Value::String(event_id.into()));
    Some(Value::Object(obj).to_string())
}

fn format_value(f: AudioFormat, dialect: Dialect) -> Value {
    match (dialect, f) {
        (Dialect::Beta, AudioFormat::Pcm16) => json!("pcm16"),
        (Dialect::Beta, AudioFormat::G711Ulaw) => json!("g711_ulaw"),
        (Dialect::Beta, AudioFormat::G711Alaw) => json!("g711_alaw"),
        (Dialect::Ga, AudioFormat::Pcm16) => json!({"type": "audio/pcm", "rate": 24000}),
        (Dialect::Ga, AudioFormat::G711Ulaw) => json!({"type": "audio/pcmu"}),
        (Dialect::Ga, AudioFormat::G711Alaw) => json!({"type": "audio/pcma"}),
    }
}

fn turn_detection_value(td: &Option<TurnDetection>) -> Value {
    match td {
        None => Value::Null,
        Some(TurnDetection {
            semantic: Some(eagerness),
            create_response,
            interrupt_response,
            ..
        }) => json!({
            "type": "semantic_vad",
            "eagerness": eagerness.as_str(),
            "create_response": create_response,
            "interrupt_response": interrupt_response,
        }),
        Some(td) => json!({
            "type": "server_vad",
            "threshold": td.threshold,
            "prefix_padding_ms": td.prefix_padding_ms,
            "silence_duration_ms": td.silence_duration_ms,
            "create_response": td.create_response,
            "interrupt_response": td.interrupt_response,
        }),
    }
}

fn modalities_value(m: &[Modality]) -> Value {
    Value::Array(m.iter().map(|m| json!(m.as_str())).collect())
}

fn max_tokens_value(m: Option<u32>) -> Value {
    m.map_or(json!("inf"), |n| json!(n))
}

fn session_value(s: &SessionConfig, dialect: Dialect) -> Value {
    let transcription = s.transcription.as_ref().map_or(
        Value::Null,
        |t| json!({"model": t.model, "language": t.language}),
    );
    match dialect {
        Dialect::Ga => json!({
            "type": "realtime",
            "object": "realtime.session",
            "id": s.id,
            "model": s.model,
            "instructions": s.instructions,
            "output_modalities": modalities_value(&s.output_modalities),
            "max_output_tokens": max_tokens_value(s.max_output_tokens),
            "tools": [],
            "tool_choice": "auto",
            "audio": {
                "input": {
                    "format": format_value(s.input_format, dialect),
                    "transcription": transcription,
                    "noise_reduction": null,
                    "turn_detection": turn_detection_value(&s.turn_detection),
                },
                "output": {
                    "format": format_value(s.output_format, dialect),
                    "voice": s.voice,
                    "speed": 1.0,
                },
            },
        }),
        Dialect::Beta => json!({
            "object": "realtime.session",
            "id": s.id,
            "model": s.model,
            "instructions": s.instructions,
            "modalities": modalities_value(&s.output_modalities),
            "voice": s.voice,
            "input_audio_format": format_value(s.input_format, dialect),
            "output_audio_format": format_value(s.output_format, dialect),
            "input_audio_transcription": transcription,
            "turn_detection": turn_detection_value(&s.turn_detection),
            "tools": [],
            "tool_choice": "auto",
            "max_response_output_tokens": max_tokens_value(s.max_output_tokens),
        }),
    }
}

fn content_value(c: &Content, dialect: Dialect) -> Value {
    let beta = dialect == Dialect::Beta;
    match c {
        Content::InputText { text } => json!({"type": "input_text", "text": text}),
        Content::InputAudio { transcript, .. } => {
            json!({"type": "input_audio", "transcript": transcript})
        }
        Content::OutputText { text } => {
            json!({"type": if beta { "text" } else { "output_text" }, "text": text})
        }
        Content::OutputAudio { transcript } => {
            json!({"type": if beta { "audio" } else { "output_audio" }, "transcript": transcript})
        }
    }
}

/// The JSON of an item as the server reports it.
pub fn item_value(item: &Item, dialect: Dialect) -> Value {
    let mut v = match &item.kind {
        ItemKind::Message { role, content } => json!({
            "type": "message",
            "role": role.as_str(),
            "content": content.iter().map(|c| content_value(c, dialect)).collect::<Vec<_>>(),
        }),
        ItemKind::FunctionCall {
            call_id,
            name,
            arguments,
        } => json!({
            "type": "function_call",
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
        }),
        ItemKind::FunctionCallOutput { call_id, output } => json!({
            "type": "function_call_output",
            "call_id": call_id,
            "output": output,
        }),
    };
    if let Value::Object(o) = &mut v {
        o.insert("id".into(), json!(item.id));
        o.insert("object".into(), json!("realtime.item"));
        o.insert("status".into(), json!(item.status.as_str()));
    }
    v
}

fn response_value(r: &ResponseInfo, dialect: Dialect) -> Value {
    let status_details = match (r.status, r.cancel_reason, &r.error) {
        (ResponseStatus::Cancelled, Some(reason), _) => {
            json!({"type": "cancelled", "reason": reason.as_str()})
        }
        (ResponseStatus::Failed, _, Some((code, message))) => json!({
            "type": "failed",
            "error": {"type": "server_error", "code": code, "message": message},
        }),
        _ => Value::Null,
    };
    let output: Vec<Value> = r.output.iter().map(|i| item_value(i, dialect)).collect();
    let mut v = json!({
        "object": "realtime.response",
        "id": r.id,
        "status": r.status.as_str(),
        "status_details": status_details,
        "output": output,
        "conversation_id": r.conversation_id,
        "usage": null,
        "metadata": null,
    });
    let o = v.as_object_mut().expect("json! object literal");
    match dialect {
        Dialect::Ga => {
            o.insert(
                "output_modalities".into(),
                modalities_value(&r.output_modalities),
            );
            o.insert(
                "audio".into(),
                json!({"output": {"format": format_value(r.output_format, dialect), "voice": r.voice}}),
            );
        }
        Dialect::Beta => {
            o.insert("modalities".into(), modalities_value(&r.output_modalities));
            o.insert(
                "output_audio_format".into(),
                format_value(r.output_format, dialect),
            );
            o.insert("voice".into(), json!(r.voice));
        }
    }
    v
}

fn part_fields(p: &PartRef) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("response_id".into(), json!(p.response_id));
    m.insert("item_id".into(), json!(p.item_id));
    m.insert("output_index".into(), json!(p.output_index));
    m.insert("content_index".into(), json!(p.content_index));
    m
}

fn with(mut m: Map<String, Value>, key: &str, value: Value) -> Value {
    m.insert(key.into(), value);
    Value::Object(m)
}

fn part_value(kind: PartKind, text: &str) -> Value {
    match kind {
        PartKind::Audio => json!({"type": "audio", "transcript": text}),
        PartKind::Text => json!({"type": "text", "text": text}),
    }
}

fn ms(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |x| json!((x * 10.0).round() / 10.0))
}

fn encode_body(event: &ServerEvent, dialect: Dialect) -> Value {
    match event {
        ServerEvent::SessionCreated(s) | ServerEvent::SessionUpdated(s) => {
            json!({"session": session_value(s, dialect)})
        }
        ServerEvent::SpeechStarted {
            audio_start_ms,
            item_id,
        } => {
            json!({"audio_start_ms": audio_start_ms, "item_id": item_id})
        }
        ServerEvent::SpeechStopped {
            audio_end_ms,
            item_id,
        } => {
            json!({"audio_end_ms": audio_end_ms, "item_id": item_id})
        }
        ServerEvent::AudioCommitted {
            previous_item_id,
            item_id,
        } => {
            json!({"previous_item_id": previous_item_id, "item_id": item_id})
        }
        ServerEvent::AudioCleared | ServerEvent::StopPlayout | ServerEvent::AudioOut { .. } => {
            json!({})
        }
        ServerEvent::ItemAdded {
            previous_item_id,
            item,
        }
        | ServerEvent::ItemDone {
            previous_item_id,
            item,
        } => {
            json!({"previous_item_id": previous_item_id, "item": item_value(item, dialect)})
        }
        ServerEvent::ItemTruncated {
            item_id,
            content_index,
            audio_end_ms,
        } => json!({
            "item_id": item_id, "content_index": content_index, "audio_end_ms": audio_end_ms,
        }),
        ServerEvent::ItemDeleted { item_id } => json!({"item_id": item_id}),
        ServerEvent::TranscriptionDelta {
            item_id,
            content_index,
            delta,
        } => {
            json!({"item_id": item_id, "content_index": content_index, "delta": delta})
        }
        ServerEvent::TranscriptionCompleted {
            item_id,
            content_index,
            transcript,
            speaker,
        } => {
            let mut v = json!({
                "item_id": item_id,
                "content_index": content_index,
                "transcript": transcript,
                "usage": {"type": "duration", "seconds": 0},
            });
            // Extension field (docs/DIARIZATION.md); absent when there is no label.
            if let Some(speaker) = speaker {
                v["speaker"] = json!(speaker);
            }
            v
        }
        ServerEvent::ResponseCreated(r) | ServerEvent::ResponseDone(r) => {
            json!({"response": response_value(r, dialect)})
        }
        ServerEvent::OutputItemAdded {
            response_id,
            output_index,
            item,
        }
        | ServerEvent::OutputItemDone {
            response_id,
            output_index,
            item,
        } => json!({
            "response_id": response_id,
            "output_index": output_index,
            "item": item_value(item, dialect),
        }),
        ServerEvent::ContentPartAdded { part, kind, text }
        | ServerEvent::ContentPartDone { part, kind, text } => {
            with(part_fields(part), "part", part_value(*kind, text))
        }
        ServerEvent::AudioDelta { part, audio } => {
            with(part_fields(part), "delta", json!(BASE64.encode(audio)))
        }
        ServerEvent::AudioDone { part } => Value::Object(part_fields(part)),
        ServerEvent::TranscriptDelta { part, delta } | ServerEvent::TextDelta { part, delta } => {
            with(part_fields(part), "delta", json!(delta))
        }
        ServerEvent::TranscriptDone { part, transcript } => {
            with(part_fields(part), "transcript", json!(transcript))
        }
        ServerEvent::TextDone { part, text } => with(part_fields(part), "text", json!(text)),
        ServerEvent::Error(e) => json!({
            "error": {
                "type": e.kind,
                "code": e.code,
                "message": e.message,
                "param": e.param,
                "event_id": e.event_id,
            }
        }),
        ServerEvent::TurnLatency(t) => json!({
            "response_id": t.response_id,
            "origin": t.origin.as_str(),
            "asr_final_ms": ms(t.asr_final_ms),
            "llm_first_token_ms": ms(t.llm_first_token_ms),
            "first_clause_ms": ms(t.first_clause_ms),
            "tts_first_audio_ms": ms(t.tts_first_audio_ms),
            "first_audio_sent_ms": ms(t.first_audio_sent_ms),
            "speculative": t.speculation_started_ms.is_some(),
            "speculation_started_ms": ms(t.speculation_started_ms),
            "end_of_turn_probability": t.end_of_turn_probability,
        }),
    }
}

#[cfg(test)]
mod tests;

/// Helpers other modules' tests share.
#[cfg(test)]
pub mod tests_support {
    use base64::Engine as _;

    pub fn b64(bytes: &[u8]) -> String {
        super::BASE64.encode(bytes)
    }
}
