//! Kaldi-compatible log-mel filterbank features ("fbank"), as speaker models such as CAM++ were
//! trained on: povey window, pre-emphasis, DC removal, power spectrum, triangular mel bins on
//! Kaldi's mel scale, natural log with an energy floor, `snip_edges = true` framing.
//!
//! The defaults match `torchaudio.compliance.kaldi.fbank(wave, num_mel_bins=80, dither=0)` at
//! 16 kHz. Samples are used as given (the caller picks the scale; 3D-Speaker feeds [-1, 1]).

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// Settings of the front end; `Default` is the 80-bin 16 kHz setup CAM++ expects.
#[derive(Debug, Clone, PartialEq)]
pub struct FbankConfig {
    pub sample_rate: u32,
    pub num_mel_bins: usize,
    pub frame_length_ms: f32,
    pub frame_shift_ms: f32,
    pub preemphasis: f32,
    /// Lowest mel-bin edge in Hz.
    pub low_freq: f32,
    /// Highest mel-bin edge in Hz; `<= 0` counts back from Nyquist (Kaldi's convention).
    pub high_freq: f32,
    pub remove_dc_offset: bool,
}

impl Default for FbankConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            num_mel_bins: 80,
            frame_length_ms: 25.0,
            frame_shift_ms: 10.0,
            preemphasis: 0.97,
            low_freq: 20.0,
            high_freq: 0.0,
            remove_dc_offset: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FbankError {
    #[error("bad fbank config: {0}")]
    Config(String),
}

/// A reusable fbank extractor: window, mel matrix and FFT plan computed once.
pub struct Fbank {
    config: FbankConfig,
    frame_len: usize,
    frame_shift: usize,
    window: Vec<f32>,
    /// Per mel bin: first FFT bin with non-zero weight, and the weights from there on.
    mel_bins: Vec<(usize, Vec<f32>)>,
    fft: Arc<dyn RealToComplex<f32>>,
    fft_in: Vec<f32>,
    fft_out: Vec<Complex<f32>>,
    fft_scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
}

impl std::fmt::Debug for Fbank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fbank")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Kaldi's mel scale.
fn mel(hz: f64) -> f64 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

impl Fbank {
    pub fn new(config: FbankConfig) -> Result<Self, FbankError> {
        let sr = config.sample_rate as f64;
        let frame_len = (sr * config.frame_length_ms as f64 / 1000.0).round() as usize;
        let frame_shift = (sr * config.frame_shift_ms as f64 / 1000.0).round() as usize;
        if frame_len < 2 || frame_shift == 0 || config.num_mel_bins == 0 {
            return Err(FbankError::Config(format!(
                "frame length {frame_len}, shift {frame_shift}, {} mel bins",
                config.num_mel_bins
            )));
        }
        let nyquist = sr / 2.0;
        let high = if config.high_freq <= 0.0 {
            nyquist + config.high_freq as f64
        } else {
            config.high_freq as f64
        };
        let low = config.low_freq as f64;
        if !(0.0 <= low && low < high && high <= nyquist) {
            return Err(FbankError::Config(format!(
                "mel range {low}..{high} Hz outside 0..{nyquist} Hz"
            )));
        }
        let padded = frame_len.next_power_of_two();
        // Povey window: a Hann window raised to 0.85 (Kaldi's default).
        let window = (0..frame_len)
            .map(|n| {
                let a = 2.0 * std::f64::consts::PI / (frame_len - 1) as f64;
                (0.5 - 0.5 * (a * n as f64).cos()).powf(0.85) as f32
            })
            .collect();
        // Triangles on the mel axis; the Nyquist bin always gets weight 0, as in Kaldi.
        let half = padded / 2;
        let bin_hz = sr / padded as f64;
        let (mel_low, mel_high) = (mel(low), mel(high));
        let delta = (mel_high - mel_low) / (config.num_mel_bins + 1) as f64;
        let mel_bins = (0..config.num_mel_bins)
            .map(|m| {
                let left = mel_low + m as f64 * delta;
                let center = left + delta;
                let right = center + delta;
                let weights: Vec<f32> = (0..half)
                    .map(|k| {
                        let f = mel(k as f64 * bin_hz);
                        let up = (f - left) / (center - left);
                        let down = (right - f) / (right - center);
                        up.min(down).max(0.0) as f32
                    })
                    .collect();
                let first = weights.iter().position(|&w| w > 0.0).unwrap_or(0);
                let last = weights
                    .iter()
                    .rposition(|&w| w > 0.0)
                    .map_or(first, |l| l + 1);
                (first, weights[first..last].to_vec())
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(padded);
        let fft_in = fft.make_input_vec();
        let fft_out = fft.make_output_vec();
        let fft_scratch = fft.make_scratch_vec();
        Ok(Self {
            config,
            frame_len,
            frame_shift,
            window,
            mel_bins,
            fft,
            fft_in,
            fft_out,
            fft_scratch,
            power: vec![0.0; half + 1],
        })
    }

    pub fn config(&self) -> &FbankConfig {
        &self.config
    }

    pub fn num_bins(&self) -> usize {
        self.config.num_mel_bins
    }

    /// Samples per frame (400 at 16 kHz).
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Samples between frame starts (160 at 16 kHz).
    pub fn frame_shift(&self) -> usize {
        self.frame_shift
    }

    /// The analysis window (`frame_len` values) and the mel weights as a dense
    /// `[num_bins][fft_len / 2]` matrix: what a GPU twin of [`Self::compute_frame`] needs.
    pub fn tables(&self) -> (&[f32], Vec<f32>) {
        let half = self.power.len() - 1;
        let mut dense = vec![0.0; self.num_bins() * half];
        for (row, (first, weights)) in dense.chunks_exact_mut(half).zip(&self.mel_bins) {
            row[*first..*first + weights.len()].copy_from_slice(weights);
        }
        (&self.window, dense)
    }

    /// FFT length (the frame length rounded up to a power of two).
    pub fn fft_len(&self) -> usize {
        2 * (self.power.len() - 1)
    }

    /// Frames `snip_edges = true` yields for `num_samples` samples (0 if shorter than a frame).
    pub fn num_frames(&self, num_samples: usize) -> usize {
        if num_samples < self.frame_len {
            0
        } else {
            1 + (num_samples - self.frame_len) / self.frame_shift
        }
    }

    /// Features of all whole frames of `samples`, row-major `[frames][num_bins]`.
    pub fn compute(&mut self, samples: &[f32]) -> Vec<f32> {
        let frames = self.num_frames(samples.len());
        let bins = self.num_bins();
        let mut out = vec![0.0; frames * bins];
        for (i, row) in out.chunks_exact_mut(bins).enumerate() {
            let start = i * self.frame_shift;
            self.compute_frame(&samples[start..start + self.frame_len], row);
        }
        out
    }

    /// One frame (`frame_len` samples) into `out` (`num_bins` values).
    ///
    /// # Panics
    /// If the slice lengths differ from `frame_len()` / `num_bins()` (a caller bug).
    pub fn compute_frame(&mut self, frame: &[f32], out: &mut [f32]) {
        assert_eq!(frame.len(), self.frame_len, "frame length");
        assert_eq!(out.len(), self.num_bins(), "output length");
        let n = self.frame_len;
        let buf = &mut self.fft_in;
        buf[..n].copy_from_slice(frame);
        buf[n..].fill(0.0);
        if self.config.remove_dc_offset {
            let mean = buf[..n].iter().map(|&x| x as f64).sum::<f64>() / n as f64;
            buf[..n].iter_mut().for_each(|x| *x -= mean as f32);
        }
        let p = self.config.preemphasis;
        if p != 0.0 {
            for i in (1..n).rev() {
                buf[i] -= p * buf[i - 1];
            }
            buf[0] -= p * buf[0];
        }
        for (x, w) in buf[..n].iter_mut().zip(&self.window) {
            *x *= w;
        }
        // Lengths come from the plan itself, so the transform cannot fail.
        self.fft
            .process_with_scratch(buf, &mut self.fft_out, &mut self.fft_scratch)
            .expect("buffers were made by this plan");
        for (p, c) in self.power.iter_mut().zip(&self.fft_out) {
            *p = c.norm_sqr();
        }
        for (o, (first, weights)) in out.iter_mut().zip(&self.mel_bins) {
            let energy: f32 = weights
                .iter()
                .zip(&self.power[*first..])
                .map(|(w, p)| w * p)
                .sum();
            *o = energy.max(f32::EPSILON).ln();
        }
    }
}

/// Subtracts each bin's mean over time (CAM++'s input normalisation); `feats` is row-major.
pub fn subtract_mean(feats: &mut [f32], num_bins: usize) {
    if num_bins == 0 || feats.len() < num_bins {
        return;
    }
    let frames = feats.len() / num_bins;
    let mut mean = vec![0.0f64; num_bins];
    for row in feats.chunks_exact(num_bins) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64;
        }
    }
    for row in feats.chunks_exact_mut(num_bins) {
        for (x, m) in row.iter_mut().zip(&mean) {
            *x -= (*m / frames as f64) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_counts_follow_snip_edges() {
        let fb = Fbank::new(FbankConfig::default()).unwrap();
        assert_eq!((fb.frame_len(), fb.frame_shift()), (400, 160));
        assert_eq!(fb.num_frames(399), 0);
        assert_eq!(fb.num_frames(400), 1);
        assert_eq!(fb.num_frames(559), 1);
        assert_eq!(fb.num_frames(560), 2);
        assert_eq!(fb.num_frames(16_000), 98);
    }

    #[test]
    fn silence_hits_the_energy_floor() {
        let mut fb = Fbank::new(FbankConfig::default()).unwrap();
        let feats = fb.compute(&vec![0.0; 800]);
        assert!(feats.iter().all(|&v| v == f32::EPSILON.ln()));
    }

    #[test]
    fn a_tone_peaks_in_its_mel_bin() {
        let mut fb = Fbank::new(FbankConfig::default()).unwrap();
        let tone: Vec<f32> = (0..4000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let feats = fb.compute(&tone);
        let row = &feats[..80];
        let peak = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        // Centre of bin m: mel(20) + (m + 1) * (mel(8000) - mel(20)) / 81; mel(1 kHz) ~ 1000 -> m ~ 27.
        assert!((26..=28).contains(&peak), "peak at bin {peak}");
    }

    #[test]
    fn bad_configs_are_refused() {
        let cfg = FbankConfig {
            low_freq: 9000.0,
            ..FbankConfig::default()
        };
        assert!(matches!(Fbank::new(cfg), Err(FbankError::Config(_))));
        let cfg = FbankConfig {
            num_mel_bins: 0,
            ..FbankConfig::default()
        };
        assert!(Fbank::new(cfg).is_err());
    }

    #[test]
    fn mean_subtraction_zeroes_each_bin() {
        let mut feats = vec![1.0, 10.0, 3.0, 20.0];
        subtract_mean(&mut feats, 2);
        assert_eq!(feats, vec![-1.0, -5.0, 1.0, 5.0]);
    }
}
