//! Conversion between a client's wire audio (pcm16 24 kHz, G.711 8 kHz) and the engines' f32
//! audio (16 kHz into ASR, whatever rate TTS produces out of it).
//!
//! Everything crosses through [`InputDecoder::decode`] and [`OutputEncoder::encode`], so swapping
//! in `antiphon_audio`'s G.711 and resampler once that crate is merged touches only this file.

use super::events::AudioFormat;

/// The rate the ASR/VAD engine consumes.
pub const ASR_RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AudioFormatError {
    #[error("sample rate must be positive (got {from} -> {to})")]
    ZeroRate { from: u32, to: u32 },
}

/// Client bytes -> f32 mono at [`ASR_RATE`]. Keeps a dangling odd byte of pcm16 between calls.
pub struct InputDecoder {
    format: AudioFormat,
    carry: Option<u8>,
    resampler: Resampler,
    scratch: Vec<f32>,
}

impl InputDecoder {
    pub fn new(format: AudioFormat) -> Self {
        InputDecoder {
            format,
            carry: None,
            // Invariant: both rates are non-zero constants.
            resampler: Resampler::new(format.sample_rate(), ASR_RATE)
                .expect("fixed non-zero rates"),
            scratch: Vec::new(),
        }
    }

    /// Decodes and resamples; appends 16 kHz samples to `out`.
    pub fn decode(&mut self, bytes: &[u8], out: &mut Vec<f32>) {
        self.scratch.clear();
        match self.format {
            AudioFormat::Pcm16 => {
                let mut rest = bytes;
                if let Some(lo) = self.carry.take()
                    && let Some((&hi, tail)) = rest.split_first()
                {
                    self.scratch
                        .push(f32::from(i16::from_le_bytes([lo, hi])) / 32768.0);
                    rest = tail;
                }
                let chunks = rest.chunks_exact(2);
                if let [odd] = chunks.remainder() {
                    self.carry = Some(*odd);
                }
                self.scratch
                    .extend(chunks.map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0));
            }
            AudioFormat::G711Ulaw => self
                .scratch
                .extend(bytes.iter().map(|&c| f32::from(ulaw_decode(c)) / 32768.0)),
            AudioFormat::G711Alaw => self
                .scratch
                .extend(bytes.iter().map(|&c| f32::from(alaw_decode(c)) / 32768.0)),
        }
        self.resampler.process(&self.scratch, out);
    }
}

/// f32 mono at any rate -> client bytes. Rebuilds its resampler when the source rate changes.
pub struct OutputEncoder {
    format: AudioFormat,
    resampler: Option<Resampler>,
    scratch: Vec<f32>,
}

impl OutputEncoder {
    pub fn new(format: AudioFormat) -> Self {
        OutputEncoder {
            format,
            resampler: None,
            scratch: Vec::new(),
        }
    }

    /// Forgets filter history (start of a new response, or after a barge-in flush).
    pub fn reset(&mut self) {
        self.resampler = None;
    }

    pub fn encode(&mut self, samples: &[f32], rate: u32) -> Result<Vec<u8>, AudioFormatError> {
        let to = self.format.sample_rate();
        let rebuild = self.resampler.as_ref().is_none_or(|r| r.from != rate);
        if rebuild {
            self.resampler = Some(Resampler::new(rate, to)?);
        }
        self.scratch.clear();
        if let Some(r) = self.resampler.as_mut() {
            r.process(samples, &mut self.scratch);
        }
        let pcm = self
            .scratch
            .iter()
            .map(|&x| (x.clamp(-1.0, 1.0) * 32767.0).round() as i16);
        Ok(match self.format {
            AudioFormat::Pcm16 => pcm.flat_map(i16::to_le_bytes).collect(),
            AudioFormat::G711Ulaw => pcm.map(ulaw_encode).collect(),
            AudioFormat::G711Alaw => pcm.map(alaw_encode).collect(),
        })
    }
}

/// G.711 mu-law encode of one 16-bit sample.
pub fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut x = i32::from(sample);
    let sign = if x < 0 {
        x = -x;
        0x80
    } else {
        0
    };
    let x = x.min(CLIP) + BIAS;
    // x is in 132..=32767: its top bit is bit 7..=14, giving segment 0..=7.
    let exponent = (31 - (x as u32).leading_zeros()) as i32 - 7;
    let mantissa = (x >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// G.711 mu-law decode to a 16-bit sample.
pub fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// G.711 A-law encode of one 16-bit sample.
pub fn alaw_encode(sample: i16) -> u8 {
    let (mask, magnitude) = if sample >= 0 {
        (0xD5u8, i32::from(sample))
    } else {
        (0x55u8, -i32::from(sample) - 1)
    };
    let x = magnitude >> 3; // 13-bit magnitude, 0..=4095
    let segment = (0..8).find(|&s| x < (0x20 << s)).unwrap_or(8);
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let mantissa = if segment < 2 {
        (x >> 1) & 0x0F
    } else {
        (x >> segment) & 0x0F
    };
    ((segment << 4) as u8 | mantissa as u8) ^ mask
}

/// G.711 A-law decode to a 16-bit sample.
pub fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = i32::from(a & 0x0F) << 4;
    let segment = (a & 0x70) >> 4;
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        s => {
            t += 0x108;
            t <<= s - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// Streaming rational-ratio resampler: polyphase windowed sinc (Blackman), 16 zero crossings
/// each side, each phase normalised to unit DC gain. Latency is `HALF` input samples.
pub struct Resampler {
    from: u32,
    up: u64,
    down: u64,
    taps: Vec<f32>,
    history: Vec<f32>,
    /// Absolute input index of `history[0]`.
    history_start: u64,
    next_out: u64,
}

const HALF: usize = 16;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Result<Self, AudioFormatError> {
        if from == 0 || to == 0 {
            return Err(AudioFormatError::ZeroRate { from, to });
        }
        let g = gcd(u64::from(from), u64::from(to));
        let (up, down) = (u64::from(to) / g, u64::from(from) / g);
        // Cut off at the lower Nyquist, a little below to leave room for the transition band.
        let cutoff = (up as f64 / down as f64).min(1.0) * 0.94;
        let width = 2 * HALF;
        let mut taps = vec![0f32; up as usize * width];
        for phase in 0..up as usize {
            let frac = phase as f64 / up as f64;
            let row = &mut taps[phase * width..(phase + 1) * width];
            let mut sum = 0.0;
            let mut raw = [0f64; 2 * HALF];
            for (j, w) in raw.iter_mut().enumerate() {
                let d = j as f64 - (HALF as f64 - 1.0) - frac;
                let x = std::f64::consts::PI * cutoff * d;
                let sinc = if x.abs() < 1e-12 { 1.0 } else { x.sin() / x };
                let r = d / HALF as f64;
                let window = if r.abs() >= 1.0 {
                    0.0
                } else {
                    let a = std::f64::consts::PI * r;
                    0.42 + 0.5 * a.cos() + 0.08 * (2.0 * a).cos()
                };
                *w = sinc * window;
                sum += *w;
            }
            for (dst, w) in row.iter_mut().zip(raw) {
                *dst = (w / sum) as f32;
            }
        }
        Ok(Resampler {
            from,
            up,
            down,
            taps,
            history: Vec::new(),
            history_start: 0,
            next_out: 0,
        })
    }

    /// Appends every output sample that `input` (plus earlier input) fully determines.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.up == 1 && self.down == 1 {
            out.extend_from_slice(input);
            return;
        }
        self.history.extend_from_slice(input);
        let available = self.history_start + self.history.len() as u64;
        let width = 2 * HALF;
        loop {
            let pos = self.next_out * self.down;
            let base = pos / self.up;
            let phase = (pos % self.up) as usize;
            if base + HALF as u64 >= available {
                break;
            }
            let row = &self.taps[phase * width..(phase + 1) * width];
            let first = base as i64 - (HALF as i64 - 1);
            let mut acc = 0f32;
            for (j, &w) in row.iter().enumerate() {
                let idx = first + j as i64;
                if idx >= self.history_start as i64 {
                    acc += w * self.history[(idx - self.history_start as i64) as usize];
                }
            }
            out.push(acc);
            self.next_out += 1;
        }
        // Drop input no future output reaches.
        let keep_from = ((self.next_out * self.down) / self.up).saturating_sub(HALF as u64);
        if keep_from > self.history_start {
            let drop = ((keep_from - self.history_start) as usize).min(self.history.len());
            self.history.drain(..drop);
            self.history_start += drop as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as f32
            })
            .collect()
    }

    #[test]
    fn ulaw_known_codes_and_idempotent_roundtrip() {
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_encode(0), 0xFF);
        for code in 0..=255u8 {
            let s = ulaw_decode(code);
            assert_eq!(ulaw_decode(ulaw_encode(s)), s, "code {code:#x}");
        }
    }

    #[test]
    fn alaw_known_codes_and_idempotent_roundtrip() {
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        for code in 0..=255u8 {
            let s = alaw_decode(code);
            assert_eq!(alaw_decode(alaw_encode(s)), s, "code {code:#x}");
        }
    }

    #[test]
    fn g711_quantisation_error_is_bounded() {
        for s in (-32000i16..32000).step_by(7) {
            let u = i32::from(ulaw_decode(ulaw_encode(s)));
            let a = i32::from(alaw_decode(alaw_encode(s)));
            let tol = (i32::from(s).abs() / 16).max(16);
            assert!((u - i32::from(s)).abs() <= tol, "ulaw {s} -> {u}");
            assert!((a - i32::from(s)).abs() <= tol, "alaw {s} -> {a}");
        }
    }

    /// Resampled sine must match the ideal sine at the new rate (after the filter settles),
    /// whatever chunk sizes the stream arrives in.
    fn check_resample(from: u32, to: u32, freq: f64) {
        let input = sine(freq, from, from as usize / 2);
        let mut r = Resampler::new(from, to).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(173) {
            r.process(chunk, &mut out);
        }
        let expected_len = input.len() as u64 * u64::from(to) / u64::from(from);
        assert!(out.len() as u64 <= expected_len && out.len() as u64 + 40 >= expected_len);
        let ideal = sine(freq, to, out.len());
        let mut worst = 0f32;
        for i in 64..out.len() {
            worst = worst.max((out[i] - ideal[i]).abs());
        }
        assert!(worst < 0.01, "{from}->{to} at {freq} Hz: max error {worst}");
    }

    #[test]
    fn resampler_tracks_a_sine_at_every_ratio_we_use() {
        check_resample(24_000, 16_000, 1000.0);
        check_resample(8_000, 16_000, 440.0);
        check_resample(16_000, 24_000, 1500.0);
        check_resample(22_050, 24_000, 700.0);
        check_resample(24_000, 8_000, 300.0);
    }

    #[test]
    fn resampler_rejects_zero_rate() {
        assert!(Resampler::new(0, 16_000).is_err());
    }

    #[test]
    fn pcm16_decoder_carries_odd_bytes_between_calls() {
        let samples: Vec<i16> = (0..2400).map(|i| ((i * 37) % 2000 - 1000) as i16).collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut whole = InputDecoder::new(AudioFormat::Pcm16);
        let mut a = Vec::new();
        whole.decode(&bytes, &mut a);
        let mut split = InputDecoder::new(AudioFormat::Pcm16);
        let mut b = Vec::new();
        for c in bytes.chunks(33) {
            split.decode(c, &mut b);
        }
        assert_eq!(a, b);
        assert!((a.len() as i64 - 1600).abs() <= 20);
    }

    #[test]
    fn output_encoder_produces_client_rate_bytes() {
        let tts = sine(500.0, 22_050, 22_050);
        let mut pcm = OutputEncoder::new(AudioFormat::Pcm16);
        let bytes = pcm.encode(&tts, 22_050).unwrap();
        assert!((bytes.len() as i64 - 48_000).abs() <= 40);
        let mut ulaw = OutputEncoder::new(AudioFormat::G711Ulaw);
        let bytes = ulaw.encode(&tts, 22_050).unwrap();
        assert!((bytes.len() as i64 - 8_000).abs() <= 40);
        assert!(ulaw.encode(&tts, 0).is_err());
    }
}
