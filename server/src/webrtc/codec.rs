//! Opus 48 kHz on the wire, f32 48 kHz on our side, both directions: no resampling here
//! (the session resamples caller audio once to 16 kHz, the peer reply audio once to 48 kHz).

use antiphon_audio::opus_codec::{
    FRAME_SAMPLES, OpusDecoder, OpusEncoder, OpusEncoderConfig, OpusError, SAMPLE_RATE,
};
use antiphon_audio::resample::ResampleError;

use super::playout::FRAME;
#[cfg(test)]
use super::playout::RATE;

// The playout runs at Opus's rate: one playout frame is one Opus frame.
const _: () = assert!(FRAME == FRAME_SAMPLES && super::playout::RATE == SAMPLE_RATE);

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Opus(#[from] OpusError),
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

/// Caller audio: Opus packets in, f32 at 48 kHz out (the session resamples it once, straight
/// to the recogniser's rate).
pub struct Uplink {
    decoder: OpusDecoder,
}

impl Uplink {
    pub fn new() -> Result<Self, CodecError> {
        Ok(Uplink {
            decoder: OpusDecoder::new()?,
        })
    }

    /// Decodes one packet (an empty one conceals a lost frame).
    pub fn packet(&mut self, packet: &[u8]) -> Result<Vec<f32>, CodecError> {
        let mut wide = Vec::with_capacity(FRAME_SAMPLES * 6);
        self.decoder.decode(packet, &mut wide)?;
        Ok(wide)
    }

    /// One 20 ms frame in place of a lost packet (Opus PLC), so the session's audio clock (and
    /// with it VAD timing) does not skip.
    pub fn conceal(&mut self) -> Result<Vec<f32>, CodecError> {
        let mut wide = Vec::with_capacity(FRAME_SAMPLES);
        self.decoder.conceal(&mut wide)?;
        Ok(wide)
    }
}

/// Reply audio: 20 ms frames at 48 kHz in, one Opus packet per frame out.
pub struct Downlink {
    encoder: OpusEncoder,
}

impl Downlink {
    pub fn new() -> Result<Self, CodecError> {
        // The downlink is a clean local path: no FEC bits needed.
        let config = OpusEncoderConfig {
            bitrate: 32_000,
            expected_loss_percent: 0,
            complexity: 5,
        };
        Ok(Downlink {
            encoder: OpusEncoder::new(config)?,
        })
    }

    /// Encodes one 20 ms frame (48 kHz samples in [-1, 1)).
    pub fn frame(&mut self, frame: &[f32; FRAME]) -> Result<&[u8], CodecError> {
        let n = self.encoder.encode_into(frame)?;
        Ok(self.encoder.packet(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 440 Hz tone through the downlink and back up arrives as a 440 Hz tone.
    #[test]
    fn tone_survives_downlink_then_uplink() {
        let mut down = Downlink::new().unwrap();
        let mut up = Uplink::new().unwrap();
        let mut samples = Vec::new();
        let mut t = 0usize;
        for _ in 0..50 {
            let mut f = [0.0f32; FRAME];
            for s in f.iter_mut() {
                *s = 0.5 * (2.0 * std::f32::consts::PI * 440.0 * t as f32 / RATE as f32).sin();
                t += 1;
            }
            let packet = down.frame(&f).unwrap().to_vec();
            assert!(!packet.is_empty() && packet.len() < 400);
            samples.extend(up.packet(&packet).unwrap());
        }
        // About 1 s came back (less what the resampler holds).
        assert!(
            samples.len() > SAMPLE_RATE as usize * 9 / 10,
            "{}",
            samples.len()
        );
        // Skip the codec's start-up, then count zero crossings over 0.5 s: 440 Hz -> ~440.
        let tail = &samples[samples.len() - SAMPLE_RATE as usize / 2..];
        let crossings = tail
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        assert!((400..=480).contains(&crossings), "{crossings} crossings");
        let rms = (tail.iter().map(|s| s * s).sum::<f32>() / tail.len() as f32).sqrt();
        assert!((0.25..0.45).contains(&rms), "rms {rms}");
        // A lost packet becomes 20 ms of concealment (960 samples at 48 kHz), not a gap.
        assert_eq!(up.conceal().unwrap().len(), FRAME_SAMPLES);
    }
}
