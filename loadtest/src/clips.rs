//! The speech a load-test session speaks: WAV files resampled to the wire rate, each with the
//! position where its speech really ends (the origin of every TTFB).

use std::path::{Path, PathBuf};

use antiphon_audio::resample::{ResampleError, resample_clip};
use antiphon_audio::wav::{WavError, read_mono};
use antiphon_models::store::{ModelStore, StoreError};

use crate::speech_end::{DEFAULT_FLOOR_DB, speech_extent};

/// pcm16 rate of the Realtime API's `audio/pcm` format.
pub const WIRE_RATE: u32 = 24_000;
/// One 20 ms frame at [`WIRE_RATE`].
pub const FRAME_SAMPLES: usize = 480;
pub const FRAME_MS: u64 = 20;
/// Model-store entry holding the default LibriVox clips.
pub const DEFAULT_CLIP_SET: &str = "librivox-clips";

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: WavError },
    #[error("{path}: cannot resample to {WIRE_RATE} Hz: {source}")]
    Resample {
        path: PathBuf,
        source: ResampleError,
    },
    #[error("{0}: no speech found (all frames below the silence floor)")]
    NoSpeech(PathBuf),
    #[error("model store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot list {path}: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no .wav files in {0}")]
    Empty(PathBuf),
}

/// One utterance, ready to stream.
#[derive(Debug, Clone)]
pub struct Clip {
    /// File stem, used in reports.
    pub name: String,
    /// Mono at [`WIRE_RATE`].
    pub samples: Vec<f32>,
    /// One past the last voiced sample, at [`WIRE_RATE`].
    pub speech_end_sample: usize,
    pub speech_end_ms: u64,
    pub duration_ms: u64,
}

/// Reads, resamples and analyses one WAV file.
pub fn load_clip(path: &Path) -> Result<Clip, ClipError> {
    let audio = read_mono(path).map_err(|source| ClipError::Read {
        path: path.to_owned(),
        source,
    })?;
    let samples = if audio.sample_rate == WIRE_RATE {
        audio.samples
    } else {
        resample_clip(&audio.samples, audio.sample_rate, WIRE_RATE).map_err(|source| {
            ClipError::Resample {
                path: path.to_owned(),
                source,
            }
        })?
    };
    let extent = speech_extent(&samples, WIRE_RATE, DEFAULT_FLOOR_DB)
        .ok_or_else(|| ClipError::NoSpeech(path.to_owned()))?;
    let speech_end_sample =
        ((extent.end_ms * u64::from(WIRE_RATE) / 1000) as usize).clamp(1, samples.len());
    Ok(Clip {
        name: path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into(),
        ),
        samples,
        speech_end_sample,
        speech_end_ms: extent.end_ms,
        duration_ms: extent.duration_ms,
    })
}

/// The `.wav` files of the model store's LibriVox clip set, sorted by name.
pub fn default_clip_paths() -> Result<Vec<PathBuf>, ClipError> {
    let dir = ModelStore::from_env()?.model_dir(DEFAULT_CLIP_SET);
    let entries = std::fs::read_dir(&dir).map_err(|source| ClipError::List {
        path: dir.clone(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("wav")))
        .collect();
    if paths.is_empty() {
        return Err(ClipError::Empty(dir));
    }
    paths.sort();
    Ok(paths)
}

/// Loads `paths`, or the default clip set when `paths` is empty.
pub fn load_clips(paths: &[PathBuf]) -> Result<Vec<Clip>, ClipError> {
    let defaults;
    let paths = if paths.is_empty() {
        defaults = default_clip_paths()?;
        &defaults
    } else {
        paths
    };
    paths.iter().map(|p| load_clip(p)).collect()
}
