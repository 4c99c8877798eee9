//! Sans-IO turn and response state machine of one Realtime session.
//!
//! Feed it client events ([`TurnManager::handle_client`]), engine events
//! ([`TurnManager::handle_engine`]), timeouts and "audio was written" notices, each with `now`;
//! drain [`TurnManager::poll_output`] for server events to send and [`EngineCommand`]s to hand
//! to the engines; wait no longer than [`TurnManager::poll_timeout`]. No clocks, sockets or
//! threads inside: tests drive it with virtual time.
//!
//! Cancel by id: every response gets a fresh epoch; a barge-in or `response.cancel` bumps the
//! epoch, and any LLM/TTS output tagged with another epoch is dropped (and counted).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::audio_format::{FrameInput, InputDecoder, OutputEncoder};
use super::conversation::{ChatMessage, ChatRole, Conversation, ConversationError};
use super::engine::{Engine, EngineCommand, EngineEvent, Engines, Epoch};
use super::events::Limits;
use super::events::*;
use antiphon_audio::frame::AudioFrame;
use antiphon_models::vad::endpoint::{EndpointConfig, TurnEnd};

/// What the session must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Event(ServerEvent),
    Command(EngineCommand),
}

/// Per-session knobs from the server config.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnSettings {
    pub limits: Limits,
    /// After the first reply audio is sent, speech starts within this window are taken as
    /// possible echo: they interrupt only if the speech is still going when the window ends.
    pub echo_guard: Duration,
    pub max_items: usize,
    /// Most text the conversation's items may hold together: the oldest go to make room.
    pub max_conversation_bytes: usize,
    /// Reply audio leaves as f32 frames ([`ServerEvent::AudioOut`]) for a transport that
    /// encodes it itself, instead of `AudioDelta` bytes in the session's output format.
    pub frames_out: bool,
    /// Speculative replies begun on a pause's transcript, at most this many per user turn
    /// (0: never speculate; replies then start at the endpoint, as before).
    pub max_speculations: u32,
    /// Send the caller's words so far to the LLM to prefill while they speak.
    pub lookahead: bool,
    /// Close the session when nothing came from the client and no engine event arrived for
    /// this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// The voices `session.update` may choose besides OpenAI's names (empty: any).
    pub voices: Arc<[String]>,
}

impl Default for TurnSettings {
    fn default() -> Self {
        TurnSettings {
            limits: Limits::default(),
            echo_guard: Duration::from_millis(300),
            max_items: 1000,
            max_conversation_bytes: 24 << 10,
            frames_out: false,
            max_speculations: 3,
            lookahead: true,
            idle_timeout: Some(Duration::from_secs(120)),
            voices: Arc::from(Vec::new()),
        }
    }
}

/// OpenAI's Realtime voice names: clients send them as a matter of course, so they are
/// accepted and speak with the server's default voice.
const OPENAI_VOICES: &[&str] = &[
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage",
    "shimmer", "verse",
];

/// Whether a session may choose `voice`: one the server speaks, or an OpenAI name.
fn voice_accepted(voices: &[String], voice: &str) -> bool {
    voices.is_empty() || voices.iter().any(|v| v == voice) || OPENAI_VOICES.contains(&voice)
}

/// A finished reply whose audio the client has not been sent yet (see `finished_unsent`).
struct FinishedUnsent {
    response_id: String,
    /// The assistant item, when a barge-in may truncate it once it plays.
    played_item: Option<String>,
    trace: Trace,
    span: tracing::Span,
}

/// Stage instants of one turn.
#[derive(Debug, Clone, Default)]
struct Trace {
    origin: Option<(Instant, LatencyOrigin)>,
    asr_final: Option<Instant>,
    llm_first_token: Option<Instant>,
    first_clause: Option<Instant>,
    tts_first_audio: Option<Instant>,
    first_audio_sent: Option<Instant>,
    /// The reply was begun speculatively at this instant and adopted at the endpoint.
    speculation_started: Option<Instant>,
    /// Semantic turn detection's P(turn complete) for the pause that ended the turn.
    end_of_turn_probability: Option<f32>,
    reported: bool,
}

impl Trace {
    fn report(&self, response_id: &str) -> Option<TurnLatency> {
        let (origin, kind) = self.origin?;
        let rel = |t: Option<Instant>| {
            t.map(|t| {
                if t >= origin {
                    t.duration_since(origin).as_secs_f64() * 1000.0
                } else {
                    -(origin.duration_since(t).as_secs_f64() * 1000.0)
                }
            })
        };
        Some(TurnLatency {
            response_id: response_id.to_string(),
            origin: kind,
            asr_final_ms: rel(self.asr_final),
            llm_first_token_ms: rel(self.llm_first_token),
            first_clause_ms: rel(self.first_clause),
            tts_first_audio_ms: rel(self.tts_first_audio),
            first_audio_sent_ms: rel(self.first_audio_sent),
            speculation_started_ms: rel(self.speculation_started),
            end_of_turn_probability: self.end_of_turn_probability,
        })
    }
}

fn first(slot: &mut Option<Instant>, now: Instant) {
    slot.get_or_insert(now);
}

#[derive(Debug)]
struct ActiveResponse {
    id: String,
    epoch: Epoch,
    item: Item,
    audio: bool,
    out_of_band: bool,
    instructions: String,
    /// LLM not started yet: waiting for the user's transcript.
    waiting_for_transcript: bool,
    text: String,
    trace: Trace,
    /// Log span of this turn (a child of the session's span when created inside it).
    span: tracing::Span,
}

impl ActiveResponse {
    fn part(&self) -> PartRef {
        PartRef {
            response_id: self.id.clone(),
            item_id: self.item.id.clone(),
            output_index: 0,
            content_index: 0,
        }
    }
}

/// A reply begun on a pause's transcript before the turn is certain. Its engine work runs
/// (the LLM, and the TTS on its tokens) but every output is held: nothing reaches the client
/// until the endpoint confirms the turn and the conversation renders to exactly the messages
/// it was started on. Otherwise it is withdrawn without a trace.
#[derive(Debug)]
struct Speculation {
    epoch: Epoch,
    messages: Vec<ChatMessage>,
    max_tokens: Option<u32>,
    audio: bool,
    voice: String,
    started: Instant,
    /// Its engine events, in arrival order, with their arrival instants.
    held: Vec<(Instant, EngineEvent)>,
}

/// Semantic turn detection: a caller who speaks again this soon after the end of the speech that
/// was committed as their turn had only paused (a cut-in). The two halves become one user item
/// and the reply to the first half goes, instead of two answers. (Both instants are the arrival
/// of the voiced audio: the gap is the caller's pause.) Mid-sentence pauses run 400–900 ms;
/// a caller who hears the reply begin (~0.5 s after their speech) and answers it takes longer.
pub const MERGE_WINDOW: Duration = Duration::from_millis(1000);

/// A user turn committed by turn detection, which the caller may still resume.
#[derive(Debug)]
struct Committed {
    item_id: String,
    at: Instant,
}

/// With turn detection on, the most audio heard while nobody speaks that the input buffer
/// counts: more than any prefix padding plus the recogniser's lag behind the caller.
const IDLE_INPUT_MS: u64 = 10_000;

/// Counters the session exports as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnCounters {
    pub stale_outputs_dropped: u64,
    pub audio_bytes_rejected: u64,
    pub responses_completed: u64,
    pub responses_cancelled: u64,
    pub speculations_started: u64,
    /// Speculative replies that became the turn's reply.
    pub speculations_adopted: u64,
    /// Speculative replies withdrawn (the caller went on, or the turn came out different).
    pub speculations_withdrawn: u64,
    /// Pauses judged the end of the turn (semantic turn detection).
    pub turns_judged_done: u64,
    /// Pauses judged mid-turn: the caller was given more time.
    pub turns_judged_not_done: u64,
    /// Pauses that sounded done but whose transcript stops mid-sentence.
    pub turns_judged_vetoed: u64,
    /// Caller audio the recogniser dropped because it fell behind, in ms.
    pub input_audio_dropped_ms: u64,
    /// Turns the caller resumed within [`MERGE_WINDOW`] of their commit (cut-ins), merged
    /// into one user item.
    pub turns_merged: u64,
}

/// The turn/response state machine of one session.
pub struct TurnManager {
    config: SessionConfig,
    engines: Engines,
    settings: TurnSettings,
    conversation: Conversation,
    next_id: u64,
    epoch: Epoch,
    decoder: InputDecoder,
    /// Caller audio from legs that pass f32 frames.
    frames: FrameInput,
    encoder: OutputEncoder,
    input_bytes: usize,
    /// Item id of the user's speech in progress (server VAD).
    speech_item: Option<String>,
    /// User audio item waiting for its ASR transcript.
    awaiting_transcript: Option<String>,
    /// Speaker label for the next transcript final.
    next_speaker: Option<String>,
    /// Latency origin of the last user turn, consumed by the next response.
    last_turn_end: Option<Instant>,
    last_asr_final: Option<Instant>,
    response: Option<ActiveResponse>,
    /// The last finished audio reply (item id, first audio sent): its audio may still be
    /// playing at the client, so a barge-in truncates it to what was heard.
    last_played: Option<(String, Instant)>,
    /// A reply that finished before any of its audio was written to the client (a speculative
    /// reply adopted whole): its latency trace, and its played position, wait for that write.
    finished_unsent: Option<FinishedUnsent>,
    warned_no_asr: bool,
    /// VAD parameters the ASR engine was last told (threshold, prefix, silence); starts as the
    /// session's initial config, which the pipeline opened the ASR slot with.
    asr_vad: Option<EndpointConfig>,
    speculation: Option<Speculation>,
    /// Speculations begun since the last endpoint.
    speculations_this_turn: u32,
    /// The last pause judgement of the caller's current turn (for the latency trace).
    end_of_turn_probability: Option<f32>,
    /// Held events of an adopted speculation are being handled: their engine commands
    /// (text to the TTS) were already sent.
    replaying: bool,
    counters: TurnCounters,
    /// End of the echo guard: `settings.echo_guard` after a reply's first audio was sent. It
    /// outlives the response (a reply is done once synthesized, while its audio still plays).
    guard_until: Option<Instant>,
    /// Speech began inside the guard: ignored if it ends inside it (most likely our own echo);
    /// a barge-in if it is still going when the guard ends.
    guarded_speech: bool,
    /// The last turn turn detection committed, while the caller may still resume it.
    last_committed: Option<Committed>,
    /// The speech in progress resumes this committed turn (see [`MERGE_WINDOW`]).
    resumes: Option<String>,
    /// The item made of a resumed turn, and the first half's transcript to put before its own.
    merged_prefix: Option<(String, String)>,
    out: VecDeque<Output>,
}

/// The parts of turn detection the ASR endpointer uses.
fn vad_params(td: &TurnDetection) -> EndpointConfig {
    EndpointConfig {
        threshold: td.threshold,
        prefix_padding_ms: td.prefix_padding_ms,
        silence_duration_ms: td.silence_duration_ms,
        turn_end: td.semantic.map_or(TurnEnd::Timer, TurnEnd::Semantic),
    }
}

impl TurnManager {
    /// Creates the machine and queues `session.created`.
    pub fn new(config: SessionConfig, engines: Engines, settings: TurnSettings) -> Self {
        let asr_vad = config.turn_detection.as_ref().map(vad_params);
        let mut t = TurnManager {
            decoder: InputDecoder::new(config.input_format),
            frames: FrameInput::default(),
            encoder: OutputEncoder::new(config.output_format),
            conversation: Conversation::new(settings.max_items, settings.max_conversation_bytes),
            config,
            engines,
            settings,
            next_id: 0,
            epoch: 0,
            input_bytes: 0,
            speech_item: None,
            awaiting_transcript: None,
            next_speaker: None,
            last_turn_end: None,
            last_asr_final: None,
            response: None,
            last_played: None,
            finished_unsent: None,
            warned_no_asr: false,
            asr_vad,
            speculation: None,
            speculations_this_turn: 0,
            end_of_turn_probability: None,
            replaying: false,
            counters: TurnCounters::default(),
            guard_until: None,
            guarded_speech: false,
            last_committed: None,
            resumes: None,
            merged_prefix: None,
            out: VecDeque::new(),
        };
        t.emit(ServerEvent::SessionCreated(t.config.clone()));
        t
    }

    #[cfg(test)]
    pub fn conversation(&self) -> &Conversation {
        &self.conversation
    }

    #[cfg(test)]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    pub fn counters(&self) -> TurnCounters {
        self.counters
    }

    /// The active response id, if a reply is in progress.
    #[cfg(test)]
    pub fn active_response(&self) -> Option<&str> {
        self.response.as_ref().map(|r| r.id.as_str())
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The next instant `handle_timeout` must be called at, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.guarded_speech {
            self.guard_until
        } else {
            None
        }
    }

    fn emit(&mut self, e: ServerEvent) {
        self.out.push_back(Output::Event(e));
    }

    fn command(&mut self, c: EngineCommand) {
        self.out.push_back(Output::Command(c));
    }

    fn error(&mut self, e: ErrorInfo) {
        self.emit(ServerEvent::Error(e));
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        // Session id suffix keeps ids unique across sessions in logs.
        let tail = self.config.id.rsplit('_').next().unwrap_or("");
        format!("{prefix}_{tail}{:04}", self.next_id)
    }

    fn engine_unavailable(engine: Engine, what: &str, event_id: Option<String>) -> ErrorInfo {
        ErrorInfo {
            kind: "server_error",
            code: "engine_unavailable",
            message: format!(
                "{what} needs the {} engine, which this server does not run",
                engine.as_str()
            ),
            param: None,
            event_id,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Client events

    pub fn handle_client(&mut self, now: Instant, msg: ClientMessage) {
        let eid = msg.event_id;
        if !matches!(msg.event, ClientEvent::AudioAppend { .. }) {
            // The client is changing the session or the conversation under the speculation.
            self.withdraw_speculation();
        }
        match msg.event {
            ClientEvent::SessionUpdate(patch) => self.session_update(patch, eid),
            ClientEvent::AudioAppend { audio } => self.append(now, audio, eid),
            ClientEvent::AudioCommit => self.commit(now, eid),
            ClientEvent::AudioClear => {
                self.input_bytes = 0;
                self.speech_item = None;
                if self.engines.asr {
                    self.command(EngineCommand::AsrReset);
                }
                self.emit(ServerEvent::AudioCleared);
            }
            ClientEvent::ItemCreate { previous_item_id, item } => self.item_create(previous_item_id, item, eid),
            ClientEvent::ItemTruncate { item_id, content_index, audio_end_ms } => {
                match self.conversation.truncate(&item_id, content_index, audio_end_ms) {
                    Ok(()) => self.emit(ServerEvent::ItemTruncated { item_id, content_index, audio_end_ms }),
                    Err(e) => self.error(conversation_error(e, eid)),
                }
            }
            ClientEvent::ItemDelete { item_id } => {
                if self.response.as_ref().is_some_and(|r| r.item.id == item_id) {
                    self.error(
                        ErrorInfo::invalid_request("item_in_progress", format!("item '{item_id}' belongs to the response in progress; cancel it first"))
                            .with_event_id(eid),
                    );
                    return;
                }
                match self.conversation.delete(&item_id) {
                    Ok(_) => self.emit(ServerEvent::ItemDeleted { item_id }),
                    Err(e) => self.error(conversation_error(e, eid)),
                }
            }
            ClientEvent::ResponseCreate(opts) => {
                let origin = match self.last_turn_end.take() {
                    Some(t) => (t, LatencyOrigin::SpeechEnd),
                    None => (now, LatencyOrigin::ResponseCreate),
                };
                self.start_response(opts, origin, eid);
            }
            ClientEvent::ResponseCancel { response_id } => match (&self.response, response_id) {
                (None, _) => self.error(
                    ErrorInfo::invalid_request("response_cancel_not_active", "there is no response in progress to cancel")
                        .with_event_id(eid),
                ),
                (Some(r), Some(id)) if r.id != id => {
                    let msg = format!("response '{id}' is not the response in progress ('{}')", r.id);
                    self.error(ErrorInfo::invalid_request("invalid_value", msg).with_event_id(eid));
                }
                _ => self.cancel(CancelReason::ClientCancelled),
            },
            ClientEvent::OutputAudioClear => self.error(
                ErrorInfo::invalid_request(
                    "unsupported_event",
                    "output_audio_buffer.clear is for WebRTC/SIP; over WebSocket the client owns playback (send response.cancel and conversation.item.truncate)",
                )
                .with_event_id(eid),
            ),
        }
    }

    fn session_update(&mut self, patch: SessionPatch, eid: Option<String>) {
        if let Some(voice) = &patch.voice
            && !voice_accepted(&self.settings.voices, voice)
        {
            let msg = format!(
                "unknown voice '{voice}': this server speaks {} (OpenAI's voice names are accepted \
                 and use the server's default voice); the session is unchanged",
                self.settings.voices.join(", ")
            );
            let mut error = ErrorInfo::invalid_request("invalid_value", msg).with_event_id(eid);
            error.param = Some("session.voice".into());
            self.error(error);
            return;
        }
        let old_in = self.config.input_format;
        let old_out = self.config.output_format;
        let old_instructions = self.config.instructions.clone();
        self.config.apply(patch);
        if self.config.instructions != old_instructions && self.engines.llm {
            let messages = self.conversation.to_chat(&self.config.instructions);
            self.command(EngineCommand::LlmPrepare { messages });
        }
        if self.config.input_format != old_in {
            self.decoder = InputDecoder::new(self.config.input_format);
            self.input_bytes = 0;
        }
        if self.config.output_format != old_out {
            self.encoder = OutputEncoder::new(self.config.output_format);
        }
        // Switching to manual turns leaves the endpointer as it is (its events are ignored).
        if let Some(p) = self.config.turn_detection.as_ref().map(vad_params)
            && self.asr_vad != Some(p)
            && self.engines.asr
        {
            self.asr_vad = Some(p);
            self.command(EngineCommand::AsrConfigure(p));
        }
        self.emit(ServerEvent::SessionUpdated(self.config.clone()));
    }

    fn append(&mut self, now: Instant, audio: Vec<u8>, eid: Option<String>) {
        if !self.admit_input(audio.len(), eid.clone()) {
            return;
        }
        if self.engines.asr {
            let mut samples = Vec::new();
            self.decoder.decode(&audio, &mut samples);
            self.send_to_asr(samples, now);
        } else {
            self.warn_no_asr(eid);
        }
    }

    /// Caller audio from a transport leg: f32 at the leg's rate, stamped at its socket.
    pub fn handle_audio(&mut self, frame: AudioFrame) {
        // Counted as the bytes the session's input format would take, so the buffer limit
        // means the same length of audio on every transport.
        let format = self.config.input_format;
        let per_sample = if format == AudioFormat::Pcm16 { 2 } else { 1 };
        let bytes = (frame.samples.len() as u64 * u64::from(format.sample_rate())
            / u64::from(frame.sample_rate.max(1))) as usize
            * per_sample;
        if !self.admit_input(bytes, None) {
            return;
        }
        if !self.engines.asr {
            self.warn_no_asr(None);
            return;
        }
        let mut samples = Vec::with_capacity(frame.samples.len());
        match self
            .frames
            .push(&frame.samples, frame.sample_rate, &mut samples)
        {
            Ok(()) => self.send_to_asr(samples, frame.arrival),
            Err(e) => self.error(ErrorInfo::invalid_request(
                "invalid_audio",
                format!("caller audio unusable: {e}"),
            )),
        }
    }

    /// Counts `bytes` into the uncommitted input buffer, or refuses them (error event).
    fn admit_input(&mut self, bytes: usize, eid: Option<String>) -> bool {
        let limit = self.settings.limits.max_audio_buffer_bytes;
        if self.input_bytes + bytes > limit {
            self.counters.audio_bytes_rejected += bytes as u64;
            let msg = format!(
                "input audio buffer would exceed {limit} bytes ({} buffered, {bytes} appended); commit or clear it",
                self.input_bytes,
            );
            self.error(
                ErrorInfo::invalid_request("input_audio_buffer_full", msg).with_event_id(eid),
            );
            return false;
        }
        self.input_bytes += bytes;
        if self.config.turn_detection.is_some() && self.speech_item.is_none() {
            // Nobody is speaking: the recogniser keeps only the prefix padding of this audio,
            // so the buffer must not fill with it (a long silence would make the session deaf).
            let cap = self.config.input_format.ms_to_bytes(IDLE_INPUT_MS);
            self.input_bytes = self.input_bytes.min(cap);
        }
        true
    }

    fn send_to_asr(&mut self, samples: Vec<f32>, arrival: Instant) {
        if !samples.is_empty() {
            self.command(EngineCommand::AsrAudio { samples, arrival });
        }
    }

    fn warn_no_asr(&mut self, eid: Option<String>) {
        if self.config.turn_detection.is_some() && !self.warned_no_asr {
            self.warned_no_asr = true;
            let mut e = Self::engine_unavailable(Engine::Asr, "turn_detection server_vad", eid);
            e.message.push_str("; audio is buffered only: set turn_detection to null and send input_audio_buffer.commit for manual turns");
            self.error(e);
        }
    }

    /// A leg that plays audio itself says how much of `item_id` the caller heard when it
    /// stopped. The item is cut to that only if it is shorter than the session's own cut.
    pub fn handle_played(&mut self, item_id: &str, audio_end_ms: u32) {
        let Some(current) = self.conversation.audio_ms(item_id) else {
            tracing::debug!(item_id, "played report for an unknown item dropped");
            return;
        };
        if f64::from(audio_end_ms) >= current {
            return;
        }
        match self.conversation.truncate(item_id, 0, audio_end_ms) {
            Ok(()) => self.emit(ServerEvent::ItemTruncated {
                item_id: item_id.to_string(),
                content_index: 0,
                audio_end_ms,
            }),
            Err(e) => tracing::debug!(%e, "played report not applied"),
        }
    }

    /// A DTMF key press becomes a user text item `DTMF <key>` (no response by itself: the
    /// next turn's reply sees it).
    pub fn handle_dtmf(&mut self, key: char) {
        let item = Item {
            id: String::new(),
            status: ItemStatus::Completed,
            kind: ItemKind::Message {
                role: Role::User,
                content: vec![Content::InputText {
                    text: format!("DTMF {key}"),
                }],
            },
        };
        self.item_create(None, item, None);
    }

    fn commit(&mut self, now: Instant, eid: Option<String>) {
        if self.input_bytes == 0 {
            self.error(
                ErrorInfo::invalid_request(
                    "input_audio_buffer_commit_empty",
                    "the input audio buffer is empty",
                )
                .with_event_id(eid),
            );
            return;
        }
        let item_id = self
            .speech_item
            .take()
            .unwrap_or_else(|| self.new_id("item"));
        self.commit_user_audio(now, item_id);
        if self.engines.asr {
            self.command(EngineCommand::AsrCommit);
        } else if self.config.transcription.is_some() {
            self.awaiting_transcript = None;
            self.error(Self::engine_unavailable(
                Engine::Asr,
                "input audio transcription",
                eid,
            ));
        } else {
            self.awaiting_transcript = None;
        }
    }

    /// Turns the buffered audio into a user item (committed + added events).
    fn commit_user_audio(&mut self, now: Instant, item_id: String) {
        let ms = self.config.input_format.bytes_to_ms(self.input_bytes);
        tracing::debug!(item_id, audio_ms = ms, "input audio committed");
        self.input_bytes = 0;
        let item = Item {
            id: item_id.clone(),
            status: ItemStatus::Completed,
            kind: ItemKind::Message {
                role: Role::User,
                content: vec![Content::InputAudio {
                    audio: None,
                    transcript: None,
                }],
            },
        };
        self.make_room(&item, None);
        let previous_item_id = self.conversation.last_id().map(str::to_string);
        match self.conversation.insert(item.clone(), None) {
            Ok(_) => {
                self.emit(ServerEvent::AudioCommitted {
                    previous_item_id: previous_item_id.clone(),
                    item_id: item_id.clone(),
                });
                self.emit(ServerEvent::ItemAdded {
                    previous_item_id,
                    item,
                });
                self.awaiting_transcript = Some(item_id);
                self.last_turn_end = Some(now);
            }
            Err(e) => self.error(conversation_error(e, None)),
        }
    }

    /// A conversation at its item limit forgets its oldest items, and the client is told
    /// (`conversation.item.deleted`): a long call, or a thousand key presses, keeps going on
    /// its recent context instead of failing every later turn.
    fn make_room(&mut self, incoming: &Item, keep: Option<&str>) {
        for old in self.conversation.make_room(incoming, keep) {
            tracing::debug!(
                item_id = old.id,
                "oldest item dropped at the conversation limit"
            );
            self.emit(ServerEvent::ItemDeleted { item_id: old.id });
        }
    }

    fn item_create(&mut self, previous: Option<String>, mut item: Item, eid: Option<String>) {
        if let ItemKind::Message { content, .. } = &item.kind
            && content.iter().any(|c| {
                matches!(
                    c,
                    Content::InputAudio {
                        audio: Some(_),
                        transcript: None
                    }
                )
            })
        {
            let e = if self.engines.asr {
                ErrorInfo::invalid_request(
                    "unsupported_content",
                    "input_audio content without a transcript is not transcribed here; stream it with input_audio_buffer.append",
                )
                .with_event_id(eid)
            } else {
                Self::engine_unavailable(
                    Engine::Asr,
                    "input_audio content without a transcript",
                    eid,
                )
            };
            self.error(e);
            return;
        }
        if item.id.is_empty() {
            item.id = self.new_id("item");
        }
        self.make_room(&item, previous.as_deref());
        match self.conversation.insert(item.clone(), previous.as_deref()) {
            Ok(previous_item_id) => {
                self.emit(ServerEvent::ItemAdded {
                    previous_item_id: previous_item_id.clone(),
                    item: item.clone(),
                });
                self.emit(ServerEvent::ItemDone {
                    previous_item_id,
                    item,
                });
            }
            Err(e) => self.error(conversation_error(e, eid)),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Responses

    fn start_response(
        &mut self,
        opts: ResponseOptions,
        origin: (Instant, LatencyOrigin),
        eid: Option<String>,
    ) {
        if let Some(r) = &self.response {
            let msg = format!("conversation already has an active response '{}'", r.id);
            self.error(
                ErrorInfo::invalid_request("conversation_already_has_active_response", msg)
                    .with_event_id(eid),
            );
            return;
        }
        let modalities = opts
            .output_modalities
            .unwrap_or_else(|| self.config.output_modalities.clone());
        let audio = modalities.contains(&Modality::Audio);
        if !self.engines.llm {
            self.error(Self::engine_unavailable(
                Engine::Llm,
                "response.create",
                eid,
            ));
            return;
        }
        if audio && !self.engines.tts {
            let mut e = Self::engine_unavailable(Engine::Tts, "an audio response", eid);
            e.message.push_str("; ask for output_modalities [\"text\"]");
            self.error(e);
            return;
        }
        self.epoch += 1;
        let id = self.new_id("resp");
        let item_id = self.new_id("item");
        let content = if audio {
            Content::OutputAudio {
                transcript: String::new(),
            }
        } else {
            Content::OutputText {
                text: String::new(),
            }
        };
        let item = Item {
            id: item_id,
            status: ItemStatus::InProgress,
            kind: ItemKind::Message {
                role: Role::Assistant,
                content: vec![content],
            },
        };
        let mut trace = Trace {
            origin: Some(origin),
            ..Trace::default()
        };
        if origin.1 == LatencyOrigin::SpeechEnd {
            trace.asr_final = self.last_asr_final;
            trace.end_of_turn_probability = self.end_of_turn_probability.take();
        }
        let span = tracing::info_span!("turn", response_id = %id, epoch = self.epoch);
        span.in_scope(|| tracing::info!(origin = origin.1.as_str(), audio, "response started"));
        let resp = ActiveResponse {
            span,
            id: id.clone(),
            epoch: self.epoch,
            item: item.clone(),
            audio,
            out_of_band: opts.out_of_band,
            instructions: opts
                .instructions
                .unwrap_or_else(|| self.config.instructions.clone()),
            waiting_for_transcript: self.awaiting_transcript.is_some(),
            text: String::new(),
            trace,
        };
        self.emit(ServerEvent::ResponseCreated(self.response_info(
            &resp,
            ResponseStatus::InProgress,
            None,
            vec![],
        )));
        self.emit(ServerEvent::OutputItemAdded {
            response_id: id,
            output_index: 0,
            item: item.clone(),
        });
        if !resp.out_of_band {
            self.make_room(&item, None);
            match self.conversation.insert(item.clone(), None) {
                Ok(previous_item_id) => self.emit(ServerEvent::ItemAdded {
                    previous_item_id,
                    item,
                }),
                Err(e) => {
                    self.error(conversation_error(e, None));
                    return;
                }
            }
        }
        let kind = if audio {
            PartKind::Audio
        } else {
            PartKind::Text
        };
        self.emit(ServerEvent::ContentPartAdded {
            part: resp.part(),
            kind,
            text: String::new(),
        });
        self.encoder.reset();
        let waiting = resp.waiting_for_transcript;
        self.response = Some(resp);
        if !waiting {
            self.start_llm();
        }
    }

    fn start_llm(&mut self) {
        let Some(r) = self.response.as_mut() else {
            return;
        };
        r.waiting_for_transcript = false;
        let (epoch, audio, oob) = (r.epoch, r.audio, r.out_of_band);
        let instructions = r.instructions.clone();
        let messages = self.conversation.to_chat(&instructions);
        let max_tokens = self.config.max_output_tokens;
        if let Some(spec) = self.speculation.take() {
            let same = spec.messages == messages
                && spec.max_tokens == max_tokens
                && spec.audio == audio
                && spec.voice == self.config.voice
                && !oob;
            if same {
                self.adopt(spec);
                return;
            }
            self.withdraw(spec);
        }
        self.command(EngineCommand::LlmStart {
            epoch,
            messages,
            max_tokens,
        });
    }

    // -----------------------------------------------------------------------------------------
    // Speculation

    /// The caller paused and `text` is what the final transcript will be if the pause is the
    /// end of the turn: start the reply now, holding everything it produces.
    fn speech_paused(&mut self, now: Instant, text: String) {
        let audio = self.config.output_modalities.contains(&Modality::Audio);
        let worth_it = self.may_read_ahead(&text)
            && self
                .config
                .turn_detection
                .as_ref()
                .is_some_and(|td| td.create_response)
            && (self.engines.tts || !audio)
            && self.speculations_this_turn < self.settings.max_speculations;
        if !worth_it {
            return;
        }
        self.withdraw_speculation();
        let messages = self.chat_with_turn(text);
        self.epoch += 1;
        let spec = Speculation {
            epoch: self.epoch,
            messages: messages.clone(),
            max_tokens: self.config.max_output_tokens,
            audio,
            voice: self.config.voice.clone(),
            started: now,
            held: Vec::new(),
        };
        tracing::debug!(epoch = spec.epoch, "speculative reply started");
        self.command(EngineCommand::LlmStart {
            epoch: spec.epoch,
            messages,
            max_tokens: spec.max_tokens,
        });
        self.speculation = Some(spec);
        self.speculations_this_turn += 1;
        self.counters.speculations_started += 1;
    }

    /// The messages the LLM will be given if the caller's turn ends as `text`: the
    /// conversation, then `text` as the user's message, or, for speech that resumes a turn
    /// (see [`MERGE_WINDOW`]), the conversation before that turn and both halves as one.
    fn chat_with_turn(&self, text: String) -> Vec<ChatMessage> {
        let instructions = &self.config.instructions;
        let merged = self.resumes.as_deref().and_then(|first_half| {
            let first_text = self.conversation.user_transcript(first_half)?;
            let before = self
                .conversation
                .to_chat_before(instructions, Some(first_half));
            Some((before, format!("{first_text} {text}")))
        });
        let (mut messages, content) = match merged {
            Some(merged) => merged,
            None => (self.conversation.to_chat(instructions), text),
        };
        messages.push(ChatMessage {
            role: ChatRole::User,
            content,
        });
        messages
    }

    /// The caller's words so far, while they speak: the LLM may prefill them, so that the
    /// reply (speculative or not) starts with only the last words left to read.
    fn look_ahead(&mut self, text: &str) {
        if self.settings.lookahead && self.speculation.is_none() && self.may_read_ahead(text) {
            self.command(EngineCommand::LlmLookahead {
                text: text.to_string(),
            });
        }
    }

    /// The LLM may work on `text`, the caller's words in the turn being spoken, before the turn
    /// ends: turns are detected, the caller is speaking, no reply holds the LLM, and the words
    /// need no speaker label (with several voices the final's label is part of the prompt,
    /// unknown until the endpoint).
    fn may_read_ahead(&self, text: &str) -> bool {
        self.config.turn_detection.is_some()
            && self.speech_item.is_some()
            && self.response.is_none()
            && self.engines.llm
            && !text.trim().is_empty()
            && !self.conversation.several_speakers()
    }

    /// An engine event of the speculative reply: feed the TTS as a real reply would, hold the
    /// rest for the client until adoption.
    fn speculative_event(&mut self, now: Instant, event: EngineEvent) {
        let Some(spec) = self.speculation.as_mut() else {
            return;
        };
        let epoch = spec.epoch;
        match &event {
            EngineEvent::LlmToken { text, .. } if spec.audio => {
                let (text, voice) = (text.clone(), spec.voice.clone());
                spec.held.push((now, event));
                self.command(EngineCommand::TtsText { epoch, text, voice });
            }
            EngineEvent::LlmDone { .. } if spec.audio => {
                spec.held.push((now, event));
                self.command(EngineCommand::TtsFinish { epoch });
            }
            EngineEvent::Failed { message, .. } => {
                // Not the client's business yet: the turn, if it comes, runs as usual.
                tracing::debug!(%message, "speculative reply failed");
                self.withdraw_speculation();
            }
            _ => spec.held.push((now, event)),
        }
    }

    /// The turn ended as speculated: the speculation becomes the response, and what it held
    /// goes through the usual handlers in order.
    fn adopt(&mut self, spec: Speculation) {
        let Some(r) = self.response.as_mut() else {
            return;
        };
        r.epoch = spec.epoch;
        r.trace.speculation_started = Some(spec.started);
        r.span.in_scope(|| {
            tracing::debug!(
                held = spec.held.len(),
                epoch = spec.epoch,
                "speculative reply adopted"
            )
        });
        self.counters.speculations_adopted += 1;
        self.replaying = true;
        for (at, event) in spec.held {
            self.handle_engine(at, event);
        }
        self.replaying = false;
    }

    fn withdraw_speculation(&mut self) {
        if let Some(spec) = self.speculation.take() {
            self.withdraw(spec);
        }
    }

    /// Stops a speculative reply and takes its turn back out of the engine conversation. No
    /// event: the client never knew of it.
    fn withdraw(&mut self, spec: Speculation) {
        tracing::debug!(
            epoch = spec.epoch,
            held = spec.held.len(),
            "speculative reply withdrawn"
        );
        self.command(EngineCommand::LlmWithdraw { epoch: spec.epoch });
        if spec.audio {
            self.command(EngineCommand::TtsCancel { epoch: spec.epoch });
        }
        self.counters.speculations_withdrawn += 1;
    }

    fn response_info(
        &self,
        r: &ActiveResponse,
        status: ResponseStatus,
        reason: Option<CancelReason>,
        output: Vec<Item>,
    ) -> ResponseInfo {
        ResponseInfo {
            id: r.id.clone(),
            status,
            cancel_reason: reason,
            error: None,
            output,
            output_modalities: if r.audio {
                vec![Modality::Audio]
            } else {
                vec![Modality::Text]
            },
            output_format: self.config.output_format,
            voice: self.config.voice.clone(),
            conversation_id: None,
        }
    }

    /// Closes the active response: done events for its part and item, then `response.done`.
    fn finish(
        &mut self,
        status: ResponseStatus,
        reason: Option<CancelReason>,
        error: Option<(String, String)>,
    ) {
        let Some(mut r) = self.response.take() else {
            return;
        };
        self.last_played = match r.trace.first_audio_sent {
            Some(first_sent)
                if r.audio && !r.out_of_band && status == ResponseStatus::Completed =>
            {
                Some((r.item.id.clone(), first_sent))
            }
            _ => None,
        };
        let item_status = if status == ResponseStatus::Completed {
            ItemStatus::Completed
        } else {
            ItemStatus::Incomplete
        };
        if !r.out_of_band {
            // The conversation holds the authoritative transcript (it may have been truncated).
            if let Some(stored) = self.conversation.get(&r.item.id) {
                r.item = stored.clone();
            }
            let _ = self.conversation.set_status(&r.item.id, item_status);
        } else {
            r.item.kind = ItemKind::Message {
                role: Role::Assistant,
                content: vec![if r.audio {
                    Content::OutputAudio {
                        transcript: r.text.clone(),
                    }
                } else {
                    Content::OutputText {
                        text: r.text.clone(),
                    }
                }],
            };
        }
        r.item.status = item_status;
        let part = r.part();
        let text = match &r.item.kind {
            ItemKind::Message { content, .. } => match content.first() {
                Some(Content::OutputAudio { transcript }) => transcript.clone(),
                Some(Content::OutputText { text }) => text.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        if r.audio {
            self.emit(ServerEvent::AudioDone { part: part.clone() });
            self.emit(ServerEvent::TranscriptDone {
                part: part.clone(),
                transcript: text.clone(),
            });
        } else {
            self.emit(ServerEvent::TextDone {
                part: part.clone(),
                text: text.clone(),
            });
        }
        let kind = if r.audio {
            PartKind::Audio
        } else {
            PartKind::Text
        };
        self.emit(ServerEvent::ContentPartDone { part, kind, text });
        self.emit(ServerEvent::OutputItemDone {
            response_id: r.id.clone(),
            output_index: 0,
            item: r.item.clone(),
        });
        if !r.out_of_band {
            let previous_item_id = self.previous_of(&r.item.id);
            self.emit(ServerEvent::ItemDone {
                previous_item_id,
                item: r.item.clone(),
            });
        }
        if !r.trace.reported && r.trace.tts_first_audio.is_some() {
            // Audio made and queued, not yet written: the trace completes at the write.
            self.finished_unsent = Some(FinishedUnsent {
                response_id: r.id.clone(),
                played_item: (r.audio && !r.out_of_band && status == ResponseStatus::Completed)
                    .then(|| r.item.id.clone()),
                trace: r.trace.clone(),
                span: r.span.clone(),
            });
        } else if !r.trace.reported
            && let Some(report) = r.trace.report(&r.id)
        {
            self.emit(ServerEvent::TurnLatency(report));
        }
        r.span.in_scope(|| {
            tracing::info!(
                status = status.as_str(),
                reason = reason.map(CancelReason::as_str),
                "response done"
            )
        });
        let mut info = self.response_info(&r, status, reason, vec![r.item.clone()]);
        info.error = error;
        match status {
            ResponseStatus::Completed => self.counters.responses_completed += 1,
            ResponseStatus::Cancelled => self.counters.responses_cancelled += 1,
            _ => {}
        }
        self.emit(ServerEvent::ResponseDone(info));
    }

    fn previous_of(&self, id: &str) -> Option<String> {
        let mut prev = None;
        for item in self.conversation.items() {
            if item.id == id {
                return prev;
            }
            prev = Some(item.id.clone());
        }
        None
    }

    /// Stops the active response: bumps the epoch so late outputs are dropped, tells the
    /// engines, and reports `response.done` with status `cancelled`.
    fn cancel(&mut self, reason: CancelReason) {
        let Some(r) = &self.response else { return };
        let (old, audio) = (r.epoch, r.audio);
        tracing::debug!(response_id = %r.id, epoch = old, reason = reason.as_str(), "response cancelled");
        self.epoch += 1;
        self.command(EngineCommand::LlmCancel { epoch: old });
        if audio {
            self.command(EngineCommand::TtsCancel { epoch: old });
        }
        self.finish(ResponseStatus::Cancelled, Some(reason), None);
    }

    // -----------------------------------------------------------------------------------------
    // Engine events

    fn is_current(&mut self, epoch: Epoch) -> bool {
        let current = self.response.as_ref().is_some_and(|r| r.epoch == epoch);
        if !current {
            self.counters.stale_outputs_dropped += 1;
        }
        current
    }

    pub fn handle_engine(&mut self, now: Instant, event: EngineEvent) {
        if let Some(epoch) = event.epoch()
            && self.speculation.as_ref().is_some_and(|s| s.epoch == epoch)
        {
            self.speculative_event(now, event);
            return;
        }
        match event {
            EngineEvent::SpeechStarted { audio_ms } => self.speech_started(now, audio_ms),
            EngineEvent::SpeechStopped { audio_ms } => self.speech_stopped(now, audio_ms),
            EngineEvent::TranscriptPartial { text } => {
                self.look_ahead(&text);
                if self.config.transcription.is_some()
                    && let Some(item_id) = self
                        .awaiting_transcript
                        .clone()
                        .or_else(|| self.speech_item.clone())
                {
                    self.emit(ServerEvent::TranscriptionDelta {
                        item_id,
                        content_index: 0,
                        delta: text,
                    });
                }
            }
            EngineEvent::TranscriptFinal { text } => self.transcript_final(now, text),
            EngineEvent::SpeechPaused { text } => self.speech_paused(now, text),
            EngineEvent::SpeechResumed => self.withdraw_speculation(),
            EngineEvent::TurnJudged {
                probability,
                vetoed,
                complete,
            } => {
                self.end_of_turn_probability = Some(probability);
                let c = &mut self.counters;
                match (complete, vetoed) {
                    (true, _) => c.turns_judged_done += 1,
                    (false, true) => c.turns_judged_vetoed += 1,
                    (false, false) => c.turns_judged_not_done += 1,
                }
            }
            EngineEvent::InputAudioDropped { ms } => {
                tracing::warn!(ms, "the recogniser fell behind and dropped caller audio");
                self.counters.input_audio_dropped_ms += ms;
                self.error(ErrorInfo::server(
                    "input_audio_dropped",
                    format!(
                        "the server fell behind and dropped {ms} ms of your audio: words in it \
                         were not heard"
                    ),
                ));
            }
            EngineEvent::SpeakerLabel { label } => self.next_speaker = Some(label),
            EngineEvent::LlmToken { epoch, text } => {
                if self.is_current(epoch) {
                    self.llm_token(now, text);
                }
            }
            EngineEvent::LlmDone { epoch } => {
                if self.is_current(epoch) {
                    self.llm_done();
                }
            }
            EngineEvent::TtsAudio {
                epoch,
                samples,
                rate,
                text,
            } => {
                if self.is_current(epoch) {
                    self.tts_audio(now, &samples, rate, text);
                }
            }
            EngineEvent::TtsDone { epoch } => {
                if self.is_current(epoch) {
                    self.finish(ResponseStatus::Completed, None, None);
                }
            }
            EngineEvent::TtsClause { epoch } => {
                if self.is_current(epoch)
                    && let Some(r) = self.response.as_mut()
                {
                    first(&mut r.trace.first_clause, now);
                }
            }
            EngineEvent::Failed {
                engine,
                epoch,
                message,
            } => {
                tracing::warn!(engine = engine.as_str(), %message, "engine failure");
                let concerns_reply = match epoch {
                    Some(e) => self.response.as_ref().is_some_and(|r| r.epoch == e),
                    None => self.response.is_some() && engine != Engine::Asr,
                };
                self.error(ErrorInfo::server(
                    "engine_failed",
                    format!("{} engine failed: {message}", engine.as_str()),
                ));
                if let Some(old) = self.response.as_ref().map(|r| r.epoch)
                    && concerns_reply
                {
                    self.epoch += 1;
                    self.command(EngineCommand::LlmCancel { epoch: old });
                    self.command(EngineCommand::TtsCancel { epoch: old });
                    self.finish(
                        ResponseStatus::Failed,
                        None,
                        Some(("engine_failed".into(), message)),
                    );
                }
            }
        }
    }

    fn speech_started(&mut self, now: Instant, audio_ms: u64) {
        let Some(td) = self.config.turn_detection.clone() else {
            return;
        };
        self.withdraw_speculation();
        self.end_of_turn_probability = None;
        self.resumes = self
            .last_committed
            .take()
            .filter(|c| {
                td.semantic.is_some() && now.saturating_duration_since(c.at) <= MERGE_WINDOW
            })
            .map(|c| c.item_id);
        let in_guard = self.guard_until.is_some_and(|until| now < until);
        if td.interrupt_response && in_guard {
            // Judged when it ends (or when the guard does).
            self.guarded_speech = true;
        } else if self.response.is_some() && td.interrupt_response {
            self.barge_in(now);
        } else if self.response.is_none() && td.interrupt_response {
            // A finished reply may still be playing at the caller's end.
            self.truncate_to_played(now);
            self.emit(ServerEvent::StopPlayout);
        }
        let item_id = self.new_id("item");
        self.speech_item = Some(item_id.clone());
        self.emit(ServerEvent::SpeechStarted {
            audio_start_ms: audio_ms,
            item_id,
        });
    }

    fn speech_stopped(&mut self, now: Instant, audio_ms: u64) {
        let Some(td) = self.config.turn_detection.clone() else {
            return;
        };
        let Some(item_id) = self.speech_item.take() else {
            return;
        };
        self.speculations_this_turn = 0;
        let resumed = self.resumes.take();
        if self.guarded_speech {
            // Speech that began and ended inside the echo guard: most likely our own echo.
            self.guarded_speech = false;
            tracing::debug!(item_id, "speech inside echo guard ignored");
            return;
        }
        self.emit(ServerEvent::SpeechStopped {
            audio_end_ms: audio_ms,
            item_id: item_id.clone(),
        });
        if let Some(first_half) = resumed {
            self.merge_resumed(&first_half, &item_id);
        }
        self.commit_user_audio(now, item_id.clone());
        if td.semantic.is_some() {
            self.last_committed = Some(Committed { item_id, at: now });
        }
        if td.create_response && self.response.is_none() {
            let origin = self
                .last_turn_end
                .take()
                .map_or((now, LatencyOrigin::SpeechEnd), |t| {
                    (t, LatencyOrigin::SpeechEnd)
                });
            self.last_asr_final = None;
            self.start_response(ResponseOptions::default(), origin, None);
        }
    }

    /// The caller resumed the turn committed as `first_half` (a pause, not an end): unless its
    /// reply is still running (the client turned interruption off) or its transcript is not in
    /// yet, that item and every item after it (the reply the caller cut off) are deleted
    /// (`conversation.item.deleted`), and `item_id`, the resumed speech, will carry the whole
    /// transcript. The LLM then sees one user message, as if there had been no pause.
    fn merge_resumed(&mut self, first_half: &str, item_id: &str) {
        if self.response.is_some() || self.awaiting_transcript.as_deref() == Some(first_half) {
            return;
        }
        let Some(text) = self
            .conversation
            .user_transcript(first_half)
            .map(str::to_owned)
        else {
            return;
        };
        let gone: Vec<String> = self
            .conversation
            .items()
            .map(|i| i.id.clone())
            .skip_while(|id| id != first_half)
            .collect();
        for id in gone {
            if self.conversation.delete(&id).is_ok() {
                self.emit(ServerEvent::ItemDeleted { item_id: id });
            }
        }
        if self
            .last_played
            .as_ref()
            .is_some_and(|(id, _)| self.conversation.get(id).is_none())
        {
            self.last_played = None;
        }
        tracing::debug!(first_half, item_id, "resumed turn merged");
        self.merged_prefix = Some((item_id.to_string(), text));
        self.counters.turns_merged += 1;
    }

    fn transcript_final(&mut self, now: Instant, text: String) {
        let speaker = self.next_speaker.take();
        let Some(item_id) = self.awaiting_transcript.take() else {
            tracing::debug!("transcript with no committed audio item dropped");
            return;
        };
        self.last_asr_final = Some(now);
        let text = match self.merged_prefix.take() {
            Some((merged, first_half)) if merged == item_id => format!("{first_half} {text}"),
            other => {
                self.merged_prefix = other;
                text
            }
        };
        if let Err(e) = self.conversation.set_user_transcript(&item_id, &text) {
            tracing::debug!(%e, "transcript for a deleted item dropped");
        }
        if let Some(label) = &speaker
            && let Err(e) = self.conversation.set_user_speaker(&item_id, label)
        {
            tracing::debug!(%e, "speaker for a deleted item dropped");
        }
        if self.config.transcription.is_some() {
            self.emit(ServerEvent::TranscriptionCompleted {
                item_id: item_id.clone(),
                content_index: 0,
                transcript: text,
                speaker,
            });
        }
        if let Some(item) = self.conversation.get(&item_id).cloned() {
            let previous_item_id = self.previous_of(&item_id);
            self.emit(ServerEvent::ItemDone {
                previous_item_id,
                item,
            });
        }
        if let Some(r) = self.response.as_mut()
            && r.waiting_for_transcript
        {
            first(&mut r.trace.asr_final, now);
            self.start_llm();
        }
    }

    fn llm_token(&mut self, now: Instant, text: String) {
        let Some(r) = self.response.as_mut() else {
            return;
        };
        first(&mut r.trace.llm_first_token, now);
        if r.audio {
            // The TTS engine cuts the text into speakable chunks itself (a short first
            // clause) and reports when the first went to synthesis (`TtsClause`).
            if !self.replaying {
                let (epoch, voice) = (r.epoch, self.config.voice.clone());
                self.command(EngineCommand::TtsText { epoch, text, voice });
            }
        } else {
            r.text.push_str(&text);
            let (part, item_id, oob) = (r.part(), r.item.id.clone(), r.out_of_band);
            if !oob {
                let _ = self.conversation.append_assistant_text(&item_id, &text);
            }
            self.emit(ServerEvent::TextDelta { part, delta: text });
        }
    }

    fn llm_done(&mut self) {
        let Some(r) = self.response.as_mut() else {
            return;
        };
        if !r.audio {
            self.finish(ResponseStatus::Completed, None, None);
            return;
        }
        if !self.replaying {
            let epoch = r.epoch;
            self.command(EngineCommand::TtsFinish { epoch });
        }
    }

    fn tts_audio(&mut self, now: Instant, samples: &[f32], rate: u32, text: String) {
        let Some(r) = self.response.as_mut() else {
            return;
        };
        first(&mut r.trace.tts_first_audio, now);
        let audio = if self.settings.frames_out {
            Vec::new()
        } else {
            match self.encoder.encode(samples, rate) {
                Ok(a) => a,
                Err(e) => {
                    self.error(ErrorInfo::server(
                        "engine_failed",
                        format!("tts audio unusable: {e}"),
                    ));
                    return;
                }
            }
        };
        let duration_ms = samples.len() as f64 * 1000.0 / f64::from(rate);
        r.text.push_str(&text);
        let (part, item_id, oob) = (r.part(), r.item.id.clone(), r.out_of_band);
        if !oob {
            let _ = self
                .conversation
                .append_assistant_audio(&item_id, &text, duration_ms);
        }
        if self.settings.frames_out && !samples.is_empty() {
            self.emit(ServerEvent::AudioOut {
                part: part.clone(),
                frame: AudioFrame::new(samples.to_vec(), rate, 0, now),
            });
        } else if !audio.is_empty() {
            self.emit(ServerEvent::AudioDelta {
                part: part.clone(),
                audio,
            });
        }
        if !text.is_empty() {
            self.emit(ServerEvent::TranscriptDelta { part, delta: text });
        }
    }

    /// The session wrote reply audio for `response_id` to the client at `now`. The first call
    /// per response completes the latency trace and opens the echo guard.
    pub fn audio_sent(&mut self, now: Instant, response_id: &str) {
        let guard = self.settings.echo_guard;
        if self
            .finished_unsent
            .as_ref()
            .is_some_and(|f| f.response_id == response_id)
            && let Some(mut f) = self.finished_unsent.take()
        {
            f.trace.first_audio_sent = Some(now);
            self.guard_until = Some(now + guard);
            if let Some(item) = f.played_item {
                self.last_played = Some((item, now));
            }
            if let Some(report) = f.trace.report(&f.response_id) {
                f.span.in_scope(|| {
                    tracing::info!(
                        first_audio_sent_ms = report.first_audio_sent_ms,
                        "first reply audio sent (after the reply was done)"
                    )
                });
                self.emit(ServerEvent::TurnLatency(report));
            }
            return;
        }
        let Some(r) = self.response.as_mut() else {
            return;
        };
        if r.id != response_id || r.trace.first_audio_sent.is_some() {
            return;
        }
        r.trace.first_audio_sent = Some(now);
        self.guard_until = Some(now + guard);
        r.trace.reported = true;
        if let Some(report) = r.trace.report(&r.id) {
            r.span.in_scope(|| {
                tracing::info!(
                    first_audio_sent_ms = report.first_audio_sent_ms,
                    llm_first_token_ms = report.llm_first_token_ms,
                    tts_first_audio_ms = report.tts_first_audio_ms,
                    "first reply audio sent"
                )
            });
            self.emit(ServerEvent::TurnLatency(report));
        }
    }

    /// Server-side barge-in: over WebSocket, audio is sent as fast as it is made, so what a
    /// real-time listener has heard is the wall time since the first delta was sent. The
    /// assistant item keeps only that much (`conversation.item.truncated` tells the client).
    /// Covers the active reply and a finished one whose audio is still playing.
    fn truncate_to_played(&mut self, now: Instant) {
        let playing = match self.response.as_ref() {
            Some(r) if r.audio && !r.out_of_band => r
                .trace
                .first_audio_sent
                .map(|first_sent| (r.item.id.clone(), first_sent)),
            Some(_) => None,
            None => self.last_played.take(),
        };
        let Some((item_id, first_sent)) = playing else {
            return;
        };
        let Some(total) = self.conversation.audio_ms(&item_id) else {
            return;
        };
        let played_ms = now.saturating_duration_since(first_sent).as_millis();
        if played_ms as f64 >= total {
            return;
        }
        // Below `total`, which is far below u32::MAX ms for any reply.
        let end_ms = played_ms as u32;
        match self.conversation.truncate(&item_id, 0, end_ms) {
            Ok(()) => self.emit(ServerEvent::ItemTruncated {
                item_id,
                content_index: 0,
                audio_end_ms: end_ms,
            }),
            Err(e) => tracing::debug!(%e, "barge-in truncation failed"),
        }
    }

    /// Call at (or after) the instant `poll_timeout` gave.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired = self.guarded_speech && self.guard_until.is_some_and(|u| now >= u);
        if expired {
            // The speech outlasted the echo guard: a real interruption.
            self.guarded_speech = false;
            if self.response.is_some() {
                self.barge_in(now);
            } else {
                // The reply is done but may still be playing at the caller's end.
                self.truncate_to_played(now);
                self.emit(ServerEvent::StopPlayout);
            }
        }
    }

    /// The caller interrupted the active reply: the one barge-in policy of every transport.
    /// The reply is truncated to what was played by wall time, then transports that own
    /// playout stop it on [`ServerEvent::StopPlayout`] (knowing that cut, they report a
    /// shorter one if less was heard), then the reply is cancelled.
    fn barge_in(&mut self, now: Instant) {
        self.truncate_to_played(now);
        self.emit(ServerEvent::StopPlayout);
        self.cancel(CancelReason::TurnDetected);
    }
}

fn conversation_error(e: ConversationError, eid: Option<String>) -> ErrorInfo {
    let code = match e {
        ConversationError::NotFound(_) => "item_not_found",
        ConversationError::DuplicateId(_) => "duplicate_item_id",
        ConversationError::NotAudio { .. } => "invalid_value",
        ConversationError::PastEnd { .. } => "invalid_value",
        ConversationError::Full(_) => "conversation_full",
        ConversationError::ItemTooLarge { .. } => "invalid_value",
    };
    ErrorInfo::invalid_request(code, e.to_string()).with_event_id(eid)
}

#[cfg(test)]
mod tests;
