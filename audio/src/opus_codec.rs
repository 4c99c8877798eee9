//! Opus at 48 kHz mono in 20 ms frames, with packet-loss concealment and in-band FEC.
//!
//! A lost packet is handled in one of two ways, chosen by the caller from what the jitter buffer
//! knows: if the *next* packet is already here, [`OpusDecoder::decode_fec`] rebuilds the lost
//! frame from the low-bitrate copy the encoder put in that next packet (in-band FEC, SILK and
//! hybrid modes); otherwise [`OpusDecoder::conceal`] extrapolates from the decoder's history
//! (PLC). When the next packet carries no FEC data libopus falls back to PLC by itself, so
//! `decode_fec` is always safe to call.

/// Opus always runs at 48 kHz here: WebRTC negotiates 48000/2 and decoding at the native rate
/// avoids libopus' internal resampler.
pub const SAMPLE_RATE: u32 = 48_000;
/// 20 ms at 48 kHz: the packetisation every transport we speak uses.
pub const FRAME_SAMPLES: usize = 960;
/// Largest packet we produce; 1275 bytes is the Opus maximum for one frame.
pub const MAX_PACKET_BYTES: usize = 1275;

/// Why an Opus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpusError {
    /// A frame handed to the encoder was not exactly [`FRAME_SAMPLES`] long.
    #[error("opus frames are {FRAME_SAMPLES} samples (20 ms at 48 kHz), got {0}")]
    FrameLength(usize),
    /// libopus rejected a setting or a packet (a corrupt packet ends up here).
    #[error("libopus: {0}")]
    Codec(#[from] opus::Error),
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusEncoderConfig {
    /// Target bitrate in bits per second.
    pub bitrate: i32,
    /// Expected packet loss in percent (0..=100); above 0 it makes the encoder include in-band
    /// FEC, which costs bits, so set it from the measured loss of the path.
    pub expected_loss_percent: i32,
    /// 0 (fastest) ..= 10 (best).
    pub complexity: i32,
}

impl Default for OpusEncoderConfig {
    fn default() -> Self {
        Self {
            bitrate: 32_000,
            expected_loss_percent: 10,
            complexity: 5,
        }
    }
}

/// 48 kHz mono Opus encoder tuned for speech (`VOIP` application, in-band FEC on).
pub struct OpusEncoder {
    inner: opus::Encoder,
    packet: Vec<u8>,
}

impl OpusEncoder {
    pub fn new(config: OpusEncoderConfig) -> Result<Self, OpusError> {
        let mut inner =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        inner.set_bitrate(opus::Bitrate::Bits(config.bitrate))?;
        inner.set_inband_fec(true)?;
        inner.set_packet_loss_perc(config.expected_loss_percent.clamp(0, 100))?;
        inner.set_complexity(config.complexity.clamp(0, 10))?;
        Ok(Self {
            inner,
            packet: vec![0; MAX_PACKET_BYTES],
        })
    }

    /// Encoder lookahead in samples at 48 kHz: decoded audio lags the input by this much.
    pub fn lookahead(&mut self) -> Result<usize, OpusError> {
        Ok(self.inner.get_lookahead()?.max(0) as usize)
    }

    /// Encodes one 20 ms frame ([`FRAME_SAMPLES`] samples in [-1, 1)) into a packet.
    pub fn encode(&mut self, frame: &[f32]) -> Result<Vec<u8>, OpusError> {
        let n = self.encode_into(frame)?;
        Ok(self.packet[..n].to_vec())
    }

    /// Encodes one 20 ms frame into the encoder's internal buffer and returns the packet
    /// bytes borrowed from it (no allocation).
    pub fn encode_into(&mut self, frame: &[f32]) -> Result<usize, OpusError> {
        if frame.len() != FRAME_SAMPLES {
            return Err(OpusError::FrameLength(frame.len()));
        }
        Ok(self.inner.encode_float(frame, &mut self.packet)?)
    }

    /// The packet produced by the last [`encode_into`](Self::encode_into) of length `n`.
    pub fn packet(&self, n: usize) -> &[u8] {
        &self.packet[..n.min(self.packet.len())]
    }
}

/// 48 kHz mono Opus decoder.
pub struct OpusDecoder {
    inner: opus::Decoder,
}

impl OpusDecoder {
    pub fn new() -> Result<Self, OpusError> {
        Ok(Self {
            inner: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?,
        })
    }

    /// Decodes a packet, appending its samples (960 for a 20 ms packet) to `out`.
    /// Packets of other durations (2.5..120 ms) decode too; the count is returned.
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<f32>) -> Result<usize, OpusError> {
        if packet.is_empty() {
            // An empty slice means "lost" to libopus; be explicit instead.
            return self.conceal(out);
        }
        // Room for the longest legal packet (120 ms); we truncate to what was decoded.
        let start = out.len();
        out.resize(start + FRAME_SAMPLES * 6, 0.0);
        match self.inner.decode_float(packet, &mut out[start..], false) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(n)
            }
            Err(e) => {
                out.truncate(start);
                Err(e.into())
            }
        }
    }

    /// Packet-loss concealment: appends one 20 ms frame extrapolated from the decoder's state.
    pub fn conceal(&mut self, out: &mut Vec<f32>) -> Result<usize, OpusError> {
        self.missing_frame(&[], out)
    }

    /// Rebuilds the lost 20 ms frame that precedes `next_packet` from the FEC data inside
    /// `next_packet` (PLC if it has none). Decode `next_packet` itself normally afterwards.
    pub fn decode_fec(
        &mut self,
        next_packet: &[u8],
        out: &mut Vec<f32>,
    ) -> Result<usize, OpusError> {
        self.missing_frame(next_packet, out)
    }

    fn missing_frame(&mut self, packet: &[u8], out: &mut Vec<f32>) -> Result<usize, OpusError> {
        let start = out.len();
        out.resize(start + FRAME_SAMPLES, 0.0);
        // For PLC and FEC the output length tells libopus how much audio to produce.
        match self.inner.decode_float(packet, &mut out[start..], true) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(n)
            }
            Err(e) => {
                out.truncate(start);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A voiced, speech-like signal: a harmonic series with a gliding pitch (190..250 Hz) and a
    /// syllable-rate envelope. (With a lower pitch the waveform comparison is dominated by the
    /// phase shift of the VOIP-mode high-pass filter, not by coding error: at f0 = 140 Hz the
    /// aligned correlation drops to 0.82 at every bitrate from 24 to 64 kb/s.)
    fn speech_like(n: usize) -> Vec<f32> {
        let mut phase = 0.0f64;
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(SAMPLE_RATE);
                let f0 = 220.0 + 30.0 * (2.0 * std::f64::consts::PI * 1.5 * t).sin();
                phase += 2.0 * std::f64::consts::PI * f0 / f64::from(SAMPLE_RATE);
                let envelope = 0.6 + 0.4 * (2.0 * std::f64::consts::PI * 4.0 * t).sin();
                let voiced: f64 = (1..=12).map(|h| (h as f64 * phase).sin() / h as f64).sum();
                (0.25 * envelope * voiced) as f32
            })
            .collect()
    }

    fn correlation(a: &[f32], b: &[f32]) -> f64 {
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for (&x, &y) in a.iter().zip(b) {
            ab += f64::from(x) * f64::from(y);
            aa += f64::from(x) * f64::from(x);
            bb += f64::from(y) * f64::from(y);
        }
        ab / (aa * bb).sqrt().max(1e-12)
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    fn encode_all(signal: &[f32], config: OpusEncoderConfig) -> (Vec<Vec<u8>>, usize) {
        let mut enc = OpusEncoder::new(config).expect("encoder");
        let lookahead = enc.lookahead().expect("lookahead");
        let packets = signal
            .chunks_exact(FRAME_SAMPLES)
            .map(|f| enc.encode(f).expect("encode"))
            .collect();
        (packets, lookahead)
    }

    #[test]
    fn round_trip_keeps_the_waveform_after_delay_alignment() {
        let signal = speech_like(FRAME_SAMPLES * 100);
        let (packets, lookahead) = encode_all(&signal, OpusEncoderConfig::default());
        let mut dec = OpusDecoder::new().expect("decoder");
        let mut out = Vec::new();
        for p in &packets {
            assert_eq!(dec.decode(p, &mut out).expect("decode"), FRAME_SAMPLES);
        }
        assert_eq!(out.len(), signal.len());
        // Find the codec delay by cross-correlation, skipping the first 200 ms (encoder warm-up).
        let skip = FRAME_SAMPLES * 10;
        let len = signal.len() - skip - 2000;
        let (best_lag, best_corr) = (0..2000)
            .map(|lag| {
                (
                    lag,
                    correlation(
                        &signal[skip..skip + len],
                        &out[skip + lag..skip + lag + len],
                    ),
                )
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("non-empty lag range");
        // The waveform delay is the encoder lookahead (312 samples = 6.5 ms in VOIP mode) give
        // or take the phase of the codec's filters.
        assert!(
            best_lag.abs_diff(lookahead) <= 16,
            "delay {best_lag} vs lookahead {lookahead}"
        );

        let aligned = &out[skip + best_lag..skip + best_lag + len];
        let reference = &signal[skip..skip + len];
        let noise: Vec<f32> = aligned.iter().zip(reference).map(|(a, b)| a - b).collect();
        let snr_db = 20.0 * (rms(reference) / rms(&noise)).log10();
        // Measured 2026-11-25 at 32 kb/s: correlation 0.93, SNR 8.5 dB.
        assert!(
            best_corr > 0.88,
            "correlation {best_corr} at lag {best_lag}"
        );
        assert!(snr_db > 6.0, "SNR {snr_db:.1} dB");
    }

    #[test]
    fn concealment_after_voiced_audio_is_a_full_frame_of_sound() {
        let signal = speech_like(FRAME_SAMPLES * 30);
        let (packets, _) = encode_all(&signal, OpusEncoderConfig::default());
        let mut dec = OpusDecoder::new().expect("decoder");
        let mut out = Vec::new();
        for p in &packets[..20] {
            dec.decode(p, &mut out).expect("decode");
        }
        let voiced_rms = rms(&out[out.len() - FRAME_SAMPLES..]);
        let mut plc = Vec::new();
        assert_eq!(dec.conceal(&mut plc).expect("plc"), FRAME_SAMPLES);
        assert_eq!(plc.len(), FRAME_SAMPLES);
        let plc_rms = rms(&plc);
        assert!(
            plc_rms > 0.3 * voiced_rms,
            "PLC rms {plc_rms} vs voiced {voiced_rms}"
        );
        // The stream carries on after the gap.
        let mut next = Vec::new();
        assert_eq!(
            dec.decode(&packets[21], &mut next).expect("decode"),
            FRAME_SAMPLES
        );
    }

    #[test]
    fn fec_rebuilds_a_lost_frame_better_than_plc() {
        let signal = speech_like(FRAME_SAMPLES * 40);
        let config = OpusEncoderConfig {
            bitrate: 32_000,
            expected_loss_percent: 20,
            complexity: 5,
        };
        let (packets, _) = encode_all(&signal, config);
        let lost = 25;

        // What frame `lost` decodes to when nothing is lost.
        let mut clean = OpusDecoder::new().expect("decoder");
        let mut clean_out = Vec::new();
        for p in &packets[..=lost] {
            clean.decode(p, &mut clean_out).expect("decode");
        }
        let clean_frame = &clean_out[lost * FRAME_SAMPLES..];

        let rebuild = |use_fec: bool| {
            let mut dec = OpusDecoder::new().expect("decoder");
            let mut out = Vec::new();
            for p in &packets[..lost] {
                dec.decode(p, &mut out).expect("decode");
            }
            let mut frame = Vec::new();
            let n = if use_fec {
                dec.decode_fec(&packets[lost + 1], &mut frame).expect("fec")
            } else {
                dec.conceal(&mut frame).expect("plc")
            };
            assert_eq!(n, FRAME_SAMPLES);
            // The next packet still decodes normally after the rebuilt frame.
            let mut next = Vec::new();
            assert_eq!(
                dec.decode(&packets[lost + 1], &mut next).expect("decode"),
                FRAME_SAMPLES
            );
            frame
        };
        let fec_corr = correlation(&rebuild(true), clean_frame);
        let plc_corr = correlation(&rebuild(false), clean_frame);
        // Measured 2026-11-25: FEC 0.987, PLC 0.902 (with expected loss 0 there is no FEC data
        // and this fails: FEC falls back to PLC).
        assert!(fec_corr > 0.95, "FEC correlation {fec_corr}");
        assert!(
            fec_corr > plc_corr,
            "FEC {fec_corr} should beat PLC {plc_corr}"
        );
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let mut enc = OpusEncoder::new(OpusEncoderConfig::default()).expect("encoder");
        assert!(matches!(
            enc.encode(&[0.0; 100]),
            Err(OpusError::FrameLength(100))
        ));
        let mut dec = OpusDecoder::new().expect("decoder");
        let mut out = Vec::new();
        // TOC byte announcing a 2-frame CBR packet whose payload length is odd: invalid.
        assert!(matches!(
            dec.decode(&[0x79, 0x00], &mut out),
            Err(OpusError::Codec(_))
        ));
        assert!(out.is_empty());
    }
}
