//! Reply playout for one WebRTC peer, sans-IO: the session hands over reply audio as fast as
//! the TTS makes it; [`Playout::tick`] releases exactly one 20 ms frame per call (the peer calls
//! it on a 20 ms clock), so the caller hears the reply at real time and we always know how much
//! of each item was actually sent. Text events of a reply (transcript deltas, `response.done`, …)
//! queue behind the audio that precedes them, so the page shows the agent's words as they are
//! spoken. [`Playout::flush`] (barge-in) drops what is queued at once.

use std::collections::{HashSet, VecDeque};

use crate::session::events::ServerEvent;

/// Playout rate: Opus's own 48 kHz, so reply audio is resampled once (from the TTS rate) and
/// the encoder takes the frames as they are.
pub const RATE: u32 = 48_000;
/// Samples of one 20 ms frame at [`RATE`].
pub const FRAME: usize = (RATE as usize) / 50;

enum Entry {
    Audio {
        response_id: String,
        item_id: String,
        samples: Vec<f32>,
        pos: usize,
    },
    Event {
        response_id: String,
        event: ServerEvent,
    },
}

/// What one tick or push produced besides audio.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A server event due now (queued text released as its audio plays, or not reply-bound).
    Event(ServerEvent),
    /// The first frame of a reply's audio went out (OpenAI's `output_audio_buffer.started`).
    Started { response_id: String },
    /// The reply's last frame went out: its audio is complete (`output_audio.done` or
    /// `response.done` seen) and nothing of it is queued (`output_audio_buffer.stopped`). A
    /// reply whose audio runs dry before it is complete keeps playing (silence) meanwhile.
    Stopped { response_id: String },
}

/// Where one reply item's audio stands.
#[derive(Debug, Clone, PartialEq)]
struct ItemState {
    response_id: String,
    item_id: String,
    /// Samples (at [`RATE`]) already sent to the caller.
    played: usize,
}

/// A reply item cut off by [`Playout::flush`]: how much of it the caller heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub response_id: String,
    pub item_id: String,
    pub played_ms: u32,
}

#[derive(Default)]
pub struct Playout {
    queue: VecDeque<Entry>,
    /// Items with audio sent or queued, oldest first (a reply has one audio item).
    items: Vec<ItemState>,
    /// The reply whose audio is going out now (between `Started` and `Stopped`).
    playing: Option<String>,
    /// Replies whose audio is complete (no more deltas will come).
    complete: HashSet<String>,
    /// Replies cut off by a barge-in: their late audio and text are dropped.
    silenced: HashSet<String>,
}

/// The response a reply-bound event belongs to (events that should wait for its audio).
fn reply_of(event: &ServerEvent) -> Option<&str> {
    match event {
        ServerEvent::TranscriptDelta { part, .. }
        | ServerEvent::TranscriptDone { part, .. }
        | ServerEvent::AudioDone { part }
        | ServerEvent::ContentPartDone { part, .. }
        | ServerEvent::TextDelta { part, .. }
        | ServerEvent::TextDone { part, .. } => Some(&part.response_id),
        ServerEvent::OutputItemDone { response_id, .. } => Some(response_id),
        ServerEvent::ResponseDone(r) => Some(&r.id),
        _ => None,
    }
}

impl Playout {
    pub fn new() -> Self {
        Self::default()
    }

    /// True while reply audio is queued or going out.
    pub fn is_playing(&self) -> bool {
        self.playing.is_some() || self.has_audio()
    }

    /// The reply being played, if any.
    pub fn playing(&self) -> Option<&str> {
        self.playing.as_deref()
    }

    fn has_audio(&self) -> bool {
        self.queue.iter().any(|e| matches!(e, Entry::Audio { .. }))
    }

    fn has_audio_of(&self, response_id: &str) -> bool {
        self.queue
            .iter()
            .any(|e| matches!(e, Entry::Audio { response_id: r, .. } if r == response_id))
    }

    /// Queues reply audio (f32 at [`RATE`]).
    pub fn push_audio(&mut self, response_id: &str, item_id: &str, samples: Vec<f32>) {
        if self.silenced.contains(response_id) {
            return;
        }
        if !self.items.iter().any(|i| i.item_id == item_id) {
            self.items.push(ItemState {
                response_id: response_id.to_owned(),
                item_id: item_id.to_owned(),
                played: 0,
            });
            // Finished items older than a few replies are of no further use.
            if self.items.len() > 8 {
                self.items.remove(0);
            }
        }
        self.queue.push_back(Entry::Audio {
            response_id: response_id.to_owned(),
            item_id: item_id.to_owned(),
            samples,
            pos: 0,
        });
    }

    /// Offers a non-audio server event: returns it when it is due now, or queues it behind the
    /// reply audio it follows (returns `None`). Events of a silenced reply that would have
    /// waited for its audio are released at once, except words the caller never heard.
    pub fn push_event(&mut self, event: ServerEvent) -> Option<ServerEvent> {
        let Some(response_id) = reply_of(&event) else {
            return Some(event);
        };
        if matches!(
            event,
            ServerEvent::AudioDone { .. } | ServerEvent::ResponseDone(_)
        ) {
            self.complete.insert(response_id.to_owned());
        }
        if self.silenced.contains(response_id) {
            return match event {
                ServerEvent::TranscriptDelta { .. } | ServerEvent::TextDelta { .. } => None,
                other => Some(other),
            };
        }
        if !self.has_audio_of(response_id) {
            return Some(event);
        }
        let response_id = response_id.to_owned();
        self.queue.push_back(Entry::Event { response_id, event });
        None
    }

    /// Takes the next 20 ms of reply audio into `frame` (silence when none is queued; a
    /// reply's last frame is padded) and returns the events due with it.
    pub fn tick(&mut self, frame: &mut [f32; FRAME]) -> Vec<Note> {
        frame.fill(0.0);
        let mut notes = Vec::new();
        let mut filled = 0;
        while filled < FRAME {
            // The front entry: audio fills the frame; events are due once the audio before them
            // is out. Audio of the next reply waits for the next frame so replies never share one.
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            match front {
                Entry::Event { .. } => {
                    if let Some(Entry::Event { event, .. }) = self.queue.pop_front() {
                        notes.push(Note::Event(event));
                    }
                }
                Entry::Audio {
                    response_id,
                    item_id,
                    samples,
                    pos,
                } => {
                    if self.playing.as_deref() != Some(response_id.as_str()) {
                        if filled > 0 {
                            break;
                        }
                        if let Some(prev) = self.playing.take() {
                            notes.push(Note::Stopped { response_id: prev });
                        }
                        self.playing = Some(response_id.clone());
                        notes.push(Note::Started {
                            response_id: response_id.clone(),
                        });
                    }
                    let n = (samples.len() - *pos).min(FRAME - filled);
                    frame[filled..filled + n].copy_from_slice(&samples[*pos..*pos + n]);
                    *pos += n;
                    filled += n;
                    if let Some(item) = self.items.iter_mut().find(|i| &i.item_id == item_id) {
                        item.played += n;
                    }
                    if *pos == samples.len() {
                        self.queue.pop_front();
                    }
                }
            }
        }
        // Events queued right behind the audio just sent are due with it.
        while let Some(Entry::Event { .. }) = self.queue.front() {
            if let Some(Entry::Event { event, .. }) = self.queue.pop_front() {
                notes.push(Note::Event(event));
            }
        }
        if let Some(playing) = self.playing.clone()
            && !self.has_audio_of(&playing)
            && self.complete.remove(&playing)
        {
            self.playing = None;
            notes.push(Note::Stopped {
                response_id: playing,
            });
        }
        notes
    }

    /// Barge-in: drops every queued frame at once. Returns the items cut short (with how much
    /// of each was heard) and the queued events to deliver now (unheard words dropped).
    pub fn flush(&mut self) -> (Vec<Cut>, Vec<ServerEvent>) {
        let mut cut_items: Vec<String> = Vec::new();
        let mut events = Vec::new();
        for entry in self.queue.drain(..) {
            match entry {
                Entry::Audio {
                    response_id,
                    item_id,
                    ..
                } => {
                    self.silenced.insert(response_id);
                    if !cut_items.contains(&item_id) {
                        cut_items.push(item_id);
                    }
                }
                Entry::Event { response_id, event } => {
                    self.silenced.insert(response_id);
                    if !matches!(
                        event,
                        ServerEvent::TranscriptDelta { .. } | ServerEvent::TextDelta { .. }
                    ) {
                        events.push(event);
                    }
                }
            }
        }
        if let Some(playing) = self.playing.take() {
            // A reply cut while its audio had run dry is cut all the same.
            for item in self.items.iter().filter(|i| i.response_id == playing) {
                if !cut_items.contains(&item.item_id) {
                    cut_items.push(item.item_id.clone());
                }
            }
            self.complete.remove(&playing);
            self.silenced.insert(playing);
        }
        let cuts = self
            .items
            .iter()
            .filter(|i| cut_items.contains(&i.item_id))
            .map(|i| Cut {
                response_id: i.response_id.clone(),
                item_id: i.item_id.clone(),
                // Far below u32::MAX ms for any reply.
                played_ms: (i.played as u64 * 1000 / u64::from(RATE)) as u32,
            })
            .collect();
        if self.silenced.len() > 64 {
            self.silenced.clear();
        }
        if self.complete.len() > 64 {
            self.complete.clear();
        }
        (cuts, events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::events::PartRef;

    fn part(r: &str) -> PartRef {
        PartRef {
            response_id: r.into(),
            item_id: format!("item_{r}"),
            output_index: 0,
            content_index: 0,
        }
    }

    /// `ms` of a constant level (as a pcm16 value, so levels read as they did on the wire).
    fn pcm(ms: usize, value: i16) -> Vec<f32> {
        vec![f32::from(value) / 32768.0; ms * RATE as usize / 1000]
    }

    fn delta(r: &str, text: &str) -> ServerEvent {
        ServerEvent::TranscriptDelta {
            part: part(r),
            delta: text.into(),
        }
    }

    #[test]
    fn releases_one_frame_per_tick_and_words_with_their_audio() {
        let mut p = Playout::new();
        let mut f = [0.0; FRAME];
        assert!(p.tick(&mut f).is_empty());
        assert!(f.iter().all(|s| *s == 0.0));

        p.push_audio("r1", "item_r1", pcm(50, 16384));
        assert_eq!(p.push_event(delta("r1", "Hello")), None);
        p.push_audio("r1", "item_r1", pcm(30, 16384));
        assert_eq!(p.push_event(delta("r1", " there")), None);
        let done = ServerEvent::AudioDone { part: part("r1") };
        assert_eq!(p.push_event(done.clone()), None);
        // Not reply-bound: due at once.
        let other = ServerEvent::SpeechStopped {
            audio_end_ms: 1,
            item_id: "x".into(),
        };
        assert_eq!(p.push_event(other.clone()), Some(other));

        let notes = p.tick(&mut f);
        assert_eq!(
            notes,
            [Note::Started {
                response_id: "r1".into()
            }]
        );
        assert!(f.iter().all(|s| *s == 0.5));
        assert!(p.tick(&mut f).is_empty());
        // 40..60 ms: the first chunk ends at 50 ms, its words are due, the next chunk starts.
        assert_eq!(p.tick(&mut f), [Note::Event(delta("r1", "Hello"))]);
        // 60..80 ms: the last of the audio, then the last words and the stop.
        let notes = p.tick(&mut f);
        assert_eq!(
            notes,
            [
                Note::Event(delta("r1", " there")),
                Note::Event(done),
                Note::Stopped {
                    response_id: "r1".into()
                }
            ]
        );
        assert!(f.iter().all(|s| *s == 0.5));
        assert!(!p.is_playing());
        // A reply-bound event after all audio went out is due at once.
        assert!(p.push_event(delta("r1", "!")).is_some());
    }

    #[test]
    fn flush_reports_what_was_heard_and_silences_the_reply() {
        let mut p = Playout::new();
        let mut f = [0.0; FRAME];
        p.push_audio("r1", "item_r1", pcm(1000, 1000));
        assert_eq!(p.push_event(delta("r1", "unheard")), None);
        let done = ServerEvent::AudioDone { part: part("r1") };
        assert_eq!(p.push_event(done.clone()), None);
        for _ in 0..7 {
            p.tick(&mut f);
        }
        let (cuts, events) = p.flush();
        assert_eq!(
            cuts,
            [Cut {
                response_id: "r1".into(),
                item_id: "item_r1".into(),
                played_ms: 140
            }]
        );
        assert_eq!(events, [done]);
        assert!(!p.is_playing());
        // The very next frame is silence, and late audio of the cut reply is dropped.
        p.push_audio("r1", "item_r1", pcm(100, 1000));
        assert!(p.tick(&mut f).is_empty());
        assert!(f.iter().all(|s| *s == 0.0));
        assert_eq!(p.push_event(delta("r1", "late")), None);
        // The next reply plays normally.
        p.push_audio("r2", "item_r2", pcm(20, 1000));
        assert_eq!(
            p.tick(&mut f),
            [Note::Started {
                response_id: "r2".into()
            }]
        );
        assert!(f.iter().all(|s| *s > 0.0));
    }

    #[test]
    fn replies_never_share_a_frame() {
        let mut p = Playout::new();
        let mut f = [0.0; FRAME];
        p.push_audio("r1", "item_r1", pcm(10, 1000));
        p.push_audio("r2", "item_r2", pcm(20, 2000));
        let notes = p.tick(&mut f);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(f[FRAME / 2..].iter().all(|s| *s == 0.0));
        let notes = p.tick(&mut f);
        assert_eq!(
            notes,
            [
                Note::Stopped {
                    response_id: "r1".into()
                },
                Note::Started {
                    response_id: "r2".into()
                }
            ]
        );
        assert!(f.iter().all(|s| *s > 0.0));
    }

    #[test]
    fn a_reply_that_runs_dry_keeps_playing_until_complete_and_can_be_cut() {
        let mut p = Playout::new();
        let mut f = [0.0; FRAME];
        p.push_audio("r1", "item_r1", pcm(40, 1000));
        assert_eq!(p.tick(&mut f).len(), 1); // started
        assert!(p.tick(&mut f).is_empty());
        // The TTS is late: silence, but the reply is still playing (no stop, no new start).
        assert!(p.tick(&mut f).is_empty());
        assert!(f.iter().all(|s| *s == 0.0));
        assert!(p.is_playing());
        p.push_audio("r1", "item_r1", pcm(20, 1000));
        assert!(p.tick(&mut f).is_empty());
        // Cut during the next gap: the item is reported with the 60 ms that went out.
        let (cuts, _) = p.flush();
        assert_eq!(
            cuts,
            [Cut {
                response_id: "r1".into(),
                item_id: "item_r1".into(),
                played_ms: 60
            }]
        );
        // A complete reply stops after its last frame even when `response.done` came first.
        p.push_audio("r2", "item_r2", pcm(20, 1000));
        let done = ServerEvent::ResponseDone(crate::session::events::ResponseInfo {
            id: "r2".into(),
            status: crate::session::events::ResponseStatus::Completed,
            cancel_reason: None,
            error: None,
            output: vec![],
            output_modalities: vec![],
            output_format: crate::session::events::AudioFormat::Pcm16,
            voice: "joe".into(),
            conversation_id: None,
        });
        assert_eq!(p.push_event(done.clone()), None);
        let notes = p.tick(&mut f);
        assert_eq!(
            notes,
            [
                Note::Started {
                    response_id: "r2".into()
                },
                Note::Event(done),
                Note::Stopped {
                    response_id: "r2".into()
                }
            ]
        );
    }
}
