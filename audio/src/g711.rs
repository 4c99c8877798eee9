//! G.711 mu-law and A-law (ITU-T G.711), written from the standard's quantiser definition.
//!
//! Input is 16-bit linear PCM; mu-law uses the top 14 bits and A-law the top 13, as G.711
//! specifies. Negative inputs are folded with one's complement (`!x`), the convention of the
//! ITU-T G.191 reference implementation (`ulaw_compress` / `alaw_compress`): the quantiser is
//! symmetric about -0.5 LSB, so -1 encodes as "negative zero" rather than the first negative
//! step. (Sun's widely copied `linear2ulaw` negates instead and differs from G.191 for a few
//! negative inputs; we follow the ITU.)
//!
//! Encoding finds the segment from the position of the highest set bit; the tests check every
//! 16-bit input and every code against a table built directly from G.711's segment/step
//! description (an independent formulation) and against published code values.

/// Which G.711 companding law a stream uses (RTP payload type 0 = mu-law, 8 = A-law).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// mu-law (PCMU, North America and Japan).
    Mu,
    /// A-law (PCMA, everywhere else).
    A,
}

impl Law {
    /// Encodes one 16-bit sample.
    pub fn encode_sample(self, x: i16) -> u8 {
        match self {
            Law::Mu => ulaw_encode(x),
            Law::A => alaw_encode(x),
        }
    }

    /// Decodes one code to 16-bit linear.
    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            Law::Mu => ulaw_decode(code),
            Law::A => alaw_decode(code),
        }
    }

    /// Encodes f32 samples in [-1, 1) (clipped outside), appending one byte per sample.
    pub fn encode(self, samples: &[f32], out: &mut Vec<u8>) {
        out.reserve(samples.len());
        for &s in samples {
            out.push(self.encode_sample(f32_to_i16(s)));
        }
    }

    /// Decodes codes to f32 samples in [-1, 1), appending one sample per byte.
    pub fn decode(self, codes: &[u8], out: &mut Vec<f32>) {
        let table = match self {
            Law::Mu => &ULAW_TO_LINEAR,
            Law::A => &ALAW_TO_LINEAR,
        };
        out.reserve(codes.len());
        out.extend(
            codes
                .iter()
                .map(|&c| f32::from(table[usize::from(c)]) / 32768.0),
        );
    }

    /// The code that decodes to silence (used for concealment by silence and for padding).
    pub fn silence_code(self) -> u8 {
        match self {
            Law::Mu => 0xFF,
            Law::A => 0xD5,
        }
    }
}

/// Concealment for G.711, which has none of its own: the first lost frame replays the last
/// good frame fading to silence (no click, keeps a vowel going through a single loss); further
/// consecutive losses are silence (repeating longer sounds robotic).
#[derive(Debug, Clone, Default)]
pub struct Concealer {
    last_good: Vec<f32>,
    consecutive_lost: u32,
}

impl Concealer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers a frame that was received and decoded.
    pub fn good_frame(&mut self, samples: &[f32]) {
        self.last_good.clear();
        self.last_good.extend_from_slice(samples);
        self.consecutive_lost = 0;
    }

    /// Appends `len` samples standing in for a lost frame.
    pub fn conceal(&mut self, len: usize, out: &mut Vec<f32>) {
        self.consecutive_lost += 1;
        if self.consecutive_lost == 1 && !self.last_good.is_empty() {
            let n = self.last_good.len();
            out.extend((0..len).map(|i| {
                let gain = 1.0 - i as f32 / len as f32;
                self.last_good[i % n] * gain
            }));
        } else {
            out.resize(out.len() + len, 0.0);
        }
    }
}

/// Same scaling and saturation as `antiphon_kernels::pcm::f32_to_i16`, one sample at a time.
fn f32_to_i16(s: f32) -> i16 {
    let scaled = (s * 32768.0).round();
    if scaled.is_nan() {
        0
    } else {
        scaled.clamp(-32768.0, 32767.0) as i16
    }
}

/// Sign bit and one's-complement magnitude (0..=32767) of a 16-bit sample.
#[inline]
fn sign_and_magnitude(x: i16) -> (bool, u16) {
    if x < 0 {
        // `!x` of a negative i16 is in 0..=32767: the G.191 fold.
        (true, (!x) as u16)
    } else {
        (false, x as u16)
    }
}

/// Encodes a 16-bit sample as mu-law.
#[inline]
pub fn ulaw_encode(x: i16) -> u8 {
    let (negative, magnitude) = sign_and_magnitude(x);
    // 14-bit magnitude plus the mu-law bias of 33 puts segment `s` at [32 << s, 64 << s).
    let biased = (magnitude >> 2) + 33;
    let (segment, mantissa) = if biased >= 8192 {
        // At or beyond the top decision level (8159): the largest code.
        (7u16, 15u16)
    } else {
        // biased >= 33, so its highest set bit is 5..=12.
        let segment = (15 - biased.leading_zeros() as u16) - 5;
        (segment, (biased >> (segment + 1)) & 0x0F)
    };
    let sign = if negative { 0x80 } else { 0x00 };
    !((sign | (segment << 4) | mantissa) as u8)
}

/// Decodes a mu-law code to 16-bit linear.
#[inline]
pub const fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let segment = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude14 = ((2 * mantissa + 33) << segment) - 33;
    let value = (magnitude14 << 2) as i16;
    if u & 0x80 != 0 { -value } else { value }
}

/// Encodes a 16-bit sample as A-law.
#[inline]
pub fn alaw_encode(x: i16) -> u8 {
    let (negative, magnitude) = sign_and_magnitude(x);
    // 12-bit magnitude in units of 16: segments 0 and 1 share one step size.
    let n = magnitude >> 4;
    let index = if n < 32 {
        n
    } else {
        // n in 32..=2047: highest set bit 5..=10 gives segment 2..=7.
        let segment = (15 - n.leading_zeros() as u16) - 3;
        (segment << 4) | ((n >> (segment - 1)) & 0x0F)
    };
    let sign = if negative { 0x00 } else { 0x80 };
    ((index | sign) as u8) ^ 0x55
}

/// Decodes an A-law code to 16-bit linear.
#[inline]
pub const fn alaw_decode(code: u8) -> i16 {
    let u = code ^ 0x55;
    let segment = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = if segment == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (segment - 1)
    };
    let value = magnitude as i16;
    if u & 0x80 != 0 { value } else { -value }
}

const fn build_table(mu: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = if mu {
            ulaw_decode(c as u8)
        } else {
            alaw_decode(c as u8)
        };
        c += 1;
    }
    t
}

/// mu-law code -> 16-bit linear, built at compile time.
pub static ULAW_TO_LINEAR: [i16; 256] = build_table(true);
/// A-law code -> 16-bit linear, built at compile time.
pub static ALAW_TO_LINEAR: [i16; 256] = build_table(false);

#[cfg(test)]
mod tests {
    use super::*;

    /// One quantisation interval of the G.711 tables: magnitudes in [lo, hi) map to `index`
    /// (segment * 16 + step) and decode to `level`; all in the law's own magnitude units.
    struct Interval {
        lo: i32,
        hi: i32,
        index: u8,
        level: i32,
    }

    /// A-law, G.711 Table 1a, positive half, in 12-bit magnitude units (16-bit >> 3): segment
    /// end points 32, 64, 128, ..., 4096; 16 equal steps per segment; the level is the
    /// interval midpoint.
    fn alaw_intervals() -> Vec<Interval> {
        let starts = [0, 32, 64, 128, 256, 512, 1024, 2048];
        let ends = [32, 64, 128, 256, 512, 1024, 2048, 4096];
        let mut v = Vec::new();
        for s in 0..8 {
            let step = (ends[s] - starts[s]) / 16;
            for j in 0..16 {
                let lo = starts[s] + j * step;
                v.push(Interval {
                    lo,
                    hi: lo + step,
                    index: (s as u8) << 4 | j as u8,
                    level: lo + step / 2,
                });
            }
        }
        v
    }

    /// mu-law, G.711 Table 2a, positive half, in 14-bit magnitude units (16-bit >> 2): decision
    /// levels 0, 1, 3, ..., 31, 35, ..., 95, ..., 8159 (step 2 << segment) and decoded levels
    /// 0, 2, ..., 30, 33, 37, ..., 8031; everything above 8159 is the last interval.
    fn ulaw_intervals() -> Vec<Interval> {
        let mut v = Vec::new();
        // Segment 0 starts half a step below zero so its first level is 0 with interval [0, 1).
        let mut start = -1;
        for s in 0..8 {
            let step = 2 << s;
            for j in 0..16 {
                let lo = start + j * step;
                v.push(Interval {
                    lo: lo.max(0),
                    // Everything above the top decision level (8159) clips to the last code.
                    hi: if s == 7 && j == 15 {
                        i32::MAX
                    } else {
                        lo + step
                    },
                    index: (s as u8) << 4 | j as u8,
                    level: lo + step / 2,
                });
            }
            start += 16 * step;
        }
        v
    }

    fn reference_encode(intervals: &[Interval], magnitude: i32) -> u8 {
        let i = intervals
            .iter()
            .find(|i| magnitude >= i.lo && magnitude < i.hi)
            .or(intervals.last())
            .expect("tables are non-empty");
        i.index
    }

    fn fold(x: i16) -> (bool, i32) {
        if x < 0 {
            (true, -i32::from(x) - 1)
        } else {
            (false, i32::from(x))
        }
    }

    #[test]
    fn table_builders_match_g711_landmarks() {
        let mu = ulaw_intervals();
        assert_eq!(mu.len(), 128);
        // Decision levels and decoded levels quoted in G.711 Table 2a.
        assert_eq!((mu[0].lo, mu[0].hi, mu[0].level), (0, 1, 0));
        assert_eq!((mu[15].lo, mu[15].hi, mu[15].level), (29, 31, 30));
        assert_eq!((mu[16].lo, mu[16].hi, mu[16].level), (31, 35, 33));
        assert_eq!((mu[32].lo, mu[32].level), (95, 99));
        assert_eq!((mu[127].lo, mu[127].level), (7903, 8031));
        let a = alaw_intervals();
        assert_eq!((a[0].lo, a[0].hi, a[0].level), (0, 2, 1));
        assert_eq!((a[127].lo, a[127].hi, a[127].level), (3968, 4096, 4032));
    }

    #[test]
    fn ulaw_encode_matches_table_for_every_16_bit_input() {
        let table = ulaw_intervals();
        for x in i16::MIN..=i16::MAX {
            let (negative, magnitude) = fold(x);
            let index = reference_encode(&table, magnitude >> 2);
            let expected = !(index | if negative { 0x80 } else { 0 });
            assert_eq!(ulaw_encode(x), expected, "input {x}");
        }
    }

    #[test]
    fn alaw_encode_matches_table_for_every_16_bit_input() {
        let table = alaw_intervals();
        for x in i16::MIN..=i16::MAX {
            let (negative, magnitude) = fold(x);
            let index = reference_encode(&table, magnitude >> 3);
            let expected = (index | if negative { 0 } else { 0x80 }) ^ 0x55;
            assert_eq!(alaw_encode(x), expected, "input {x}");
        }
    }

    #[test]
    fn decode_matches_table_levels_for_every_code() {
        let mu = ulaw_intervals();
        let a = alaw_intervals();
        for code in 0..=255u8 {
            let u = !code;
            let level = mu[usize::from(u & 0x7F)].level << 2;
            let expected = if u & 0x80 != 0 { -level } else { level };
            assert_eq!(
                i32::from(ulaw_decode(code)),
                expected,
                "mu code {code:#04x}"
            );
            assert_eq!(ULAW_TO_LINEAR[usize::from(code)], ulaw_decode(code));

            let u = code ^ 0x55;
            let level = a[usize::from(u & 0x7F)].level << 3;
            let expected = if u & 0x80 != 0 { level } else { -level };
            assert_eq!(i32::from(alaw_decode(code)), expected, "A code {code:#04x}");
            assert_eq!(ALAW_TO_LINEAR[usize::from(code)], alaw_decode(code));
        }
    }

    #[test]
    fn concealment_repeats_once_with_a_fade_then_goes_silent() {
        let mut c = Concealer::new();
        let mut out = Vec::new();
        c.conceal(4, &mut out);
        assert_eq!(out, vec![0.0; 4], "nothing to repeat yet");
        c.good_frame(&[0.8, -0.8, 0.8, -0.8]);
        out.clear();
        c.conceal(4, &mut out);
        for (got, want) in out.iter().zip([0.8, -0.6, 0.4, -0.2]) {
            assert!((got - want).abs() < 1e-6, "{out:?}");
        }
        out.clear();
        c.conceal(4, &mut out);
        assert_eq!(out, vec![0.0; 4]);
    }

    #[test]
    fn published_code_values() {
        // mu-law: 0xFF and 0x7F are +0 and -0; 0x80 / 0x00 are the extremes (+-8031 << 2).
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0x7F);
        // A-law: 0xD5 / 0x55 are the smallest positive / negative levels (+-8), 0xAA / 0x2A
        // the largest (+-32256).
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for code in 0..=255u8 {
            // Negative zero (mu-law 0x7F) decodes to 0, which encodes as positive zero.
            let mu_expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(ulaw_encode(ulaw_decode(code)), mu_expected);
            assert_eq!(alaw_encode(alaw_decode(code)), code, "A code {code:#04x}");
        }
    }

    #[test]
    fn f32_slices_round_trip_within_quantisation_error() {
        let input: Vec<f32> = (0..800).map(|i| 0.5 * (i as f32 * 0.05).sin()).collect();
        for law in [Law::Mu, Law::A] {
            let mut codes = Vec::new();
            law.encode(&input, &mut codes);
            let mut back = Vec::new();
            law.decode(&codes, &mut back);
            assert_eq!(back.len(), input.len());
            let err: f32 = input
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            // Largest step at 0.5 FS is 1024/32768 (segment 6 of either law).
            assert!(err <= 1024.0 / 32768.0, "{law:?} max error {err}");
            // A-law has no zero level: its quietest code is +8/32768.
            let mut silence = Vec::new();
            law.decode(&[law.silence_code()], &mut silence);
            assert!(silence[0].abs() <= 8.0 / 32768.0);
        }
    }
}
