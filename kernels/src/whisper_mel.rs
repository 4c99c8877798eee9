//! Whisper-style log-mel features of a fixed window, as Smart Turn v3 (a Whisper-tiny encoder)
//! was trained on: the waveform normalised to zero mean and unit variance, a centred STFT
//! (reflect padding, periodic Hann window of 400 samples, hop 160), power spectrum, 80 mel bins
//! on the Slaney scale with Slaney area normalisation (0–8 kHz), `log10` with a 1e-10 floor,
//! everything more than 8 below the window's maximum raised to it, then `(x + 4) / 4`.
//!
//! The STFT's last frame is dropped, so a window of `n` samples gives `n / 160` frames.
//!
//! CPU only: one window costs a few milliseconds and is computed on the engine thread that runs
//! the model; there is no GPU twin yet.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// Sample rate the features are defined for.
pub const SAMPLE_RATE: u32 = 16_000;
/// FFT size and window length in samples (25 ms).
pub const N_FFT: usize = 400;
/// Samples between frames (10 ms).
pub const HOP: usize = 160;
/// Mel bins per frame.
pub const N_MELS: usize = 80;
/// Floor applied before the logarithm.
const MEL_FLOOR: f64 = 1e-10;
/// Added to the variance when normalising the waveform.
const VARIANCE_EPS: f64 = 1e-7;
/// Dynamic range kept below the window's loudest value, in log10 units.
const DYNAMIC_RANGE: f32 = 8.0;

/// A reusable extractor: window, mel matrix and FFT plan computed once.
pub struct WhisperLogMel {
    window: Vec<f32>,
    /// Per mel bin: first FFT bin with non-zero weight, and the weights from there on.
    mel_bins: Vec<(usize, Vec<f32>)>,
    fft: Arc<dyn RealToComplex<f32>>,
    fft_in: Vec<f32>,
    fft_out: Vec<Complex<f32>>,
    fft_scratch: Vec<Complex<f32>>,
}

impl std::fmt::Debug for WhisperLogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperLogMel").finish_non_exhaustive()
    }
}

impl Default for WhisperLogMel {
    fn default() -> Self {
        Self::new()
    }
}

/// Hertz to mels on the Slaney scale: linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    if hz < 1000.0 {
        3.0 * hz / 200.0
    } else {
        15.0 + (hz / 1000.0).ln() * 27.0 / 6.4f64.ln()
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel < 15.0 {
        200.0 * mel / 3.0
    } else {
        1000.0 * ((mel - 15.0) * 6.4f64.ln() / 27.0).exp()
    }
}

/// Triangular filters with corners evenly spaced in mels between 0 Hz and Nyquist, each scaled
/// by 2 / (its width in Hz) so every filter has the same area.
fn slaney_filters() -> Vec<(usize, Vec<f32>)> {
    let bins = N_FFT / 2 + 1;
    let nyquist = f64::from(SAMPLE_RATE) / 2.0;
    let top = hz_to_mel(nyquist);
    let corners: Vec<f64> = (0..N_MELS + 2)
        .map(|i| mel_to_hz(top * i as f64 / (N_MELS + 1) as f64))
        .collect();
    let bin_hz = |k: usize| nyquist * k as f64 / (bins - 1) as f64;
    (0..N_MELS)
        .map(|m| {
            let (lo, mid, hi) = (corners[m], corners[m + 1], corners[m + 2]);
            let scale = 2.0 / (hi - lo);
            let weights: Vec<(usize, f32)> = (0..bins)
                .filter_map(|k| {
                    let f = bin_hz(k);
                    let rise = (f - lo) / (mid - lo);
                    let fall = (hi - f) / (hi - mid);
                    let w = rise.min(fall).max(0.0) * scale;
                    (w > 0.0).then_some((k, w as f32))
                })
                .collect();
            let first = weights.first().map_or(0, |&(k, _)| k);
            // Weights are contiguous: a triangle is non-zero on one run of bins.
            (first, weights.into_iter().map(|(_, w)| w).collect())
        })
        .collect()
}

impl WhisperLogMel {
    pub fn new() -> Self {
        // Periodic Hann: the symmetric window of N + 1 points without its last point.
        let window = (0..N_FFT)
            .map(|i| {
                let phase = 2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        Self {
            window,
            mel_bins: slaney_filters(),
            fft_in: fft.make_input_vec(),
            fft_out: fft.make_output_vec(),
            fft_scratch: fft.make_scratch_vec(),
            fft,
        }
    }

    /// Frames produced for a window of `samples` samples.
    pub fn num_frames(samples: usize) -> usize {
        samples / HOP
    }

    /// Features of `audio`, mel-major `[N_MELS][num_frames]` (the model's `[80, T]` layout).
    /// Audio shorter than one hop gives no frames.
    pub fn compute(&mut self, audio: &[f32]) -> Vec<f32> {
        let frames = Self::num_frames(audio.len());
        if frames == 0 {
            return Vec::new();
        }
        let signal = normalised(audio);
        let pad = N_FFT / 2;
        // Reflect padding (the edge sample itself is not repeated).
        let at = |i: isize| -> f32 {
            let n = signal.len() as isize;
            let j = if i < 0 {
                -i
            } else if i >= n {
                2 * (n - 1) - i
            } else {
                i
            };
            signal[j.clamp(0, n - 1) as usize]
        };
        let mut out = vec![0.0f32; N_MELS * frames];
        let mut power = vec![0.0f32; N_FFT / 2 + 1];
        for t in 0..frames {
            let start = (t * HOP) as isize - pad as isize;
            for (i, (x, w)) in self.fft_in.iter_mut().zip(&self.window).enumerate() {
                *x = at(start + i as isize) * w;
            }
            // Lengths come from the plan itself, so the transform cannot fail.
            self.fft
                .process_with_scratch(&mut self.fft_in, &mut self.fft_out, &mut self.fft_scratch)
                .expect("buffers were made by this plan");
            for (p, c) in power.iter_mut().zip(&self.fft_out) {
                *p = c.norm_sqr();
            }
            for (m, (first, weights)) in self.mel_bins.iter().enumerate() {
                let energy: f64 = weights
                    .iter()
                    .zip(&power[*first..])
                    .map(|(&w, &p)| f64::from(w) * f64::from(p))
                    .sum();
                out[m * frames + t] = energy.max(MEL_FLOOR).log10() as f32;
            }
        }
        let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for x in &mut out {
            *x = (x.max(max - DYNAMIC_RANGE) + 4.0) / 4.0;
        }
        out
    }
}

/// Zero mean, unit variance (over the whole window, padding included).
fn normalised(audio: &[f32]) -> Vec<f32> {
    let n = audio.len() as f64;
    let mean = audio.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = audio
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    let scale = 1.0 / (var + VARIANCE_EPS).sqrt();
    audio
        .iter()
        .map(|&x| ((f64::from(x) - mean) * scale) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_scale_round_trips_and_is_linear_below_1khz() {
        for hz in [0.0, 200.0, 999.0, 1000.0, 3000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6, "{hz}");
        }
        assert!((hz_to_mel(600.0) - 9.0).abs() < 1e-12);
    }

    #[test]
    fn every_filter_has_the_same_area_in_hz() {
        let bin_hz = 8000.0 / (N_FFT / 2) as f64;
        let filters = slaney_filters();
        assert_eq!(filters.len(), N_MELS);
        // Above the lowest few (narrower than one FFT bin), the sampled area is close to 1.
        for (first, weights) in &filters[10..] {
            let area: f64 = weights.iter().map(|&w| f64::from(w) * bin_hz).sum();
            assert!((area - 1.0).abs() < 0.1, "area {area} from bin {first}");
        }
    }

    #[test]
    fn a_tone_lights_the_mel_bin_holding_its_frequency() {
        let audio: Vec<f32> = (0..16_000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let mut mel = WhisperLogMel::new();
        let feats = mel.compute(&audio);
        let frames = WhisperLogMel::num_frames(audio.len());
        assert_eq!(frames, 100);
        assert_eq!(feats.len(), N_MELS * frames);
        let t = 50;
        let loudest = (0..N_MELS)
            .max_by(|&a, &b| feats[a * frames + t].total_cmp(&feats[b * frames + t]))
            .expect("80 bins");
        let (lo, hi) = (
            mel_to_hz(hz_to_mel(8000.0) * loudest as f64 / 81.0),
            mel_to_hz(hz_to_mel(8000.0) * (loudest + 2) as f64 / 81.0),
        );
        assert!(lo < 1000.0 && 1000.0 < hi, "bin {loudest}: {lo}..{hi} Hz");
        // The clamp keeps at most 8 log10 units of range: (max - 8 + 4) / 4 = max' - 2.
        let max = feats.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = feats.iter().copied().fold(f32::INFINITY, f32::min);
        assert!(max - min <= 2.0 + 1e-6, "{min}..{max}");
    }

    #[test]
    fn silence_does_not_produce_non_finite_values() {
        let mut mel = WhisperLogMel::new();
        let feats = mel.compute(&[0.0; 3200]);
        assert_eq!(feats.len(), N_MELS * 20);
        assert!(feats.iter().all(|x| x.is_finite()));
        assert!(mel.compute(&[0.0; 100]).is_empty());
    }
}
