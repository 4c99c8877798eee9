//! Test audio for the VAD and ASR tests: WAV reading, the LibriVox clips and a telephone
//! channel simulation. (Test-only stand-ins until the audio crate's WAV, resampler and G.711
//! are merged.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use antiphon_models::asr::{AsrEvent, StreamingAsr};
use antiphon_models::store::ModelStore;

pub const RATE: u32 = 16_000;

/// Mono 16-bit or float WAV at 16 kHz as f32 samples.
pub fn read_wav_16k(path: &Path) -> Vec<f32> {
    let mut reader = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let spec = reader.spec();
    assert_eq!(spec.sample_rate, RATE, "{} is not 16 kHz", path.display());
    assert_eq!(spec.channels, 1, "{} is not mono", path.display());
    match spec.sample_format {
        hound::SampleFormat::Int => reader
            .samples::<i32>()
            .map(|s| {
                s.expect("readable sample") as f32 / (1u32 << (spec.bits_per_sample - 1)) as f32
            })
            .collect(),
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .map(|s| s.expect("readable sample"))
            .collect(),
    }
}

/// A LibriVox clip with its reference transcript.
pub struct Clip {
    pub name: String,
    pub audio: Vec<f32>,
    pub reference: String,
}

pub fn clips_dir() -> PathBuf {
    ModelStore::from_env()
        .expect("model store")
        .model_dir("librivox-clips")
}

/// Every `*.wav` with a `.txt` beside it in the store's `librivox-clips` folder.
pub fn librivox_clips() -> Vec<Clip> {
    let dir = clips_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "LibriVox clips missing from {} ({e}): extract test/data/librivox/*.wav and .txt \
                 from the pocketsphinx 5.1.1 sdist there",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav") && p.with_extension("txt").is_file())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no LibriVox clips in {}", dir.display());
    paths
        .into_iter()
        .map(|p| Clip {
            name: p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            audio: read_wav_16k(&p),
            reference: std::fs::read_to_string(p.with_extension("txt"))
                .expect("readable transcript")
                .trim()
                .to_owned(),
        })
        .collect()
}

/// Low-pass FIR (windowed sinc, Hann) with cutoff `cutoff` as a fraction of the sample rate.
fn lowpass(cutoff: f32, taps: usize) -> Vec<f32> {
    let mid = (taps - 1) as f32 / 2.0;
    let mut h: Vec<f32> = (0..taps)
        .map(|i| {
            let x = i as f32 - mid;
            let sinc = if x == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f32::consts::PI * cutoff * x).sin() / (std::f32::consts::PI * x)
            };
            let window =
                0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / (taps - 1) as f32).cos();
            sinc * window
        })
        .collect();
    let sum: f32 = h.iter().sum();
    h.iter_mut().for_each(|v| *v /= sum);
    h
}

fn convolve(x: &[f32], h: &[f32]) -> Vec<f32> {
    let delay = h.len() / 2;
    (0..x.len())
        .map(|n| {
            h.iter()
                .enumerate()
                .filter_map(|(k, &hk)| {
                    let i = (n + delay).checked_sub(k)?;
                    x.get(i).map(|&xi| xi * hk)
                })
                .sum()
        })
        .collect()
}

/// G.711 mu-law encode of one 16-bit sample (ITU-T G.711 segment table).
fn mulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (7 - (s.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 as i32 | mantissa) as u8
}

fn mulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// 16 kHz audio through a telephone channel: down to 8 kHz, G.711 mu-law, and back to 16 kHz.
pub fn telephone_round_trip(audio: &[f32]) -> Vec<f32> {
    let h = lowpass(3_400.0 / 16_000.0, 63);
    let narrow = convolve(audio, &h);
    let ulaw: Vec<u8> = narrow
        .iter()
        .step_by(2)
        .map(|&s| mulaw_encode((s * 32767.0).clamp(-32768.0, 32767.0) as i16))
        .collect();
    let mut up = vec![0.0f32; ulaw.len() * 2];
    for (i, &b) in ulaw.iter().enumerate() {
        // Zero-stuffing halves the energy; the x2 restores it.
        up[2 * i] = 2.0 * f32::from(mulaw_decode(b)) / 32768.0;
    }
    convolve(&up, &h)
}

/// Pushes `audio` in 20 ms frames (as fast as possible), finishes, and collects every event
/// up to `EndOfStream`.
pub fn transcribe_stream(session: &mut impl StreamingAsr, audio: &[f32]) -> Vec<AsrEvent> {
    for frame in audio.chunks(320) {
        session.push_audio(frame).expect("push accepted");
    }
    session.finish().expect("finish accepted");
    collect_until_end(session)
}

pub fn collect_until_end(session: &mut impl StreamingAsr) -> Vec<AsrEvent> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut events = Vec::new();
    while Instant::now() < deadline {
        match session.next_event(Duration::from_millis(200)) {
            Some(AsrEvent::EndOfStream) => return events,
            Some(AsrEvent::Failed { message }) => panic!("engine failed: {message}"),
            Some(e) => events.push(e),
            None => {}
        }
    }
    panic!("no EndOfStream within 120 s; events so far: {events:?}");
}

/// The finals' texts joined.
pub fn final_text(events: &[AsrEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            AsrEvent::Final { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn mulaw_round_trip_is_close() {
    for s in [-32000i16, -1000, -1, 0, 1, 100, 5000, 32000] {
        let back = mulaw_decode(mulaw_encode(s));
        let tolerance = (i32::from(s).abs() / 16).max(8);
        assert!(
            (i32::from(back) - i32::from(s)).abs() <= tolerance,
            "{s} -> {back}"
        );
    }
}
