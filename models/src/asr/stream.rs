//! One session's streaming state inside the ASR engine: VAD framing, endpointing, the segment
//! being spoken and the stable prefix of its transcript.
//!
//! No model calls and no clock reads here: the engine runs the models and passes `now` in.
//!
//! Stable prefix (LocalAgreement-2): every partial re-decodes the whole growing segment, with
//! the tokens already agreed on forced as the decoder's prefix. The agreed tokens grow to the
//! longest common prefix of the last two hypotheses. The final then only prefills the agreed
//! tokens in one decoder pass and decodes the few tokens after them.

use std::collections::VecDeque;
use std::time::Instant;

use super::AsrEvent;
use crate::vad::endpoint::{EndpointEvent, Endpointer, ms_to_samples, samples_to_ms};
use crate::vad::silero::{FRAME_SAMPLES, SileroState};
use crate::vad::turn_end::{JUDGE_AT_MS, TurnEnd};

/// Timing knobs of a stream, in samples at 16 kHz.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamTiming {
    /// Audio added to an open segment between partial decodes.
    pub partial_interval: usize,
    /// Longest segment before it is finalised without waiting for silence.
    pub max_segment: usize,
    /// Audio kept after the last voiced frame when a segment ends.
    pub tail: usize,
}

/// A stretch of speech from start to endpoint.
#[derive(Debug)]
pub(crate) struct Segment {
    pub id: u64,
    /// Session clock position of `audio[0]`.
    pub start: u64,
    pub audio: Vec<f32>,
    /// Tokens agreed on by the last two hypotheses.
    pub stable: Vec<u32>,
    /// Last hypothesis.
    previous: Vec<u32>,
    /// Audio length the last partial decoded.
    decoded_len: usize,
    /// The last hypothesis with the audio length it was made from: a final over exactly that
    /// audio is this hypothesis, with no decoding at all.
    last_decode: Option<(usize, Vec<u32>)>,
    /// When the endpoint was decided (for the final's latency).
    pub stopped_at: Option<Instant>,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.start + self.audio.len() as u64
    }

    /// Tokens of a decode of exactly this segment's audio, if a partial already made one.
    pub fn decoded_already(&self) -> Option<&[u32]> {
        self.last_decode
            .as_ref()
            .filter(|(len, _)| *len == self.audio.len())
            .map(|(_, tokens)| tokens.as_slice())
    }
}

/// A partial decode to run: the first `len` samples of `segment`.
pub(crate) struct PartialJob<'a> {
    pub segment: &'a Segment,
    pub len: usize,
}

pub(crate) struct SlotStream {
    pub vad: SileroState,
    endpointer: Endpointer,
    timing: StreamTiming,
    /// Audio waiting for the VAD.
    pending: VecDeque<f32>,
    /// Samples the VAD has consumed: the session's audio clock.
    clock: u64,
    /// Recent audio (for prefix padding), starting at clock position `history_start`.
    history: VecDeque<f32>,
    history_start: u64,
    open: Option<Segment>,
    closed: VecDeque<Segment>,
    next_id: u64,
    /// End of input was requested and not handled yet.
    pub finishing: bool,
    /// `EndOfStream` is owed once the closed segments are finalised.
    pub end_of_stream_owed: bool,
    /// A `Paused` went out for the open segment with this speech end: speech after it is a
    /// `Resumed`.
    paused_at: Option<u64>,
    /// The speech end whose pause was last judged, and how many times (semantic turn
    /// detection: one judgement per entry of [`JUDGE_AT_MS`]).
    judged: Option<(u64, usize)>,
    frame: Vec<f32>,
}

impl SlotStream {
    pub fn new(endpointer: Endpointer, timing: StreamTiming) -> Self {
        Self {
            vad: SileroState::default(),
            endpointer,
            timing,
            pending: VecDeque::new(),
            clock: 0,
            history: VecDeque::new(),
            history_start: 0,
            open: None,
            closed: VecDeque::new(),
            next_id: 0,
            finishing: false,
            end_of_stream_owed: false,
            paused_at: None,
            judged: None,
            frame: vec![0.0; FRAME_SAMPLES],
        }
    }

    pub fn append(&mut self, samples: impl IntoIterator<Item = f32>) {
        self.pending.extend(samples);
    }

    /// The next VAD frame, if a whole one is waiting.
    pub fn next_frame(&mut self) -> Option<&[f32]> {
        if self.pending.len() < FRAME_SAMPLES {
            return None;
        }
        for (dst, src) in self.frame.iter_mut().zip(&self.pending) {
            *dst = *src;
        }
        Some(&self.frame)
    }

    /// Splits borrows for the VAD step: the state and the frame to run.
    pub fn vad_row(&mut self) -> (&mut SileroState, &[f32]) {
        (&mut self.vad, &self.frame)
    }

    /// Consumes the frame returned by [`Self::next_frame`], with its speech probability.
    pub fn frame_done(&mut self, probability: f32, now: Instant, events: &mut Vec<AsrEvent>) {
        let start = self.clock;
        let frame: Vec<f32> = self.pending.drain(..FRAME_SAMPLES).collect();
        self.clock += FRAME_SAMPLES as u64;
        self.history.extend(&frame);
        if let Some(seg) = &mut self.open {
            seg.audio.extend(&frame);
        }
        match self
            .endpointer
            .push(probability, start, FRAME_SAMPLES as u64)
        {
            Some(EndpointEvent::SpeechStarted {
                audio_start,
                speech_start,
            }) => {
                let from = audio_start.max(self.history_start);
                let skip = (from - self.history_start) as usize;
                let audio = self.history.iter().skip(skip).copied().collect();
                self.open_segment(from, audio);
                events.push(AsrEvent::SpeechStarted {
                    audio_start_ms: samples_to_ms(from),
                    speech_start_ms: samples_to_ms(speech_start),
                });
            }
            Some(EndpointEvent::SpeechStopped {
                audio_end,
                speech_end,
            }) => {
                events.push(AsrEvent::SpeechStopped {
                    audio_end_ms: samples_to_ms(audio_end),
                    speech_end_ms: samples_to_ms(speech_end),
                });
                self.paused_at = None;
                self.close(speech_end, now);
            }
            None => {
                if let (Some(paused), Some(seg)) = (self.paused_at, &self.open)
                    && self.endpointer.last_speech_end() > paused
                {
                    self.paused_at = None;
                    events.push(AsrEvent::Resumed { segment: seg.id });
                }
                let too_long = self
                    .open
                    .as_ref()
                    .is_some_and(|s| s.audio.len() >= self.timing.max_segment);
                if too_long {
                    // Still speaking: finalise what we have and carry on in a new segment.
                    self.close(self.clock, now);
                    self.open_segment(self.clock, Vec::new());
                }
            }
        }
        self.trim_history();
    }

    /// Starts a new open segment at `start` holding `audio`, with the next segment id.
    fn open_segment(&mut self, start: u64, audio: Vec<f32>) {
        self.open = Some(Segment {
            id: self.next_id,
            start,
            audio,
            stable: Vec::new(),
            previous: Vec::new(),
            decoded_len: 0,
            last_decode: None,
            stopped_at: None,
        });
        self.next_id += 1;
    }

    fn close(&mut self, speech_end: u64, now: Instant) {
        if let Some(mut seg) = self.open.take() {
            let keep_until = (speech_end + self.timing.tail as u64).min(seg.end());
            seg.audio
                .truncate(keep_until.saturating_sub(seg.start) as usize);
            seg.stopped_at = Some(now);
            self.closed.push_back(seg);
        }
    }

    /// Keeps only what prefix padding can need while no segment is open.
    fn trim_history(&mut self) {
        let padding = crate::vad::endpoint::ms_to_samples(u64::from(
            self.endpointer.config().prefix_padding_ms,
        )) as usize
            + FRAME_SAMPLES;
        while self.history.len() > padding {
            self.history.pop_front();
            self.history_start += 1;
        }
    }

    /// End of input: the leftover part-frame is appended unjudged and an open turn is closed.
    pub fn finish(&mut self, now: Instant, events: &mut Vec<AsrEvent>) {
        let rest: Vec<f32> = self.pending.drain(..).collect();
        self.clock += rest.len() as u64;
        if let Some(seg) = &mut self.open {
            seg.audio.extend(&rest);
        }
        self.history.extend(rest);
        self.trim_history();
        if let Some(EndpointEvent::SpeechStopped {
            audio_end,
            speech_end,
        }) = self.endpointer.finish(self.clock)
        {
            events.push(AsrEvent::SpeechStopped {
                audio_end_ms: samples_to_ms(audio_end),
                speech_end_ms: samples_to_ms(speech_end),
            });
            self.close(speech_end, now);
        }
        self.finishing = false;
        self.end_of_stream_owed = true;
    }

    /// A closed segment waiting for its final.
    pub fn final_ready(&self) -> Option<&Segment> {
        self.closed.front()
    }

    pub fn take_final(&mut self) -> Option<Segment> {
        self.closed.pop_front()
    }

    /// The partial decode the open segment needs now, if any: either enough new audio arrived
    /// since the last one, or the speaker paused long enough that the audio a final would
    /// cover (speech end + tail) is all here. The second is a speculative final: if the pause
    /// turns into the endpoint, the final reuses it and costs nothing after the endpoint.
    pub fn partial_due(&self) -> Option<PartialJob<'_>> {
        let seg = self.open.as_ref()?;
        let (speech_end, final_len) = self.final_extent(seg);
        let paused = self.endpointer.in_speech()
            && self.clock >= speech_end + self.timing.tail as u64
            && final_len <= seg.audio.len()
            && final_len >= self.timing.partial_interval
            && seg
                .last_decode
                .as_ref()
                .is_none_or(|(len, _)| *len != final_len);
        if paused {
            return Some(PartialJob {
                segment: seg,
                len: final_len,
            });
        }
        if self.clock > speech_end {
            // In a pause: hold the engine free for the speculative final above.
            return None;
        }
        let first_ready =
            seg.decoded_len > 0 || seg.audio.len() >= 2 * self.timing.partial_interval;
        (first_ready && seg.audio.len() >= seg.decoded_len + self.timing.partial_interval)
            .then_some(PartialJob {
                segment: seg,
                len: seg.audio.len(),
            })
    }

    /// The end of the last voiced frame, and how much of `seg`'s audio a final would cover if
    /// the turn ended there (that frame plus the tail).
    fn final_extent(&self, seg: &Segment) -> (u64, usize) {
        let speech_end = self.endpointer.last_speech_end();
        let len = (speech_end + self.timing.tail as u64).saturating_sub(seg.start) as usize;
        (speech_end, len)
    }

    /// The open turn's audio so far, when its current pause is due a semantic judgement: the
    /// turn detection is semantic, the silence has reached the next of [`JUDGE_AT_MS`], and no
    /// decode is pending for the segment (the pause's transcript is made first, so the
    /// judgement can use it and a speculative reply is already under way).
    /// Returns the speech end the judgement is for, with the audio.
    pub fn judgement_due(&self) -> Option<(u64, &[f32])> {
        let TurnEnd::Semantic(_) = self.endpointer.config().turn_end else {
            return None;
        };
        let seg = self.open.as_ref()?;
        let speech_end = self.endpointer.last_speech_end();
        let done = match self.judged {
            Some((end, n)) if end == speech_end => n,
            _ => 0,
        };
        let next = JUDGE_AT_MS.get(done)?;
        let due = self.endpointer.in_speech()
            && self.clock >= speech_end + ms_to_samples(u64::from(*next))
            && self.partial_due().is_none();
        due.then_some((speech_end, seg.audio.as_slice()))
    }

    /// Applies the judgement of the pause after `speech_end`: if it is the end and the speaker
    /// has not spoken since, the turn ends now.
    pub fn judged(
        &mut self,
        speech_end: u64,
        complete: bool,
        now: Instant,
        events: &mut Vec<AsrEvent>,
    ) {
        self.judged = match self.judged {
            Some((end, n)) if end == speech_end => Some((end, n + 1)),
            _ => Some((speech_end, 1)),
        };
        if !complete || self.endpointer.last_speech_end() != speech_end {
            return;
        }
        if let Some(EndpointEvent::SpeechStopped {
            audio_end,
            speech_end,
        }) = self.endpointer.end_now(self.clock)
        {
            events.push(AsrEvent::SpeechStopped {
                audio_end_ms: samples_to_ms(audio_end),
                speech_end_ms: samples_to_ms(speech_end),
            });
            self.paused_at = None;
            self.close(speech_end, now);
        }
    }

    /// The turn detection this stream runs.
    pub fn turn_end(&self) -> TurnEnd {
        self.endpointer.config().turn_end
    }

    /// Records a partial hypothesis made from the first `decoded_len` samples of segment `id`.
    /// Returns `None` when that segment is no longer open (it ended meanwhile); otherwise
    /// whether this decode covers exactly what a final would if the speaker's current pause
    /// became the endpoint (then it is a pause's transcript: `Some(Some(speech_end))`).
    pub fn partial_done(
        &mut self,
        id: u64,
        decoded_len: usize,
        tokens: &[u32],
    ) -> Option<Option<u64>> {
        let (speech_end, final_len) = self.final_extent(self.open.as_ref()?);
        let still_paused = self.endpointer.in_speech() && self.clock > speech_end;
        let seg = self.open.as_mut().filter(|s| s.id == id)?;
        agree(seg, tokens);
        seg.decoded_len = seg.decoded_len.max(decoded_len);
        seg.last_decode = Some((decoded_len, tokens.to_vec()));
        if still_paused && decoded_len == final_len && self.paused_at != Some(speech_end) {
            self.paused_at = Some(speech_end);
            return Some(Some(speech_end));
        }
        Some(None)
    }

    /// Folds a partial hypothesis into a segment that has since closed (its final is still
    /// queued), so its final can reuse the agreement.
    pub fn partial_done_closed(&mut self, id: u64, decoded_len: usize, tokens: &[u32]) {
        if let Some(seg) = self.closed.iter_mut().find(|s| s.id == id) {
            agree(seg, tokens);
            seg.last_decode = Some((decoded_len, tokens.to_vec()));
        }
    }

    pub fn has_work(&self) -> bool {
        self.has_work_besides_judging() || self.judgement_due().is_some()
    }

    /// Work other than a due judgement (which may have to wait for its text verdict).
    pub fn has_work_besides_judging(&self) -> bool {
        self.pending.len() >= FRAME_SAMPLES
            || !self.closed.is_empty()
            || self.partial_due().is_some()
            || self.finishing
    }
}

/// LocalAgreement-2: the stable prefix becomes the common prefix of the last two hypotheses.
fn agree(seg: &mut Segment, tokens: &[u32]) {
    let common = seg
        .previous
        .iter()
        .zip(tokens)
        .take_while(|(a, b)| a == b)
        .count();
    if common > seg.stable.len() {
        seg.stable = tokens[..common].to_vec();
    }
    seg.previous = tokens.to_vec();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vad::endpoint::EndpointConfig;

    fn stream() -> SlotStream {
        SlotStream::new(
            Endpointer::new(EndpointConfig::default()).expect("valid config"),
            StreamTiming {
                partial_interval: 6400,
                max_segment: 16000 * 20,
                tail: 4000,
            },
        )
    }

    /// Feeds `frames` frames of the given probability; returns the events.
    fn feed(s: &mut SlotStream, frames: usize, p: f32, value: f32) -> Vec<AsrEvent> {
        let now = Instant::now();
        let mut events = Vec::new();
        s.append(std::iter::repeat_n(value, frames * FRAME_SAMPLES));
        while s.next_frame().is_some() {
            s.frame_done(p, now, &mut events);
        }
        events
    }

    #[test]
    fn segment_keeps_prefix_padding_and_trims_the_tail() {
        let mut s = stream();
        assert!(feed(&mut s, 20, 0.0, 0.0).is_empty());
        let started = feed(&mut s, 50, 0.9, 0.5);
        assert_eq!(
            started,
            [AsrEvent::SpeechStarted {
                audio_start_ms: 640 - 300,
                speech_start_ms: 640
            }]
        );
        assert!(s.partial_due().is_some());
        let stopped = feed(&mut s, 20, 0.0, 0.0);
        assert!(matches!(
            stopped[0],
            AsrEvent::SpeechStopped {
                speech_end_ms: 2240,
                ..
            }
        ));
        let seg = s.take_final().expect("closed segment");
        assert_eq!(seg.start, 20 * FRAME_SAMPLES as u64 - 4800);
        assert_eq!(seg.audio.len(), 50 * FRAME_SAMPLES + 4800 + 4000);
        // Padding is silence, speech is 0.5, the tail is silence.
        assert_eq!(seg.audio[4799], 0.0);
        assert_eq!(seg.audio[4800], 0.5);
    }

    #[test]
    fn stable_prefix_is_the_agreement_of_two_hypotheses() {
        let mut s = stream();
        feed(&mut s, 30, 0.9, 0.5);
        let id = s.partial_due().expect("open segment").segment.id;
        assert!(s.partial_done(id, 100, &[5, 6, 7]).is_some());
        assert!(s.open.as_ref().is_some_and(|seg| seg.stable.is_empty()));
        assert!(s.partial_done(id, 200, &[5, 6, 8, 9]).is_some());
        let seg = s.open.as_ref().expect("open segment");
        assert_eq!(seg.stable, [5, 6]);
        // A shorter agreement later never takes back agreed tokens.
        assert!(s.partial_done(id, 300, &[5, 6, 1]).is_some());
        assert_eq!(s.open.as_ref().expect("open").stable, [5, 6]);
        assert!(s.partial_done(id + 1, 300, &[1]).is_none());
    }

    #[test]
    fn a_pause_asks_for_the_final_decode_early_and_the_final_reuses_it() {
        let mut s = stream();
        feed(&mut s, 30, 0.9, 0.5);
        let job = s.partial_due().expect("partial due");
        let (id, len) = (job.segment.id, job.len);
        assert_eq!(s.partial_done(id, len, &[4, 5]), Some(None));
        // 250 ms tail = 7.8 frames of pause: after 8 the final's audio is all here.
        feed(&mut s, 8, 0.1, 0.0);
        let job = s.partial_due().expect("speculative final due");
        let final_len = 30 * FRAME_SAMPLES + 4000;
        assert_eq!(job.len, final_len);
        // The decode of exactly the final's audio during a pause is the pause's transcript.
        let speech_end = 30 * FRAME_SAMPLES as u64;
        assert_eq!(
            s.partial_done(id, final_len, &[4, 5, 6]),
            Some(Some(speech_end))
        );
        assert!(s.partial_due().is_none());
        // The pause becomes the endpoint: no `Resumed`.
        let events = feed(&mut s, 10, 0.1, 0.0);
        assert!(
            matches!(events[..], [AsrEvent::SpeechStopped { .. }]),
            "{events:?}"
        );
        let seg = s.take_final().expect("endpoint reached");
        assert_eq!(seg.decoded_already(), Some(&[4u32, 5, 6][..]));
    }

    #[test]
    fn speech_after_a_pause_transcript_is_a_resumption_and_the_next_pause_counts_again() {
        let mut s = stream();
        feed(&mut s, 30, 0.9, 0.5);
        feed(&mut s, 8, 0.1, 0.0);
        let job = s.partial_due().expect("speculative final due");
        let (id, len) = (job.segment.id, job.len);
        assert_eq!(
            s.partial_done(id, len, &[4, 5]),
            Some(Some(30 * FRAME_SAMPLES as u64))
        );
        // The same decode again (e.g. a retry) is not a second pause.
        assert_eq!(s.partial_done(id, len, &[4, 5]), Some(None));
        // Unsure frames neither resume nor end the turn.
        assert!(feed(&mut s, 2, 0.4, 0.0).is_empty());
        let resumed = feed(&mut s, 5, 0.9, 0.5);
        assert_eq!(resumed, [AsrEvent::Resumed { segment: id }]);
        assert!(feed(&mut s, 5, 0.9, 0.5).is_empty(), "one resumption only");
        feed(&mut s, 8, 0.1, 0.0);
        let job = s.partial_due().expect("second pause");
        let len = job.len;
        assert_eq!(len, 50 * FRAME_SAMPLES + 4000);
        assert_eq!(
            s.partial_done(id, len, &[4, 5, 6]),
            Some(Some(50 * FRAME_SAMPLES as u64))
        );
        // A decode that finishes after speech went on is not a pause transcript.
        feed(&mut s, 1, 0.9, 0.5);
        assert_eq!(s.partial_done(id, len, &[4, 5, 6]), Some(None));
    }

    fn semantic_stream() -> SlotStream {
        let config = EndpointConfig {
            turn_end: TurnEnd::Semantic(crate::vad::turn_end::Eagerness::Auto),
            ..EndpointConfig::default()
        };
        SlotStream::new(
            Endpointer::new(config).expect("valid config"),
            StreamTiming {
                partial_interval: 6400,
                max_segment: 16000 * 20,
                tail: 3200,
            },
        )
    }

    #[test]
    fn a_timer_stream_is_never_judged() {
        let mut s = stream();
        feed(&mut s, 30, 0.9, 0.5);
        feed(&mut s, 10, 0.1, 0.0);
        assert!(s.judgement_due().is_none());
    }

    #[test]
    fn a_semantic_pause_is_judged_at_200_and_600_ms_after_its_transcript_and_a_done_ends_the_turn()
    {
        let mut s = semantic_stream();
        feed(&mut s, 30, 0.9, 0.5);
        let speech_end = 30 * FRAME_SAMPLES as u64;
        // 200 ms = 6.25 frames of silence; the 200 ms tail's decode comes first.
        feed(&mut s, 7, 0.1, 0.0);
        assert!(s.judgement_due().is_none(), "the pause's decode goes first");
        let job = s.partial_due().expect("pause decode");
        let (id, len) = (job.segment.id, job.len);
        assert_eq!(s.partial_done(id, len, &[4, 5]), Some(Some(speech_end)));
        let (end, audio) = s.judgement_due().expect("judgement due");
        assert_eq!(end, speech_end);
        // From the first sample (no room for prefix padding before it) to now.
        assert_eq!(audio.len(), 37 * FRAME_SAMPLES);
        // "Not done": no event, and no second judgement of the same pause until 600 ms.
        let mut events = Vec::new();
        s.judged(end, false, Instant::now(), &mut events);
        assert!(events.is_empty());
        assert!(s.judgement_due().is_none());
        feed(&mut s, 11, 0.1, 0.0);
        assert!(s.judgement_due().is_none(), "576 ms of silence");
        feed(&mut s, 1, 0.1, 0.0);
        let (again, _) = s.judgement_due().expect("judged again at 600 ms");
        assert_eq!(again, end);
        s.judged(end, false, Instant::now(), &mut events);
        assert!(s.judgement_due().is_none(), "two judgements per pause");
        // Not the 500 ms timer: 1.2 s of silence in all before the fallback ends it.
        assert!(feed(&mut s, 8, 0.1, 0.0).is_empty());
        assert!(s.judgement_due().is_none());
        // The speaker goes on; the next pause is judged "done" and ends the turn at once.
        feed(&mut s, 10, 0.9, 0.5);
        feed(&mut s, 7, 0.1, 0.0);
        let job = s.partial_due().expect("second pause decode");
        let (id, len) = (job.segment.id, job.len);
        s.partial_done(id, len, &[4, 5, 6]);
        let (end, _) = s.judgement_due().expect("second judgement");
        assert_eq!(end, 67 * FRAME_SAMPLES as u64);
        s.judged(end, true, Instant::now(), &mut events);
        assert_eq!(
            events,
            [AsrEvent::SpeechStopped {
                audio_end_ms: samples_to_ms(74 * FRAME_SAMPLES as u64),
                speech_end_ms: samples_to_ms(end),
            }]
        );
        let seg = s.take_final().expect("the turn ended");
        assert_eq!(seg.decoded_already(), Some(&[4u32, 5, 6][..]));
    }

    #[test]
    fn a_done_that_arrives_after_the_speaker_went_on_is_ignored() {
        let mut s = semantic_stream();
        feed(&mut s, 5, 0.9, 0.5);
        feed(&mut s, 7, 0.1, 0.0);
        let (end, _) = s
            .judgement_due()
            .expect("short turn: no pause decode, judged anyway");
        feed(&mut s, 3, 0.9, 0.5);
        let mut events = Vec::new();
        s.judged(end, true, Instant::now(), &mut events);
        assert!(events.is_empty());
        assert!(s.take_final().is_none());
    }

    #[test]
    fn finish_closes_an_open_turn() {
        let mut s = stream();
        feed(&mut s, 10, 0.9, 0.5);
        s.append([0.5; 100]);
        let mut events = Vec::new();
        s.finish(Instant::now(), &mut events);
        assert!(matches!(events[0], AsrEvent::SpeechStopped { .. }));
        assert!(s.take_final().is_some());
    }
}
