//! PCM sample-format conversions used at every codec and model boundary.

/// Scale used for i16 <-> f32: full-scale i16 maps to [-1.0, 1.0).
const I16_SCALE: f32 = 32768.0;

/// Converts signed 16-bit PCM to f32 in [-1.0, 1.0), appending to `out`.
pub fn i16_to_f32(input: &[i16], out: &mut Vec<f32>) {
    out.extend(input.iter().map(|&s| f32::from(s) / I16_SCALE));
}

/// Converts f32 samples to signed 16-bit PCM with rounding and saturation, appending to `out`.
/// Values outside [-1.0, 1.0] clip instead of wrapping (wrapping is a loud click).
pub fn f32_to_i16(input: &[f32], out: &mut Vec<i16>) {
    out.extend(input.iter().map(|&s| {
        let scaled = (s * I16_SCALE).round();
        // NaN maps to silence rather than to an arbitrary value.
        if scaled.is_nan() {
            0
        } else {
            scaled.clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
        }
    }));
}

/// Decodes little-endian 16-bit PCM bytes (the wire format of Realtime `pcm16`) into samples.
/// A trailing odd byte is ignored; callers that care check `bytes.len() % 2` first.
pub fn le_bytes_to_i16(bytes: &[u8], out: &mut Vec<i16>) {
    out.extend(
        bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]])),
    );
}

/// Encodes samples as little-endian 16-bit PCM bytes.
pub fn i16_to_le_bytes(samples: &[i16], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

/// Decodes little-endian 16-bit PCM bytes straight to f32 in [-1.0, 1.0), appending to `out`
/// (a trailing odd byte is ignored).
pub fn pcm16le_to_f32(bytes: &[u8], out: &mut Vec<f32>) {
    out.extend(
        bytes
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / I16_SCALE),
    );
}

/// Encodes f32 samples as little-endian 16-bit PCM bytes, with the rounding and saturation of
/// [`f32_to_i16`], appending to `out`.
pub fn f32_to_pcm16le(samples: &[f32], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for &s in samples {
        let scaled = (s * I16_SCALE).round();
        let v = if scaled.is_nan() {
            0
        } else {
            scaled.clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
        };
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i16_round_trips_through_f32_exactly() {
        let all: Vec<i16> = (i16::MIN..=i16::MAX).collect();
        let mut f = Vec::new();
        i16_to_f32(&all, &mut f);
        let mut back = Vec::new();
        f32_to_i16(&f, &mut back);
        assert_eq!(all, back);
    }

    #[test]
    fn f32_saturates_and_maps_nan_to_zero() {
        let mut out = Vec::new();
        f32_to_i16(&[2.0, -2.0, f32::NAN, 0.5], &mut out);
        assert_eq!(out, vec![i16::MAX, i16::MIN, 0, 16384]);
    }

    #[test]
    fn le_bytes_round_trip_and_ignore_odd_tail() {
        let mut bytes = Vec::new();
        i16_to_le_bytes(&[1, -2, 300], &mut bytes);
        bytes.push(0xff);
        let mut back = Vec::new();
        le_bytes_to_i16(&bytes, &mut back);
        assert_eq!(back, vec![1, -2, 300]);
    }

    #[test]
    fn pcm16le_bytes_match_the_two_step_conversions() {
        let samples = [0.0f32, 0.5, -0.5, 1.0, -1.0, 2.0, f32::NAN, 1.0 / 32768.0];
        let mut direct = Vec::new();
        f32_to_pcm16le(&samples, &mut direct);
        let (mut pcm, mut two_step) = (Vec::new(), Vec::new());
        f32_to_i16(&samples, &mut pcm);
        i16_to_le_bytes(&pcm, &mut two_step);
        assert_eq!(direct, two_step);
        let (mut back, mut via_i16, mut back_two) = (Vec::new(), Vec::new(), Vec::new());
        pcm16le_to_f32(&direct, &mut back);
        le_bytes_to_i16(&direct, &mut via_i16);
        i16_to_f32(&via_i16, &mut back_two);
        assert_eq!(back, back_two);
        assert_eq!(back[1], 0.5);
        assert_eq!(back[3], 32767.0 / 32768.0);
    }
}
