//! What one run records: per-turn measurements and errors. These structs ARE the JSON schema
//! (`server/tests/loadtest_run.rs` pins their field names).

use serde::Serialize;
use serde_json::Value;

/// The server's own stage breakdown (`antiphon.turn.latency`), ms after its `origin`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerLatency {
    pub origin: Option<String>,
    pub asr_final_ms: Option<f64>,
    pub llm_first_token_ms: Option<f64>,
    pub first_clause_ms: Option<f64>,
    pub tts_first_audio_ms: Option<f64>,
    pub first_audio_sent_ms: Option<f64>,
    /// Present when the reply was begun speculatively on the caller's pause (and adopted).
    pub speculation_started_ms: Option<f64>,
}

/// Stage names of [`ServerLatency`], in pipeline order.
pub const SERVER_STAGES: [&str; 6] = [
    "speculation_started_ms",
    "asr_final_ms",
    "llm_first_token_ms",
    "first_clause_ms",
    "tts_first_audio_ms",
    "first_audio_sent_ms",
];

impl ServerLatency {
    /// Reads the event leniently: a missing or non-numeric stage is `None`.
    pub fn from_event(v: &Value) -> Self {
        let ms = |k: &str| v[k].as_f64();
        ServerLatency {
            origin: v["origin"].as_str().map(str::to_owned),
            asr_final_ms: ms("asr_final_ms"),
            llm_first_token_ms: ms("llm_first_token_ms"),
            first_clause_ms: ms("first_clause_ms"),
            tts_first_audio_ms: ms("tts_first_audio_ms"),
            first_audio_sent_ms: ms("first_audio_sent_ms"),
            speculation_started_ms: ms("speculation_started_ms"),
        }
    }

    pub fn stage(&self, name: &str) -> Option<f64> {
        match name {
            "asr_final_ms" => self.asr_final_ms,
            "llm_first_token_ms" => self.llm_first_token_ms,
            "first_clause_ms" => self.first_clause_ms,
            "tts_first_audio_ms" => self.tts_first_audio_ms,
            "first_audio_sent_ms" => self.first_audio_sent_ms,
            "speculation_started_ms" => self.speculation_started_ms,
            _ => None,
        }
    }
}

/// One user turn: speak a clip, wait for the reply, listen to it.
/// Every `*_ms` latency counts from the moment the frame holding the clip's last voiced
/// sample was sent (the true end of speech, from the audio itself).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TurnRecord {
    pub session: usize,
    pub turn: usize,
    pub clip: String,
    /// What the clip says, when known (for the transcript WER).
    pub reference: Option<String>,
    /// When the clip started, ms after the step started.
    pub started_ms: f64,
    /// Where speech ends inside the clip.
    pub clip_speech_end_ms: u64,
    /// First reply audio byte received.
    pub ttfb_ms: Option<f64>,
    /// `input_audio_buffer.speech_stopped` received (the server's endpoint decision).
    pub vad_stopped_ms: Option<f64>,
    /// `conversation.item.input_audio_transcription.completed` received.
    pub asr_final_ms: Option<f64>,
    pub transcript: Option<String>,
    pub response_id: Option<String>,
    /// `response.done` status (completed, cancelled, incomplete, failed).
    pub reply_status: Option<String>,
    /// `response.done` received.
    pub reply_done_ms: Option<f64>,
    /// Reply audio received, in ms of playout.
    pub reply_audio_ms: f64,
    /// Gaps longer than one frame while the reply played (see `playout`).
    pub underruns: u32,
    pub underrun_ms: f64,
    /// Responses that produced audio before the clip's speech ended (the server's VAD split
    /// the utterance at a pause).
    pub early_replies: u32,
    /// The server answered before the clip's speech ended: a `response.created` or an
    /// `input_audio_buffer.committed` (the utterance split into two user items) arrived, or
    /// reply audio did (`early_replies`). With `--pause-ms` this is the cut-in the pause caused.
    pub cut_in: bool,
    /// How the caller left the reply: listened to it all, spoke over it, or hung up on it
    /// (soak churn, `--barge-in-pct` / `--hang-up-pct`).
    pub ending: TurnEnding,
    pub server_latency: Option<ServerLatency>,
    /// Why the turn failed (timeout, connection lost); `None` when it completed.
    pub error: Option<String>,
}

/// How a caller leaves a reply. A churned turn still needs reply audio before the caller
/// acts, so it is measured (TTFB) like any other.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TurnEnding {
    /// Listens until the reply is done and has played.
    #[default]
    Listened,
    /// Starts the next clip over the reply (a barge-in).
    BargedIn,
    /// Closes the connection in the middle of the reply.
    HungUp,
}

impl TurnRecord {
    pub fn got_audio(&self) -> bool {
        self.ttfb_ms.is_some() && self.reply_audio_ms > 0.0
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The WebSocket handshake or session set-up failed (refusal, 503, auth).
    Connect,
    /// The server sent an `error` event.
    Server,
    /// No reply (or no end of reply) within the turn timeout.
    Timeout,
    /// The connection closed or broke mid-session.
    Closed,
    /// The server sent something unreadable.
    Protocol,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorRecord {
    pub session: usize,
    pub turn: Option<usize>,
    /// ms after the step started.
    pub at_ms: f64,
    pub kind: ErrorKind,
    pub message: String,
}
