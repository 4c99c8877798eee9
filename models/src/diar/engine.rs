//! The speaker-embedding engine: one named OS thread owns CAM++ and serves every session's
//! embedding jobs; sessions lease slots (and keep their own clustering state, see [`super::live`]).
//!
//! Queues and their policies:
//! - jobs in: one bounded queue shared by all slots (`queue` jobs). When it is full,
//!   [`DiarSlot::submit`] refuses the job at once ([`DiarEngineError::Busy`]) and the caller
//!   labels with what it has: a label is a nicety, never worth blocking a session for.
//! - results out: one channel per slot. It holds at most what that slot submitted, which its
//!   owner bounds (a few windows per speech segment).
//! - admission: a fixed number of slots; `open` is refused at once when none is free or the
//!   engine has stopped.
//!
//! Each loop: wait for a job, take whatever else is queued (up to `max_batch`), drop jobs of
//! released slots (stale generation), and embed windows of equal length as one batch.

use crate::engine::wake::{Wake, WakingSender};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError, channel, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{DiarError, SpeakerEmbedder};
use crate::engine::{SlotId, SlotTable, spawn_engine_thread};
use crate::store::ModelStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiarEngineConfig {
    /// Sessions served at once.
    pub slots: usize,
    /// Jobs queued across all sessions before new ones are refused.
    pub queue: usize,
    /// Most windows embedded in one forward pass.
    pub max_batch: usize,
}

impl Default for DiarEngineConfig {
    fn default() -> Self {
        Self {
            slots: 64,
            queue: 64,
            max_batch: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiarEngineError {
    #[error("all {0} speaker-embedding slots are in use")]
    Full(usize),
    #[error("the speaker-embedding queue is full")]
    Busy,
    #[error("the speaker-embedding engine has stopped")]
    Stopped,
    #[error("cannot start the speaker-embedding engine: {0}")]
    Start(String),
}

/// What the engine hands back for one job.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedResult {
    pub id: u64,
    /// The 192-d CAM++ embedding, or why there is none (e.g. a window too short).
    pub embedding: Result<Vec<f32>, String>,
}

/// A slot's result channel, waking its owner on each delivery.
type ResultTx = WakingSender<Sender<EmbedResult>>;

struct Job {
    slot: SlotId,
    id: u64,
    samples: Vec<f32>,
    reply: ResultTx,
    /// The slot's owner no longer needs ids below this (cancel by id).
    skip_below: Arc<AtomicU64>,
}

struct Shared {
    slots: Mutex<SlotTable>,
    running: AtomicBool,
    jobs_done: AtomicU64,
    batches: AtomicU64,
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, SlotTable> {
        // The table is a few vectors mutated in place; a panic elsewhere cannot leave it torn,
        // so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiarEngineStats {
    pub slots_in_use: usize,
    pub jobs_done: u64,
    pub batches: u64,
}

/// The engine handle. Sessions' slots keep the thread alive; it ends when the engine and
/// every slot are dropped.
pub struct DiarEngine {
    shared: Arc<Shared>,
    jobs: SyncSender<Job>,
    capacity: usize,
}

impl DiarEngine {
    /// Loads CAM++ from the store and starts the engine thread (`diar-engine`).
    pub fn start(store: &ModelStore, config: DiarEngineConfig) -> Result<Self, DiarError> {
        let embedder = SpeakerEmbedder::load(store)?;
        Ok(Self::with_embedder(embedder, config)?)
    }

    /// As [`Self::start`], with the fbank front end on `gpu` (see [`SpeakerEmbedder::use_gpu`]).
    #[cfg(feature = "cuda")]
    pub fn start_with_gpu(
        store: &ModelStore,
        config: DiarEngineConfig,
        gpu: Arc<antiphon_kernels::cuda::Gpu>,
    ) -> Result<Self, DiarError> {
        let mut embedder = SpeakerEmbedder::load(store)?;
        embedder.use_gpu(gpu)?;
        Ok(Self::with_embedder(embedder, config)?)
    }

    pub fn with_embedder(
        embedder: SpeakerEmbedder,
        config: DiarEngineConfig,
    ) -> Result<Self, DiarEngineError> {
        let slots = config.slots.max(1);
        let shared = Arc::new(Shared {
            slots: Mutex::new(SlotTable::new(slots)),
            running: AtomicBool::new(true),
            jobs_done: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        });
        let (jobs, rx) = sync_channel(config.queue.max(1));
        let worker_shared = shared.clone();
        let max_batch = config.max_batch.max(1);
        spawn_engine_thread("diar-engine", move || {
            yield_to_reply_engines();
            run(embedder, rx, &worker_shared, max_batch);
            worker_shared.running.store(false, Ordering::SeqCst);
        })
        .map_err(|e| DiarEngineError::Start(e.to_string()))?;
        Ok(Self {
            shared,
            jobs,
            capacity: slots,
        })
    }

    /// Failure state and slot use, for health checks.
    pub fn health(&self) -> crate::engine::EngineHealth {
        crate::engine::EngineHealth {
            failure: (!self.shared.running.load(Ordering::SeqCst))
                .then(|| "the speaker-embedding engine has stopped".to_string()),
            capacity: Some(self.capacity),
            in_use: self.shared.slots().in_use(),
            backlog_ms: None,
        }
    }

    /// Leases a slot, or refuses at once.
    pub fn open(&self) -> Result<DiarSlot, DiarEngineError> {
        self.open_waking(None)
    }

    /// [`Self::open`], and the engine calls `wake` after each result it delivers to the slot
    /// (so its owner can wait instead of polling).
    pub fn open_waking(&self, wake: Option<Wake>) -> Result<DiarSlot, DiarEngineError> {
        if !self.shared.running.load(Ordering::SeqCst) {
            return Err(DiarEngineError::Stopped);
        }
        let id = self
            .shared
            .slots()
            .lease()
            .ok_or(DiarEngineError::Full(self.capacity))?;
        let (reply, results) = channel();
        Ok(DiarSlot {
            shared: self.shared.clone(),
            jobs: self.jobs.clone(),
            id,
            reply: WakingSender::new(reply, wake),
            results,
            skip_below: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn stats(&self) -> DiarEngineStats {
        DiarEngineStats {
            slots_in_use: self.shared.slots().in_use(),
            jobs_done: self.shared.jobs_done.load(Ordering::Relaxed),
            batches: self.shared.batches.load(Ordering::Relaxed),
        }
    }
}

/// One session's lease. Dropping it frees the slot; jobs still queued for it are skipped.
pub struct DiarSlot {
    shared: Arc<Shared>,
    jobs: SyncSender<Job>,
    id: SlotId,
    reply: ResultTx,
    results: Receiver<EmbedResult>,
    skip_below: Arc<AtomicU64>,
}

impl DiarSlot {
    /// Jobs with ids below `id` are no longer wanted: the engine skips those it has not
    /// started (their results would be ignored anyway), and sends nothing for them.
    pub fn skip_below(&self, id: u64) {
        self.skip_below.fetch_max(id, Ordering::Relaxed);
    }

    /// Queues 16 kHz mono samples for embedding under the caller's `id`; never blocks.
    pub fn submit(&self, id: u64, samples: Vec<f32>) -> Result<(), DiarEngineError> {
        let job = Job {
            slot: self.id,
            id,
            samples,
            reply: self.reply.clone(),
            skip_below: self.skip_below.clone(),
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(DiarEngineError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(DiarEngineError::Stopped),
        }
    }

    /// The next finished job, if any.
    pub fn try_result(&self) -> Option<EmbedResult> {
        self.results.try_recv().ok()
    }

    /// Waits up to `timeout` for the next finished job (tests and offline tools).
    pub fn next_result(&self, timeout: std::time::Duration) -> Option<EmbedResult> {
        self.results.recv_timeout(timeout).ok()
    }
}

impl Drop for DiarSlot {
    fn drop(&mut self) {
        self.shared.slots().release(self.id);
    }
}

/// Niceness of the engine thread: labels are a nicety next to the ASR, LLM and TTS threads
/// that make the reply, so under CPU contention this one waits (TTFB first). A label that is
/// not ready in time is sent without (see `server/src/pipeline/asr.rs`, `LABEL_WAIT`).
const NICE: libc::c_int = 10;

#[cfg(target_os = "linux")]
fn yield_to_reply_engines() {
    // SAFETY: setpriority only reads its three integer arguments and touches no memory of
    // ours. On Linux, PRIO_PROCESS with who = 0 names the calling thread (nice is per thread).
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    if r != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "diar-engine keeps normal priority"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn yield_to_reply_engines() {}

fn run(mut embedder: SpeakerEmbedder, rx: Receiver<Job>, shared: &Shared, max_batch: usize) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        {
            let slots = shared.slots();
            batch.retain(|j| {
                slots.is_current(j.slot) && j.id >= j.skip_below.load(Ordering::Relaxed)
            });
        }
        if batch.is_empty() {
            continue;
        }
        // Equal lengths next to each other: the embedder batches runs of equal length.
        batch.sort_by_key(|j| j.samples.len());
        let windows: Vec<&[f32]> = batch.iter().map(|j| j.samples.as_slice()).collect();
        let results: Vec<Result<Vec<f32>, String>> = match embedder.embed(&windows) {
            Ok(embeddings) => embeddings.into_iter().map(Ok).collect(),
            // One bad window (too short) fails its run: embed each alone to tell which.
            Err(_) => batch
                .iter()
                .map(|j| {
                    embedder
                        .embed(&[&j.samples])
                        .map_err(|e| e.to_string())
                        .and_then(|mut v| v.pop().ok_or_else(|| "no embedding".to_string()))
                })
                .collect(),
        };
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared
            .jobs_done
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (job, embedding) in batch.into_iter().zip(results) {
            // A slot dropped meanwhile has no receiver: nothing to tell.
            let _ = job.reply.send(EmbedResult {
                id: job.id,
                embedding,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn engine(slots: usize) -> DiarEngine {
        let store = ModelStore::from_env().expect("model store location");
        DiarEngine::start(
            &store,
            DiarEngineConfig {
                slots,
                ..Default::default()
            },
        )
        .expect("CAM++ is in the store and the engine starts")
    }

    #[test]
    fn slots_are_refused_when_full_and_freed_on_drop() {
        let engine = engine(1);
        let a = engine.open().expect("free slot");
        assert_eq!(engine.open().err(), Some(DiarEngineError::Full(1)));
        drop(a);
        assert!(engine.open().is_ok());
    }

    #[test]
    fn embeds_jobs_and_reports_short_windows_as_errors() {
        let engine = engine(2);
        let slot = engine.open().expect("free slot");
        // A tone is not speech, but it is a valid input: the point is the plumbing.
        let tone: Vec<f32> = (0..12_000).map(|i| 0.3 * (i as f32 * 0.07).sin()).collect();
        slot.submit(1, tone.clone()).expect("queued");
        slot.submit(2, tone).expect("queued");
        slot.submit(3, vec![0.0; 200]).expect("queued");
        let mut got: Vec<EmbedResult> = (0..3)
            .map(|_| slot.next_result(Duration::from_secs(60)).expect("result"))
            .collect();
        got.sort_by_key(|r| r.id);
        let (a, b) = (
            got[0].embedding.as_ref().expect("embedding"),
            got[1].embedding.as_ref().expect("embedding"),
        );
        assert_eq!(a.len(), super::super::EMBEDDING_DIM);
        assert!(
            super::super::cosine(a, b) > 0.999,
            "same input, same embedding"
        );
        assert!(got[2].embedding.is_err(), "200 samples is too short");
        assert_eq!(engine.stats().jobs_done, 3);
        // Cancelled ids are skipped without a reply.
        slot.skip_below(10);
        slot.submit(9, vec![0.1; 8000]).expect("queued");
        slot.submit(10, vec![0.1; 8000]).expect("queued");
        let r = slot.next_result(Duration::from_secs(60)).expect("result");
        assert_eq!(r.id, 10);
        assert!(slot.next_result(Duration::from_millis(200)).is_none());
        assert_eq!(engine.stats().jobs_done, 4);
    }
}
