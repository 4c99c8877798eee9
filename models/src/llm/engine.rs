//! The decode loop: one named OS thread per loaded model, shared by every session.
//!
//! **Slot table / continuous batching.** At most `max_batch` replies run at once. Between steps
//! the thread reads control messages (new turns, cancels, truncations, session ends), admits
//! waiting turns into free slots, then runs ONE forward pass over every runnable slot: decoding
//! slots contribute one token, prefilling slots a chunk of up to `prefill_chunk` prompt tokens
//! (so a long prompt never stalls the others for more than one chunk). Finished slots leave at
//! once; queued turns join at the next step.
//!
//! **Prefix cache.** Each session owns its conversation as tokens plus a KV cache covering a
//! prefix of them. A new turn appends only the user message; the cached prefix (system prompt,
//! earlier turns, what the assistant said) is not run again. When a reply is interrupted the
//! caller says how many bytes of it were delivered ([`ChatSession::truncate_reply`]): the
//! conversation keeps only the reply tokens inside those bytes plus closing `<|im_end|>\n`, and
//! the KV cache is truncated to match (the closing tokens are fed with the next turn).
//!
//! **Memory bounds.** `max_sessions` open sessions (more are refused with `Busy`), and at most
//! `max_cached_tokens` KV tokens across idle sessions: when over, the least-recently-used idle
//! session's KV is dropped (its token history is kept; its next turn simply prefills it all
//! again, transparently). `max_waiting` queued turns; more are refused with `Busy`.
//!
//! **Cancel.** Control messages are read before every step, so a cancelled reply gets no token
//! from any step that starts after the cancel arrived; every event carries its request id and
//! [`ReplyStream`] drops text after `cancel()`.
//!
//! **Backpressure.** Each reply's channel holds `stream_capacity` events. When it is full the
//! event is parked and that slot sits out steps until the consumer drains it (others keep
//! running); a slot paused for longer than `stall_timeout` is cancelled.

use crate::engine::wake::{Wake, WakingSender};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::LlmError;
use super::backend::{ChatBackend, ChatSession, FinishReason, ReplyEvent, ReplyStream};
use super::chat::ChatFormat;
use super::kv::SeqKv;
use super::model::StepSeq;
use super::sampling::{Pick, Sampler, SamplingParams, StopFilter, StopOutcome};
use super::step::StepModel;
use super::tokenizer::{LmTokenizer, StreamDecoder};

/// A step with replies decoding aims at this: ~6 tokens a second for each, about twice
/// speaking pace, with room for the TTS to keep up.
pub const DEFAULT_DECODE_STEP_TARGET_MS: u64 = 150;

/// Prefill tokens a step always may take, so a prompt progresses however slow a token is.
const MIN_PREFILL_PER_STEP: usize = 8;

/// Steps with at least this many tokens measure the cost per token.
const MIN_TOKENS_FOR_COST: usize = 16;

/// Tokens one step may run: the whole budget without decoders or without a cost estimate yet;
/// with `decoders` replies decoding, those plus the prefill that fits in `target` at
/// `secs_per_token` (at least [`MIN_PREFILL_PER_STEP`]).
fn step_allowance(
    budget: usize,
    decoders: usize,
    target: Option<Duration>,
    secs_per_token: Option<f64>,
) -> usize {
    match (target, secs_per_token) {
        (Some(target), Some(cost)) if decoders > 0 && cost > 0.0 => {
            let fits = (target.as_secs_f64() / cost) as usize;
            let prefill = fits.saturating_sub(decoders).max(MIN_PREFILL_PER_STEP);
            budget.min(decoders + prefill)
        }
        _ => budget,
    }
}

/// Limits and knobs of one engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Replies decoded together (slot count).
    pub max_batch: usize,
    /// Prompt tokens one sequence may feed in one step.
    pub prefill_chunk: usize,
    /// Total tokens in one step (decode tokens + prefill chunks).
    pub step_token_budget: usize,
    /// Fair share: while any reply is decoding, a step's prefill is cut to what fits in this
    /// much time at the measured cost per token, so callers with long prompts cannot slow
    /// everyone else's replies below speaking pace (their prompts take longer instead).
    /// `None`: only `step_token_budget` bounds a step.
    pub decode_step_target: Option<Duration>,
    pub max_sessions: usize,
    /// KV tokens kept across idle sessions before LRU eviction.
    pub max_cached_tokens: usize,
    pub max_waiting: usize,
    /// Events buffered per reply stream.
    pub stream_capacity: usize,
    /// A reply whose consumer has not drained its stream for this long is cancelled.
    pub stall_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch: 8,
            prefill_chunk: 128,
            step_token_budget: 256,
            decode_step_target: Some(Duration::from_millis(DEFAULT_DECODE_STEP_TARGET_MS)),
            max_sessions: 64,
            max_cached_tokens: 64 * 1024,
            max_waiting: 64,
            stream_capacity: 256,
            stall_timeout: Duration::from_secs(10),
        }
    }
}

enum Msg {
    Open {
        session: u64,
        system: Vec<u32>,
    },
    Turn {
        session: u64,
        request: u64,
        tokens: Vec<u32>,
        params: SamplingParams,
        tx: ReplyTx,
    },
    Cancel {
        request: u64,
    },
    Truncate {
        session: u64,
        request: u64,
        spoken_bytes: usize,
    },
    /// The next user turn probably starts with `tokens`: prefill them when idle.
    Lookahead {
        session: u64,
        tokens: Vec<u32>,
    },
    /// Take turn `request` back out of the conversation: its user tokens and its reply.
    Withdraw {
        session: u64,
        request: u64,
    },
    End {
        session: u64,
    },
    Warm {
        session: u64,
        done: SyncSender<usize>,
    },
    /// The probability of a sentence end right after `tokens` (the opening of a user turn).
    SentenceEnd {
        session: u64,
        tokens: Vec<u32>,
        tx: WakingSender<SyncSender<Option<f32>>>,
    },
    Shutdown,
}

/// A turn's reply channel, waking the session's owner on each delivery.
type ReplyTx = WakingSender<SyncSender<ReplyEvent>>;

struct Shared {
    ctl: SyncSender<Msg>,
    model: Arc<dyn StepModel>,
    format: ChatFormat,
    config: EngineConfig,
    next_id: AtomicU64,
    sessions_open: AtomicUsize,
    steps: Arc<AtomicU64>,
    evictions: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    /// How far behind real time the engine is (see [`Loop::lag`]), ms, as of its last step.
    lag_ms: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.ctl.send(Msg::Shutdown);
        if let Ok(mut t) = self.thread.lock()
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
    }
}

/// Handle to a running engine. Cheap to clone; the thread stops when the last handle and
/// session are dropped.
#[derive(Clone)]
pub struct LlmEngine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LlmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmEngine")
            .field("model", &self.shared.model.config().name)
            .field("device", &self.shared.model.device())
            .finish()
    }
}

impl LlmEngine {
    /// Start the decode thread for `model`.
    pub fn start(model: Arc<dyn StepModel>, config: EngineConfig) -> Result<Self, LlmError> {
        let format = ChatFormat::new(
            model.tokenizer(),
            &model.config().chat_template,
            model.config().eos_token,
        )?;
        let (ctl, rx) = mpsc::sync_channel(1024);
        let steps = Arc::new(AtomicU64::new(0));
        let evictions = Arc::new(AtomicU64::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let lag_ms = Arc::new(AtomicU64::new(0));
        let mut lp = Loop {
            model: model.clone(),
            format: format.clone(),
            config: config.clone(),
            rx,
            sessions: HashMap::new(),
            slots: Vec::new(),
            waiting: VecDeque::new(),
            warms: VecDeque::new(),
            steps: steps.clone(),
            evictions: evictions.clone(),
            healthy: healthy.clone(),
            lag_ms: lag_ms.clone(),
            sentence_enders: sentence_enders(model.tokenizer()),
            tick: 0,
            secs_per_token: None,
        };
        let name = format!("llm-{}", short_name(&model.config().name));
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || lp.run())
            .map_err(|e| LlmError::EngineStopped(format!("cannot spawn thread: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                ctl,
                model,
                format,
                config,
                next_id: AtomicU64::new(1),
                sessions_open: AtomicUsize::new(0),
                steps,
                evictions,
                healthy,
                lag_ms,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    pub fn model(&self) -> &dyn StepModel {
        &*self.shared.model
    }

    /// The chat format (ChatML token layout) this engine renders turns with.
    pub fn format(&self) -> &ChatFormat {
        &self.shared.format
    }

    /// Forward passes started so far.
    pub fn steps_started(&self) -> u64 {
        self.shared.steps.load(Ordering::SeqCst)
    }

    /// Idle sessions whose KV was dropped by the LRU bound.
    pub fn evictions(&self) -> u64 {
        self.shared.evictions.load(Ordering::SeqCst)
    }

    /// Failure state and open conversations, for health checks.
    pub fn health(&self) -> crate::engine::EngineHealth {
        let s = &self.shared;
        let thread = s
            .thread
            .lock()
            .map(|t| crate::engine::thread_failure(t.as_ref()));
        crate::engine::EngineHealth {
            failure: if s.healthy.load(Ordering::SeqCst) {
                thread.unwrap_or(None)
            } else {
                Some("a forward pass failed".to_string())
            },
            capacity: Some(s.config.max_sessions),
            in_use: s.sessions_open.load(Ordering::SeqCst),
            backlog_ms: Some(s.lag_ms.load(Ordering::Relaxed)),
        }
    }

    /// Open a conversation (typed, not boxed).
    pub fn session(&self, system: Option<&str>) -> Result<EngineSession, LlmError> {
        let s = &self.shared;
        if !s.healthy.load(Ordering::SeqCst) {
            return Err(LlmError::EngineStopped("a forward pass failed".into()));
        }
        let system = s.format.system(s.model.tokenizer(), system)?;
        let prev = s.sessions_open.fetch_add(1, Ordering::SeqCst);
        if prev >= s.config.max_sessions {
            s.sessions_open.fetch_sub(1, Ordering::SeqCst);
            return Err(LlmError::Busy("max sessions open"));
        }
        let id = s.next_id.fetch_add(1, Ordering::SeqCst);
        if s.ctl
            .send(Msg::Open {
                session: id,
                system,
            })
            .is_err()
        {
            s.sessions_open.fetch_sub(1, Ordering::SeqCst);
            return Err(LlmError::EngineStopped("engine thread gone".into()));
        }
        Ok(EngineSession {
            id,
            shared: self.shared.clone(),
            wake: None,
        })
    }
}

impl ChatBackend for LlmEngine {
    fn open_session(&self, system: Option<&str>) -> Result<Box<dyn ChatSession>, LlmError> {
        Ok(Box::new(self.session(system)?))
    }
}

/// One conversation on the local engine. Dropping it frees its cache.
pub struct EngineSession {
    id: u64,
    shared: Arc<Shared>,
    wake: Option<Wake>,
}

impl EngineSession {
    /// Hands `msg` to the engine thread.
    fn control(&self, msg: Msg) -> Result<(), LlmError> {
        self.shared
            .ctl
            .send(msg)
            .map_err(|_| LlmError::EngineStopped("engine thread gone".into()))
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// From now on the engine calls `wake` after each reply event it delivers to this
    /// conversation's turns (so the owner can wait instead of polling).
    pub fn set_wake(&mut self, wake: Wake) {
        self.wake = Some(wake);
    }

    /// Start a reply to `user`; see [`ChatSession::send`].
    pub fn turn(&mut self, user: &str, params: &SamplingParams) -> Result<ReplyStream, LlmError> {
        let s = &self.shared;
        if !s.healthy.load(Ordering::SeqCst) {
            return Err(LlmError::EngineStopped("a forward pass failed".into()));
        }
        let tokens = s.format.user_turn(s.model.tokenizer(), user)?;
        let request = s.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::sync_channel(s.config.stream_capacity.max(1));
        self.control(Msg::Turn {
            session: self.id,
            request,
            tokens,
            params: params.clone(),
            tx: WakingSender::new(tx, self.wake.clone()),
        })?;
        let ctl = s.ctl.clone();
        Ok(ReplyStream::new(
            request,
            rx,
            Box::new(move || {
                let _ = ctl.send(Msg::Cancel { request });
            }),
        ))
    }
}

impl EngineSession {
    /// Prefill this conversation's known prefix (the system turn, or whatever it holds) into
    /// its KV cache now, without generating, so the first `send` runs only the user turn.
    ///
    /// Lowest priority: the decode thread runs one chunk of it per step, only with step budget
    /// left after every running reply. A `send` that arrives first simply continues from
    /// whatever is cached by then (the warm-up stops). The returned receiver gets the cached
    /// token count once the prefix is fully cached; it disconnects instead if the warm-up was
    /// superseded by a turn, evicted by the cache bound, or the session ended.
    pub fn warm(&self) -> Result<Receiver<usize>, LlmError> {
        let (done, rx) = mpsc::sync_channel(1);
        self.control(Msg::Warm {
            session: self.id,
            done,
        })?;
        Ok(rx)
    }

    /// The caller is still speaking and has said `partial` so far: prefill the opening of that
    /// user turn into this conversation's cache at lowest priority, so the turn (or a
    /// speculative reply) prefills only what differs. A hint: ignored while a reply runs;
    /// a later call replaces it, keeping the cache over what the two share.
    pub fn lookahead(&self, partial: &str) -> Result<(), LlmError> {
        let s = &self.shared;
        let tokens = s.format.user_prefix(s.model.tokenizer(), partial)?;
        self.control(Msg::Lookahead {
            session: self.id,
            tokens,
        })
    }

    /// How likely a sentence ends right after `words`, the caller's words so far in the turn
    /// being spoken (trailing punctuation is ignored: the recogniser adds a full stop to any
    /// audio it is given): the probability the model gives to ".", "?" or "!" as the next
    /// token, in this conversation. Mid-sentence words get almost none (a text signal for
    /// turn-taking). One pass over what the cache lacks (the lookahead usually holds all but
    /// the last words), run ahead of any step; the cache keeps the words as the lookahead.
    /// The receiver gets `None` when the engine cannot tell: a reply is running, the context
    /// is full, or the model does not expose its distribution.
    pub fn sentence_end(&self, words: &str) -> Result<Receiver<Option<f32>>, LlmError> {
        let s = &self.shared;
        let words = words.trim_end_matches(|c: char| c.is_whitespace() || c.is_ascii_punctuation());
        let tokens = s.format.user_prefix(s.model.tokenizer(), words)?;
        let (tx, rx) = mpsc::sync_channel(1);
        self.control(Msg::SentenceEnd {
            session: self.id,
            tokens,
            tx: WakingSender::new(tx, self.wake.clone()),
        })?;
        Ok(rx)
    }

    /// Take turn `request` back: its user message and its reply leave the conversation (a
    /// running reply is cancelled first), as if it had never been sent. For speculative turns
    /// that the caller's next words overtook. A no-op unless `request` is the latest turn.
    pub fn withdraw_turn(&mut self, request: u64) -> Result<(), LlmError> {
        self.control(Msg::Withdraw {
            session: self.id,
            request,
        })
    }
}

impl ChatSession for EngineSession {
    fn send(&mut self, user: &str, params: &SamplingParams) -> Result<ReplyStream, LlmError> {
        self.turn(user, params)
    }

    fn truncate_reply(&mut self, request: u64, spoken_bytes: usize) -> Result<(), LlmError> {
        self.control(Msg::Truncate {
            session: self.id,
            request,
            spoken_bytes,
        })
    }
}

impl Drop for EngineSession {
    fn drop(&mut self) {
        let _ = self.shared.ctl.send(Msg::End { session: self.id });
        self.shared.sessions_open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The tokens that are exactly ".", "?" or "!" in this vocabulary.
fn sentence_enders(tok: &LmTokenizer) -> Vec<u32> {
    [".", "?", "!"]
        .iter()
        .filter_map(|e| match tok.encode(e) {
            Ok(ids) if ids.len() == 1 => Some(ids[0]),
            _ => None,
        })
        .collect()
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn short_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(10)
        .collect()
}

/// What the last reply of a session left behind, for truncation.
struct LastReply {
    request: u64,
    /// Conversation length before the turn's user tokens.
    turn_start: usize,
    /// Conversation length before the reply's first token.
    prompt_len: usize,
    /// Decoded text bytes after each reply token (cumulative).
    token_ends: Vec<usize>,
}

struct SessionState {
    /// The conversation so far as tokens; `kv` covers a prefix of it, or all of it and a
    /// prefix of `lookahead`.
    tokens: Vec<u32>,
    /// What probably follows `tokens` (the opening of the user turn being spoken): not part
    /// of the conversation; a turn keeps the cache over the part it starts with.
    lookahead: Vec<u32>,
    kv: SeqKv,
    last_used: u64,
    busy: bool,
    last_reply: Option<LastReply>,
    ended: bool,
}

struct Slot {
    session: u64,
    request: u64,
    kv: SeqKv,
    tokens: Vec<u32>,
    /// Conversation length before this turn's user tokens.
    turn_start: usize,
    prompt_len: usize,
    prefilled: usize,
    sampler: Sampler,
    stop: StopFilter,
    decoder: StreamDecoder,
    generated: usize,
    text_bytes: usize,
    token_ends: Vec<usize>,
    tx: ReplyTx,
    parked: VecDeque<ReplyEvent>,
    paused_since: Option<Instant>,
    /// When the reply last gave a token (its turn's arrival, before the first one).
    last_output: Instant,
    /// Prompt tokens the turn had to prefill when it was admitted: its own share of the wait
    /// for the first token, not lag.
    prefill_at_admission: usize,
    last_step: u64,
    finished: Option<FinishReason>,
    done_queued: bool,
    sent_bytes: usize,
}

impl Slot {
    fn done_event(&self, reason: FinishReason) -> ReplyEvent {
        ReplyEvent::Done {
            request: self.request,
            reason,
            prefilled: self.prefilled,
            generated: self.generated,
            last_step: self.last_step,
        }
    }
}

struct Pending {
    session: u64,
    request: u64,
    tokens: Vec<u32>,
    params: SamplingParams,
    tx: ReplyTx,
    queued_at: Instant,
}

/// A queued prefill-only job (see [`EngineSession::warm`] and [`EngineSession::lookahead`]).
struct WarmJob {
    session: u64,
    done: Option<SyncSender<usize>>,
}

struct Loop {
    model: Arc<dyn StepModel>,
    format: ChatFormat,
    config: EngineConfig,
    rx: Receiver<Msg>,
    sessions: HashMap<u64, SessionState>,
    slots: Vec<Slot>,
    waiting: VecDeque<Pending>,
    warms: VecDeque<WarmJob>,
    steps: Arc<AtomicU64>,
    evictions: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    lag_ms: Arc<AtomicU64>,
    /// Tokens that end a sentence (".", "?", "!"), for [`Loop::sentence_end`].
    sentence_enders: Vec<u32>,
    tick: u64,
    /// Smoothed seconds per token of recent steps (the fair-share estimate).
    secs_per_token: Option<f64>,
}

impl Loop {
    fn run(&mut self) {
        loop {
            // Control first: cancels must land before the next step.
            self.prune_warms();
            let idle = self.slots.is_empty() && self.waiting.is_empty() && self.warms.is_empty();
            self.lag_ms
                .store(duration_ms(self.lag(Instant::now())), Ordering::Relaxed);
            if idle {
                match self.rx.recv() {
                    Ok(m) => {
                        if self.handle(m) {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(m) => {
                        if self.handle(m) {
                            return;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            self.admit();
            self.flush_parked();
            let ran = self.step();
            self.retire();
            if !ran && !self.slots.is_empty() {
                // Every slot is paused on a slow consumer: wait a little for a message.
                if let Ok(m) = self.rx.recv_timeout(Duration::from_millis(2))
                    && self.handle(m)
                {
                    return;
                }
            }
        }
    }

    /// Returns true on shutdown.
    fn handle(&mut self, m: Msg) -> bool {
        match m {
            Msg::Shutdown => return true,
            Msg::Open { session, system } => {
                self.tick += 1;
                self.sessions.insert(
                    session,
                    SessionState {
                        tokens: system,
                        lookahead: Vec::new(),
                        kv: self.model.new_cache(),
                        last_used: self.tick,
                        busy: false,
                        last_reply: None,
                        ended: false,
                    },
                );
            }
            Msg::Turn {
                session,
                request,
                tokens,
                params,
                tx,
            } => {
                let fail = |tx: &ReplyTx, message: String| {
                    let _ = tx.try_send(ReplyEvent::Failed { request, message });
                };
                if !self.sessions.contains_key(&session) {
                    fail(&tx, LlmError::UnknownSession(session).to_string());
                } else if self.waiting.len() >= self.config.max_waiting {
                    fail(&tx, LlmError::Busy("too many queued turns").to_string());
                } else {
                    self.waiting.push_back(Pending {
                        session,
                        request,
                        tokens,
                        params,
                        tx,
                        queued_at: Instant::now(),
                    });
                }
            }
            Msg::Cancel { request } => {
                if let Some(slot) = self.slots.iter_mut().find(|s| s.request == request) {
                    slot.finished.get_or_insert(FinishReason::Cancelled);
                    slot.parked.clear();
                }
                if let Some(i) = self.waiting.iter().position(|p| p.request == request) {
                    let p = self.waiting.remove(i);
                    if let Some(p) = p {
                        let _ = p.tx.try_send(ReplyEvent::Done {
                            request,
                            reason: FinishReason::Cancelled,
                            prefilled: 0,
                            generated: 0,
                            last_step: 0,
                        });
                    }
                }
            }
            Msg::Truncate {
                session,
                request,
                spoken_bytes,
            } => {
                // Still running: stop it first, then truncate when it retires.
                self.stop_now(request);
                if let Some(st) = self.sessions.get_mut(&session) {
                    truncate_session(st, &self.format, request, spoken_bytes);
                }
            }
            Msg::Lookahead { session, tokens } => {
                let limit = self.model.max_positions();
                if let Some(st) = self.sessions.get_mut(&session)
                    && !st.busy
                {
                    // The cache keeps what the new guess shares with the old one.
                    st.keep_lookahead_shared_with(&tokens);
                    st.lookahead = tokens;
                    // Leave room for the rest of the turn and its reply.
                    if st.tokens.len() + st.lookahead.len() + MIN_REPLY_ROOM > limit {
                        st.drop_lookahead();
                    }
                    if !self.warms.iter().any(|w| w.session == session) {
                        self.warms.push_back(WarmJob {
                            session,
                            done: None,
                        });
                    }
                }
            }
            Msg::Withdraw { session, request } => {
                if let Some(i) = self.waiting.iter().position(|p| p.request == request) {
                    // Never admitted: its tokens never joined the conversation.
                    self.waiting.remove(i);
                }
                self.stop_now(request);
                if let Some(st) = self.sessions.get_mut(&session) {
                    withdraw_turn(st, request);
                }
            }
            Msg::SentenceEnd {
                session,
                tokens,
                tx,
            } => {
                let p = self.sentence_end(session, tokens);
                let _ = tx.try_send(p);
            }
            Msg::Warm { session, done } => {
                if self.sessions.contains_key(&session) {
                    self.warms.push_back(WarmJob {
                        session,
                        done: Some(done),
                    });
                }
            }
            Msg::End { session } => {
                self.warms.retain(|w| w.session != session);
                if let Some(st) = self.sessions.get_mut(&session) {
                    st.ended = true;
                }
                for slot in self.slots.iter_mut().filter(|s| s.session == session) {
                    slot.finished.get_or_insert(FinishReason::Cancelled);
                }
                self.waiting.retain(|p| p.session != session);
                if self.sessions.get(&session).is_some_and(|s| !s.busy) {
                    self.sessions.remove(&session);
                }
            }
        }
        false
    }

    /// Move queued turns into free slots (one reply per session at a time).
    fn admit(&mut self) {
        let mut i = 0;
        while self.slots.len() < self.config.max_batch && i < self.waiting.len() {
            let busy = self
                .sessions
                .get(&self.waiting[i].session)
                .is_none_or(|s| s.busy);
            if busy {
                i += 1;
                continue;
            }
            let Some(p) = self.waiting.remove(i) else {
                break;
            };
            let Some(st) = self.sessions.get_mut(&p.session) else {
                continue;
            };
            // A lookahead prefilled past the conversation: keep what this turn starts with.
            st.keep_lookahead_shared_with(&p.tokens);
            st.lookahead.clear();
            st.tokens.extend_from_slice(&p.tokens);
            let limit = self.model.max_positions();
            if st.tokens.len() + 1 > limit {
                st.tokens.truncate(st.tokens.len() - p.tokens.len());
                st.kv.truncate(st.tokens.len());
                let _ = p.tx.try_send(ReplyEvent::Failed {
                    request: p.request,
                    message: LlmError::ContextOverflow {
                        tokens: st.tokens.len() + p.tokens.len(),
                        limit,
                    }
                    .to_string(),
                });
                continue;
            }
            st.busy = true;
            self.tick += 1;
            st.last_used = self.tick;
            // A real turn supersedes a warm-up: it continues from whatever is cached.
            self.warms.retain(|w| w.session != p.session);
            // Cache holds at most tokens.len()-1 so there is always a token to feed.
            st.kv.truncate(st.tokens.len() - 1);
            let kv = std::mem::replace(&mut st.kv, SeqKv::new(0));
            let tokens = std::mem::take(&mut st.tokens);
            self.slots.push(Slot {
                session: p.session,
                request: p.request,
                last_output: p.queued_at,
                prefill_at_admission: tokens.len() - kv.len(),
                prefilled: tokens.len() - kv.len(),
                prompt_len: tokens.len(),
                turn_start: tokens.len() - p.tokens.len(),
                kv,
                tokens,
                stop: StopFilter::new(&p.params.stop),
                sampler: Sampler::new(p.params),
                decoder: StreamDecoder::default(),
                generated: 0,
                text_bytes: 0,
                token_ends: Vec::new(),
                tx: p.tx,
                parked: VecDeque::new(),
                paused_since: None,
                last_step: 0,
                finished: None,
                done_queued: false,
                sent_bytes: 0,
            });
        }
    }

    fn flush_parked(&mut self) {
        let now = Instant::now();
        for slot in &mut self.slots {
            while let Some(ev) = slot.parked.pop_front() {
                match slot.tx.try_send(ev) {
                    Ok(()) => {}
                    Err(TrySendError::Full(ev)) => {
                        slot.parked.push_front(ev);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        slot.parked.clear();
                        slot.finished.get_or_insert(FinishReason::Cancelled);
                    }
                }
            }
            if slot.parked.is_empty() {
                slot.paused_since = None;
            } else {
                let since = *slot.paused_since.get_or_insert(now);
                if now.duration_since(since) > self.config.stall_timeout {
                    slot.parked.clear();
                    slot.finished = Some(FinishReason::Cancelled);
                }
            }
        }
    }

    /// One forward pass over every runnable slot. Returns false if nothing could run.
    fn step(&mut self) -> bool {
        let mut budget = self.config.step_token_budget.max(1);
        let mut chosen: Vec<(usize, usize, usize)> = Vec::new(); // (slot, start, len)
        // Decoding slots first (one token each); then prefill chunks, shortest prompt left
        // first, so a new turn's few tokens never wait behind someone's long prompt; with what
        // budget is left (less while replies are decoding: the fair share).
        let mut prefilling: Vec<(usize, usize, usize)> = Vec::new(); // (left, slot, start)
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.finished.is_some() || !slot.parked.is_empty() {
                continue;
            }
            let start = slot.kv.len();
            let left = slot.tokens.len() - start;
            if left != 1 {
                prefilling.push((left, i, start));
            } else if budget > 0 {
                budget -= 1;
                chosen.push((i, start, 1));
            }
        }
        let decoders = chosen.len();
        let allowed = step_allowance(
            self.config.step_token_budget.max(1),
            decoders,
            self.config.decode_step_target,
            self.secs_per_token,
        );
        budget = budget.min(allowed.saturating_sub(decoders));
        prefilling.sort_unstable();
        for (left, i, start) in prefilling {
            if budget == 0 {
                break;
            }
            let len = left.min(self.config.prefill_chunk.max(1)).min(budget);
            budget -= len;
            chosen.push((i, start, len));
        }
        // Lowest priority: at most one warm-up chunk, with whatever budget is left.
        let warm = self.pick_warm(budget);
        if chosen.is_empty() && warm.is_none() {
            return false;
        }
        let step = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        let mut warm_kv = warm.map(|(session, _, _)| {
            let st = self.sessions.get_mut(&session);
            // pick_warm only returns sessions that exist.
            st.map(|st| std::mem::replace(&mut st.kv, SeqKv::new(0)))
                .unwrap_or_else(|| SeqKv::new(0))
        });
        // Take the caches out so each StepSeq can borrow one mutably.
        let mut kvs: Vec<SeqKv> = chosen
            .iter()
            .map(|&(i, _, _)| std::mem::replace(&mut self.slots[i].kv, SeqKv::new(0)))
            .collect();
        let result = {
            // Sequences whose prompt is fully fed after this step pick their next token.
            let draws: Vec<Option<f32>> = chosen
                .iter()
                .map(|&(i, start, len)| {
                    let slot = &mut self.slots[i];
                    (start + len >= slot.tokens.len()).then(|| slot.sampler.draw())
                })
                .collect();
            let picks: Vec<Option<Pick<'_>>> = chosen
                .iter()
                .zip(&draws)
                .map(|(&(i, _, _), draw)| {
                    let slot = &self.slots[i];
                    let recent_start = slot.tokens.len().saturating_sub(256);
                    draw.map(|u| slot.sampler.pick_drawn(&slot.tokens[recent_start..], u))
                })
                .collect();
            let mut seqs: Vec<StepSeq<'_>> = chosen
                .iter()
                .zip(kvs.iter_mut())
                .map(|(&(i, start, len), kv)| StepSeq {
                    tokens: &self.slots[i].tokens[start..start + len],
                    kv,
                })
                .collect();
            if let (Some((session, start, len)), Some(kv)) = (warm, warm_kv.as_mut())
                && let Some(st) = self.sessions.get(&session)
            {
                seqs.push(StepSeq {
                    tokens: st.warm_tokens(start, len),
                    kv,
                });
            }
            let tokens: usize = seqs.iter().map(|s| s.tokens.len()).sum();
            let started = Instant::now();
            let result = self.model.step(&mut seqs, &picks);
            // Only steps with prefill in them: a step's fixed cost (weights read once for the
            // batch) would make one-token decode steps look many times dearer per token.
            if tokens >= MIN_TOKENS_FOR_COST {
                let cost = started.elapsed().as_secs_f64() / tokens as f64;
                self.secs_per_token = Some(match self.secs_per_token {
                    Some(avg) => 0.8 * avg + 0.2 * cost,
                    None => cost,
                });
            }
            result
        };
        for (&(i, _, _), kv) in chosen.iter().zip(kvs) {
            self.slots[i].kv = kv;
        }
        if let (Some((session, _, _)), Some(kv)) = (warm, warm_kv)
            && let Some(st) = self.sessions.get_mut(&session)
        {
            st.kv = kv;
        }
        let picked = match result {
            Ok(p) => p,
            Err(e) => {
                // Supervision: the engine stops admitting and tells everyone.
                self.healthy.store(false, Ordering::SeqCst);
                tracing::error!("LLM forward pass failed: {e}");
                for slot in self.slots.drain(..) {
                    let _ = slot.tx.try_send(ReplyEvent::Failed {
                        request: slot.request,
                        message: e.to_string(),
                    });
                }
                for p in self.waiting.drain(..) {
                    let _ = p.tx.try_send(ReplyEvent::Failed {
                        request: p.request,
                        message: e.to_string(),
                    });
                }
                return true;
            }
        };
        if let Some((session, _, _)) = warm {
            self.after_warm_chunk(session);
        }
        // The warm-up's row (last, if any) picks nothing: zip stops at `chosen`.
        for (&(i, _, _), tok) in chosen.iter().zip(picked) {
            let slot = &mut self.slots[i];
            let Some(tok) = tok else {
                continue; // still prefilling
            };
            slot.generated += 1;
            slot.last_step = step;
            slot.last_output = Instant::now();
            if self.format.is_stop(tok) {
                slot.finished = Some(FinishReason::EndOfTurn);
                continue;
            }
            slot.tokens.push(tok);
            let text = slot.decoder.push(self.model.tokenizer().token_bytes(tok));
            slot.text_bytes += text.len();
            slot.token_ends.push(slot.text_bytes);
            let (emit, stop) = match slot.stop.push(&text) {
                StopOutcome::Emit(t) => (t, false),
                StopOutcome::Stop(t) => (t, true),
            };
            if !emit.is_empty() {
                slot.sent_bytes += emit.len();
                send_or_park(
                    slot,
                    ReplyEvent::Text {
                        request: slot.request,
                        text: emit,
                        step,
                    },
                );
            }
            if stop {
                slot.finished = Some(FinishReason::StopString);
            } else if slot.generated >= slot.sampler.params().max_tokens {
                slot.finished = Some(FinishReason::MaxTokens);
            } else if slot.tokens.len() >= self.model.max_positions() {
                slot.finished = Some(FinishReason::ContextFull);
            }
        }
        true
    }

    /// See [`EngineSession::sentence_end`]: feeds what the cache lacks of the conversation
    /// plus `tokens` in one pass and reads the next-token distribution at its end.
    fn sentence_end(&mut self, session: u64, tokens: Vec<u32>) -> Option<f32> {
        let limit = self.model.max_positions();
        let st = self.sessions.get_mut(&session)?;
        if st.busy || st.tokens.len() + tokens.len() + MIN_REPLY_ROOM > limit {
            return None;
        }
        st.keep_lookahead_shared_with(&tokens);
        let all: Vec<u32> = st.tokens.iter().chain(&tokens).copied().collect();
        // Fully cached already: run the last token again for its distribution.
        let from = st.kv.len().min(all.len() - 1);
        st.kv.truncate(from);
        let mut seq = StepSeq {
            tokens: &all[from..],
            kv: &mut st.kv,
        };
        match self.model.next_token_mass(&mut seq, &self.sentence_enders) {
            Ok(Some(p)) => {
                st.lookahead = tokens;
                self.tick += 1;
                st.last_used = self.tick;
                Some(p)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("sentence-end scoring failed: {e}");
                st.drop_lookahead();
                None
            }
        }
    }

    /// How far behind real time the engine is at `now`: the longest any reply has waited for
    /// its next token, beyond what its own prompt costs to prefill (a long prompt delays only
    /// itself: prompts are fed shortest first). Turns not yet given a slot count from their
    /// arrival. A reply paused on its consumer does not count (the engine is not the cause).
    fn lag(&self, now: Instant) -> Duration {
        let queued = self
            .waiting
            .iter()
            .map(|p| now.saturating_duration_since(p.queued_at));
        let replies = self
            .slots
            .iter()
            .filter(|s| s.finished.is_none() && s.parked.is_empty())
            .map(|s| {
                let waited = now.saturating_duration_since(s.last_output);
                let own_prefill = if s.generated == 0 {
                    self.secs_per_token.map_or(Duration::ZERO, |spt| {
                        Duration::from_secs_f64(spt * s.prefill_at_admission as f64)
                    })
                } else {
                    Duration::ZERO
                };
                waited.saturating_sub(own_prefill)
            });
        queued.chain(replies).max().unwrap_or(Duration::ZERO)
    }

    /// Drop warm-ups that cannot or need not run; report the finished ones.
    fn prune_warms(&mut self) {
        let sessions = &self.sessions;
        self.warms.retain(|w| match sessions.get(&w.session) {
            None => false,
            Some(st) if st.busy => false,
            Some(st) if st.kv.len() >= st.tokens.len() + st.lookahead.len() => {
                if let Some(done) = &w.done {
                    let _ = done.try_send(st.kv.len());
                }
                false
            }
            Some(_) => true,
        });
    }

    /// The next warm-up chunk `(session, start, len)` within `budget`, if any.
    fn pick_warm(&mut self, budget: usize) -> Option<(u64, usize, usize)> {
        self.prune_warms();
        if budget == 0 {
            return None;
        }
        let job = self.warms.front()?;
        let st = self.sessions.get(&job.session)?;
        let start = st.kv.len();
        // A chunk lies within the conversation or within the lookahead, never across.
        let end = if start < st.tokens.len() {
            st.tokens.len()
        } else {
            st.tokens.len() + st.lookahead.len()
        };
        let len = (end - start)
            .min(self.config.prefill_chunk.max(1))
            .min(budget);
        Some((job.session, start, len))
    }

    /// Keep the warmed session most recent and the cache within bounds; a warm-up whose own
    /// cache had to be evicted stops (it would only be evicted again).
    fn after_warm_chunk(&mut self, session: u64) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(st) = self.sessions.get_mut(&session) {
            st.last_used = tick;
        }
        self.enforce_cache_bound();
        if self.sessions.get(&session).is_none_or(|s| s.kv.is_empty()) {
            self.warms.retain(|w| w.session != session);
        }
        self.prune_warms();
    }

    /// Stops reply `request` if it is running and hands its cache back to its session now,
    /// undelivered events dropped (before a truncation or withdrawal of that turn).
    fn stop_now(&mut self, request: u64) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.request == request) {
            slot.finished.get_or_insert(FinishReason::Cancelled);
            slot.parked.clear();
            self.retire();
        }
    }

    /// Hand finished slots' caches back to their sessions and report the end. A finished reply
    /// whose consumer is behind stays (not stepped) until its last events are delivered.
    fn retire(&mut self) {
        let mut i = 0;
        while i < self.slots.len() {
            let Some(reason) = self.slots[i].finished else {
                i += 1;
                continue;
            };
            let slot = &mut self.slots[i];
            if reason == FinishReason::Cancelled {
                slot.parked.clear();
            } else if !slot.done_queued {
                slot.done_queued = true;
                let rest = slot.stop.flush();
                if !rest.is_empty() && reason != FinishReason::StopString {
                    slot.sent_bytes += rest.len();
                    let ev = ReplyEvent::Text {
                        request: slot.request,
                        text: rest,
                        step: slot.last_step,
                    };
                    send_or_park(slot, ev);
                }
                let done = slot.done_event(reason);
                send_or_park(slot, done);
            }
            if !slot.parked.is_empty() {
                i += 1;
                continue; // wait for the consumer (bounded by stall_timeout)
            }
            let slot = self.slots.swap_remove(i);
            if reason == FinishReason::Cancelled {
                let _ = slot.tx.try_send(slot.done_event(reason));
            }
            let Some(st) = self.sessions.get_mut(&slot.session) else {
                continue;
            };
            st.busy = false;
            st.kv = slot.kv;
            st.tokens = slot.tokens;
            st.last_reply = Some(LastReply {
                request: slot.request,
                turn_start: slot.turn_start,
                prompt_len: slot.prompt_len,
                token_ends: slot.token_ends,
            });
            if reason == FinishReason::StopString {
                // Keep only the tokens whose text was sent before the stop string.
                truncate_session(st, &self.format, slot.request, slot.sent_bytes);
            } else {
                // The reply is committed to the conversation, closed with `<|im_end|>\n`.
                st.tokens.extend(self.format.closing());
            }
            if st.ended {
                self.sessions.remove(&slot.session);
            }
        }
        self.enforce_cache_bound();
    }

    /// LRU: drop idle sessions' KV until the cached total is within bounds.
    fn enforce_cache_bound(&mut self) {
        let mut total: usize = self.sessions.values().map(|s| s.kv.len()).sum();
        while total > self.config.max_cached_tokens {
            let victim = self
                .sessions
                .iter()
                .filter(|(_, s)| !s.busy && !s.kv.is_empty())
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id);
            let Some(id) = victim else { break };
            if let Some(s) = self.sessions.get_mut(&id) {
                total -= s.kv.len();
                s.kv.clear();
                self.evictions.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

fn send_or_park(slot: &mut Slot, ev: ReplyEvent) {
    if !slot.parked.is_empty() {
        slot.parked.push_back(ev);
        return;
    }
    match slot.tx.try_send(ev) {
        Ok(()) => {}
        Err(TrySendError::Full(ev)) => slot.parked.push_back(ev),
        Err(TrySendError::Disconnected(_)) => {
            slot.finished.get_or_insert(FinishReason::Cancelled);
        }
    }
}

/// Positions kept free for the rest of a turn and its reply when prefilling a lookahead.
const MIN_REPLY_ROOM: usize = 256;

/// Length of the common prefix of two token runs.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl SessionState {
    /// `len` tokens from position `start` of the conversation followed by the lookahead (a
    /// warm-up chunk never crosses from one into the other).
    fn warm_tokens(&self, start: usize, len: usize) -> &[u32] {
        match start.checked_sub(self.tokens.len()) {
            Some(at) => &self.lookahead[at..at + len],
            None => &self.tokens[start..start + len],
        }
    }

    /// Cuts the cache back to the conversation plus the part of the lookahead that `next`
    /// (what comes after the conversation now) starts with.
    fn keep_lookahead_shared_with(&mut self, next: &[u32]) {
        let shared = common_prefix(&self.lookahead, next);
        self.kv.truncate(self.tokens.len() + shared);
    }

    /// Forgets the lookahead and whatever of it the cache held.
    fn drop_lookahead(&mut self) {
        self.lookahead.clear();
        self.kv.truncate(self.tokens.len());
    }
}

/// Forget turn `request` (the last one) entirely: the conversation and its cache go back to
/// where they were before its user tokens, so the next turn reuses the cached prefix.
fn withdraw_turn(st: &mut SessionState, request: u64) {
    st.drop_lookahead();
    let Some(last) = &st.last_reply else { return };
    if last.request != request || st.busy {
        return;
    }
    st.tokens.truncate(last.turn_start);
    st.kv.truncate(last.turn_start);
    st.last_reply = None;
}

/// Keep only the reply tokens of `request` whose text lies within `spoken_bytes`, then close it.
fn truncate_session(st: &mut SessionState, format: &ChatFormat, request: u64, spoken_bytes: usize) {
    st.drop_lookahead();
    let Some(last) = &st.last_reply else { return };
    if last.request != request || st.busy {
        return;
    }
    let keep = last
        .token_ends
        .iter()
        .take_while(|&&e| e <= spoken_bytes)
        .count();
    let len = last.prompt_len + keep;
    st.tokens.truncate(len);
    st.tokens.extend(format.closing());
    st.kv.truncate(len);
    st.last_reply = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_replies_decoding_a_step_takes_only_the_prefill_that_fits_the_target() {
        let target = Some(Duration::from_millis(150));
        // 5 ms a token: 30 tokens fit; two decoders leave 28 for prefill.
        assert_eq!(step_allowance(256, 2, target, Some(0.005)), 30);
        // Nobody decoding, no estimate yet, or no target: the whole budget.
        assert_eq!(step_allowance(256, 0, target, Some(0.005)), 256);
        assert_eq!(step_allowance(256, 2, target, None), 256);
        assert_eq!(step_allowance(256, 2, None, Some(0.005)), 256);
        // A slow machine still feeds prompts a little each step.
        assert_eq!(
            step_allowance(256, 3, target, Some(0.2)),
            3 + MIN_PREFILL_PER_STEP
        );
        // A fast one is bounded by the token budget.
        assert_eq!(step_allowance(256, 1, target, Some(0.0001)), 256);
    }
}
