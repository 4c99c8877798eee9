//! Windowed-sinc resampling to 16 kHz for inputs at other rates (TTS voices, WAV files).

/// Resamples mono `x` from `from` Hz to `to` Hz with a Hann-windowed sinc low-pass at 0.95 of
/// the lower Nyquist. Quality is ample for speaker embeddings; it is not a mastering resampler.
pub fn resample(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || x.is_empty() {
        return x.to_vec();
    }
    let ratio = from as f64 / to as f64;
    let cutoff = 0.95 * (1.0f64).min(1.0 / ratio); // in units of the input Nyquist
    let half_taps = (16.0 / cutoff).ceil() as isize;
    let n_out = ((x.len() as f64) / ratio).floor() as usize;
    (0..n_out)
        .map(|n| {
            let t = n as f64 * ratio;
            let centre = t.floor() as isize;
            let mut acc = 0.0f64;
            for k in (centre - half_taps + 1)..=(centre + half_taps) {
                if k < 0 || k as usize >= x.len() {
                    continue;
                }
                let d = t - k as f64;
                let arg = std::f64::consts::PI * cutoff * d;
                let sinc = if d.abs() < 1e-9 { 1.0 } else { arg.sin() / arg };
                let w = 0.5 + 0.5 * (std::f64::consts::PI * d / half_taps as f64).cos();
                acc += x[k as usize] as f64 * cutoff * sinc * w;
            }
            acc as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_keeps_its_frequency_and_level() {
        let x: Vec<f32> = (0..24_000)
            .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 24_000.0).sin())
            .collect();
        let y = resample(&x, 24_000, 16_000);
        assert_eq!(y.len(), 16_000);
        for (i, v) in y.iter().enumerate().skip(200).take(15_000) {
            let want = (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin();
            assert!((v - want).abs() < 0.01, "sample {i}: {v} vs {want}");
        }
    }
}
