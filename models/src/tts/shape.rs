//! Makes independently synthesized chunks join without clicks or odd gaps: each chunk's own
//! leading and trailing silence is trimmed the same way, its edges get short raised-cosine
//! fades, and a pause chosen by the chunk's final punctuation is appended.

/// Level below which a sample counts as silence, relative to the chunk's peak.
const SILENCE_RELATIVE: f32 = 0.01;
/// Absolute floor for the silence level (quiet chunks).
const SILENCE_FLOOR: f32 = 2e-3;
/// Kept before the first loud sample, so soft onsets ("h", "f") survive.
const KEEP_BEFORE_MS: u32 = 30;
/// Kept after the last loud sample, so decays are not cut.
const KEEP_AFTER_MS: u32 = 30;
const FADE_IN_MS: u32 = 3;
const FADE_OUT_MS: u32 = 10;

/// The pause after a chunk, by how its text ends.
pub fn pause_ms(text: &str) -> u32 {
    let end = text.trim_end_matches(['"', '\'', ')', '”', '’']);
    match end.chars().last() {
        Some('.' | '!' | '?' | '…') => 280,
        Some(',' | ';' | ':' | '—' | '–') => 160,
        _ => 40, // cut mid-clause by the word cap: keep the flow
    }
}

/// Trims, fades and pads `audio` in place; returns the number of speech samples before the pause.
pub fn shape_chunk(audio: &mut Vec<f32>, sample_rate: u32, pause_ms: u32) -> usize {
    let ms = |m: u32| (sample_rate as usize * m as usize) / 1000;
    let peak = audio.iter().fold(0f32, |m, x| m.max(x.abs()));
    let threshold = (peak * SILENCE_RELATIVE).max(SILENCE_FLOOR);
    let first = audio.iter().position(|x| x.abs() > threshold);
    let last = audio.iter().rposition(|x| x.abs() > threshold);
    let (Some(first), Some(last)) = (first, last) else {
        audio.clear();
        audio.resize(ms(pause_ms), 0.0);
        return 0;
    };
    let start = first.saturating_sub(ms(KEEP_BEFORE_MS));
    let end = (last + 1 + ms(KEEP_AFTER_MS)).min(audio.len());
    audio.truncate(end);
    audio.drain(..start);
    let speech = audio.len();
    fade(&mut audio[..], ms(FADE_IN_MS), true);
    fade(&mut audio[..], ms(FADE_OUT_MS), false);
    audio.resize(speech + ms(pause_ms), 0.0);
    speech
}

/// Raised-cosine fade over `len` samples at the start (`rising`) or end of `audio`.
fn fade(audio: &mut [f32], len: usize, rising: bool) {
    let len = len.min(audio.len());
    let total = audio.len();
    for k in 0..len {
        let gain = 0.5 - 0.5 * (std::f32::consts::PI * (k as f32 + 0.5) / len as f32).cos();
        let index = if rising { k } else { total - 1 - k };
        audio[index] *= gain;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_fades_and_pads() {
        let rate = 1000;
        let mut audio = vec![0.0; 200];
        audio.extend((0..300).map(|i| (i as f32 * 0.3).sin() * 0.5));
        audio.extend(vec![0.0; 200]);
        let speech = shape_chunk(&mut audio, rate, 100);
        // 30 ms kept before, 300 of speech (last loud sample may be a little earlier), 30 after.
        assert!((345..=360).contains(&speech), "{speech}");
        assert_eq!(audio.len(), speech + 100);
        assert!(audio[0].abs() < 1e-3 && audio[speech - 1].abs() < 0.1);
        assert!(audio[speech..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn silent_chunk_becomes_pause() {
        let mut audio = vec![0.0; 500];
        assert_eq!(shape_chunk(&mut audio, 1000, 50), 0);
        assert_eq!(audio.len(), 50);
    }

    #[test]
    fn pause_follows_punctuation() {
        assert!(pause_ms("Hello there.") > pause_ms("Hello there,"));
        assert!(pause_ms("Hello there,") > pause_ms("Hello there"));
    }
}
