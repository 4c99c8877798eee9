//! The ASR engine: one named OS thread owns Silero VAD, Moonshine and every session's stream
//! state; sessions lease slots and talk to it through bounded queues.
//!
//! Queues and their policies:
//! - audio in: one inbox per slot, bounded to `inbox_ms` of audio. File input waits for room
//!   (`StreamingAsr::push_audio_waiting`) and loses nothing. A live call cannot wait: when the
//!   engine falls behind by more than the inbox, the OLDEST queued audio is dropped and counted
//!   (`AsrSession::dropped_samples`), and the server tells that caller and counts it.
//! - events out: one bounded channel per session (`events_capacity`). A session that stops
//!   reading loses events beyond that, counted in [`EngineStats::dropped_events`]; the engine
//!   never waits on a session.
//! - admission: a fixed number of slots; `open` is refused at once when none is free or the
//!   engine has failed.
//!
//! Each loop: move inbox audio into the streams, run one VAD frame of every stream that has one
//! as a single batch (repeated until the backlog is judged), then decode. Finals go first, in
//! batches of segments of similar length; then one batch of due partials, starting from a
//! rotating slot so every session gets its turn.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::engine::wake::{Wake, WakingSender};

/// A session's event channel, waking its owner on each delivery.
type EventTx = WakingSender<SyncSender<AsrEvent>>;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::moonshine::{AsrError, DecodeRow, Moonshine};
use super::stream::{Segment, SlotStream, StreamTiming};
use super::{AsrEvent, FinalStats, StreamError, StreamingAsr};
use crate::engine::{SlotId, SlotTable, spawn_engine_thread};
use crate::store::ModelStore;
use crate::vad::endpoint::{
    EndpointConfig, EndpointConfigError, Endpointer, ms_to_samples, samples_to_ms,
};
use crate::vad::silero::{SileroState, SileroVad, VadError};
use crate::vad::smart_turn::{SmartTurn, SmartTurnError};
use crate::vad::turn_end::{TurnEnd, judge};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct AsrEngineConfig {
    /// Sessions served at once.
    pub slots: usize,
    /// onnxruntime intra-op threads per model.
    pub threads: usize,
    /// Default turn detection for new sessions.
    pub endpoint: EndpointConfig,
    /// Speech added between partial decodes.
    pub partial_interval_ms: u32,
    /// Most segments decoded in one batch.
    pub max_batch: usize,
    /// Audio queued per session before the oldest is dropped.
    pub inbox_ms: u32,
    /// Events queued per session before new ones are dropped.
    pub events_capacity: usize,
    /// Longest segment before it is finalised without an endpoint.
    pub max_segment_ms: u32,
    /// Audio kept after the last voiced frame of a segment. At most
    /// [`crate::vad::turn_end::PROBE_AFTER_MS`] (the first judgement), so a pause's transcript
    /// is made before the pause is judged (the judgement weighs it, and a speculative reply
    /// starts on it). 100 ms: Silero's last voiced frame already trails the words, and each
    /// millisecond here is one more before the speculative reply can start (200 → 100 moved
    /// the 1-session TTFB p50 by ~100 ms with the same transcripts; docs/BENCHMARKS.md).
    pub tail_ms: u32,
    /// Segments are batched together only if the longest is at most this much longer than
    /// the shortest (the rest is padding).
    pub max_padding_ms: u32,
}

impl Default for AsrEngineConfig {
    fn default() -> Self {
        Self {
            slots: 16,
            threads: 2,
            endpoint: EndpointConfig::default(),
            partial_interval_ms: 400,
            max_batch: 8,
            inbox_ms: 10_000,
            events_capacity: 256,
            max_segment_ms: 20_000,
            tail_ms: 100,
            max_padding_ms: 500,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AsrEngineError {
    #[error(transparent)]
    Vad(#[from] VadError),
    #[error(transparent)]
    Asr(#[from] AsrError),
    #[error(transparent)]
    Endpoint(#[from] EndpointConfigError),
    #[error(transparent)]
    TurnModel(#[from] SmartTurnError),
    #[error("cannot start the ASR engine thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("all {0} ASR slots are in use")]
    Full(usize),
    #[error("the ASR engine has failed: {0}")]
    Failed(String),
}

/// Counters, readable from any thread.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    pub slots_in_use: usize,
    pub vad_batches: u64,
    pub decode_batches: u64,
    pub decoded_rows: u64,
    pub dropped_events: u64,
}

/// What a session hands the engine, guarded per slot.
struct Inbox {
    generation: u64,
    /// Set by a new lease; the engine takes it and starts a fresh stream.
    opening: Option<(EventTx, EndpointConfig)>,
    audio: VecDeque<f32>,
    capacity: usize,
    dropped: u64,
    finish: bool,
    /// The session weighs pauses with a text signal ([`AsrSession::expect_text_verdicts`]).
    expects_text: bool,
    /// The text signal for the pause after this speech end (ms): P(a sentence ends there),
    /// `None` when the judge could not tell.
    text_verdict: Option<(u64, Option<f32>)>,
}

/// Lock order: an inbox before the slot table (the engine thread checks a slot's lease while
/// it holds the slot's inbox). Nothing may hold the table while it takes an inbox.
struct Shared {
    inboxes: Vec<Mutex<Inbox>>,
    table: Mutex<SlotTable>,
    /// Bumped on every push so the engine wakes.
    doorbell: Mutex<u64>,
    wake: Condvar,
    failed: Mutex<Option<String>>,
    shutdown: AtomicBool,
    vad_batches: AtomicU64,
    decode_batches: AtomicU64,
    decoded_rows: AtomicU64,
    dropped_events: AtomicU64,
}

/// A poisoned lock only means another thread panicked while holding it; the data (queues and
/// counters) is still usable, so take it rather than spread the panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn ring(&self) {
        *lock(&self.doorbell) += 1;
        self.wake.notify_one();
    }
}

/// The running engine. Dropping it stops the thread.
pub struct AsrEngine {
    shared: Arc<Shared>,
    config: AsrEngineConfig,
    thread: Option<JoinHandle<()>>,
}

impl AsrEngine {
    /// Loads the models from `store` and starts the engine thread.
    pub fn start(store: &ModelStore, config: AsrEngineConfig) -> Result<Self, AsrEngineError> {
        config.endpoint.validate()?;
        let vad = SileroVad::load(store, 1)?;
        let asr = Moonshine::load(store, config.threads)?;
        let turn = SmartTurn::load(store, 1)?;
        let capacity = ms_to_samples(u64::from(config.inbox_ms)) as usize;
        let shared = Arc::new(Shared {
            inboxes: (0..config.slots)
                .map(|_| {
                    Mutex::new(Inbox {
                        generation: 0,
                        opening: None,
                        audio: VecDeque::new(),
                        capacity,
                        dropped: 0,
                        finish: false,
                        expects_text: false,
                        text_verdict: None,
                    })
                })
                .collect(),
            table: Mutex::new(SlotTable::new(config.slots)),
            doorbell: Mutex::new(0),
            wake: Condvar::new(),
            failed: Mutex::new(None),
            shutdown: AtomicBool::new(false),
            vad_batches: AtomicU64::new(0),
            decode_batches: AtomicU64::new(0),
            decoded_rows: AtomicU64::new(0),
            dropped_events: AtomicU64::new(0),
        });
        let worker = Worker::new(shared.clone(), &config, vad, asr, turn);
        let thread = spawn_engine_thread("asr-engine", move || worker.run())?;
        Ok(Self {
            shared,
            config,
            thread: Some(thread),
        })
    }

    /// Leases a slot with the engine's default turn detection.
    pub fn open(&self) -> Result<AsrSession, AsrEngineError> {
        self.open_with(self.config.endpoint)
    }

    /// Leases a slot; refused at once when all are taken or the engine has failed.
    pub fn open_with(&self, endpoint: EndpointConfig) -> Result<AsrSession, AsrEngineError> {
        self.open_waking(endpoint, None)
    }

    /// [`Self::open_with`], and the engine calls `wake` after each event it delivers to this
    /// session (so its owner can wait instead of polling).
    pub fn open_waking(
        &self,
        endpoint: EndpointConfig,
        wake: Option<Wake>,
    ) -> Result<AsrSession, AsrEngineError> {
        endpoint.validate()?;
        if let Some(message) = lock(&self.shared.failed).clone() {
            return Err(AsrEngineError::Failed(message));
        }
        let slot = lock(&self.shared.table)
            .lease()
            .ok_or(AsrEngineError::Full(self.config.slots))?;
        let (tx, rx) = sync_channel(self.config.events_capacity);
        {
            let mut inbox = lock(&self.shared.inboxes[slot.index]);
            inbox.generation = slot.generation;
            inbox.opening = Some((WakingSender::new(tx, wake), endpoint));
            inbox.audio.clear();
            inbox.dropped = 0;
            inbox.finish = false;
            inbox.expects_text = false;
            inbox.text_verdict = None;
        }
        self.shared.ring();
        Ok(AsrSession {
            shared: self.shared.clone(),
            slot,
            events: rx,
        })
    }

    /// Failure state and slot use, for health checks.
    pub fn health(&self) -> crate::engine::EngineHealth {
        // One lock at a time, each in its own statement: a temporary guard lives to the end of
        // its statement, and the engine thread takes the slot table while it holds an inbox,
        // so holding the table while `backlog_ms` locks the inboxes deadlocked both (a soak
        // froze the server this way: /healthz and the recogniser stuck for good).
        let failure = lock(&self.shared.failed).clone();
        let in_use = lock(&self.shared.table).in_use();
        let backlog_ms = self.backlog_ms();
        crate::engine::EngineHealth {
            failure: failure.or_else(|| crate::engine::thread_failure(self.thread.as_ref())),
            capacity: Some(self.config.slots),
            in_use,
            backlog_ms: Some(backlog_ms),
        }
    }

    /// The most caller audio (ms) waiting in one session's inbox: each engine loop empties
    /// every inbox, so this is how far the engine has fallen behind real time.
    pub fn backlog_ms(&self) -> u64 {
        let queued = self
            .shared
            .inboxes
            .iter()
            .map(|inbox| lock(inbox).audio.len())
            .max()
            .unwrap_or(0);
        samples_to_ms(queued as u64)
    }

    pub fn stats(&self) -> EngineStats {
        let s = &self.shared;
        EngineStats {
            slots_in_use: lock(&s.table).in_use(),
            vad_batches: s.vad_batches.load(Ordering::Relaxed),
            decode_batches: s.decode_batches.load(Ordering::Relaxed),
            decoded_rows: s.decoded_rows.load(Ordering::Relaxed),
            dropped_events: s.dropped_events.load(Ordering::Relaxed),
        }
    }
}

impl Drop for AsrEngine {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        self.shared.ring();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A session's lease on the engine. Dropping it frees the slot.
pub struct AsrSession {
    shared: Arc<Shared>,
    slot: SlotId,
    events: Receiver<AsrEvent>,
}

impl AsrSession {
    pub fn slot(&self) -> SlotId {
        self.slot
    }

    /// From now on a semantic judgement of a pause waits (up to [`TEXT_VERDICT_WAIT`] after
    /// the pause's transcript) for [`Self::text_verdict`] on that transcript, and a "done"
    /// whose words are unlikely to end a sentence is vetoed.
    pub fn expect_text_verdicts(&mut self) -> Result<(), StreamError> {
        self.inbox()?.expects_text = true;
        Ok(())
    }

    /// The text signal for the pause after `speech_end_ms` (from [`AsrEvent::Paused`]):
    /// the probability that a sentence ends with its transcript, or `None` when unknown.
    pub fn text_verdict(
        &mut self,
        speech_end_ms: u64,
        sentence_end: Option<f32>,
    ) -> Result<(), StreamError> {
        self.inbox()?.text_verdict = Some((speech_end_ms, sentence_end));
        self.shared.ring();
        Ok(())
    }

    fn inbox(&self) -> Result<MutexGuard<'_, Inbox>, StreamError> {
        if let Some(message) = lock(&self.shared.failed).clone() {
            return Err(StreamError::Stopped(message));
        }
        let inbox = lock(&self.shared.inboxes[self.slot.index]);
        if inbox.generation != self.slot.generation {
            return Err(StreamError::Stopped("slot was released".to_owned()));
        }
        Ok(inbox)
    }
}

impl StreamingAsr for AsrSession {
    fn push_audio(&mut self, samples: &[f32]) -> Result<(), StreamError> {
        if samples.iter().any(|s| !s.is_finite()) {
            return Err(StreamError::BadAudio);
        }
        {
            let mut inbox = self.inbox()?;
            inbox.audio.extend(samples.iter().copied());
            let over = inbox.audio.len().saturating_sub(inbox.capacity);
            if over > 0 {
                inbox.audio.drain(..over);
                inbox.dropped += over as u64;
            }
        }
        self.shared.ring();
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.inbox()?.finish = true;
        self.shared.ring();
        Ok(())
    }

    fn try_event(&mut self) -> Option<AsrEvent> {
        self.events.try_recv().ok()
    }

    fn next_event(&mut self, timeout: Duration) -> Option<AsrEvent> {
        self.events.recv_timeout(timeout).ok()
    }

    fn dropped_samples(&self) -> u64 {
        lock(&self.shared.inboxes[self.slot.index]).dropped
    }

    fn inbox_room(&self) -> Result<usize, StreamError> {
        let inbox = self.inbox()?;
        Ok(inbox.capacity.saturating_sub(inbox.audio.len()))
    }
}

impl Drop for AsrSession {
    fn drop(&mut self) {
        {
            let mut inbox = lock(&self.shared.inboxes[self.slot.index]);
            if inbox.generation == self.slot.generation {
                inbox.audio.clear();
                inbox.finish = false;
                inbox.opening = None;
            }
        }
        lock(&self.shared.table).release(self.slot);
        self.shared.ring();
    }
}

/// A slot as the engine thread sees it.
struct Active {
    generation: u64,
    events: EventTx,
    stream: SlotStream,
    /// The last pause's transcript, the speech end it was made for and when it was made
    /// (semantic turn detection weighs it with the acoustic judgement).
    pause_text: Option<(u64, String, Instant)>,
    expects_text: bool,
    /// See [`Inbox::text_verdict`].
    text_verdict: Option<(u64, Option<f32>)>,
}

impl Active {
    /// The text signal for the pause after `speech_end` (samples): `Ready(p)` when known (or
    /// not expected, or given up on), `Waiting` while it may still come.
    fn text_signal(&self, speech_end: u64, now: Instant) -> TextSignal {
        let end_ms = samples_to_ms(speech_end);
        if let Some((ms, p)) = self.text_verdict
            && ms == end_ms
        {
            return TextSignal::Ready(p);
        }
        let waiting = self.expects_text
            && self.pause_text.as_ref().is_some_and(|(end, _, at)| {
                *end == speech_end && now.saturating_duration_since(*at) < TEXT_VERDICT_WAIT
            });
        if waiting {
            TextSignal::Waiting
        } else {
            TextSignal::Ready(None)
        }
    }
}

impl Active {
    /// Work the engine can do now: a due judgement counts once its text signal is ready.
    fn has_work(&self, now: Instant) -> bool {
        self.stream.has_work_besides_judging()
            || self
                .stream
                .judgement_due()
                .is_some_and(|(end, _)| matches!(self.text_signal(end, now), TextSignal::Ready(_)))
    }
}

enum TextSignal {
    Ready(Option<f32>),
    Waiting,
}

/// How long a pause's judgement waits for its text verdict after the pause's transcript is
/// made (the LLM scores a few tokens over its cached prefix: tens of ms when it is free).
pub const TEXT_VERDICT_WAIT: Duration = Duration::from_millis(150);

/// One row of a decode batch.
struct Job {
    slot: usize,
    segment: u64,
    is_final: bool,
    audio_len: usize,
}

struct Worker {
    shared: Arc<Shared>,
    vad: SileroVad,
    asr: Moonshine,
    turn: SmartTurn,
    slots: Vec<Option<Active>>,
    timing: StreamTiming,
    max_batch: usize,
    max_padding: usize,
    /// Slot the next partial round starts from (round robin).
    next_partial: usize,
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        config: &AsrEngineConfig,
        vad: SileroVad,
        asr: Moonshine,
        turn: SmartTurn,
    ) -> Self {
        let ms = |v: u32| ms_to_samples(u64::from(v)) as usize;
        Self {
            shared,
            vad,
            asr,
            turn,
            slots: (0..config.slots).map(|_| None).collect(),
            timing: StreamTiming {
                partial_interval: ms(config.partial_interval_ms),
                max_segment: ms(config.max_segment_ms),
                tail: ms(config.tail_ms),
            },
            max_batch: config.max_batch.max(1),
            max_padding: ms(config.max_padding_ms),
            next_partial: 0,
        }
    }

    fn run(mut self) {
        let mut seen = 0u64;
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            if let Err(e) = self.step() {
                let message = e.to_string();
                tracing::error!(%message, "asr engine failed");
                *lock(&self.shared.failed) = Some(message.clone());
                for active in self.slots.iter().flatten() {
                    let _ = active.events.try_send(AsrEvent::Failed {
                        message: message.clone(),
                    });
                }
                return;
            }
            let now = Instant::now();
            let busy = self.slots.iter().flatten().any(|a| a.has_work(now));
            if busy {
                continue;
            }
            // A judgement waiting for its text verdict must still be made when the wait ends.
            let nap = if self.slots.iter().flatten().any(|a| a.stream.has_work()) {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(100)
            };
            let bell = lock(&self.shared.doorbell);
            if *bell == seen {
                let (bell, _) = self
                    .shared
                    .wake
                    .wait_timeout(bell, nap)
                    .unwrap_or_else(|e| e.into_inner());
                seen = *bell;
            } else {
                seen = *bell;
            }
        }
    }

    fn step(&mut self) -> Result<(), AsrEngineError> {
        self.collect_inboxes();
        self.run_vad()?;
        self.run_finals()?;
        self.run_partials()?;
        self.run_judgements()?;
        Ok(())
    }

    /// Judges every pause due a semantic judgement, all sessions in one batch.
    fn run_judgements(&mut self) -> Result<(), AsrEngineError> {
        let mut due = Vec::new();
        let mut audio: Vec<&[f32]> = Vec::new();
        let now = Instant::now();
        for (slot, active) in self.slots.iter().enumerate() {
            let Some(active) = active else { continue };
            if let Some((speech_end, turn)) = active.stream.judgement_due()
                && let TextSignal::Ready(sentence_end) = active.text_signal(speech_end, now)
            {
                due.push((slot, speech_end, sentence_end));
                audio.push(turn);
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        let probabilities = self.turn.predict(&audio)?;
        let lengths: Vec<usize> = audio.iter().map(|a| a.len()).collect();
        let now = Instant::now();
        for (((slot, speech_end, sentence_end), probability), turn_len) in
            due.into_iter().zip(probabilities).zip(lengths)
        {
            let mut events = Vec::new();
            if let Some(active) = &mut self.slots[slot]
                && let TurnEnd::Semantic(eagerness) = active.stream.turn_end()
            {
                let text = active
                    .pause_text
                    .as_ref()
                    .filter(|(end, _, _)| *end == speech_end)
                    .map(|(_, text, _)| text.as_str());
                let verdict = judge(eagerness, probability, text, sentence_end);
                tracing::debug!(
                    slot,
                    speech_end_ms = samples_to_ms(speech_end),
                    turn_ms = samples_to_ms(turn_len as u64),
                    probability,
                    sentence_end,
                    vetoed = verdict.vetoed,
                    complete = verdict.complete,
                    text = text.unwrap_or(""),
                    "pause judged"
                );
                events.push(AsrEvent::TurnJudged {
                    speech_end_ms: samples_to_ms(speech_end),
                    probability,
                    vetoed: verdict.vetoed,
                    complete: verdict.complete,
                });
                active
                    .stream
                    .judged(speech_end, verdict.complete, now, &mut events);
            }
            for e in events {
                self.send(slot, e);
            }
        }
        Ok(())
    }

    fn send(&self, slot: usize, event: AsrEvent) {
        let Some(active) = &self.slots[slot] else {
            return;
        };
        match active.events.try_send(event) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.dropped_events.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn collect_inboxes(&mut self) {
        for index in 0..self.slots.len() {
            let mut inbox = lock(&self.shared.inboxes[index]);
            if let Some((events, endpoint)) = inbox.opening.take() {
                // Validated in `open_with`; a refusal here would be a bug, so skip the slot.
                if let Ok(endpointer) = Endpointer::new(endpoint) {
                    self.slots[index] = Some(Active {
                        generation: inbox.generation,
                        events,
                        stream: SlotStream::new(endpointer, self.timing),
                        pause_text: None,
                        expects_text: false,
                        text_verdict: None,
                    });
                }
            }
            let stale = self.slots[index]
                .as_ref()
                .is_some_and(|a| a.generation != inbox.generation)
                || !lock(&self.shared.table).is_current(SlotId {
                    index,
                    generation: inbox.generation,
                });
            if stale {
                self.slots[index] = None;
                continue;
            }
            if let Some(active) = &mut self.slots[index] {
                active.expects_text = inbox.expects_text;
                if let Some(verdict) = inbox.text_verdict.take() {
                    active.text_verdict = Some(verdict);
                }
                active.stream.append(inbox.audio.drain(..));
                if std::mem::take(&mut inbox.finish) {
                    active.stream.finishing = true;
                }
            }
        }
    }

    /// Judges every whole frame waiting in any stream, one frame per stream per batch.
    fn run_vad(&mut self) -> Result<(), AsrEngineError> {
        loop {
            let ready: Vec<usize> = (0..self.slots.len())
                .filter(|&i| {
                    self.slots[i]
                        .as_mut()
                        .is_some_and(|a| a.stream.next_frame().is_some())
                })
                .collect();
            if ready.is_empty() {
                break;
            }
            let probs = {
                let mut rows: Vec<(&mut SileroState, &[f32])> = self
                    .slots
                    .iter_mut()
                    .enumerate()
                    .filter(|(i, _)| ready.contains(i))
                    .filter_map(|(_, a)| a.as_mut().map(|a| a.stream.vad_row()))
                    .collect();
                self.vad.step(&mut rows)?
            };
            self.shared.vad_batches.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            for (&slot, prob) in ready.iter().zip(probs) {
                let mut events = Vec::new();
                if let Some(active) = &mut self.slots[slot] {
                    active.stream.frame_done(prob, now, &mut events);
                }
                for e in events {
                    self.send(slot, e);
                }
            }
        }
        // Streams that asked to finish have no whole frame left now.
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            let mut events = Vec::new();
            if let Some(active) = &mut self.slots[slot]
                && active.stream.finishing
            {
                active.stream.finish(now, &mut events);
                if active.stream.final_ready().is_none() {
                    active.stream.end_of_stream_owed = false;
                    events.push(AsrEvent::EndOfStream);
                }
            }
            for e in events {
                self.send(slot, e);
            }
        }
        Ok(())
    }

    /// Splits jobs (sorted by length) into batches whose lengths differ by at most
    /// `max_padding`, each at most `max_batch` rows.
    fn group(&self, mut jobs: Vec<Job>) -> Vec<Vec<Job>> {
        jobs.sort_by_key(|j| j.audio_len);
        let mut groups: Vec<Vec<Job>> = Vec::new();
        for job in jobs {
            match groups.last_mut() {
                Some(g)
                    if g.len() < self.max_batch
                        && job.audio_len <= g[0].audio_len + self.max_padding =>
                {
                    g.push(job)
                }
                _ => groups.push(vec![job]),
            }
        }
        groups
    }

    fn run_finals(&mut self) -> Result<(), AsrEngineError> {
        // Segments whose exact audio a partial already decoded need no model call.
        for slot in 0..self.slots.len() {
            while let Some(active) = &mut self.slots[slot] {
                let reusable = active
                    .stream
                    .final_ready()
                    .is_some_and(|seg| seg.decoded_already().is_some());
                if !reusable {
                    break;
                }
                let Some(seg) = active.stream.take_final() else {
                    break;
                };
                let tokens = seg.decoded_already().unwrap_or_default().to_vec();
                let text = self.asr.detokenize(&tokens)?;
                self.send_final(slot, &seg, text, tokens.len(), 0, 0);
            }
        }
        let jobs: Vec<Job> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, a)| {
                let seg = a.as_ref()?.stream.final_ready()?;
                Some(Job {
                    slot,
                    segment: seg.id,
                    is_final: true,
                    audio_len: seg.audio.len(),
                })
            })
            .collect();
        for group in self.group(jobs) {
            self.decode(group)?;
        }
        Ok(())
    }

    fn run_partials(&mut self) -> Result<(), AsrEngineError> {
        let n = self.slots.len();
        let mut jobs = Vec::new();
        for k in 0..n {
            let slot = (self.next_partial + k) % n;
            if let Some(job) = self.slots[slot]
                .as_ref()
                .and_then(|a| a.stream.partial_due())
            {
                jobs.push(Job {
                    slot,
                    segment: job.segment.id,
                    is_final: false,
                    audio_len: job.len,
                });
            }
        }
        let Some(first) = jobs.first() else {
            return Ok(());
        };
        // One batch per loop, built around the slot whose turn it is, so VAD and finals are
        // never held up behind a long run of partials.
        let anchor = first.audio_len;
        let batch: Vec<Job> = jobs
            .into_iter()
            .filter(|j| j.audio_len.abs_diff(anchor) <= self.max_padding)
            .take(self.max_batch)
            .collect();
        self.next_partial = (batch.last().map_or(0, |j| j.slot) + 1) % n;
        self.decode(batch)
    }

    fn send_final(
        &mut self,
        slot: usize,
        seg: &Segment,
        text: String,
        reused_tokens: usize,
        decoder_steps: usize,
        batch_size: usize,
    ) {
        let stats = FinalStats {
            latency: seg.stopped_at.map_or(Duration::ZERO, |t| t.elapsed()),
            reused_tokens,
            decoder_steps,
            batch_size,
        };
        self.send(
            slot,
            AsrEvent::Final {
                segment: seg.id,
                text,
                start_ms: samples_to_ms(seg.start),
                end_ms: samples_to_ms(seg.end()),
                stats,
            },
        );
        let end_of_stream = self.slots[slot].as_mut().is_some_and(|a| {
            let owed = a.stream.end_of_stream_owed && a.stream.final_ready().is_none();
            if owed {
                a.stream.end_of_stream_owed = false;
            }
            owed
        });
        if end_of_stream {
            self.send(slot, AsrEvent::EndOfStream);
        }
    }

    fn decode(&mut self, jobs: Vec<Job>) -> Result<(), AsrEngineError> {
        // Finals leave their stream; partials are decoded from a snapshot of the open segment.
        let mut finals = Vec::new();
        let mut inputs: Vec<(Vec<f32>, Vec<u32>)> = Vec::new();
        for job in &jobs {
            let Some(active) = &mut self.slots[job.slot] else {
                continue;
            };
            if job.is_final {
                let seg = active.stream.take_final().filter(|s| s.id == job.segment);
                if let Some(seg) = seg {
                    inputs.push((Vec::new(), seg.stable.clone()));
                    finals.push(Some(seg));
                } else {
                    inputs.push((Vec::new(), Vec::new()));
                    finals.push(None);
                }
            } else if let Some(partial) = active.stream.partial_due() {
                let seg = partial.segment;
                inputs.push((seg.audio[..partial.len].to_vec(), seg.stable.clone()));
                finals.push(None);
            } else {
                inputs.push((Vec::new(), Vec::new()));
                finals.push(None);
            }
        }
        let rows: Vec<DecodeRow<'_>> = inputs
            .iter()
            .zip(&finals)
            .map(|((audio, forced), seg)| DecodeRow {
                audio: seg
                    .as_ref()
                    .map_or(audio.as_slice(), |s| s.audio.as_slice()),
                forced,
            })
            .collect();
        let (tokens, timing) = self.asr.transcribe(&rows)?;
        let batch_size = rows.len();
        tracing::debug!(
            batch_size,
            finals = jobs.iter().filter(|j| j.is_final).count(),
            samples = rows.iter().map(|r| r.audio.len()).max().unwrap_or(0),
            forced = rows.iter().map(|r| r.forced.len()).min().unwrap_or(0),
            encoder_ms = timing.encoder.as_millis() as u64,
            decoder_ms = timing.decoder.as_millis() as u64,
            steps = timing.decoder_steps,
            "asr batch"
        );
        self.shared.decode_batches.fetch_add(1, Ordering::Relaxed);
        self.shared
            .decoded_rows
            .fetch_add(batch_size as u64, Ordering::Relaxed);
        for ((job, tokens), (seg, (audio, forced))) in
            jobs.iter().zip(tokens).zip(finals.into_iter().zip(&inputs))
        {
            let text = self.asr.detokenize(&tokens)?;
            if let Some(seg) = seg {
                self.send_final(
                    job.slot,
                    &seg,
                    text,
                    forced.len(),
                    timing.decoder_steps,
                    batch_size,
                );
            } else if !audio.is_empty() {
                let Some(active) = &mut self.slots[job.slot] else {
                    continue;
                };
                if let Some(paused) = active
                    .stream
                    .partial_done(job.segment, audio.len(), &tokens)
                {
                    if let Some(speech_end) = paused {
                        active.pause_text = Some((speech_end, text.clone(), Instant::now()));
                    }
                    self.send(
                        job.slot,
                        AsrEvent::Partial {
                            segment: job.segment,
                            text: text.clone(),
                        },
                    );
                    if let Some(speech_end) = paused {
                        self.send(
                            job.slot,
                            AsrEvent::Paused {
                                segment: job.segment,
                                text,
                                speech_end_ms: samples_to_ms(speech_end),
                            },
                        );
                    }
                } else {
                    active
                        .stream
                        .partial_done_closed(job.segment, audio.len(), &tokens);
                }
            }
        }
        Ok(())
    }
}
