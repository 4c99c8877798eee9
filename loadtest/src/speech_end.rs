//! Where speech really ends in a WAV file, judged from the audio itself.
//!
//! TTFB in a load test must count from the true end of the caller's speech, not from the
//! server's VAD decision (which is part of what is being measured). The end is the last 10 ms
//! frame whose energy is within `floor_db` of the loudest frame; trailing silence after it is
//! what the caller "waits" through.

/// Analysis frame length.
const FRAME_MS: usize = 10;

/// Default threshold below the loudest frame, in dB, under which a frame counts as silence.
/// 35 dB sits above the noise floor of read-speech recordings and below soft word endings.
pub const DEFAULT_FLOOR_DB: f32 = 35.0;

/// Speech extent of a clip, in milliseconds from its first sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeechExtent {
    pub start_ms: u64,
    pub end_ms: u64,
    pub duration_ms: u64,
}

/// Finds the first and last frames whose RMS is within `floor_db` of the loudest frame.
/// Returns `None` for empty or all-silent audio (nothing is ever "spoken" there).
pub fn speech_extent(samples: &[f32], sample_rate: u32, floor_db: f32) -> Option<SpeechExtent> {
    let frame = (sample_rate as usize * FRAME_MS / 1000).max(1);
    let energies: Vec<f32> = samples
        .chunks(frame)
        .map(|c| c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32)
        .collect();
    let loudest = energies.iter().copied().fold(0.0f32, f32::max);
    if loudest <= f32::EPSILON {
        return None;
    }
    let threshold = loudest * 10f32.powf(-floor_db / 10.0);
    let first = energies.iter().position(|&e| e >= threshold)?;
    let last = energies.iter().rposition(|&e| e >= threshold)?;
    let end_sample = ((last + 1) * frame).min(samples.len());
    let to_ms = |n: usize| (n as u64 * 1000) / u64::from(sample_rate);
    Some(SpeechExtent {
        start_ms: to_ms(first * frame),
        end_ms: to_ms(end_sample),
        duration_ms: to_ms(samples.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: usize, rate: u32, amp: f32) -> Vec<f32> {
        let n = rate as usize * ms / 1000;
        (0..n)
            .map(|i| amp * (i as f32 * 2.0 * std::f32::consts::PI * 300.0 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn finds_end_of_tone_before_trailing_silence_and_noise() {
        let rate = 16_000;
        let mut audio = vec![0.0; 16 * 250];
        audio.extend(tone(1200, rate, 0.5));
        // Quiet tail (-60 dB) must count as silence.
        audio.extend(tone(800, rate, 0.0005));
        let ext = speech_extent(&audio, rate, DEFAULT_FLOOR_DB).expect("speech present");
        assert_eq!(ext.start_ms, 250);
        assert_eq!(ext.end_ms, 1450);
        assert_eq!(ext.duration_ms, 2250);
    }

    #[test]
    fn silence_has_no_speech() {
        assert_eq!(speech_extent(&[0.0; 8000], 8000, DEFAULT_FLOOR_DB), None);
        assert_eq!(speech_extent(&[], 8000, DEFAULT_FLOOR_DB), None);
    }
}
