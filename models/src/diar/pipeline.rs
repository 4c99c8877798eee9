//! A whole recording through the online path, frame by frame, as a live session would feed it:
//! energy speech mask -> [`OnlineDiarizer`] -> each window embedded as soon as it is cut.

use super::online::{LabelChange, OnlineConfig, OnlineDiarizer, Segment};
use super::speech::{EnergyVadConfig, FRAME_SAMPLES, speech_mask};
use super::{DiarError, SpeakerEmbedder};

#[derive(Debug, Clone, PartialEq)]
pub struct Diarization {
    pub segments: Vec<Segment>,
    /// Every label decision in the order made (first labels and bounded re-labels).
    pub changes: Vec<LabelChange>,
    pub num_speakers: usize,
}

/// Diarizes 16 kHz mono samples in [-1, 1] with the energy speech mask.
pub fn diarize(
    embedder: &mut SpeakerEmbedder,
    samples: &[f32],
    vad: &EnergyVadConfig,
    cfg: OnlineConfig,
) -> Result<Diarization, DiarError> {
    diarize_with_mask(embedder, samples, &speech_mask(samples, vad), cfg)
}

/// Diarizes with a given speech mask (one bool per 10 ms frame, e.g. from Silero VAD).
pub fn diarize_with_mask(
    embedder: &mut SpeakerEmbedder,
    samples: &[f32],
    mask: &[bool],
    cfg: OnlineConfig,
) -> Result<Diarization, DiarError> {
    let mut online = OnlineDiarizer::new(cfg);
    let mut changes = Vec::new();
    for (frame, speech) in samples.chunks(FRAME_SAMPLES).zip(mask) {
        online.push_frame(frame, *speech);
        drain(&mut online, embedder, &mut changes)?;
    }
    online.finish();
    drain(&mut online, embedder, &mut changes)?;
    Ok(Diarization {
        segments: online.segments(),
        changes,
        num_speakers: online.num_speakers(),
    })
}

fn drain(
    online: &mut OnlineDiarizer,
    embedder: &mut SpeakerEmbedder,
    changes: &mut Vec<LabelChange>,
) -> Result<(), DiarError> {
    while let Some(job) = online.poll_job() {
        let emb = embedder.embed(&[&job.samples])?;
        if let Some(e) = emb.first() {
            online.handle_embedding(job.id, e);
        }
        changes.extend(std::iter::from_fn(|| online.poll_change()));
    }
    Ok(())
}
