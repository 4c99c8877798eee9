//! Streaming speech recognition: the trait sessions use, the batched engine behind it, and the
//! Moonshine model it runs.

pub mod engine;
pub mod moonshine;
mod stream;
mod unpack;
pub mod wer;

pub use engine::{AsrEngine, AsrEngineConfig, AsrEngineError, AsrSession, EngineStats};
pub use moonshine::{AsrError, DecodeRow, DecodeTiming, Moonshine};

use std::time::Duration;

/// What a streaming recogniser tells its session. Times are milliseconds on the session's audio
/// clock (0 = first sample pushed).
#[derive(Debug, Clone, PartialEq)]
pub enum AsrEvent {
    /// The VAD heard speech start. `audio_start_ms` includes the prefix padding.
    SpeechStarted {
        audio_start_ms: u64,
        speech_start_ms: u64,
    },
    /// The endpointer ended the turn: `audio_end_ms` is the decision point (speech end plus the
    /// silence duration), `speech_end_ms` the end of the last voiced frame.
    SpeechStopped {
        audio_end_ms: u64,
        speech_end_ms: u64,
    },
    /// Best guess so far for the segment being spoken.
    Partial { segment: u64, text: String },
    /// The speaker has paused long enough that the audio a final would cover is all here, and
    /// `text` is its transcript: what the final will say if the pause becomes the endpoint.
    /// A turn taker may start answering on it speculatively. Sent after the `Partial` with the
    /// same text; `speech_end_ms` is the end of the last voiced frame.
    Paused {
        segment: u64,
        text: String,
        speech_end_ms: u64,
    },
    /// Speech went on in the segment after a `Paused`: the speculative transcript is stale.
    Resumed { segment: u64 },
    /// Semantic turn detection judged the pause after `speech_end_ms`: `probability` is the
    /// acoustic model's P(turn complete), `vetoed` says the pause's transcript overruled a
    /// "done", `complete` that the turn ends here (a `SpeechStopped` follows at once).
    TurnJudged {
        speech_end_ms: u64,
        probability: f32,
        vetoed: bool,
        complete: bool,
    },
    /// The segment's transcript. `start_ms..end_ms` is the audio it covers.
    Final {
        segment: u64,
        text: String,
        start_ms: u64,
        end_ms: u64,
        stats: FinalStats,
    },
    /// Everything pushed before `finish` has been processed.
    EndOfStream,
    /// The engine failed; no more events will come.
    Failed { message: String },
}

/// How a final was made.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FinalStats {
    /// Wall time from the endpoint decision to the final being sent.
    pub latency: Duration,
    /// Tokens taken from the stable prefix of earlier partials rather than decoded again.
    pub reused_tokens: usize,
    /// Decoder steps the final itself needed.
    pub decoder_steps: usize,
    /// Rows in the batch the final was decoded in.
    pub batch_size: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamError {
    #[error("the recogniser has stopped: {0}")]
    Stopped(String),
    #[error("audio samples must be finite numbers (16 kHz mono, -1..1)")]
    BadAudio,
}

/// A streaming recogniser as the pipeline sees it: push 16 kHz mono audio, read events.
/// `push_audio` never blocks; when the recogniser falls behind by more than its inbox holds,
/// the oldest unprocessed audio is dropped and counted (see [`StreamingAsr::dropped_samples`]):
/// a live caller must report that. Input that is not real time (a file) uses
/// [`StreamingAsr::push_audio_waiting`], which waits for room and never drops.
pub trait StreamingAsr {
    /// Appends audio (16 kHz mono, f32 in -1..1).
    fn push_audio(&mut self, samples: &[f32]) -> Result<(), StreamError>;
    /// Marks the end of input: an open turn is ended and finalised, then `EndOfStream` comes.
    fn finish(&mut self) -> Result<(), StreamError>;
    /// The next event if one is ready.
    fn try_event(&mut self) -> Option<AsrEvent>;
    /// Waits up to `timeout` for the next event.
    fn next_event(&mut self, timeout: Duration) -> Option<AsrEvent>;
    /// Audio dropped so far because the recogniser fell behind, in samples.
    fn dropped_samples(&self) -> u64;
    /// Samples `push_audio` can take now without dropping any.
    fn inbox_room(&self) -> Result<usize, StreamError>;

    /// Pushes `samples` without losing any: waits for room in the inbox (backpressure), and
    /// collects the events that arrive meanwhile into `events`.
    fn push_audio_waiting(
        &mut self,
        mut samples: &[f32],
        events: &mut Vec<AsrEvent>,
    ) -> Result<(), StreamError> {
        while !samples.is_empty() {
            let room = self.inbox_room()?;
            if room == 0 {
                // The engine delivers events as it works through the backlog: wait on those.
                if let Some(event) = self.next_event(Duration::from_millis(10)) {
                    events.push(event);
                }
                continue;
            }
            let (now, later) = samples.split_at(room.min(samples.len()));
            self.push_audio(now)?;
            samples = later;
        }
        Ok(())
    }
}
