//! The chat API both backends (local engine, external endpoint) implement.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use super::LlmError;
use super::sampling::SamplingParams;

/// Why a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn.
    EndOfTurn,
    /// A stop string was met (the text before it was sent).
    StopString,
    /// `max_tokens` reached.
    MaxTokens,
    /// The caller cancelled (or dropped the stream).
    Cancelled,
    /// The conversation would exceed the context window.
    ContextFull,
}

/// One event of a reply stream. `request` is the id of the reply it belongs to: anything
/// tagged with an older id is stale and must be dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyEvent {
    /// Next piece of reply text. `step` is the engine step that produced it (0 for external).
    Text {
        request: u64,
        text: String,
        step: u64,
    },
    /// The reply ended. `prefilled` is how many prompt tokens had to be run for this turn
    /// (small when the conversation prefix was cached); `generated` counts sampled tokens;
    /// `last_step` is the engine step of the last sampled token.
    Done {
        request: u64,
        reason: FinishReason,
        prefilled: usize,
        generated: usize,
        last_step: u64,
    },
    /// The backend failed; the reply is over.
    Failed { request: u64, message: String },
}

impl ReplyEvent {
    pub fn request(&self) -> u64 {
        match self {
            Self::Text { request, .. }
            | Self::Done { request, .. }
            | Self::Failed { request, .. } => *request,
        }
    }
}

/// No event arrived in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out waiting for the next reply event")]
pub struct TimedOut;

/// The receiving end of one reply. Bounded: a consumer that falls behind pauses only its own
/// reply (see the engine docs). After [`ReplyStream::cancel`] no further text is returned.
pub struct ReplyStream {
    request: u64,
    rx: Receiver<ReplyEvent>,
    cancel: Box<dyn Fn() + Send + Sync>,
    cancelled: bool,
    finished: bool,
    received_text: String,
}

impl std::fmt::Debug for ReplyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyStream")
            .field("request", &self.request)
            .field("cancelled", &self.cancelled)
            .field("finished", &self.finished)
            .finish()
    }
}

impl ReplyStream {
    pub(crate) fn new(
        request: u64,
        rx: Receiver<ReplyEvent>,
        cancel: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            request,
            rx,
            cancel,
            cancelled: false,
            finished: false,
            received_text: String::new(),
        }
    }

    pub fn request_id(&self) -> u64 {
        self.request
    }

    /// All text returned so far (what a caller measures `spoken_bytes` against).
    pub fn text_so_far(&self) -> &str {
        &self.received_text
    }

    /// Stop this reply. Takes effect before the backend's next step; text produced after this
    /// call is never returned.
    pub fn cancel(&mut self) {
        if !self.cancelled && !self.finished {
            self.cancelled = true;
            (self.cancel)();
        }
    }

    fn accept(&mut self, ev: ReplyEvent) -> Option<ReplyEvent> {
        if ev.request() != self.request {
            return None; // stale
        }
        match &ev {
            ReplyEvent::Text { text, .. } => {
                if self.cancelled {
                    return None;
                }
                self.received_text.push_str(text);
            }
            ReplyEvent::Done { .. } | ReplyEvent::Failed { .. } => self.finished = true,
        }
        Some(ev)
    }

    /// Next event, blocking. `None` once the reply is over.
    pub fn next_event(&mut self) -> Option<ReplyEvent> {
        while !self.finished {
            let ev = self.rx.recv().ok()?;
            if let Some(ev) = self.accept(ev) {
                return Some(ev);
            }
        }
        None
    }

    /// Next event, waiting at most `timeout`. `Ok(None)` once the reply is over.
    pub fn next_event_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<ReplyEvent>, TimedOut> {
        let deadline = std::time::Instant::now() + timeout;
        while !self.finished {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(ev) => {
                    if let Some(ev) = self.accept(ev) {
                        return Ok(Some(ev));
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(TimedOut),
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Collect the rest of the reply: (text, final event).
    pub fn collect_text(&mut self) -> (String, Option<ReplyEvent>) {
        let mut last = None;
        while let Some(ev) = self.next_event() {
            if !matches!(ev, ReplyEvent::Text { .. }) {
                last = Some(ev);
            }
        }
        (self.received_text.clone(), last)
    }
}

impl Drop for ReplyStream {
    fn drop(&mut self) {
        // A dropped, unfinished stream frees its slot at once instead of waiting for a full
        // channel to be noticed.
        self.cancel();
    }
}

/// A chat backend: local engine or external endpoint.
pub trait ChatBackend: Send + Sync {
    /// Start a conversation (`system` = None uses the model's default system prompt).
    fn open_session(&self, system: Option<&str>) -> Result<Box<dyn ChatSession>, LlmError>;
}

/// One conversation. Its history (including what the assistant actually said) is kept by the
/// backend between turns.
pub trait ChatSession: Send {
    /// Add a user turn and start streaming the reply.
    fn send(&mut self, user: &str, params: &SamplingParams) -> Result<ReplyStream, LlmError>;

    /// Only the first `spoken_bytes` bytes of reply `request`'s text were delivered to the
    /// listener: keep only that much of it in the conversation (cancels it if still running).
    fn truncate_reply(&mut self, request: u64, spoken_bytes: usize) -> Result<(), LlmError>;
}
