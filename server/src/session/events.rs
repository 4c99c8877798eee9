//! Dialect-neutral Realtime events: what a client asked for and what the server reports.
//!
//! These types carry meaning only; `protocol` owns the wire names and JSON shapes of both
//! dialects (GA and beta), so the session and turn logic never see a wire detail.

/// A client audio format. `Pcm16` is 16-bit little-endian mono at 24 kHz; G.711 is 8 kHz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    Pcm16,
    G711Ulaw,
    G711Alaw,
}

impl AudioFormat {
    pub fn sample_rate(self) -> u32 {
        match self {
            AudioFormat::Pcm16 => 24_000,
            AudioFormat::G711Ulaw | AudioFormat::G711Alaw => 8_000,
        }
    }

    /// Bytes per sample on the wire.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            AudioFormat::Pcm16 => 2,
            AudioFormat::G711Ulaw | AudioFormat::G711Alaw => 1,
        }
    }

    /// Bytes that `ms` milliseconds of audio take in this format.
    pub fn ms_to_bytes(self, ms: u64) -> usize {
        (ms * u64::from(self.sample_rate()) / 1000) as usize * self.bytes_per_sample()
    }

    /// Milliseconds of audio held in `bytes` of this format.
    pub fn bytes_to_ms(self, bytes: usize) -> u64 {
        let samples = (bytes / self.bytes_per_sample()) as u64;
        samples * 1000 / u64::from(self.sample_rate())
    }
}

pub use antiphon_models::vad::Eagerness;

/// Voice turn detection. `None` in [`SessionConfig::turn_detection`] means manual turns.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnDetection {
    /// `semantic_vad` with this eagerness: each pause is judged (acoustic end-of-turn model and
    /// transcript); `None` is `server_vad`, the fixed silence timer.
    pub semantic: Option<Eagerness>,
    pub threshold: f32,
    pub prefix_padding_ms: u32,
    pub silence_duration_ms: u32,
    pub create_response: bool,
    pub interrupt_response: bool,
}

impl Default for TurnDetection {
    fn default() -> Self {
        // OpenAI's documented server_vad defaults.
        TurnDetection {
            semantic: None,
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            create_response: true,
            interrupt_response: true,
        }
    }
}

/// Partial update of [`TurnDetection`]: fields a client left out keep their value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnDetectionPatch {
    /// `Some(None)`: the client asked for `server_vad`; `Some(Some(e))`: `semantic_vad`.
    pub semantic: Option<Option<Eagerness>>,
    pub threshold: Option<f32>,
    pub prefix_padding_ms: Option<u32>,
    pub silence_duration_ms: Option<u32>,
    pub create_response: Option<bool>,
    pub interrupt_response: Option<bool>,
}

/// Input transcription settings; its presence switches transcription events on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transcription {
    pub model: Option<String>,
    pub language: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    Text,
    Audio,
}

impl Modality {
    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Text => "text",
            Modality::Audio => "audio",
        }
    }
}

/// The whole state of a session as reported in `session.created` / `session.updated`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    pub id: String,
    pub model: String,
    pub instructions: String,
    pub voice: String,
    pub input_format: AudioFormat,
    pub output_format: AudioFormat,
    pub turn_detection: Option<TurnDetection>,
    pub transcription: Option<Transcription>,
    pub output_modalities: Vec<Modality>,
    pub max_output_tokens: Option<u32>,
}

/// What a `session.update` changes. `Some(None)` clears an optional setting (`null` on the wire).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionPatch {
    pub model: Option<String>,
    pub instructions: Option<String>,
    pub voice: Option<String>,
    pub input_format: Option<AudioFormat>,
    pub output_format: Option<AudioFormat>,
    pub turn_detection: Option<Option<TurnDetectionPatch>>,
    pub transcription: Option<Option<Transcription>>,
    pub output_modalities: Option<Vec<Modality>>,
    pub max_output_tokens: Option<Option<u32>>,
}

impl SessionConfig {
    pub fn apply(&mut self, patch: SessionPatch) {
        if let Some(v) = patch.model {
            self.model = v;
        }
        if let Some(v) = patch.instructions {
            self.instructions = v;
        }
        if let Some(v) = patch.voice {
            self.voice = v;
        }
        if let Some(v) = patch.input_format {
            self.input_format = v;
        }
        if let Some(v) = patch.output_format {
            self.output_format = v;
        }
        if let Some(td) = patch.turn_detection {
            self.turn_detection = td.map(|p| {
                let mut cur = self.turn_detection.clone().unwrap_or_default();
                if let Some(v) = p.semantic {
                    cur.semantic = v;
                }
                if let Some(v) = p.threshold {
                    cur.threshold = v;
                }
                if let Some(v) = p.prefix_padding_ms {
                    cur.prefix_padding_ms = v;
                }
                if let Some(v) = p.silence_duration_ms {
                    cur.silence_duration_ms = v;
                }
                if let Some(v) = p.create_response {
                    cur.create_response = v;
                }
                if let Some(v) = p.interrupt_response {
                    cur.interrupt_response = v;
                }
                cur
            });
        }
        if let Some(v) = patch.transcription {
            self.transcription = v;
        }
        if let Some(v) = patch.output_modalities {
            self.output_modalities = v;
        }
        if let Some(v) = patch.max_output_tokens {
            self.max_output_tokens = v;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }
}

/// One content part of a message item.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    InputText {
        text: String,
    },
    /// User audio. `audio` holds the client's bytes only when the client sent them inline in
    /// `conversation.item.create`; committed buffer audio stays with the ASR engine.
    InputAudio {
        audio: Option<Vec<u8>>,
        transcript: Option<String>,
    },
    OutputText {
        text: String,
    },
    OutputAudio {
        transcript: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemStatus {
    InProgress,
    Completed,
    Incomplete,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::InProgress => "in_progress",
            ItemStatus::Completed => "completed",
            ItemStatus::Incomplete => "incomplete",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ItemKind {
    Message {
        role: Role,
        content: Vec<Content>,
    },
    FunctionCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    FunctionCallOutput {
        call_id: String,
        output: String,
    },
}

/// A conversation item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    pub status: ItemStatus,
    pub kind: ItemKind,
}

/// Options of one `response.create`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseOptions {
    pub instructions: Option<String>,
    pub output_modalities: Option<Vec<Modality>>,
    /// `conversation: "none"`: an out-of-band response that is not added to the conversation.
    pub out_of_band: bool,
}

/// A client->server event, with the payload already validated (audio base64-decoded).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    SessionUpdate(SessionPatch),
    AudioAppend {
        audio: Vec<u8>,
    },
    AudioCommit,
    AudioClear,
    ItemCreate {
        previous_item_id: Option<String>,
        item: Item,
    },
    ItemTruncate {
        item_id: String,
        content_index: u32,
        audio_end_ms: u32,
    },
    ItemDelete {
        item_id: String,
    },
    ResponseCreate(ResponseOptions),
    ResponseCancel {
        response_id: Option<String>,
    },
    /// GA `output_audio_buffer.clear` (WebRTC/SIP only in OpenAI; accepted and acknowledged).
    OutputAudioClear,
}

/// A client event plus the `event_id` the client gave it (echoed in errors).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMessage {
    pub event_id: Option<String>,
    pub event: ClientEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStatus {
    InProgress,
    Completed,
    Cancelled,
    Failed,
}

impl ResponseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseStatus::InProgress => "in_progress",
            ResponseStatus::Completed => "completed",
            ResponseStatus::Cancelled => "cancelled",
            ResponseStatus::Failed => "failed",
        }
    }
}

/// Why a response did not complete normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    TurnDetected,
    ClientCancelled,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::TurnDetected => "turn_detected",
            CancelReason::ClientCancelled => "client_cancelled",
        }
    }
}

/// A response as reported in `response.created` / `response.done`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseInfo {
    pub id: String,
    pub status: ResponseStatus,
    pub cancel_reason: Option<CancelReason>,
    /// For `failed`: (code, message).
    pub error: Option<(String, String)>,
    pub output: Vec<Item>,
    pub output_modalities: Vec<Modality>,
    pub output_format: AudioFormat,
    pub voice: String,
    pub conversation_id: Option<String>,
}

/// Where an output part sits: which response, item, output and content slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRef {
    pub response_id: String,
    pub item_id: String,
    pub output_index: u32,
    pub content_index: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    Text,
    Audio,
}

/// The `error` event payload. `kind` is OpenAI's `type` (e.g. `invalid_request_error`).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorInfo {
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub event_id: Option<String>,
}

impl ErrorInfo {
    pub fn invalid_request(code: &'static str, message: impl Into<String>) -> Self {
        ErrorInfo {
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: None,
            event_id: None,
        }
    }

    pub fn server(code: &'static str, message: impl Into<String>) -> Self {
        ErrorInfo {
            kind: "server_error",
            code,
            message: message.into(),
            param: None,
            event_id: None,
        }
    }

    pub fn with_event_id(mut self, event_id: Option<String>) -> Self {
        self.event_id = event_id;
        self
    }
}

/// Our extension event `antiphon.turn.latency`: every stage in ms after `origin`
/// (user speech end for voice turns, `response.create` arrival otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct TurnLatency {
    pub response_id: String,
    pub origin: LatencyOrigin,
    pub asr_final_ms: Option<f64>,
    pub llm_first_token_ms: Option<f64>,
    pub first_clause_ms: Option<f64>,
    pub tts_first_audio_ms: Option<f64>,
    pub first_audio_sent_ms: Option<f64>,
    /// When the reply was begun speculatively on the caller's pause (it was, and the endpoint
    /// adopted it); `None` for a reply started at the endpoint.
    pub speculation_started_ms: Option<f64>,
    /// `semantic_vad`: the acoustic P(turn complete) of the pause that ended the user's turn.
    pub end_of_turn_probability: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyOrigin {
    SpeechEnd,
    ResponseCreate,
}

impl LatencyOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            LatencyOrigin::SpeechEnd => "speech_end",
            LatencyOrigin::ResponseCreate => "response_create",
        }
    }
}

/// A server->client event.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    SessionCreated(SessionConfig),
    SessionUpdated(SessionConfig),
    SpeechStarted {
        audio_start_ms: u64,
        item_id: String,
    },
    SpeechStopped {
        audio_end_ms: u64,
        item_id: String,
    },
    AudioCommitted {
        previous_item_id: Option<String>,
        item_id: String,
    },
    AudioCleared,
    /// GA `conversation.item.added`; beta `conversation.item.created`.
    ItemAdded {
        previous_item_id: Option<String>,
        item: Item,
    },
    /// GA `conversation.item.done`; not sent in beta.
    ItemDone {
        previous_item_id: Option<String>,
        item: Item,
    },
    ItemTruncated {
        item_id: String,
        content_index: u32,
        audio_end_ms: u32,
    },
    ItemDeleted {
        item_id: String,
    },
    TranscriptionDelta {
        item_id: String,
        content_index: u32,
        delta: String,
    },
    TranscriptionCompleted {
        item_id: String,
        content_index: u32,
        transcript: String,
        /// Extension: the diarization label of the speaker (`S1`, `S2`, …), when known.
        speaker: Option<String>,
    },
    ResponseCreated(ResponseInfo),
    ResponseDone(ResponseInfo),
    OutputItemAdded {
        response_id: String,
        output_index: u32,
        item: Item,
    },
    OutputItemDone {
        response_id: String,
        output_index: u32,
        item: Item,
    },
    ContentPartAdded {
        part: PartRef,
        kind: PartKind,
        text: String,
    },
    ContentPartDone {
        part: PartRef,
        kind: PartKind,
        text: String,
    },
    /// Audio bytes already in the client's output format.
    AudioDelta {
        part: PartRef,
        audio: Vec<u8>,
    },
    AudioDone {
        part: PartRef,
    },
    TranscriptDelta {
        part: PartRef,
        delta: String,
    },
    TranscriptDone {
        part: PartRef,
        transcript: String,
    },
    TextDelta {
        part: PartRef,
        delta: String,
    },
    TextDone {
        part: PartRef,
        text: String,
    },
    Error(ErrorInfo),
    TurnLatency(TurnLatency),
    /// Reply audio for a transport that encodes and plays it itself (phone, Twilio, WebRTC):
    /// f32 at the TTS engine's rate, `arrival` = when the engine delivered it. Internal: the
    /// Realtime WebSocket gets `AudioDelta` bytes in its output format instead.
    AudioOut {
        part: PartRef,
        frame: antiphon_audio::frame::AudioFrame,
    },
    /// The session decided the caller interrupted: a transport that plays reply audio out
    /// itself (phone, Twilio, WebRTC) drops what it still holds now and reports what was
    /// heard (`conversation.item.truncate`). Internal: not a Realtime WebSocket event.
    StopPlayout,
}

/// Size limits applied to client input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted WebSocket text message, bytes (default 1 MiB).
    pub max_message_bytes: usize,
    /// Largest uncommitted input audio buffer, bytes of client audio (default 15 MiB).
    pub max_audio_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1 << 20,
            max_audio_buffer_bytes: 15 << 20,
        }
    }
}
