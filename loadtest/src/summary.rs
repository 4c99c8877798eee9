//! Aggregates of one step's turns: the figures a run is judged by.

use std::collections::BTreeMap;

use antiphon_models::asr::wer::WerTally;
use serde::Serialize;

use crate::record::{ErrorRecord, SERVER_STAGES, TurnEnding, TurnRecord};
use crate::stats::{Distribution, Recorder};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepSummary {
    pub turns: usize,
    pub turns_with_audio: usize,
    pub errors: usize,
    pub underruns: u64,
    pub turns_with_underruns: usize,
    pub early_replies: u64,
    /// Turns the server answered before their speech ended (see `TurnRecord::cut_in`).
    pub cut_ins: usize,
    /// Turns the caller cut short on purpose (churn): spoke over the reply, hung up on it.
    pub barged_in: usize,
    pub hung_up: usize,
    pub ttfb_ms: Distribution,
    pub vad_stopped_ms: Distribution,
    pub asr_final_ms: Distribution,
    pub reply_audio_ms: Distribution,
    /// The server's `antiphon.turn.latency` stages, where it sent them (ours does).
    pub server_ms: BTreeMap<String, Distribution>,
    /// Word error rate of the user transcripts against what the clips say, over every turn
    /// with a reference (a turn without a transcript counts as all words missed); `None`
    /// when no clip has a reference or the server sent no transcript at all.
    pub transcript_wer: Option<f64>,
}

pub fn summarize(turns: &[TurnRecord], errors: &[ErrorRecord]) -> StepSummary {
    let dist = |f: &dyn Fn(&TurnRecord) -> Option<f64>| {
        Recorder::record_all(turns.iter().filter_map(f)).distribution()
    };
    let ended = |e: TurnEnding| turns.iter().filter(|t| t.ending == e).count();
    let server_ms = SERVER_STAGES
        .iter()
        .map(|&stage| {
            let d = dist(&|t| t.server_latency.as_ref().and_then(|s| s.stage(stage)));
            (stage.to_owned(), d)
        })
        .collect();
    StepSummary {
        turns: turns.len(),
        turns_with_audio: turns.iter().filter(|t| t.got_audio()).count(),
        errors: errors.len(),
        underruns: turns.iter().map(|t| u64::from(t.underruns)).sum(),
        turns_with_underruns: turns.iter().filter(|t| t.underruns > 0).count(),
        early_replies: turns.iter().map(|t| u64::from(t.early_replies)).sum(),
        cut_ins: turns.iter().filter(|t| t.cut_in).count(),
        barged_in: ended(TurnEnding::BargedIn),
        hung_up: ended(TurnEnding::HungUp),
        ttfb_ms: dist(&|t| t.ttfb_ms),
        vad_stopped_ms: dist(&|t| t.vad_stopped_ms),
        asr_final_ms: dist(&|t| t.asr_final_ms),
        reply_audio_ms: dist(&|t| t.got_audio().then_some(t.reply_audio_ms)),
        server_ms,
        transcript_wer: transcript_wer(turns),
    }
}

fn transcript_wer(turns: &[TurnRecord]) -> Option<f64> {
    if turns.iter().all(|t| t.transcript.is_none()) {
        return None;
    }
    let mut tally = WerTally::default();
    for t in turns {
        if let Some(reference) = &t.reference {
            tally.add(reference, t.transcript.as_deref().unwrap_or(""));
        }
    }
    (tally.reference_words > 0).then(|| tally.wer())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(reference: Option<&str>, transcript: Option<&str>) -> TurnRecord {
        TurnRecord {
            session: 0,
            turn: 0,
            clip: "c".into(),
            reference: reference.map(str::to_owned),
            started_ms: 0.0,
            clip_speech_end_ms: 0,
            ttfb_ms: None,
            vad_stopped_ms: None,
            asr_final_ms: None,
            transcript: transcript.map(str::to_owned),
            response_id: None,
            reply_status: None,
            reply_done_ms: None,
            reply_audio_ms: 0.0,
            underruns: 0,
            underrun_ms: 0.0,
            early_replies: 0,
            cut_in: false,
            ending: Default::default(),
            server_latency: None,
            error: None,
        }
    }

    #[test]
    fn transcript_wer_counts_a_missing_transcript_as_every_word_missed() {
        let turns = [
            turn(Some("the cat sat down"), Some("The cat sat down.")),
            turn(Some("on the mat"), Some("on a mat")),
            // No transcript came for this turn: its four words are all missed.
            turn(Some("and then it slept"), None),
            // No reference: not counted.
            turn(None, Some("whatever")),
        ];
        let wer = transcript_wer(&turns).expect("references and transcripts");
        assert!((wer - 5.0 / 11.0).abs() < 1e-9, "{wer}");
        // Transcription off: no figure rather than 100 %.
        assert_eq!(transcript_wer(&[turn(Some("a b"), None)]), None);
    }
}
