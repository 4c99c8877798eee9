//! The TTS engine thread and the per-session stream handle.
//!
//! One named OS thread per loaded model owns the model, the G2P and every stream's position.
//! Sessions talk to it through [`TtsStream`]: text in (any split), [`TtsChunk`]s out, each with
//! its sample offset and the text it speaks. Requests go through one bounded queue (full:
//! the chunk waits in the stream and is retried on the next call, never dropped); replies
//! through a bounded queue per stream (full: the chunk is dropped, counted and logged, since a
//! session that does not read its audio has stopped listening). Cancel is by epoch: the stream
//! bumps a shared epoch, the engine skips requests of older epochs before each chunk, and the
//! stream discards any stale chunk that was already in flight.

use crate::engine::wake::{Wake, WakingSender};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::chunker::{ChunkerConfig, TextChunker};
use super::g2p::G2p;
use super::kokoro_timing::FrameLimits;
use super::normalize::normalize;
use super::shape::{pause_ms, shape_chunk};
use super::{SpeechModel, TtsError, Urgency};
use crate::engine::spawn_engine_thread;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Thread name, e.g. "tts-piper".
    pub name: String,
    /// Requests waiting for the engine, over all streams.
    pub queue: usize,
    /// Chunks waiting for one stream's reader.
    pub stream_queue: usize,
    pub chunker: ChunkerConfig,
    /// Kokoro's caps on non-speech frames (Piper has no such knob and ignores it).
    pub kokoro_frames: FrameLimits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            name: "tts".into(),
            queue: 64,
            stream_queue: 32,
            chunker: ChunkerConfig::default(),
            kokoro_frames: FrameLimits::default(),
        }
    }
}

/// A piece of synthesized speech.
#[derive(Debug, Clone)]
pub struct TtsChunk {
    /// The reply this chunk belongs to; chunks of older epochs never reach the reader.
    pub epoch: u64,
    /// 0, 1, 2… within the epoch.
    pub seq: u64,
    /// Mono PCM at `sample_rate`, speech then the pause that follows it.
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// Offset of `samples[0]` from the start of this epoch's audio.
    pub start_sample: u64,
    /// Samples of speech before the trailing pause (playing up to here says all of `text`).
    pub speech_samples: usize,
    /// The text (as written) this chunk speaks.
    pub text: String,
    /// No more chunks follow in this epoch.
    pub last: bool,
}

#[derive(Debug)]
pub enum TtsEvent {
    Audio(TtsChunk),
    /// Synthesis of one chunk failed; later chunks are still attempted.
    Failed {
        epoch: u64,
        seq: u64,
        error: String,
    },
}

impl TtsEvent {
    fn epoch(&self) -> u64 {
        match self {
            TtsEvent::Audio(c) => c.epoch,
            TtsEvent::Failed { epoch, .. } => *epoch,
        }
    }
}

struct Speak {
    stream: u64,
    epoch: u64,
    seq: u64,
    text: String,
    last: bool,
    /// The reply's first spoken chunk, which the listener is waiting for.
    first_of_reply: bool,
    voice: Arc<str>,
    current_epoch: Arc<AtomicU64>,
    reply: ReplyTx,
}

/// A stream's event channel, waking its owner on each delivery.
type ReplyTx = WakingSender<SyncSender<TtsEvent>>;

enum Request {
    Speak(Speak),
    Close { stream: u64 },
}

/// Handle on an engine thread; cheap to share by reference, one per loaded model.
pub struct TtsEngine {
    requests: SyncSender<Request>,
    sample_rate: u32,
    voices: Vec<String>,
    config: EngineConfig,
    next_stream: AtomicU64,
    /// Streams whose reply text is still arriving (between its first text and `finish` or
    /// `cancel`): a reply that starts while others are written gets a longer first chunk.
    replies_writing: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl TtsEngine {
    /// Starts the engine thread; `load` builds the model on that thread.
    pub fn spawn<M, F>(config: EngineConfig, g2p: G2p, load: F) -> Result<Self, TtsError>
    where
        M: SpeechModel + 'static,
        F: FnOnce() -> Result<M, TtsError> + Send + 'static,
    {
        let (requests, inbox) = mpsc::sync_channel(config.queue.max(1));
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let dropped = Arc::new(AtomicU64::new(0));
        let dropped_in_thread = dropped.clone();
        let thread = spawn_engine_thread(&config.name, move || {
            let model = match load() {
                Ok(m) => {
                    // The receiver waits in spawn(); if it is gone there is no one to serve.
                    let _ = ready_tx.send(Ok((m.sample_rate(), m.voices())));
                    m
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            serve(model, g2p, inbox, &dropped_in_thread);
        })
        .map_err(|e| TtsError::Spawn(e.to_string()))?;
        let (sample_rate, voices) = ready_rx.recv().map_err(|_| TtsError::EngineStopped)??;
        Ok(Self {
            requests,
            sample_rate,
            voices,
            config,
            next_stream: AtomicU64::new(1),
            replies_writing: Arc::new(AtomicUsize::new(0)),
            dropped,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    pub fn voices(&self) -> &[String] {
        &self.voices
    }

    /// Chunks dropped because a stream's reader fell behind.
    pub fn dropped_chunks(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Failure state, for health checks (streams have no per-session limit).
    pub fn health(&self) -> crate::engine::EngineHealth {
        let failure = self
            .thread
            .lock()
            .map(|t| crate::engine::thread_failure(t.as_ref()))
            .unwrap_or(None);
        crate::engine::EngineHealth {
            failure,
            capacity: None,
            in_use: 0,
            backlog_ms: None,
        }
    }

    /// A new stream speaking with `voice`.
    pub fn open_stream(&self, voice: &str) -> Result<TtsStream, TtsError> {
        self.open_stream_waking(voice, None)
    }

    /// [`Self::open_stream`], and the engine calls `wake` after each event it delivers to
    /// the stream (so its owner can wait instead of polling).
    pub fn open_stream_waking(
        &self,
        voice: &str,
        wake: Option<Wake>,
    ) -> Result<TtsStream, TtsError> {
        if !self.voices.iter().any(|v| v == voice) {
            return Err(TtsError::UnknownVoice(voice.to_owned()));
        }
        let (reply, events) = mpsc::sync_channel(self.config.stream_queue.max(1));
        Ok(TtsStream {
            id: self.next_stream.fetch_add(1, Ordering::Relaxed),
            voice: voice.into(),
            requests: self.requests.clone(),
            reply: WakingSender::new(reply, wake),
            events,
            epoch: Arc::new(AtomicU64::new(0)),
            chunker: TextChunker::new(self.config.chunker.clone()),
            replies_writing: self.replies_writing.clone(),
            writing: false,
            pending: VecDeque::new(),
            seq: 0,
            reply_sent: 0,
            finished: false,
        })
    }
}

impl Drop for TtsEngine {
    fn drop(&mut self) {
        // The thread ends when every request sender is gone; streams may outlive us, so
        // only join when we can (never block a drop on a stream held elsewhere).
        if let Ok(mut t) = self.thread.lock()
            && let Some(handle) = t.take()
            && handle.is_finished()
        {
            let _ = handle.join();
        }
    }
}

/// One session's speech: feed text, read chunks, cancel.
pub struct TtsStream {
    id: u64,
    voice: Arc<str>,
    requests: SyncSender<Request>,
    reply: ReplyTx,
    events: Receiver<TtsEvent>,
    epoch: Arc<AtomicU64>,
    chunker: TextChunker,
    /// The engine's count of streams writing a reply; `writing`: this one is counted in it.
    replies_writing: Arc<AtomicUsize>,
    writing: bool,
    /// Chunks cut but not yet accepted by a full engine queue.
    pending: VecDeque<(String, bool)>,
    seq: u64,
    /// Chunks with text handed to the engine in the current reply (see `reply_chunks_sent`).
    reply_sent: u64,
    finished: bool,
}

impl TtsStream {
    /// Text is waiting for room in the engine's queue: `try_recv` retries it, so call that
    /// again soon even when nothing was delivered.
    pub fn has_held_back(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The current reply's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Feeds text as the LLM emits it; complete chunks go to the engine at once. After
    /// `finish`, this starts the next reply.
    pub fn push_text(&mut self, text: &str) -> Result<(), TtsError> {
        if self.finished {
            self.start_next_reply();
        }
        if !self.writing {
            self.writing = true;
            let others = self.replies_writing.fetch_add(1, Ordering::AcqRel);
            self.chunker.set_contended(others > 0);
        }
        self.chunker.push(text);
        self.queue_ready(false);
        self.flush()
    }

    /// Ends the reply: the rest of the text is spoken and the final chunk is marked `last`.
    pub fn finish(&mut self) -> Result<(), TtsError> {
        self.stop_writing();
        self.chunker.finish();
        self.queue_ready(true);
        self.finished = true;
        if self.pending.is_empty() {
            // Nothing left to say: an empty last chunk tells the reader the reply is done.
            self.pending.push_back((String::new(), true));
        }
        self.flush()
    }

    /// Stops this reply: nothing more of it is synthesized after the chunk in progress,
    /// and nothing of it is delivered. Returns the new epoch.
    pub fn cancel(&mut self) -> u64 {
        self.stop_writing();
        self.chunker.reset();
        self.pending.clear();
        self.seq = 0;
        self.reply_sent = 0;
        self.finished = false;
        self.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Chunks with text the chunker has cut and handed to the engine in the current reply
    /// (reset by `cancel` and by the next reply after `finish`). Going from 0 to 1 marks the
    /// first clause leaving for synthesis: the latency trace's "first clause" stage. A chunk
    /// held back by a full engine queue counts once it is accepted (on a later call).
    pub fn reply_chunks_sent(&self) -> u64 {
        self.reply_sent
    }

    /// Next chunk of the current epoch, waiting up to `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<TtsEvent>, TtsError> {
        self.flush_quietly();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) if event.epoch() == self.epoch() => return Ok(Some(event)),
                Ok(_stale) => continue,
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                // We hold a sender ourselves, so this means nothing; kept for completeness.
                Err(RecvTimeoutError::Disconnected) => return Err(TtsError::EngineStopped),
            }
        }
    }

    /// Next chunk of the current epoch, if one is ready.
    pub fn try_recv(&mut self) -> Result<Option<TtsEvent>, TtsError> {
        self.recv_timeout(Duration::ZERO)
    }

    /// A new reply after `finish`: same epoch and timeline (only `cancel` changes the epoch),
    /// but its first chunk is cut short again.
    fn start_next_reply(&mut self) {
        self.finished = false;
        self.reply_sent = 0;
        self.chunker.reset();
    }

    /// This stream's reply text has all arrived (or was cancelled): it no longer counts as
    /// a reply being written.
    fn stop_writing(&mut self) {
        if std::mem::take(&mut self.writing) {
            self.replies_writing.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn queue_ready(&mut self, finishing: bool) {
        while let Some(chunk) = self.chunker.poll() {
            self.pending.push_back((chunk, false));
        }
        if finishing && let Some(last) = self.pending.back_mut() {
            last.1 = true;
        }
    }

    fn flush_quietly(&mut self) {
        // A full queue here just means "later"; a stopped engine is reported by recv.
        let _ = self.flush();
    }

    fn flush(&mut self) -> Result<(), TtsError> {
        while let Some((text, last)) = self.pending.pop_front() {
            let spoken = !text.is_empty();
            let request = Request::Speak(Speak {
                stream: self.id,
                epoch: self.epoch(),
                seq: self.seq,
                text,
                last,
                first_of_reply: spoken && self.reply_sent == 0,
                voice: self.voice.clone(),
                current_epoch: self.epoch.clone(),
                reply: self.reply.clone(),
            });
            match self.requests.try_send(request) {
                Ok(()) => {
                    self.seq += 1;
                    self.reply_sent += u64::from(spoken);
                }
                Err(TrySendError::Full(Request::Speak(s))) => {
                    self.pending.push_front((s.text, s.last));
                    return Err(TtsError::QueueFull);
                }
                Err(_) => return Err(TtsError::EngineStopped),
            }
        }
        Ok(())
    }
}

impl Drop for TtsStream {
    fn drop(&mut self) {
        self.stop_writing();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        // Best effort: if the queue is full the engine forgets the stream when its replies fail.
        let _ = self.requests.try_send(Request::Close { stream: self.id });
    }
}

/// Where each stream's audio timeline stands.
struct StreamPosition {
    epoch: u64,
    next_sample: u64,
}

fn serve<M: SpeechModel>(mut model: M, g2p: G2p, inbox: Receiver<Request>, dropped: &AtomicU64) {
    let rate = model.sample_rate();
    let mut positions: HashMap<u64, StreamPosition> = HashMap::new();
    while let Ok(request) = inbox.recv() {
        let speak = match request {
            Request::Speak(s) => s,
            Request::Close { stream } => {
                positions.remove(&stream);
                continue;
            }
        };
        // Cancelled while queued: skip without spending any compute.
        if speak.current_epoch.load(Ordering::Acquire) != speak.epoch {
            continue;
        }
        let position = positions.entry(speak.stream).or_insert(StreamPosition {
            epoch: speak.epoch,
            next_sample: 0,
        });
        if position.epoch != speak.epoch {
            *position = StreamPosition {
                epoch: speak.epoch,
                next_sample: 0,
            };
        }
        let urgency = if speak.first_of_reply {
            Urgency::FirstAudio
        } else {
            Urgency::Ahead
        };
        let event = match synthesize_chunk(&mut model, &g2p, &speak.text, &speak.voice, urgency) {
            Ok(mut samples) => {
                let speech_samples = if samples.is_empty() {
                    0
                } else {
                    let pause = if speak.last { 0 } else { pause_ms(&speak.text) };
                    shape_chunk(&mut samples, rate, pause)
                };
                let chunk = TtsChunk {
                    epoch: speak.epoch,
                    seq: speak.seq,
                    start_sample: position.next_sample,
                    speech_samples,
                    sample_rate: rate,
                    text: speak.text,
                    last: speak.last,
                    samples,
                };
                position.next_sample += chunk.samples.len() as u64;
                TtsEvent::Audio(chunk)
            }
            Err(e) => {
                tracing::warn!(error = %e, "TTS chunk failed");
                TtsEvent::Failed {
                    epoch: speak.epoch,
                    seq: speak.seq,
                    error: e.to_string(),
                }
            }
        };
        match speak.reply.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(stream = speak.stream, "TTS reader is behind; chunk dropped");
            }
            Err(TrySendError::Disconnected(_)) => {
                positions.remove(&speak.stream);
            }
        }
    }
}

fn synthesize_chunk<M: SpeechModel>(
    model: &mut M,
    g2p: &G2p,
    text: &str,
    voice: &str,
    urgency: Urgency,
) -> Result<Vec<f32>, TtsError> {
    let phonemes = g2p.phonemize(&normalize(text));
    if phonemes.trim().is_empty() {
        return Ok(Vec::new());
    }
    model.synthesize(&phonemes, voice, urgency)
}

impl TtsStream {
    /// Reads chunks until the one marked `last`, failing if a chunk fails or nothing arrives
    /// within `timeout` of the previous one. For tools and tests; sessions poll instead.
    pub fn collect_reply(&mut self, timeout: Duration) -> Result<Vec<TtsChunk>, TtsError> {
        let mut chunks = Vec::new();
        loop {
            match self.recv_timeout(timeout)? {
                Some(TtsEvent::Audio(chunk)) => {
                    let last = chunk.last;
                    chunks.push(chunk);
                    if last {
                        return Ok(chunks);
                    }
                }
                Some(TtsEvent::Failed { error, .. }) => return Err(TtsError::Inference(error)),
                None => return Err(TtsError::Inference("timed out waiting for audio".into())),
            }
        }
    }
}
