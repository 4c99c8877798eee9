//! Test audio for the VAD and ASR tests: the LibriVox clips and a telephone channel
//! simulation, built on the audio crate's WAV reader, resampler and G.711.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use antiphon_audio::g711::Law;
use antiphon_audio::resample::resample_clip;
use antiphon_audio::wav;
use antiphon_models::asr::{AsrEvent, StreamingAsr};
use antiphon_models::store::ModelStore;

pub const RATE: u32 = 16_000;
/// G.711's sample rate.
const TELEPHONE_RATE: u32 = 8_000;

/// A 16 kHz WAV file as mono f32 samples.
pub fn read_wav_16k(path: &Path) -> Vec<f32> {
    let audio =
        wav::read_mono(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert_eq!(audio.sample_rate, RATE, "{} is not 16 kHz", path.display());
    audio.samples
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

/// 16 kHz audio through a telephone channel: down to 8 kHz, G.711 mu-law, and back to 16 kHz.
pub fn telephone_round_trip(audio: &[f32]) -> Vec<f32> {
    let narrow = resample_clip(audio, RATE, TELEPHONE_RATE).expect("16 -> 8 kHz");
    let mut ulaw = Vec::with_capacity(narrow.len());
    Law::Mu.encode(&narrow, &mut ulaw);
    let mut decoded = Vec::with_capacity(ulaw.len());
    Law::Mu.decode(&ulaw, &mut decoded);
    resample_clip(&decoded, TELEPHONE_RATE, RATE).expect("8 -> 16 kHz")
}

/// Pushes `audio` in 20 ms frames (as fast as the recogniser takes them, never dropping),
/// finishes, and collects every event up to `EndOfStream`.
pub fn transcribe_stream(session: &mut impl StreamingAsr, audio: &[f32]) -> Vec<AsrEvent> {
    let mut events = Vec::new();
    for frame in audio.chunks(320) {
        session
            .push_audio_waiting(frame, &mut events)
            .expect("push accepted");
    }
    session.finish().expect("finish accepted");
    events.extend(collect_until_end(session));
    events
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
