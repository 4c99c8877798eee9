//! Speech masks, one bool per 10 ms frame: energy based (10 ms frames above a level threshold),
//! or from Silero VAD; both smoothed with a hangover that bridges short gaps inside a turn and a
//! minimum run that drops clicks.

use crate::vad::silero::FRAME_SAMPLES as SILERO_CHUNK;
use crate::vad::{SileroState, SileroVad, VadError};

/// Samples per decision frame at 16 kHz (10 ms).
pub const FRAME_SAMPLES: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyVadConfig {
    /// Frames whose RMS is at least this many dB below full scale are silence.
    pub threshold_dbfs: f32,
    /// Frames of silence still counted as speech after speech (bridges pauses between words).
    pub hangover_frames: usize,
    /// A burst shorter than this many frames is not speech.
    pub min_speech_frames: usize,
}

impl Default for EnergyVadConfig {
    fn default() -> Self {
        Self {
            threshold_dbfs: -45.0,
            hangover_frames: 20,
            min_speech_frames: 5,
        }
    }
}

/// Per-frame speech decisions for a whole signal (16 kHz, [-1, 1]); one bool per 10 ms frame.
pub fn speech_mask(samples: &[f32], cfg: &EnergyVadConfig) -> Vec<bool> {
    let level: Vec<bool> = samples
        .chunks(FRAME_SAMPLES)
        .map(|f| {
            let rms = (f.iter().map(|x| x * x).sum::<f32>() / f.len() as f32).sqrt();
            20.0 * rms.max(1e-10).log10() >= cfg.threshold_dbfs
        })
        .collect();
    smooth(&level, cfg)
}

/// The same mask from Silero VAD: each 32 ms Silero chunk with speech probability at least
/// `threshold` marks the 10 ms frames starting inside it; then the same minimum-run and
/// hangover smoothing as the energy mask.
pub fn silero_mask(
    vad: &mut SileroVad,
    samples: &[f32],
    threshold: f32,
    cfg: &EnergyVadConfig,
) -> Result<Vec<bool>, VadError> {
    let frames = samples.len().div_ceil(FRAME_SAMPLES);
    let mut level = vec![false; frames];
    let mut state = SileroState::default();
    let mut chunk = [0.0f32; SILERO_CHUNK];
    for (i, part) in samples.chunks(SILERO_CHUNK).enumerate() {
        chunk[..part.len()].copy_from_slice(part);
        chunk[part.len()..].fill(0.0);
        let prob = vad.step(&mut [(&mut state, &chunk[..])])?;
        if prob.first().is_some_and(|&p| p >= threshold) {
            let (a, b) = (i * SILERO_CHUNK, i * SILERO_CHUNK + part.len());
            let first = a.div_ceil(FRAME_SAMPLES);
            let last = b.div_ceil(FRAME_SAMPLES).min(frames);
            level[first.min(frames)..last].fill(true);
        }
    }
    Ok(smooth(&level, cfg))
}

fn smooth(level: &[bool], cfg: &EnergyVadConfig) -> Vec<bool> {
    // Drop bursts shorter than the minimum, then extend the rest by the hangover.
    let mut mask = level.to_vec();
    let mut i = 0;
    while i < level.len() {
        if level[i] {
            let end = i + level[i..].iter().take_while(|&&v| v).count();
            if end - i < cfg.min_speech_frames {
                mask[i..end].fill(false);
            } else {
                let tail = (end + cfg.hangover_frames).min(level.len());
                mask[end..tail].fill(true);
            }
            i = end;
        } else {
            i += 1;
        }
    }
    mask
}

/// Speech regions `[start, end)` in frames from a mask.
pub fn regions(mask: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &s) in mask.iter().enumerate() {
        match (s, start) {
            (true, None) => start = Some(i),
            (false, Some(b)) => {
                out.push((b, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(b) = start {
        out.push((b, mask.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_bursts_are_found_and_clicks_dropped() {
        let mut x = vec![0.0f32; 16_000];
        for (i, v) in x[3200..8000].iter_mut().enumerate() {
            *v = 0.1 * (i as f32 * 0.2).sin();
        }
        x[12_000] = 0.9; // a click: one frame
        let mask = speech_mask(&x, &EnergyVadConfig::default());
        assert_eq!(regions(&mask), vec![(20, 70)]);
    }
}
