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
    /// What the clip says (the `.txt` beside the WAV, when there is one): the reference of the
    /// user-transcript WER.
    pub reference: Option<String>,
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
        reference: std::fs::read_to_string(path.with_extension("txt"))
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
    })
}

/// Analysis frame of the gap search, ms.
const GAP_FRAME_MS: usize = 10;
/// Quiet frames a gap between words needs to be a place to pause (30 ms).
const MIN_GAP_FRAMES: usize = 3;
/// A frame this far below the loudest is quiet enough to be a gap between words (read speech
/// rarely falls to the speech-end floor between words: the voice and the room carry over).
const GAP_FLOOR_DB: f32 = 25.0;

/// The gaps between words in the middle of `clip`'s speech: runs of at least
/// [`MIN_GAP_FRAMES`] 10 ms frames [`GAP_FLOOR_DB`] below the loudest, as `(centre sample,
/// frames)`, in order. (The first and last 15 % are left out: a pause there is a late start or
/// an early end, not a pause mid-sentence.)
pub fn gaps_between_words(clip: &Clip) -> Vec<(usize, usize)> {
    let frame = WIRE_RATE as usize * GAP_FRAME_MS / 1000;
    let speech = &clip.samples[..clip.speech_end_sample];
    let energies: Vec<f32> = speech
        .chunks(frame)
        .map(|c| c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32)
        .collect();
    let loudest = energies.iter().copied().fold(0.0f32, f32::max);
    let floor = loudest * 10f32.powf(-GAP_FLOOR_DB / 10.0);
    let Some(first) = energies.iter().position(|&e| e >= floor) else {
        return Vec::new();
    };
    let span = energies.len().saturating_sub(first);
    let (lo, hi) = (first + span * 15 / 100, first + span * 85 / 100);
    let mut gaps = Vec::new();
    let mut at = lo;
    for run in energies[lo..hi.min(energies.len())].chunk_by(|a, b| (*a < floor) == (*b < floor)) {
        if run[0] < floor && run.len() >= MIN_GAP_FRAMES {
            gaps.push(((at + run.len() / 2) * frame, run.len()));
        }
        at += run.len();
    }
    gaps
}

/// The clip with `pause_ms` of silence inserted mid-utterance, for turn-taking tests: in the
/// longest gap between words in the middle of its speech (see [`gaps_between_words`]). A
/// caller who pauses like this has not finished: any reply before the new speech end is a
/// cut-in. `None` if the middle half has no such gap.
pub fn with_pause(clip: &Clip, pause_ms: u64) -> Option<Clip> {
    let (at, _) = gaps_between_words(clip)
        .into_iter()
        .rev()
        .max_by_key(|&(_, frames)| frames)?;
    Some(with_pause_at(
        clip,
        at,
        pause_ms,
        &format!("pause{pause_ms}"),
    ))
}

/// The clip with `pause_ms` of silence inserted at sample `at` (before the speech end), named
/// `<clip>+<label>`.
pub fn with_pause_at(clip: &Clip, at: usize, pause_ms: u64, label: &str) -> Clip {
    let at = at.min(clip.speech_end_sample);
    let inserted = (pause_ms * u64::from(WIRE_RATE) / 1000) as usize;
    let mut samples = Vec::with_capacity(clip.samples.len() + inserted);
    samples.extend_from_slice(&clip.samples[..at]);
    samples.extend(std::iter::repeat_n(0.0, inserted));
    samples.extend_from_slice(&clip.samples[at..]);
    Clip {
        name: format!("{}+{label}", clip.name),
        samples,
        speech_end_sample: clip.speech_end_sample + inserted,
        speech_end_ms: clip.speech_end_ms + pause_ms,
        duration_ms: clip.duration_ms + pause_ms,
        reference: clip.reference.clone(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: usize) -> Vec<f32> {
        (0..WIRE_RATE as usize * ms / 1000)
            .map(|i| 0.5 * (i as f32 * 0.05).sin())
            .collect()
    }

    #[test]
    fn a_pause_widens_the_longest_gap_in_the_middle_and_moves_the_speech_end() {
        // word (400) gap 60 word (400) gap 120 word (400) gap 40 word (400), then silence.
        let mut samples = tone(400);
        samples.extend(vec![0.0; 24 * 60]);
        samples.extend(tone(400));
        samples.extend(vec![0.0; 24 * 120]);
        samples.extend(tone(400));
        samples.extend(vec![0.0; 24 * 40]);
        samples.extend(tone(400));
        let speech_end_sample = samples.len();
        samples.extend(vec![0.0; 24 * 500]);
        let clip = Clip {
            name: "words".into(),
            samples,
            speech_end_sample,
            speech_end_ms: 1820,
            duration_ms: 2320,
            reference: None,
        };
        // All three gaps lie between 15 % and 85 % of the speech: (centre sample, 10 ms frames).
        let gaps = gaps_between_words(&clip);
        assert_eq!(gaps, [(24 * 430, 6), (24 * 920, 12), (24 * 1400, 4)]);
        let paused = with_pause(&clip, 700).expect("a gap to widen");
        assert_eq!(paused.speech_end_ms, 2520);
        assert_eq!(paused.speech_end_sample, speech_end_sample + 24 * 700);
        assert_eq!(paused.samples.len(), clip.samples.len() + 24 * 700);
        // Inserted inside the 120 ms gap (860..980 ms), at its centre.
        let at = paused
            .samples
            .windows(24 * 700)
            .position(|w| w.iter().all(|&s| s == 0.0))
            .expect("the pause");
        assert!((24 * 860..=24 * 920).contains(&at), "{at}");
        assert!(
            with_pause(
                &Clip {
                    samples: tone(1000),
                    speech_end_sample: 24_000,
                    ..clip
                },
                700
            )
            .is_none()
        );
    }
}
