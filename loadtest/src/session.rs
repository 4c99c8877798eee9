//! The sans-IO core of one simulated caller: what to send in each 20 ms frame, and what every
//! server event means for the turn being measured. The driver (`driver.rs`) owns the socket and
//! the clock and passes `now` in.
//!
//! A session speaks `turns` clips. Each turn: the clip at real-time pace, then silence until
//! the reply is done AND has finished playing (a caller waits for the agent to finish), then
//! `gap` more silence before the next clip. A churned turn ends early instead (soak churn): the
//! caller speaks the next clip over the reply, or hangs up, [`CHURN_AFTER`] into its audio.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clips::{Clip, FRAME_SAMPLES, WIRE_RATE};
use crate::playout::Playout;
use crate::record::{ErrorKind, ErrorRecord, ServerLatency, TurnEnding, TurnRecord};

/// How long after a reply's first audio a churned turn barges in or hangs up: well past the
/// server's echo guard (300 ms), early enough that the reply is still being written.
pub const CHURN_AFTER: Duration = Duration::from_millis(1500);

/// What a session does, fixed before it starts.
#[derive(Debug, Clone)]
pub struct SessionPlan {
    pub index: usize,
    /// Clip of each turn, in order.
    pub turns: Vec<Arc<Clip>>,
    /// How each turn is to end (missing: [`TurnEnding::Listened`]). A barge-in needs a next
    /// clip to speak; on the last turn it hangs up instead.
    pub endings: Vec<TurnEnding>,
    /// Silence before the first clip.
    pub lead_in: Duration,
    /// Silence between the end of a reply's playout and the next clip.
    pub gap: Duration,
    /// A turn with no finished reply this long after its speech end fails.
    pub turn_timeout: Duration,
    /// No turn starts after this instant (the step's duration bound).
    pub no_turns_after: Instant,
    /// Time origin of the report (`*started_ms`, `at_ms`).
    pub origin: Instant,
}

/// What goes out in the next 20 ms frame.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    Speech(&'a [f32]),
    Silence,
}

enum Phase {
    /// Silence until the instant, then the next turn (or the end).
    Pause(Instant),
    /// Streaming the current clip from sample `pos`.
    Speaking {
        pos: usize,
    },
    /// Clip sent; silence until the reply is done.
    Waiting,
    Finished,
}

/// State of the turn in progress.
struct Turn {
    record: TurnRecord,
    clip: Arc<Clip>,
    speech_end_sent: Option<Instant>,
    playout: Playout,
    /// Responses that produced audio before the speech end.
    early: HashSet<String>,
    done: bool,
    /// How the caller means to leave the reply.
    planned: TurnEnding,
    /// When the reply's first audio arrived.
    first_audio_at: Option<Instant>,
}

pub struct SessionCore {
    plan: SessionPlan,
    phase: Phase,
    next_turn: usize,
    current: Option<Turn>,
    /// Response id of the last finished turn, for a latency event that comes after its done.
    last_reply: Option<(usize, String)>,
    turns: Vec<TurnRecord>,
    errors: Vec<ErrorRecord>,
    /// Replies the caller barged in on: what still arrives of them belongs to no turn.
    abandoned: HashSet<String>,
}

fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

impl SessionCore {
    /// A session whose socket opened (and whose session config was accepted) at `now`.
    pub fn new(plan: SessionPlan, now: Instant) -> Self {
        let phase = Phase::Pause(now + plan.lead_in);
        SessionCore {
            plan,
            phase,
            next_turn: 0,
            current: None,
            last_reply: None,
            turns: Vec::new(),
            errors: Vec::new(),
            abandoned: HashSet::new(),
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished)
    }

    /// The frame to send at `now`, or `None` when the session is over (close the socket).
    pub fn next_frame(&mut self, now: Instant) -> Option<Frame<'_>> {
        self.check_timeout(now);
        self.churn(now);
        if let Phase::Pause(until) = self.phase
            && now >= until
        {
            self.start_turn(now);
        }
        match self.phase {
            Phase::Finished => None,
            Phase::Pause(_) | Phase::Waiting => Some(Frame::Silence),
            Phase::Speaking { pos } => {
                // Speaking implies a current turn (set together in `start_turn`).
                let turn = self.current.as_mut().expect("speaking has a turn");
                let clip = &turn.clip;
                let end = (pos + FRAME_SAMPLES).min(clip.samples.len());
                let speech_end = clip.speech_end_sample;
                if pos < speech_end && speech_end <= end {
                    // This frame carries the last voiced sample: the origin of every latency.
                    turn.speech_end_sent = Some(now);
                }
                self.phase = if end >= clip.samples.len() {
                    Phase::Waiting
                } else {
                    Phase::Speaking { pos: end }
                };
                Some(Frame::Speech(&clip.samples[pos..end]))
            }
        }
    }

    fn start_turn(&mut self, now: Instant) {
        let index = self.next_turn;
        let Some(clip) = self.plan.turns.get(index).cloned() else {
            self.phase = Phase::Finished;
            return;
        };
        if now >= self.plan.no_turns_after {
            self.phase = Phase::Finished;
            return;
        }
        self.next_turn += 1;
        let planned = self.plan.endings.get(index).copied().unwrap_or_default();
        self.current = Some(Turn {
            record: TurnRecord {
                session: self.plan.index,
                turn: index,
                clip: clip.name.clone(),
                reference: clip.reference.clone(),
                started_ms: ms_between(self.plan.origin, now),
                clip_speech_end_ms: clip.speech_end_ms,
                ttfb_ms: None,
                vad_stopped_ms: None,
                asr_final_ms: None,
                transcript: None,
                response_id: None,
                reply_status: None,
                reply_done_ms: None,
                reply_audio_ms: 0.0,
                underruns: 0,
                underrun_ms: 0.0,
                early_replies: 0,
                cut_in: false,
                ending: TurnEnding::Listened,
                server_latency: None,
                error: None,
            },
            clip,
            speech_end_sent: None,
            playout: Playout::default(),
            early: HashSet::new(),
            done: false,
            planned,
            first_audio_at: None,
        });
        self.phase = Phase::Speaking { pos: 0 };
    }

    /// A churned turn whose reply is still being written [`CHURN_AFTER`] into its audio: the
    /// caller barges in with the next clip, or hangs up (the session ends and the driver
    /// closes the socket). A reply already done is churned in `on_event`.
    fn churn(&mut self, now: Instant) {
        let Some(turn) = &self.current else { return };
        let due = turn.planned != TurnEnding::Listened
            && !turn.done
            && turn
                .first_audio_at
                .is_some_and(|at| now.saturating_duration_since(at) >= CHURN_AFTER);
        if !due {
            return;
        }
        let ending = self.churn_ending(turn.planned);
        if let Some(turn) = self.current.as_mut() {
            turn.record.ending = ending;
            if let Some(id) = &turn.record.response_id {
                self.abandoned.insert(id.clone());
            }
        }
        self.finish_turn();
        if ending == TurnEnding::BargedIn {
            self.start_turn(now);
        } else {
            self.phase = Phase::Finished;
        }
    }

    /// What a planned churn becomes: a barge-in needs a next clip to speak.
    fn churn_ending(&self, planned: TurnEnding) -> TurnEnding {
        match planned {
            TurnEnding::BargedIn if self.next_turn >= self.plan.turns.len() => TurnEnding::HungUp,
            other => other,
        }
    }

    fn check_timeout(&mut self, now: Instant) {
        let Some(turn) = &self.current else { return };
        let Some(end) = turn.speech_end_sent else {
            return;
        };
        if turn.done || now.saturating_duration_since(end) < self.plan.turn_timeout {
            return;
        }
        let what = if turn.record.ttfb_ms.is_none() {
            "no reply audio"
        } else {
            "reply not done"
        };
        let message = format!(
            "{what} within {} s of the end of speech",
            self.plan.turn_timeout.as_secs_f64()
        );
        self.fail_turn(now, ErrorKind::Timeout, message);
        self.phase = Phase::Pause(now + self.plan.gap);
    }

    /// Ends the current turn as failed and records the error.
    fn fail_turn(&mut self, now: Instant, kind: ErrorKind, message: String) {
        let turn_index = self.current.as_ref().map(|t| t.record.turn);
        if let Some(turn) = self.current.take() {
            let mut record = finish_record(turn);
            record.error = Some(message.clone());
            self.turns.push(record);
        }
        self.error(now, turn_index, kind, message);
    }

    fn error(&mut self, now: Instant, turn: Option<usize>, kind: ErrorKind, message: String) {
        self.errors.push(ErrorRecord {
            session: self.plan.index,
            turn,
            at_ms: ms_between(self.plan.origin, now),
            kind,
            message,
        });
    }

    /// The connection ended (or could not go on): fail the turn in progress and stop.
    pub fn on_closed(&mut self, now: Instant, kind: ErrorKind, message: String) {
        if self.is_finished() {
            return;
        }
        if self.current.is_some() {
            self.fail_turn(now, kind, message);
        } else {
            self.error(now, None, kind, message);
        }
        self.phase = Phase::Finished;
    }

    /// One server event, received at `now`.
    pub fn on_event(&mut self, now: Instant, event: &Value) {
        let kind = event["type"].as_str().unwrap_or("");
        match kind {
            "error" => {
                let turn = self.current.as_ref().map(|t| t.record.turn);
                let message = event["error"]["message"]
                    .as_str()
                    .map_or_else(|| event.to_string(), str::to_owned);
                self.error(now, turn, ErrorKind::Server, message);
            }
            "antiphon.turn.latency" => self.on_latency(event),
            _ => {}
        }
        let response = match kind {
            "response.output_audio.delta" => event["response_id"].as_str(),
            "response.done" => event["response"]["id"].as_str(),
            _ => None,
        };
        if response.is_some_and(|id| self.abandoned.contains(id)) {
            return;
        }
        let Some(turn) = self.current.as_mut() else {
            return;
        };
        let Some(end) = turn.speech_end_sent else {
            if kind == "response.output_audio.delta"
                && let Some(id) = event["response_id"].as_str()
            {
                turn.early.insert(id.to_owned());
            }
            if matches!(
                kind,
                "response.created" | "input_audio_buffer.committed" | "response.output_audio.delta"
            ) {
                turn.record.cut_in = true;
            }
            return;
        };
        let since_end = ms_between(end, now);
        match kind {
            "input_audio_buffer.speech_stopped" => {
                turn.record.vad_stopped_ms.get_or_insert(since_end);
            }
            "conversation.item.input_audio_transcription.completed"
                if turn.record.asr_final_ms.is_none() =>
            {
                turn.record.asr_final_ms = Some(since_end);
                turn.record.transcript = event["transcript"].as_str().map(str::to_owned);
            }
            "response.output_audio.delta" => {
                let id = event["response_id"].as_str().unwrap_or("");
                if turn.early.contains(id) {
                    return;
                }
                let reply = turn.record.response_id.get_or_insert_with(|| id.to_owned());
                if reply != id {
                    return;
                }
                turn.record.ttfb_ms.get_or_insert(since_end);
                turn.first_audio_at.get_or_insert(now);
                // pcm16: 2 bytes a sample; base64 carries 3 bytes per 4 characters.
                let b64 = event["delta"].as_str().unwrap_or("");
                let padding = b64.bytes().rev().take_while(|&b| b == b'=').count();
                let bytes = (b64.len() / 4 * 3).saturating_sub(padding);
                let samples = bytes / 2;
                turn.playout.on_audio(
                    now,
                    Duration::from_secs_f64(samples as f64 / f64::from(WIRE_RATE)),
                );
            }
            "response.done" => {
                let id = event["response"]["id"].as_str().unwrap_or("");
                if turn.record.response_id.as_deref() != Some(id) {
                    // A response without audio (or one the VAD split off early) is not this
                    // turn's reply.
                    return;
                }
                turn.record.reply_status = event["response"]["status"].as_str().map(str::to_owned);
                turn.record.reply_done_ms = Some(since_end);
                turn.done = true;
                let played = turn.playout.ends_at().unwrap_or(now).max(now);
                // A churned turn whose reply is done but still playing at the caller's end:
                // the caller acts at the churn point all the same.
                let churn_at = turn
                    .first_audio_at
                    .map(|at| at + CHURN_AFTER)
                    .filter(|&at| turn.planned != TurnEnding::Listened && at < played);
                let planned = turn.planned;
                let Some(at) = churn_at else {
                    self.finish_turn();
                    self.phase = Phase::Pause(played + self.plan.gap);
                    return;
                };
                let ending = self.churn_ending(planned);
                if let Some(turn) = self.current.as_mut() {
                    turn.record.ending = ending;
                }
                self.finish_turn();
                if ending == TurnEnding::HungUp {
                    // No turn follows a hang-up: the pause ends the session.
                    self.next_turn = self.plan.turns.len();
                }
                self.phase = Phase::Pause(at.max(now));
            }
            _ => {}
        }
    }

    fn on_latency(&mut self, event: &Value) {
        let id = event["response_id"].as_str().unwrap_or("");
        let latency = ServerLatency::from_event(event);
        if let Some(turn) = self.current.as_mut()
            && turn.record.response_id.as_deref() == Some(id)
        {
            turn.record.server_latency = Some(latency);
        } else if let Some((index, last)) = &self.last_reply
            && last == id
            && let Some(record) = self.turns.get_mut(*index)
        {
            record.server_latency.get_or_insert(latency);
        }
    }

    fn finish_turn(&mut self) {
        if let Some(turn) = self.current.take() {
            let record = finish_record(turn);
            if let Some(id) = &record.response_id {
                self.last_reply = Some((self.turns.len(), id.clone()));
            }
            self.turns.push(record);
        }
    }

    pub fn into_records(self) -> (Vec<TurnRecord>, Vec<ErrorRecord>) {
        (self.turns, self.errors)
    }
}

fn finish_record(turn: Turn) -> TurnRecord {
    let mut record = turn.record;
    record.reply_audio_ms = turn.playout.audio().as_secs_f64() * 1000.0;
    record.underruns = turn.playout.underruns();
    record.underrun_ms = turn.playout.starved().as_secs_f64() * 1000.0;
    record.early_replies = turn.early.len() as u32;
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// 100 ms of "speech" (non-zero) then 100 ms of silence, at the wire rate.
    fn clip() -> Arc<Clip> {
        let mut samples = vec![0.5f32; 2400];
        samples.extend(vec![0.0f32; 2400]);
        Arc::new(Clip {
            name: "c".into(),
            samples,
            speech_end_sample: 2400,
            speech_end_ms: 100,
            duration_ms: 200,
            reference: None,
        })
    }

    fn delta(id: &str, ms: usize) -> Value {
        // 24 samples a ms, 2 bytes each; base64 of zeros.
        let bytes = ms * 48;
        let b64 = "AAAA".repeat(bytes / 3);
        json!({"type": "response.output_audio.delta", "response_id": id, "delta": b64})
    }

    fn plan(t0: Instant, turns: usize) -> SessionPlan {
        SessionPlan {
            index: 3,
            turns: (0..turns).map(|_| clip()).collect(),
            endings: Vec::new(),
            lead_in: MS(40),
            gap: MS(100),
            turn_timeout: MS(2000),
            no_turns_after: t0 + Duration::from_secs(60),
            origin: t0,
        }
    }

    /// Advances frame by frame until `until`, returning how many speech frames went out.
    fn run_frames(core: &mut SessionCore, from: Instant, until: Instant) -> usize {
        let mut t = from;
        let mut speech = 0;
        while t < until {
            if let Some(Frame::Speech(_)) = core.next_frame(t) {
                speech += 1;
            }
            t += MS(20);
        }
        speech
    }

    #[test]
    fn one_turn_measures_from_the_frame_holding_the_speech_end() {
        let t0 = Instant::now();
        let mut core = SessionCore::new(plan(t0, 1), t0);
        // Lead-in 40 ms (frames at 0, 20 silent), clip from 40 ms: 10 frames of 20 ms; the
        // 5th (sent at 40 + 80 = 120 ms) holds sample 2399.
        let speech = run_frames(&mut core, t0, t0 + MS(300));
        assert_eq!(speech, 10);
        core.on_event(
            t0 + MS(200),
            &json!({"type": "input_audio_buffer.speech_stopped"}),
        );
        core.on_event(
            t0 + MS(700),
            &json!({"type": "conversation.item.input_audio_transcription.completed", "transcript": "hi"}),
        );
        core.on_event(t0 + MS(1120), &delta("r1", 100));
        core.on_event(
            t0 + MS(1125),
            &json!({"type": "antiphon.turn.latency", "response_id": "r1", "origin": "speech_end",
                    "asr_final_ms": 510.0, "first_audio_sent_ms": 990.5}),
        );
        core.on_event(t0 + MS(1150), &delta("r1", 100));
        // Buffered until 1320 ms; this one at 1400 ms is an 80 ms underrun.
        core.on_event(t0 + MS(1400), &delta("r1", 100));
        core.on_event(
            t0 + MS(1450),
            &json!({"type": "response.done", "response": {"id": "r1", "status": "completed"}}),
        );
        // Playout ends at 1500 ms, plus a 100 ms gap: then the session has no more turns.
        assert_eq!(core.next_frame(t0 + MS(1590)), Some(Frame::Silence));
        assert_eq!(core.next_frame(t0 + MS(1610)), None);
        let (turns, errors) = core.into_records();
        assert!(errors.is_empty(), "{errors:?}");
        let t = &turns[0];
        assert_eq!((t.session, t.turn), (3, 0));
        assert_eq!(t.started_ms, 40.0);
        assert_eq!(t.vad_stopped_ms, Some(80.0));
        assert_eq!(t.asr_final_ms, Some(580.0));
        assert_eq!(t.transcript.as_deref(), Some("hi"));
        assert_eq!(t.ttfb_ms, Some(1000.0));
        assert_eq!(t.reply_done_ms, Some(1330.0));
        assert_eq!(t.reply_status.as_deref(), Some("completed"));
        assert!((t.reply_audio_ms - 300.0).abs() < 1e-6);
        assert_eq!(t.underruns, 1);
        assert!((t.underrun_ms - 80.0).abs() < 1e-6);
        let server = t.server_latency.as_ref().expect("server breakdown");
        assert_eq!(server.first_audio_sent_ms, Some(990.5));
        assert_eq!(server.llm_first_token_ms, None);
        assert!(t.error.is_none());
    }

    #[test]
    fn audio_of_a_reply_started_before_the_speech_end_is_not_the_turn_reply() {
        let t0 = Instant::now();
        let mut core = SessionCore::new(plan(t0, 1), t0);
        run_frames(&mut core, t0, t0 + MS(100));
        core.on_event(t0 + MS(100), &delta("early", 20));
        run_frames(&mut core, t0 + MS(100), t0 + MS(300));
        core.on_event(t0 + MS(400), &delta("early", 20));
        core.on_event(t0 + MS(900), &delta("real", 20));
        core.on_event(
            t0 + MS(950),
            &json!({"type": "response.done", "response": {"id": "early", "status": "cancelled"}}),
        );
        assert!(!core.is_finished());
        core.on_event(
            t0 + MS(960),
            &json!({"type": "response.done", "response": {"id": "real", "status": "completed"}}),
        );
        let (turns, _) = core.into_records();
        assert_eq!(turns[0].response_id.as_deref(), Some("real"));
        assert_eq!(turns[0].ttfb_ms, Some(780.0));
        assert_eq!(turns[0].early_replies, 1);
        assert!(turns[0].cut_in);
    }

    #[test]
    fn a_commit_or_response_before_the_speech_end_is_a_cut_in_even_without_audio() {
        for early in ["input_audio_buffer.committed", "response.created"] {
            let t0 = Instant::now();
            let mut core = SessionCore::new(plan(t0, 1), t0);
            run_frames(&mut core, t0, t0 + MS(100));
            core.on_event(t0 + MS(100), &json!({"type": early}));
            run_frames(&mut core, t0 + MS(100), t0 + MS(300));
            core.on_event(t0 + MS(900), &delta("real", 20));
            core.on_event(
                t0 + MS(960),
                &json!({"type": "response.done", "response": {"id": "real", "status": "completed"}}),
            );
            let (turns, _) = core.into_records();
            assert!(turns[0].cut_in, "{early}");
            assert_eq!(turns[0].early_replies, 0);
        }
        // A reply after the speech end is not.
        let t0 = Instant::now();
        let mut core = SessionCore::new(plan(t0, 1), t0);
        run_frames(&mut core, t0, t0 + MS(300));
        core.on_event(t0 + MS(900), &json!({"type": "response.created"}));
        core.on_event(t0 + MS(900), &delta("real", 20));
        core.on_event(
            t0 + MS(960),
            &json!({"type": "response.done", "response": {"id": "real", "status": "completed"}}),
        );
        let (turns, _) = core.into_records();
        assert!(!turns[0].cut_in);
    }

    #[test]
    fn a_turn_without_reply_times_out_and_the_next_turn_starts() {
        let t0 = Instant::now();
        let mut core = SessionCore::new(plan(t0, 2), t0);
        core.on_event(
            t0 + MS(10),
            &json!({"type": "error", "error": {"message": "boom"}}),
        );
        // Speech end at 120 ms, timeout 2 s later, gap 100 ms, second clip starts ~2.24 s.
        let speech = run_frames(&mut core, t0, t0 + MS(2400));
        assert!(speech >= 11, "{speech}");
        core.on_closed(t0 + MS(2400), ErrorKind::Closed, "gone".into());
        assert!(core.is_finished());
        assert_eq!(core.next_frame(t0 + MS(2420)), None);
        let (turns, errors) = core.into_records();
        assert_eq!(turns.len(), 2);
        assert!(
            turns[0]
                .error
                .as_deref()
                .unwrap()
                .contains("no reply audio")
        );
        assert_eq!(turns[1].error.as_deref(), Some("gone"));
        let kinds: Vec<_> = errors.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [ErrorKind::Server, ErrorKind::Timeout, ErrorKind::Closed]
        );
    }

    #[test]
    fn a_barge_in_speaks_the_next_clip_over_the_reply_and_ignores_the_rest_of_it() {
        let t0 = Instant::now();
        let mut p = plan(t0, 2);
        p.endings = vec![TurnEnding::BargedIn];
        let mut core = SessionCore::new(p, t0);
        // The first clip's speech ends in the frame sent at 120 ms.
        run_frames(&mut core, t0, t0 + MS(300));
        core.on_event(t0 + MS(500), &delta("r1", 2000));
        assert_eq!(core.next_frame(t0 + MS(1980)), Some(Frame::Silence));
        // 1.5 s after the reply's first audio the caller speaks the next clip over it.
        assert!(matches!(
            core.next_frame(t0 + MS(2000)),
            Some(Frame::Speech(_))
        ));
        // What is still in flight of the first reply is no part of the second turn.
        core.on_event(t0 + MS(2010), &delta("r1", 100));
        core.on_event(
            t0 + MS(2020),
            &json!({"type": "response.done", "response": {"id": "r1", "status": "cancelled"}}),
        );
        run_frames(&mut core, t0 + MS(2020), t0 + MS(2300));
        core.on_event(t0 + MS(2600), &delta("r2", 100));
        core.on_event(
            t0 + MS(2700),
            &json!({"type": "response.done", "response": {"id": "r2", "status": "completed"}}),
        );
        let (turns, errors) = core.into_records();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[0].ending, TurnEnding::BargedIn);
        assert_eq!(turns[0].ttfb_ms, Some(380.0));
        assert!(turns[0].error.is_none());
        // The second clip's speech ended in the frame sent at 2080 ms.
        assert_eq!(turns[1].ending, TurnEnding::Listened);
        assert_eq!(turns[1].response_id.as_deref(), Some("r2"));
        assert_eq!(turns[1].ttfb_ms, Some(520.0));
        assert!(!turns[1].cut_in);
        assert_eq!(turns[1].early_replies, 0);
    }

    #[test]
    fn a_hang_up_ends_the_session_in_the_middle_of_the_reply() {
        // A barge-in planned on the last turn has no clip to speak: it hangs up instead.
        for planned in [TurnEnding::HungUp, TurnEnding::BargedIn] {
            let t0 = Instant::now();
            let mut p = plan(t0, if planned == TurnEnding::HungUp { 2 } else { 1 });
            p.endings = vec![planned];
            let mut core = SessionCore::new(p, t0);
            run_frames(&mut core, t0, t0 + MS(300));
            core.on_event(t0 + MS(500), &delta("r1", 2000));
            assert_eq!(core.next_frame(t0 + MS(1980)), Some(Frame::Silence));
            assert_eq!(core.next_frame(t0 + MS(2000)), None, "{planned:?}");
            assert!(core.is_finished());
            let (turns, errors) = core.into_records();
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(turns.len(), 1);
            assert_eq!(turns[0].ending, TurnEnding::HungUp);
            assert!(turns[0].got_audio() && turns[0].error.is_none());
        }
    }

    #[test]
    fn a_reply_done_but_still_playing_is_churned_at_the_churn_point() {
        // 3 s of reply audio, all of it written by 600 ms: it plays until ~3.5 s.
        for (planned, frame_at_2000) in
            [(TurnEnding::HungUp, None), (TurnEnding::BargedIn, Some(()))]
        {
            let t0 = Instant::now();
            let mut p = plan(t0, 2);
            p.endings = vec![planned];
            let mut core = SessionCore::new(p, t0);
            run_frames(&mut core, t0, t0 + MS(300));
            core.on_event(t0 + MS(500), &delta("r1", 3000));
            core.on_event(
                t0 + MS(600),
                &json!({"type": "response.done", "response": {"id": "r1", "status": "completed"}}),
            );
            assert_eq!(core.next_frame(t0 + MS(1980)), Some(Frame::Silence));
            let frame = core.next_frame(t0 + MS(2000));
            assert_eq!(frame.is_some(), frame_at_2000.is_some(), "{planned:?}");
            assert!(!matches!(frame, Some(Frame::Silence)), "{planned:?}");
            let (turns, _) = core.into_records();
            assert_eq!(turns[0].ending, planned);
            assert_eq!(turns[0].reply_status.as_deref(), Some("completed"));
        }
        // A reply that has finished playing by then is simply listened to.
        let t0 = Instant::now();
        let mut p = plan(t0, 2);
        p.endings = vec![TurnEnding::HungUp];
        let mut core = SessionCore::new(p, t0);
        run_frames(&mut core, t0, t0 + MS(300));
        core.on_event(t0 + MS(500), &delta("r1", 100));
        core.on_event(
            t0 + MS(600),
            &json!({"type": "response.done", "response": {"id": "r1", "status": "completed"}}),
        );
        assert!(matches!(
            core.next_frame(t0 + MS(2000)),
            Some(Frame::Speech(_))
        ));
        let (turns, _) = core.into_records();
        assert_eq!(turns[0].ending, TurnEnding::Listened);
    }

    #[test]
    fn no_turn_starts_after_the_duration_bound() {
        let t0 = Instant::now();
        let mut p = plan(t0, 5);
        p.no_turns_after = t0 + MS(10);
        let mut core = SessionCore::new(p, t0);
        assert_eq!(core.next_frame(t0), Some(Frame::Silence));
        assert_eq!(core.next_frame(t0 + MS(40)), None);
        assert!(core.into_records().0.is_empty());
    }
}
