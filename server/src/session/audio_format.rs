//! Conversion between a client's wire audio (pcm16 24 kHz, G.711 8 kHz) and the engines' f32
//! audio (16 kHz into ASR, whatever rate TTS produces out of it), on top of `antiphon_audio`'s
//! G.711 codec and streaming resampler.
//!
//! Input is one continuous stream, so it goes through one [`StreamResampler`] (10 ms filter
//! delay with 20 ms frames). Output arrives as whole TTS chunks, each already shaped with a
//! fade-in and fade-out by the TTS engine: each chunk is resampled completely (processed and
//! flushed), so nothing of a chunk is held back inside the resampler waiting for the next one
//! and a reply needs no flush at its end.

use antiphon_audio::g711::Law;
use antiphon_audio::resample::{ResampleError, StreamResampler};
use antiphon_kernels::pcm::{f32_to_pcm16le, pcm16le_to_f32};

use super::events::AudioFormat;

/// The rate the ASR/VAD engine consumes.
pub const ASR_RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error)]
pub enum AudioFormatError {
    #[error("cannot resample {from} Hz -> {to} Hz: {source}")]
    Resample {
        from: u32,
        to: u32,
        source: ResampleError,
    },
}

fn law(format: AudioFormat) -> Option<Law> {
    match format {
        AudioFormat::Pcm16 => None,
        AudioFormat::G711Ulaw => Some(Law::Mu),
        AudioFormat::G711Alaw => Some(Law::A),
    }
}

fn resampler(from: u32, to: u32) -> Result<StreamResampler, AudioFormatError> {
    StreamResampler::new(from, to).map_err(|source| AudioFormatError::Resample { from, to, source })
}

/// A leg's f32 frames (any rate) -> f32 mono at [`ASR_RATE`], one continuous stream. The
/// resampler is made for the first frame's rate and remade if a leg changes rate (a new
/// stream: its filter state would not apply).
#[derive(Default)]
pub struct FrameInput {
    resampler: Option<(u32, StreamResampler)>,
}

impl FrameInput {
    /// Appends `samples` at `rate`, resampled, to `out`.
    pub fn push(
        &mut self,
        samples: &[f32],
        rate: u32,
        out: &mut Vec<f32>,
    ) -> Result<(), AudioFormatError> {
        if rate == ASR_RATE {
            out.extend_from_slice(samples);
            return Ok(());
        }
        let r = match &mut self.resampler {
            Some((at, r)) if *at == rate => r,
            slot => &mut slot.insert((rate, resampler(rate, ASR_RATE)?)).1,
        };
        r.process(samples, out)
            .map(|_| ())
            .map_err(|source| AudioFormatError::Resample {
                from: rate,
                to: ASR_RATE,
                source,
            })
    }
}

/// Client bytes -> f32 mono at [`ASR_RATE`]. Keeps a dangling odd byte of pcm16 between calls.
pub struct InputDecoder {
    format: AudioFormat,
    carry: Option<u8>,
    resampler: StreamResampler,
    scratch: Vec<f32>,
}

impl InputDecoder {
    pub fn new(format: AudioFormat) -> Self {
        InputDecoder {
            format,
            carry: None,
            // Invariant: both rates are fixed constants (8/24 kHz -> 16 kHz) the resampler
            // accepts; its tests cover these pairs.
            resampler: resampler(format.sample_rate(), ASR_RATE).expect("fixed supported rates"),
            scratch: Vec::new(),
        }
    }

    /// Decodes and resamples; appends 16 kHz samples to `out`.
    pub fn decode(&mut self, bytes: &[u8], out: &mut Vec<f32>) {
        self.scratch.clear();
        match law(self.format) {
            None => {
                let mut rest = bytes;
                if let Some(lo) = self.carry.take()
                    && let Some((&hi, tail)) = rest.split_first()
                {
                    pcm16le_to_f32(&[lo, hi], &mut self.scratch);
                    rest = tail;
                }
                if rest.len() % 2 == 1 {
                    self.carry = rest.last().copied();
                }
                pcm16le_to_f32(rest, &mut self.scratch);
            }
            Some(law) => law.decode(bytes, &mut self.scratch),
        }
        if let Err(e) = self.resampler.process(&self.scratch, out) {
            // Only rubato's internal buffer checks can fail here, and our chunking satisfies
            // them; losing a frame is better than ending the session.
            tracing::warn!(error = %e, "input resampling failed; frame dropped");
        }
    }
}

/// f32 mono at any rate -> client bytes. Rebuilds its resampler when the source rate changes.
pub struct OutputEncoder {
    format: AudioFormat,
    chunks: ChunkResampler,
}

impl OutputEncoder {
    pub fn new(format: AudioFormat) -> Self {
        OutputEncoder {
            format,
            chunks: ChunkResampler::new(format.sample_rate()),
        }
    }

    /// Forgets filter history (start of a new response, or after a barge-in flush).
    pub fn reset(&mut self) {
        self.chunks.reset();
    }

    /// Resamples one whole chunk of audio at `rate` to the client's format.
    pub fn encode(&mut self, samples: &[f32], rate: u32) -> Result<Vec<u8>, AudioFormatError> {
        let resampled = self.chunks.resample(samples, rate)?;
        Ok(match law(self.format) {
            None => {
                let mut out = Vec::with_capacity(resampled.len() * 2);
                f32_to_pcm16le(resampled, &mut out);
                out
            }
            Some(law) => {
                let mut out = Vec::with_capacity(resampled.len());
                law.encode(resampled, &mut out);
                out
            }
        })
    }
}

/// Whole TTS chunks (any rate) -> f32 at one output rate, each chunk resampled completely
/// (processed and flushed; see the module docs). Keeps the resampler while the input rate
/// stays the same.
pub struct ChunkResampler {
    to: u32,
    resampler: Option<StreamResampler>,
    scratch: Vec<f32>,
}

impl ChunkResampler {
    pub fn new(to: u32) -> Self {
        ChunkResampler {
            to,
            resampler: None,
            scratch: Vec::new(),
        }
    }

    /// Forgets filter history.
    pub fn reset(&mut self) {
        if let Some(r) = self.resampler.as_mut() {
            r.reset();
        }
    }

    /// `samples` at `rate`, resampled; valid until the next call.
    pub fn resample(&mut self, samples: &[f32], rate: u32) -> Result<&[f32], AudioFormatError> {
        let to = self.to;
        if self
            .resampler
            .as_ref()
            .is_none_or(|r| r.input_rate() != rate)
        {
            self.resampler = Some(resampler(rate, to)?);
        }
        self.scratch.clear();
        if let Some(r) = self.resampler.as_mut() {
            let err = |source| AudioFormatError::Resample {
                from: rate,
                to,
                source,
            };
            r.process(samples, &mut self.scratch).map_err(err)?;
            r.flush(&mut self.scratch).map_err(err)?;
        }
        Ok(&self.scratch)
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

    fn pcm16_bytes(samples: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        f32_to_pcm16le(samples, &mut out);
        out
    }

    /// The decoded 16 kHz stream must be the ideal sine at 16 kHz (the resampler keeps media
    /// time aligned), whatever the wire format and chunking.
    fn check_decoder(format: AudioFormat, bytes: &[u8], freq: f64, tol: f32) {
        let mut dec = InputDecoder::new(format);
        let mut out = Vec::new();
        for c in bytes.chunks(format.bytes_per_sample() * format.sample_rate() as usize / 50) {
            dec.decode(c, &mut out);
        }
        let input_ms = format.bytes_to_ms(bytes.len());
        let expected = input_ms as usize * 16;
        // At most one 20 ms chunk plus the filter delay is still inside the resampler.
        assert!(
            out.len() <= expected && out.len() + 500 >= expected,
            "{format:?}: {}",
            out.len()
        );
        let ideal = sine(freq, ASR_RATE, out.len());
        let worst = (160..out.len())
            .map(|i| (out[i] - ideal[i]).abs())
            .fold(0f32, f32::max);
        assert!(worst < tol, "{format:?}: max error {worst}");
    }

    #[test]
    fn decoder_resamples_every_wire_format_to_16k() {
        let pcm = pcm16_bytes(&sine(1000.0, 24_000, 24_000));
        check_decoder(AudioFormat::Pcm16, &pcm, 1000.0, 0.01);
        let tone = sine(440.0, 8_000, 8_000);
        for (format, law) in [
            (AudioFormat::G711Ulaw, Law::Mu),
            (AudioFormat::G711Alaw, Law::A),
        ] {
            let mut codes = Vec::new();
            law.encode(&tone, &mut codes);
            // G.711 quantisation: a few percent of a 0.5 amplitude tone.
            check_decoder(format, &codes, 440.0, 0.03);
        }
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
        // 100 ms at 24 kHz -> 1600 samples at 16 kHz, less what the resampler still holds.
        assert!(a.len() <= 1600 && a.len() + 500 >= 1600, "{}", a.len());
    }

    #[test]
    fn output_encoder_produces_whole_chunks_at_client_rate() {
        let tts = sine(500.0, 22_050, 22_050);
        let mut pcm = OutputEncoder::new(AudioFormat::Pcm16);
        // One second in -> exactly one second out: nothing is held back between chunks.
        assert_eq!(pcm.encode(&tts, 22_050).unwrap().len(), 48_000);
        assert_eq!(pcm.encode(&tts[..2205], 22_050).unwrap().len(), 4_800);
        let mut ulaw = OutputEncoder::new(AudioFormat::G711Ulaw);
        let bytes = ulaw.encode(&tts, 22_050).unwrap();
        assert_eq!(bytes.len(), 8_000);
        // The mu-law stream decodes back to the 500 Hz tone at 8 kHz.
        let mut back = Vec::new();
        Law::Mu.decode(&bytes, &mut back);
        let ideal = sine(500.0, 8_000, back.len());
        let worst = (80..back.len() - 80)
            .map(|i| (back[i] - ideal[i]).abs())
            .fold(0f32, f32::max);
        // mu-law steps near 0.5 are 1/32: quantisation plus the resampler's ripple.
        assert!(worst < 0.05, "max error {worst}");
        assert!(ulaw.encode(&tts, 0).is_err());
    }
}
