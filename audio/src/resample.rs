//! Streaming sample-rate conversion (8, 16, 22.05, 24, 48 kHz and any other integer rates).
//!
//! Built on rubato's synchronous FFT resampler: the rates of a leg are fixed, and it is both the
//! fastest and the cleanest of rubato's resamplers (its anti-alias filter comes from a
//! Blackman-Harris window, better than 90 dB down in the stop band).
//!
//! **Chunking.** rubato works on fixed chunks; this wrapper buffers so callers push any number
//! of samples and get whatever output is complete. Output depends only on the total input
//! stream, never on how it was split into calls.
//!
//! **Delay.** The FFT filter has a delay of half a chunk (the default chunk is 20 ms of input,
//! so 10 ms). We trim it from the front of the output, so output sample `k` lines up with input
//! time `k / output_rate` and media time maps across the resampler without an offset. The cost
//! is that output trails input: after a call, the last [`StreamResampler::latency_input_samples`]
//! input samples (at most one chunk plus the filter delay) are still inside the resampler.
//! [`StreamResampler::flush`] pushes them out at the end of a stream. With 20 ms frames in and
//! the default chunk, every 20 ms frame in yields exactly one 20 ms frame out (the first yields
//! 10 ms), so the added latency is the 10 ms filter delay.

use std::time::Instant;

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

use crate::frame::AudioFrame;

/// Why a resampler could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    #[error("invalid sample rate {0} Hz")]
    InvalidRate(u32),
    #[error("invalid chunk length {0} ms (1..=1000)")]
    InvalidChunk(u32),
    #[error("frame at {got} Hz given to a resampler from {expected} Hz")]
    RateMismatch { expected: u32, got: u32 },
    #[error("resampler: {0}")]
    Rubato(String),
}

/// Default length of one internal chunk of input, in milliseconds.
pub const DEFAULT_CHUNK_MS: u32 = 20;

/// A stateful mono resampler for one stream.
pub struct StreamResampler {
    from: u32,
    to: u32,
    /// `None` when the rates are equal: samples pass through untouched.
    inner: Option<Fft<f32>>,
    chunk_in: usize,
    chunk_out: usize,
    /// Input waiting for a full chunk.
    pending: Vec<f32>,
    /// One chunk of rubato output.
    scratch: Vec<f32>,
    /// Output samples still to drop from the front (the filter delay).
    trim_left: usize,
    input_total: u64,
    output_total: u64,
    /// Media time (at the output rate) of the first output sample, set by the first frame.
    media_origin: Option<u64>,
}

impl StreamResampler {
    /// A resampler from `from` Hz to `to` Hz with the default 20 ms chunk.
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        Self::with_chunk_ms(from, to, DEFAULT_CHUNK_MS)
    }

    /// A resampler with about `chunk_ms` of input per internal chunk. Shorter chunks lower the
    /// delay (half a chunk) but widen the filter's transition band.
    pub fn with_chunk_ms(from: u32, to: u32, chunk_ms: u32) -> Result<Self, ResampleError> {
        for rate in [from, to] {
            if !(1_000..=384_000).contains(&rate) {
                return Err(ResampleError::InvalidRate(rate));
            }
        }
        if !(1..=1000).contains(&chunk_ms) {
            return Err(ResampleError::InvalidChunk(chunk_ms));
        }
        let (inner, chunk_in, chunk_out) = if from == to {
            (None, 0, 0)
        } else {
            let target = (from as usize * chunk_ms as usize).div_ceil(1000);
            // One FFT block per chunk (FixedSync::Both rounds the chunk up to a whole multiple
            // of the smallest block that fits the rate ratio, e.g. 147 samples at 22.05 kHz).
            let fft = Fft::<f32>::new_custom(
                from as usize,
                to as usize,
                target,
                1,
                1,
                rubato::WindowFunction::BlackmanHarris2,
                FixedSync::Both,
            )
            .map_err(|e| ResampleError::Rubato(e.to_string()))?;
            let (i, o) = (fft.input_frames_next(), fft.output_frames_next());
            (Some(fft), i, o)
        };
        let trim_left = inner.as_ref().map_or(0, |f| f.output_delay());
        Ok(Self {
            from,
            to,
            inner,
            chunk_in,
            chunk_out,
            pending: Vec::with_capacity(chunk_in * 2),
            scratch: vec![0.0; chunk_out],
            trim_left,
            input_total: 0,
            output_total: 0,
            media_origin: None,
        })
    }

    /// Input rate in Hz.
    pub fn input_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn output_rate(&self) -> u32 {
        self.to
    }

    /// Input samples per internal chunk (0 for pass-through).
    pub fn chunk_input_samples(&self) -> usize {
        self.chunk_in
    }

    /// The filter delay in output samples, trimmed from the front of the stream.
    pub fn filter_delay_output_samples(&self) -> usize {
        self.inner.as_ref().map_or(0, |f| f.output_delay())
    }

    /// Worst-case input held back after a call: one chunk less one sample waiting to fill, plus
    /// the filter delay expressed at the input rate. Zero for pass-through.
    pub fn latency_input_samples(&self) -> usize {
        if self.inner.is_none() {
            return 0;
        }
        let delay_in = (self.filter_delay_output_samples() as u64 * u64::from(self.from))
            .div_ceil(u64::from(self.to));
        self.chunk_in - 1 + delay_in as usize
    }

    /// Resamples `input`, appending every output sample that is complete to `out`; returns how
    /// many were appended.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<usize, ResampleError> {
        self.input_total += input.len() as u64;
        let Some(fft) = self.inner.as_mut() else {
            out.extend_from_slice(input);
            self.output_total += input.len() as u64;
            return Ok(input.len());
        };
        let before = out.len();
        self.pending.extend_from_slice(input);
        let mut consumed = 0;
        while self.pending.len() - consumed >= self.chunk_in {
            let chunk = &self.pending[consumed..consumed + self.chunk_in];
            run_chunk(fft, chunk, &mut self.scratch, self.chunk_in, self.chunk_out)?;
            consumed += self.chunk_in;
            let skip = self.trim_left.min(self.chunk_out);
            self.trim_left -= skip;
            out.extend_from_slice(&self.scratch[skip..]);
        }
        self.pending.drain(..consumed);
        let produced = out.len() - before;
        self.output_total += produced as u64;
        Ok(produced)
    }

    /// Ends the stream: appends the output still held inside the resampler, so that in total
    /// the stream produced `ceil(input * to / from)` samples, then resets for a new stream.
    pub fn flush(&mut self, out: &mut Vec<f32>) -> Result<usize, ResampleError> {
        let expected_total = (u128::from(self.input_total) * u128::from(self.to))
            .div_ceil(u128::from(self.from)) as u64;
        let before = out.len();
        if self.inner.is_some() {
            let zeros = vec![0.0; self.chunk_in];
            let input_total = self.input_total;
            let mut tail = Vec::new();
            while self.output_total + (tail.len() as u64) < expected_total {
                let produced = self.process(&zeros, &mut tail)?;
                // `process` already counted this output; undo so the loop sees the real total.
                self.output_total -= produced as u64;
            }
            self.input_total = input_total;
            let want = (expected_total - self.output_total) as usize;
            out.extend_from_slice(&tail[..want.min(tail.len())]);
        }
        let produced = out.len() - before;
        self.reset();
        Ok(produced)
    }

    /// Forgets all state; the next sample starts a new stream.
    pub fn reset(&mut self) {
        if let Some(fft) = self.inner.as_mut() {
            fft.reset();
            self.trim_left = fft.output_delay();
        }
        self.pending.clear();
        self.input_total = 0;
        self.output_total = 0;
        self.media_origin = None;
    }

    /// Resamples one frame of a stream. The output frame carries the input's arrival instant
    /// (the packet that completed it) and media time at the output rate, continuous across
    /// calls; it may be shorter than the input (the first one is) or empty.
    pub fn process_frame(&mut self, frame: &AudioFrame) -> Result<AudioFrame, ResampleError> {
        if frame.sample_rate != self.from {
            return Err(ResampleError::RateMismatch {
                expected: self.from,
                got: frame.sample_rate,
            });
        }
        let origin = *self
            .media_origin
            .get_or_insert_with(|| frame.start().at_rate(self.to).samples);
        let media_time = origin + self.output_total;
        let mut samples = Vec::with_capacity(self.chunk_out.max(frame.len()) * 2);
        self.process(&frame.samples, &mut samples)?;
        Ok(AudioFrame::new(samples, self.to, media_time, frame.arrival))
    }

    /// Flushes at the end of a stream of frames, stamping the tail with `arrival`.
    pub fn flush_frame(&mut self, arrival: Instant) -> Result<AudioFrame, ResampleError> {
        let media_time = self.media_origin.unwrap_or(0) + self.output_total;
        let mut samples = Vec::new();
        self.flush(&mut samples)?;
        Ok(AudioFrame::new(samples, self.to, media_time, arrival))
    }
}

fn run_chunk(
    fft: &mut Fft<f32>,
    chunk: &[f32],
    scratch: &mut [f32],
    chunk_in: usize,
    chunk_out: usize,
) -> Result<(), ResampleError> {
    let input = InterleavedSlice::new(chunk, 1, chunk_in)
        .map_err(|e| ResampleError::Rubato(e.to_string()))?;
    let mut output = InterleavedSlice::new_mut(scratch, 1, chunk_out)
        .map_err(|e| ResampleError::Rubato(e.to_string()))?;
    let (_, written) = fft
        .process_into_buffer(&input, &mut output, None)
        .map_err(|e| ResampleError::Rubato(e.to_string()))?;
    debug_assert_eq!(written, chunk_out);
    Ok(())
}

/// Resamples a whole clip in one go (trimmed and flushed: output length `ceil(n * to / from)`).
pub fn resample_clip(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ResampleError> {
    let mut r = StreamResampler::new(from, to)?;
    let mut out =
        Vec::with_capacity((input.len() as u64 * u64::from(to) / u64::from(from)) as usize + 1);
    r.process(input, &mut out)?;
    r.flush(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: [u32; 5] = [8_000, 16_000, 22_050, 24_000, 48_000];

    fn sine(freq: f64, rate: u32, seconds: f64, amplitude: f64) -> Vec<f32> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                (amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as f32
            })
            .collect()
    }

    /// Least-squares fit of a sine at `freq` with the phase the test signal starts with:
    /// (amplitude, residual energy relative to the signal, in dB).
    fn fit(x: &[f32], freq: f64, rate: u32, start: usize) -> (f64, f64) {
        let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
        let (mut s, mut c) = (0.0, 0.0);
        for (i, &v) in x.iter().enumerate() {
            let t = (i + start) as f64 * w;
            s += f64::from(v) * t.sin();
            c += f64::from(v) * t.cos();
        }
        let n = x.len() as f64;
        let (a, b) = (2.0 * s / n, 2.0 * c / n);
        let (mut residual, mut energy) = (0.0, 0.0);
        for (i, &v) in x.iter().enumerate() {
            let t = (i + start) as f64 * w;
            let model = a * t.sin() + b * t.cos();
            residual += (f64::from(v) - model).powi(2);
            energy += f64::from(v).powi(2);
        }
        ((a * a + b * b).sqrt(), 10.0 * (residual / energy).log10())
    }

    #[test]
    fn sine_keeps_frequency_phase_and_level_for_every_rate_pair() {
        for from in RATES {
            for to in RATES {
                let input = sine(1000.0, from, 0.5, 0.5);
                let out = resample_clip(&input, from, to).expect("resample");
                let expected_len = (input.len() as u64 * u64::from(to)).div_ceil(u64::from(from));
                assert_eq!(out.len() as u64, expected_len, "{from}->{to} length");
                // Skip 50 ms at each end (start-up and end of stream).
                let edge = (to / 20) as usize;
                let body = &out[edge..out.len() - edge];
                let (amplitude, residual_db) = fit(body, 1000.0, to, edge);
                let level_db = 20.0 * (amplitude / 0.5).log10();
                assert!(level_db.abs() < 0.5, "{from}->{to}: level {level_db:.3} dB");
                // A residual this low means same frequency and no time shift: the delay trim
                // lines output sample k up with input time k / to.
                assert!(
                    residual_db < -40.0,
                    "{from}->{to}: residual {residual_db:.1} dB"
                );
            }
        }
    }

    #[test]
    fn content_above_the_new_nyquist_is_removed_when_downsampling() {
        for from in RATES {
            for to in RATES.into_iter().filter(|&to| to < from) {
                // A tone 8% above the new Nyquist (still below the old one).
                let freq = f64::from(to) / 2.0 * 1.08;
                assert!(freq < f64::from(from) / 2.0);
                let input = sine(freq, from, 0.5, 0.5);
                let out = resample_clip(&input, from, to).expect("resample");
                let edge = (to / 20) as usize;
                let body = &out[edge..out.len() - edge];
                let rms = (body.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>()
                    / body.len() as f64)
                    .sqrt();
                let attenuation_db = 20.0 * (rms / (0.5 / 2f64.sqrt())).log10();
                assert!(
                    attenuation_db < -60.0,
                    "{from}->{to} at {freq} Hz: {attenuation_db:.1} dB"
                );
            }
        }
    }

    #[test]
    fn any_chunking_gives_the_same_stream() {
        let input: Vec<f32> = sine(440.0, 22_050, 0.3, 0.3)
            .iter()
            .zip(sine(3100.0, 22_050, 0.3, 0.2))
            .map(|(a, b)| a + b)
            .collect();
        let reference = resample_clip(&input, 22_050, 16_000).expect("one shot");
        for sizes in [vec![1usize], vec![7, 300, 2], vec![441], vec![1000, 13]] {
            let mut r = StreamResampler::new(22_050, 16_000).expect("resampler");
            let mut out = Vec::new();
            let mut pos = 0;
            let mut k = 0;
            while pos < input.len() {
                let n = sizes[k % sizes.len()].min(input.len() - pos);
                r.process(&input[pos..pos + n], &mut out).expect("process");
                pos += n;
                k += 1;
            }
            r.flush(&mut out).expect("flush");
            assert_eq!(out.len(), reference.len(), "chunks {sizes:?}");
            let max_diff = out
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(max_diff <= 1e-6, "chunks {sizes:?}: max diff {max_diff}");
        }
    }

    #[test]
    fn twenty_ms_frames_keep_media_time_and_arrival() {
        let now = Instant::now();
        let mut r = StreamResampler::new(8_000, 16_000).expect("resampler");
        assert_eq!(r.filter_delay_output_samples(), 160);
        let mut next_media = 32_000; // the stream starts 2 s into the session at 16 kHz
        for i in 0..5u64 {
            let arrival = now + std::time::Duration::from_millis(20 * i);
            let frame = AudioFrame::new(vec![0.1; 160], 8_000, 16_000 + 160 * i, arrival);
            let out = r.process_frame(&frame).expect("frame");
            assert_eq!(out.arrival, arrival);
            assert_eq!(out.media_time, next_media);
            // First frame: 20 ms in, 10 ms out (the delay); then 20 ms per 20 ms.
            assert_eq!(out.len(), if i == 0 { 160 } else { 320 });
            next_media += out.len() as u64;
        }
        let tail = r.flush_frame(now).expect("flush");
        assert_eq!(tail.media_time, next_media);
        assert_eq!(tail.len(), 160);
        let wrong = AudioFrame::new(vec![0.0; 10], 16_000, 0, now);
        assert!(matches!(
            r.process_frame(&wrong),
            Err(ResampleError::RateMismatch { .. })
        ));
    }

    #[test]
    fn invalid_settings_are_errors_and_equal_rates_pass_through() {
        assert!(matches!(
            StreamResampler::new(0, 16_000),
            Err(ResampleError::InvalidRate(0))
        ));
        assert!(matches!(
            StreamResampler::with_chunk_ms(8_000, 16_000, 0),
            Err(ResampleError::InvalidChunk(0))
        ));
        let mut r = StreamResampler::new(16_000, 16_000).expect("pass-through");
        let mut out = Vec::new();
        r.process(&[0.5, -0.5], &mut out).expect("process");
        assert_eq!(out, vec![0.5, -0.5]);
        assert_eq!(r.latency_input_samples(), 0);
    }
}
