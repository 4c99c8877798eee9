//! Aggregates of one step's turns: the figures a run is judged by.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::{ErrorRecord, SERVER_STAGES, TurnRecord};
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
    pub ttfb_ms: Distribution,
    pub vad_stopped_ms: Distribution,
    pub asr_final_ms: Distribution,
    pub reply_audio_ms: Distribution,
    /// The server's `antiphon.turn.latency` stages, where it sent them (ours does).
    pub server_ms: BTreeMap<String, Distribution>,
}

pub fn summarize(turns: &[TurnRecord], errors: &[ErrorRecord]) -> StepSummary {
    let dist = |f: &dyn Fn(&TurnRecord) -> Option<f64>| {
        Recorder::record_all(turns.iter().filter_map(f)).distribution()
    };
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
        ttfb_ms: dist(&|t| t.ttfb_ms),
        vad_stopped_ms: dist(&|t| t.vad_stopped_ms),
        asr_final_ms: dist(&|t| t.asr_final_ms),
        reply_audio_ms: dist(&|t| t.got_audio().then_some(t.reply_audio_ms)),
        server_ms,
    }
}
