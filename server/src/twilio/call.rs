//! One Twilio call as a sans-IO state machine: Twilio messages and session events in, steps
//! out (messages to Twilio, client events to the session, things to log and count).
//!
//! Stream state: `connected` (optional), exactly one `start`, then `media`/`dtmf`/`mark` until
//! `stop`. Out-of-order or malformed input is rejected message by message; the call goes on.
//!
//! Playout: Twilio buffers what we send and plays it in real time, so reply audio is sent as
//! soon as it is made, in [`CHUNK_BYTES`] pieces each followed by a `mark`. Twilio echoes a mark
//! when everything before it has played, so the first still-unechoed chunk of a reply starts
//! exactly where what the caller has heard ends. On barge-in we send `clear` (Twilio drops the
//! unplayed audio and returns the pending marks, which we then ignore) and truncate the
//! assistant item to that heard position.

use std::collections::VecDeque;

use super::codec::{MULAW_RATE_HZ, MediaFrame, StartInfo, TwilioInbound, TwilioOutbound};
use crate::session::events::ServerEvent;

/// Reply audio per `media` message, each followed by a mark: 100 ms of mu-law. The marks'
/// granularity bounds how precisely a barge-in truncation matches what was heard.
pub const CHUNK_BYTES: usize = 800;

/// Mu-law bytes per millisecond (one byte per sample).
const BYTES_PER_MS: u64 = MULAW_RATE_HZ as u64 / 1000;

/// The most silence inserted for one gap in the caller's media timestamps (lost audio upstream
/// of Twilio); longer gaps are filled only this far.
pub const MAX_GAP_FILL_MS: u64 = 2_000;

/// Mu-law's encoding of a zero sample.
const MULAW_SILENCE: u8 = 0xFF;

/// Bad input, with a stable code (metrics label) and a message for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    pub code: &'static str,
    pub message: String,
}

impl CallError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        CallError {
            code,
            message: message.into(),
        }
    }
}

/// What the transport must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The stream started: authenticate and admit a session before anything else is sent.
    Started(StartInfo),
    /// Caller audio for the session: 8 kHz mu-law as it came (the transport decodes it and
    /// stamps the arrival of the message that carried it).
    Audio(Vec<u8>),
    /// How much of `item_id` the caller heard when a barge-in cleared Twilio's playout.
    Played { item_id: String, audio_end_ms: u32 },
    /// A message for Twilio.
    ToTwilio(TwilioOutbound),
    /// The caller pressed a key (one of `0-9 * # A-D`).
    Dtmf(char),
    /// Reply audio was cut: `heard_ms` of item `item_id` had played, `dropped_ms` had not.
    BargeIn {
        item_id: String,
        heard_ms: u32,
        dropped_ms: u32,
    },
    /// Twilio ended the stream.
    Stopped,
    /// The message was not usable; log and count it, the call goes on.
    Rejected(CallError),
    /// The call cannot go on (e.g. audio in a format we do not take).
    Fatal(CallError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingStart,
    Streaming,
    Stopped,
}

/// One chunk of reply audio sent to Twilio and not yet confirmed played.
#[derive(Debug)]
struct PendingChunk {
    mark: String,
    item_id: String,
    /// Byte offsets of the chunk within its item's audio.
    start: u64,
    end: u64,
}

/// The reply whose audio is being sent.
#[derive(Debug)]
struct Reply {
    response_id: String,
    item_id: String,
    sent: u64,
    /// The response is still producing audio (no `response.done` yet).
    generating: bool,
    /// Cut by a barge-in: its remaining audio is dropped.
    cut: bool,
}

/// The state of one call.
#[derive(Debug)]
pub struct Call {
    phase: Phase,
    connected_seen: bool,
    stream_sid: String,
    /// Where the next caller frame should start (stream ms), to spot lost audio.
    next_media_ms: Option<u64>,
    reply: Option<Reply>,
    pending: VecDeque<PendingChunk>,
    next_mark: u64,
}

impl Default for Call {
    fn default() -> Self {
        Self::new()
    }
}

impl Call {
    pub fn new() -> Self {
        Call {
            phase: Phase::AwaitingStart,
            connected_seen: false,
            stream_sid: String::new(),
            next_media_ms: None,
            reply: None,
            pending: VecDeque::new(),
            next_mark: 0,
        }
    }

    /// The stream's id, once `start` has arrived.
    pub fn stream_sid(&self) -> Option<&str> {
        (self.phase != Phase::AwaitingStart).then_some(self.stream_sid.as_str())
    }

    /// Milliseconds of reply audio sent to Twilio and not yet confirmed played.
    pub fn unplayed_ms(&self) -> u64 {
        self.pending
            .iter()
            .map(|c| c.end - c.start)
            .sum::<u64>()
            .div_ceil(BYTES_PER_MS)
    }

    /// One message from Twilio.
    pub fn on_twilio(&mut self, message: TwilioInbound) -> Vec<Step> {
        let mut out = Vec::new();
        match message {
            TwilioInbound::Connected { .. } => {
                if self.connected_seen || self.phase != Phase::AwaitingStart {
                    out.push(reject(
                        "unexpected_connected",
                        "'connected' arrived twice or after 'start'",
                    ));
                }
                self.connected_seen = true;
            }
            TwilioInbound::Start(start) => match self.phase {
                Phase::AwaitingStart => {
                    if !start.media_format.is_mulaw_8k_mono() {
                        let f = &start.media_format;
                        out.push(Step::Fatal(CallError::new(
                            "unsupported_media_format",
                            format!(
                                "media format {} {} Hz {} channel(s); only audio/x-mulaw 8000 Hz mono is supported",
                                f.encoding, f.sample_rate, f.channels
                            ),
                        )));
                        self.phase = Phase::Stopped;
                    } else if start.stream_sid.is_empty() {
                        out.push(Step::Fatal(CallError::new(
                            "malformed_message",
                            "'start' has an empty streamSid",
                        )));
                        self.phase = Phase::Stopped;
                    } else {
                        self.phase = Phase::Streaming;
                        self.stream_sid = start.stream_sid.clone();
                        out.push(Step::Started(start));
                    }
                }
                Phase::Streaming => out.push(reject("duplicate_start", "'start' arrived twice")),
                Phase::Stopped => out.push(after_stop("start")),
            },
            TwilioInbound::Media(frame) => {
                if let Some(e) = self.check_stream("media", &frame.stream_sid) {
                    out.push(e);
                } else {
                    self.media(frame, &mut out);
                }
            }
            TwilioInbound::Dtmf { stream_sid, digit } => {
                if let Some(e) = self.check_stream("dtmf", &stream_sid) {
                    out.push(e);
                } else if !is_dtmf_digit(&digit) {
                    out.push(reject(
                        "invalid_dtmf",
                        format!(
                            "'{}' is not a DTMF digit",
                            digit.chars().take(8).collect::<String>()
                        ),
                    ));
                } else {
                    // `is_dtmf_digit` checked it is one character.
                    if let Some(key) = digit.chars().next() {
                        out.push(Step::Dtmf(key.to_ascii_uppercase()));
                    }
                }
            }
            TwilioInbound::Mark { stream_sid, name } => {
                if let Some(e) = self.check_stream("mark", &stream_sid) {
                    out.push(e);
                } else {
                    self.mark_played(&name);
                }
            }
            TwilioInbound::Stop { stream_sid } => {
                if let Some(e) = self.check_stream("stop", &stream_sid) {
                    out.push(e);
                } else {
                    self.phase = Phase::Stopped;
                    out.push(Step::Stopped);
                }
            }
        }
        out
    }

    /// One event from the session.
    pub fn on_server(&mut self, event: &ServerEvent) -> Vec<Step> {
        let mut out = Vec::new();
        if self.phase != Phase::Streaming {
            return out;
        }
        match event {
            ServerEvent::AudioDelta { part, audio } => {
                let fresh = self
                    .reply
                    .as_ref()
                    .is_none_or(|r| r.item_id != part.item_id);
                if fresh {
                    self.reply = Some(Reply {
                        response_id: part.response_id.clone(),
                        item_id: part.item_id.clone(),
                        sent: 0,
                        generating: true,
                        cut: false,
                    });
                }
                let reply = self.reply.as_mut().expect("set just above when absent");
                if reply.cut {
                    return out;
                }
                for chunk in audio.chunks(CHUNK_BYTES) {
                    self.next_mark += 1;
                    let mark = format!("antiphon-{}", self.next_mark);
                    let start = reply.sent;
                    reply.sent += chunk.len() as u64;
                    out.push(Step::ToTwilio(TwilioOutbound::Media {
                        stream_sid: self.stream_sid.clone(),
                        payload: chunk.to_vec(),
                    }));
                    out.push(Step::ToTwilio(TwilioOutbound::Mark {
                        stream_sid: self.stream_sid.clone(),
                        name: mark.clone(),
                    }));
                    self.pending.push_back(PendingChunk {
                        mark,
                        item_id: reply.item_id.clone(),
                        start,
                        end: reply.sent,
                    });
                }
            }
            ServerEvent::ResponseDone(info) => {
                if let Some(r) = self.reply.as_mut()
                    && r.response_id == info.id
                {
                    r.generating = false;
                }
            }
            // The session decides whether speech is an interruption (it may be our own echo).
            ServerEvent::StopPlayout => self.barge_in(&mut out),
            _ => {}
        }
        out
    }

    fn check_stream(&self, event: &'static str, sid: &str) -> Option<Step> {
        match self.phase {
            Phase::AwaitingStart => Some(reject(
                "event_before_start",
                format!("'{event}' arrived before 'start'"),
            )),
            Phase::Stopped => Some(after_stop(event)),
            Phase::Streaming if !sid.is_empty() && sid != self.stream_sid => Some(reject(
                "wrong_stream_sid",
                format!(
                    "'{event}' for stream '{}', this call is '{}'",
                    sid.chars().take(64).collect::<String>(),
                    self.stream_sid
                ),
            )),
            Phase::Streaming => None,
        }
    }

    fn media(&mut self, frame: MediaFrame, out: &mut Vec<Step>) {
        if frame.track != "inbound" {
            out.push(reject(
                "unexpected_track",
                format!(
                    "media on track '{}'; only 'inbound' is taken",
                    frame.track.chars().take(32).collect::<String>()
                ),
            ));
            return;
        }
        let ts = frame.timestamp_ms;
        if let Some(expected) = self.next_media_ms
            && ts >= expected + 20
        {
            // Audio lost before Twilio: keep the caller's timeline (VAD timing) by filling the gap.
            let fill_ms = (ts - expected).min(MAX_GAP_FILL_MS);
            out.push(Step::Audio(vec![
                MULAW_SILENCE;
                (fill_ms * BYTES_PER_MS) as usize
            ]));
        }
        let frame_ms = frame.payload.len() as u64 / BYTES_PER_MS;
        self.next_media_ms = Some(ts.max(self.next_media_ms.unwrap_or(0)) + frame_ms);
        if !frame.payload.is_empty() {
            out.push(Step::Audio(frame.payload));
        }
    }

    /// Everything up to and including the chunk of this mark has played.
    fn mark_played(&mut self, name: &str) {
        // Marks come back in order; a name not pending is one a `clear` already dropped.
        if let Some(i) = self.pending.iter().position(|c| c.mark == name) {
            self.pending.drain(..=i);
        }
    }

    fn barge_in(&mut self, out: &mut Vec<Step>) {
        if self.pending.is_empty() {
            return;
        }
        out.push(Step::ToTwilio(TwilioOutbound::Clear {
            stream_sid: self.stream_sid.clone(),
        }));
        // Per item with unplayed audio: its first pending chunk starts where the heard part ends.
        let mut items: Vec<(String, u64, u64)> = Vec::new();
        for c in &self.pending {
            match items.iter_mut().find(|(id, _, _)| *id == c.item_id) {
                Some(entry) => entry.2 += c.end - c.start,
                None => items.push((c.item_id.clone(), c.start, c.end - c.start)),
            }
        }
        self.pending.clear();
        if let Some(r) = self.reply.as_mut() {
            r.cut = true;
        }
        for (item_id, heard, dropped) in items {
            // u32 ms is ~49 days of audio: far beyond any reply.
            let heard_ms = (heard / BYTES_PER_MS) as u32;
            // The session decides whether this shortens the item (it may have cut it shorter
            // already, by wall time, when it detected the speech).
            out.push(Step::Played {
                item_id: item_id.clone(),
                audio_end_ms: heard_ms,
            });
            out.push(Step::BargeIn {
                item_id,
                heard_ms,
                dropped_ms: dropped.div_ceil(BYTES_PER_MS) as u32,
            });
        }
    }
}

fn reject(code: &'static str, message: impl Into<String>) -> Step {
    Step::Rejected(CallError::new(code, message))
}

fn after_stop(event: &str) -> Step {
    reject(
        "event_after_stop",
        format!("'{event}' arrived after 'stop'"),
    )
}

fn is_dtmf_digit(d: &str) -> bool {
    let mut chars = d.chars();
    matches!(
        (chars.next(), chars.next()),
        (Some('0'..='9' | '*' | '#' | 'A'..='D' | 'a'..='d'), None)
    )
}

#[cfg(test)]
mod tests;
