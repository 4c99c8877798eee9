//! What a session and the engines say to each other: commands out (audio to recognise, a
//! conversation to answer, text to speak), events back (speech edges, transcripts, tokens,
//! audio), each reply's work tagged with its [`Epoch`] so stale output can be dropped.

use std::time::Instant;

use super::conversation::ChatMessage;
use antiphon_models::vad::endpoint::EndpointConfig;

/// The epoch of an agent reply. Outputs made for another epoch are stale.
pub type Epoch = u64;

/// Which engine an event or failure concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// VAD + streaming ASR.
    Asr,
    Llm,
    Tts,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Asr => "asr",
            Engine::Llm => "llm",
            Engine::Tts => "tts",
        }
    }
}

/// Events from the engines, as the session receives them. Wiring a real engine means mapping
/// its events onto these.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// VAD: speech began at `audio_ms` of this session's input audio (media time).
    SpeechStarted {
        audio_ms: u64,
    },
    /// VAD endpoint: speech ended at `audio_ms`. `now` passed with it should be the arrival
    /// instant of the last voiced frame (the latency origin).
    SpeechStopped {
        audio_ms: u64,
    },
    TranscriptPartial {
        text: String,
    },
    /// The caller paused inside speech long enough that `text` is what the final transcript
    /// will say if the pause becomes the endpoint: a reply may start speculatively.
    SpeechPaused {
        text: String,
    },
    /// Speech went on after a `SpeechPaused`: a speculative reply on it is stale.
    SpeechResumed,
    /// Semantic turn detection judged a pause: the acoustic P(turn complete), whether the
    /// transcript vetoed a "done", and whether the turn ends here (`SpeechStopped` follows).
    TurnJudged {
        probability: f32,
        vetoed: bool,
        complete: bool,
    },
    TranscriptFinal {
        text: String,
    },
    /// Diarization: the speaker of the user turn whose `TranscriptFinal` comes next
    /// (`S1`, `S2`, …, stable for the session). Sent just before that final, or not at all.
    SpeakerLabel {
        label: String,
    },
    LlmToken {
        epoch: Epoch,
        text: String,
    },
    LlmDone {
        epoch: Epoch,
    },
    /// A TTS chunk: mono f32 `samples` at `rate` that speak `text`.
    TtsAudio {
        epoch: Epoch,
        samples: Vec<f32>,
        rate: u32,
        text: String,
    },
    TtsDone {
        epoch: Epoch,
    },
    /// The TTS engine (which cuts LLM text into chunks itself) handed this reply's first
    /// chunk to synthesis: the "first clause" stage of the latency trace.
    TtsClause {
        epoch: Epoch,
    },
    /// The recogniser fell behind by more than its inbox holds and dropped `ms` of this
    /// caller's audio (the oldest it held): words in it are lost, and the caller is told.
    InputAudioDropped {
        ms: u64,
    },
    /// An engine failed; `epoch` when it concerns one reply.
    Failed {
        engine: Engine,
        epoch: Option<Epoch>,
        message: String,
    },
}

/// Work for the engines. The session forwards these without awaiting (bounded channels).
#[derive(Debug, Clone, PartialEq)]
pub enum EngineCommand {
    /// Input audio, mono f32 at 16 kHz, in arrival order, with the arrival instant of the
    /// client message that carried it (the engine adapter maps ASR audio times back to it).
    AsrAudio {
        samples: Vec<f32>,
        arrival: Instant,
    },
    /// Manual turn: the buffer was committed; finish the utterance and send `TranscriptFinal`.
    AsrCommit,
    /// The input buffer was cleared: drop buffered audio and VAD state.
    AsrReset,
    /// `session.update` changed the turn detection: the endpointer must use this from now on
    /// (audio the recogniser still buffers may be discarded).
    AsrConfigure(EndpointConfig),
    LlmStart {
        epoch: Epoch,
        messages: Vec<ChatMessage>,
        max_tokens: Option<u32>,
    },
    LlmCancel {
        epoch: Epoch,
    },
    /// The caller has said `text` so far in the turn being spoken: the engine may prefill the
    /// opening of that user message now. A hint; nothing waits on it.
    LlmLookahead {
        text: String,
    },
    /// Take the turn started with `epoch` back out of the engine's conversation (its user
    /// message and its reply, cancelled if running): a speculative reply the caller overtook.
    LlmWithdraw {
        epoch: Epoch,
    },
    /// The instructions changed: the conversation the next `LlmStart` will send (so far),
    /// for the engine to open and prefill ahead of the turn. A hint; nothing waits on it.
    LlmPrepare {
        messages: Vec<ChatMessage>,
    },
    /// Text to speak, in order; `voice` from the session config.
    TtsText {
        epoch: Epoch,
        text: String,
        voice: String,
    },
    /// No more text for this epoch: speak the rest, then send `TtsDone`.
    TtsFinish {
        epoch: Epoch,
    },
    TtsCancel {
        epoch: Epoch,
    },
}

/// Which engines are wired into this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Engines {
    pub asr: bool,
    pub llm: bool,
    pub tts: bool,
}

impl EngineEvent {
    /// The reply epoch this event belongs to, for reply outputs.
    pub fn epoch(&self) -> Option<Epoch> {
        match self {
            EngineEvent::LlmToken { epoch, .. }
            | EngineEvent::LlmDone { epoch }
            | EngineEvent::TtsAudio { epoch, .. }
            | EngineEvent::TtsClause { epoch }
            | EngineEvent::TtsDone { epoch } => Some(*epoch),
            EngineEvent::Failed { epoch, .. } => *epoch,
            _ => None,
        }
    }
}
