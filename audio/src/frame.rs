//! The audio frame that travels through every stage of a session.
//!
//! Samples are mono `f32` in [-1.0, 1.0): every model we run (VAD, ASR, TTS) consumes or produces
//! f32, the resampler works in f32, and Opus decodes to f32 natively, so f32 avoids a conversion
//! at each of those boundaries. The 16-bit forms exist only at the edges (G.711, `pcm16` wire
//! formats, WAV files) and are converted with `antiphon_kernels::pcm`.

use std::time::{Duration, Instant};

/// A position on a session's media clock: a sample count at a given rate.
///
/// Media time is independent of wall time: it advances by the number of samples, whatever the
/// network did. RTP timestamps map onto it; wall-clock instants never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaTime {
    /// Samples since the start of the stream (the first sample is 0).
    pub samples: u64,
    /// The rate `samples` counts in, in Hz.
    pub sample_rate: u32,
}

impl MediaTime {
    /// The start of a stream at `sample_rate`.
    pub fn zero(sample_rate: u32) -> Self {
        Self {
            samples: 0,
            sample_rate,
        }
    }

    /// The position as a duration since the start of the stream.
    pub fn as_duration(&self) -> Duration {
        if self.sample_rate == 0 {
            return Duration::ZERO;
        }
        let rate = u64::from(self.sample_rate);
        let secs = self.samples / rate;
        let rem = self.samples % rate;
        Duration::from_secs(secs) + Duration::from_nanos(rem * 1_000_000_000 / rate)
    }

    /// The same instant expressed at another rate (rounded down to a whole sample).
    pub fn at_rate(&self, sample_rate: u32) -> Self {
        let samples = if self.sample_rate == 0 {
            0
        } else {
            // u128 so a long stream times a high rate cannot overflow.
            (u128::from(self.samples) * u128::from(sample_rate) / u128::from(self.sample_rate))
                as u64
        };
        Self {
            samples,
            sample_rate,
        }
    }

    /// This position moved `n` samples later.
    pub fn advanced(&self, n: u64) -> Self {
        Self {
            samples: self.samples + n,
            sample_rate: self.sample_rate,
        }
    }
}

/// Mono PCM with its rate, its place on the media clock and the instant it arrived.
///
/// `arrival` is stamped once, where the packet carrying the audio was read, and copied into
/// every frame derived from it (decoded, resampled, re-chunked). Cores never read a clock, so
/// TTFB measured from `arrival` includes every queue and stage in between.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFrame {
    /// Mono samples in [-1.0, 1.0).
    pub samples: Vec<f32>,
    /// Samples per second.
    pub sample_rate: u32,
    /// Media time of `samples[0]` on the session's audio clock, at `sample_rate`.
    pub media_time: u64,
    /// Monotonic instant the source packet was read from the network (or file, in tests).
    pub arrival: Instant,
}

impl AudioFrame {
    /// A frame of `samples` starting at `media_time` (in samples at `sample_rate`).
    pub fn new(samples: Vec<f32>, sample_rate: u32, media_time: u64, arrival: Instant) -> Self {
        Self {
            samples,
            sample_rate,
            media_time,
            arrival,
        }
    }

    /// A frame of `len` zero samples (for concealment by silence), keeping the stamps given.
    pub fn silence(len: usize, sample_rate: u32, media_time: u64, arrival: Instant) -> Self {
        Self::new(vec![0.0; len], sample_rate, media_time, arrival)
    }

    /// A frame derived from this one (decoded, resampled, filtered): new samples and rate,
    /// same media instant (converted to the new rate) and the same arrival instant.
    pub fn derive(&self, samples: Vec<f32>, sample_rate: u32) -> Self {
        Self {
            samples,
            sample_rate,
            media_time: self.start().at_rate(sample_rate).samples,
            arrival: self.arrival,
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True if the frame holds no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Media time of the first sample.
    pub fn start(&self) -> MediaTime {
        MediaTime {
            samples: self.media_time,
            sample_rate: self.sample_rate,
        }
    }

    /// Media time just after the last sample (the start of the next contiguous frame).
    pub fn end(&self) -> MediaTime {
        self.start().advanced(self.samples.len() as u64)
    }

    /// Playing time of the frame.
    pub fn duration(&self) -> Duration {
        MediaTime {
            samples: self.samples.len() as u64,
            sample_rate: self.sample_rate,
        }
        .as_duration()
    }

    /// Root-mean-square level in dBFS (full-scale sine = -3 dBFS); `-inf` for silence.
    pub fn rms_dbfs(&self) -> f32 {
        if self.samples.is_empty() {
            return f32::NEG_INFINITY;
        }
        let energy: f64 = self
            .samples
            .iter()
            .map(|&s| f64::from(s) * f64::from(s))
            .sum();
        let rms = (energy / self.samples.len() as f64).sqrt();
        (20.0 * rms.log10()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_media_time_follow_the_sample_count() {
        let now = Instant::now();
        let f = AudioFrame::new(vec![0.0; 320], 16_000, 16_000, now);
        assert_eq!(f.duration(), Duration::from_millis(20));
        assert_eq!(f.start().as_duration(), Duration::from_secs(1));
        assert_eq!(f.end().samples, 16_320);
        assert_eq!(MediaTime::zero(8000).as_duration(), Duration::ZERO);
    }

    #[test]
    fn derived_frames_keep_arrival_and_convert_media_time() {
        let now = Instant::now();
        let f = AudioFrame::new(vec![0.5; 160], 8_000, 8_000, now);
        let d = f.derive(vec![0.5; 960], 48_000);
        assert_eq!(d.arrival, now);
        assert_eq!(d.media_time, 48_000);
        assert_eq!(d.duration(), f.duration());
    }

    #[test]
    fn rms_of_full_scale_square_is_zero_dbfs() {
        let now = Instant::now();
        let sq: Vec<f32> = (0..100)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let f = AudioFrame::new(sq, 8000, 0, now);
        assert!(f.rms_dbfs().abs() < 1e-3);
        assert_eq!(
            AudioFrame::silence(10, 8000, 0, now).rms_dbfs(),
            f32::NEG_INFINITY
        );
    }
}
