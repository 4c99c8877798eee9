//! `antiphon diarize FILE.wav [--rttm]`: who spoke when, through the same online path a live
//! session uses (Silero VAD or energy speech mask, CAM++ embeddings over 1.5 s windows, online
//! clustering).
//! CAM++ runs on candle's CPU backend; set `CANDLE_NUM_THREADS` to bound its threads.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use antiphon_audio::resample::resample_clip;
use antiphon_audio::wav::read_mono;
use antiphon_models::diar::pipeline::diarize_with_mask;
use antiphon_models::diar::rttm::{file_id, rttm_line};
use antiphon_models::diar::speech::{EnergyVadConfig, silero_mask, speech_mask};
use antiphon_models::diar::{OnlineConfig, SpeakerEmbedder};
use antiphon_models::store::ModelStore;
use antiphon_models::vad::SileroVad;
use anyhow::{Context, bail};
use clap::Args;

const RATE: u32 = 16_000;

#[derive(Args)]
pub struct DiarizeArgs {
    /// WAV file (any rate, 16/24/32-bit integer or float; channels are averaged).
    file: PathBuf,
    /// Print RTTM lines (`SPEAKER file 1 start dur <NA> <NA> label <NA> <NA>`) instead of a table.
    #[arg(long)]
    rttm: bool,
    /// Cosine similarity a window needs to join an existing speaker (higher: more speakers).
    #[arg(long, default_value_t = OnlineConfig::default().threshold)]
    threshold: f32,
    /// Speech mask: `silero` (Silero VAD, probability >= 0.5) or `energy` (level threshold).
    #[arg(long, default_value = "silero", value_parser = ["silero", "energy"])]
    vad: String,
    /// With `--vad energy`: level in dBFS below which a 10 ms frame counts as silence.
    #[arg(long, default_value_t = EnergyVadConfig::default().threshold_dbfs)]
    speech_dbfs: f32,
}

pub fn run(args: DiarizeArgs) -> anyhow::Result<ExitCode> {
    if !(-1.0..=1.0).contains(&args.threshold) {
        bail!("--threshold must be a cosine similarity in [-1, 1]");
    }
    let audio = read_mono(&args.file)?;
    let samples = resample_clip(&audio.samples, audio.sample_rate, RATE)?;
    let store = ModelStore::from_env()?;
    let mut embedder = SpeakerEmbedder::load(&store).context("cannot load CAM++")?;
    let cfg = OnlineConfig {
        threshold: args.threshold,
        ..OnlineConfig::default()
    };
    let vad = EnergyVadConfig {
        threshold_dbfs: args.speech_dbfs,
        ..EnergyVadConfig::default()
    };
    let started = Instant::now();
    let mask = if args.vad == "silero" {
        let mut silero = SileroVad::load(&store, 1).context("cannot load Silero VAD")?;
        silero_mask(&mut silero, &samples, 0.5, &vad)?
    } else {
        speech_mask(&samples, &vad)
    };
    let result = diarize_with_mask(&mut embedder, &samples, &mask, cfg)?;
    let elapsed = started.elapsed().as_secs_f64();
    let id = file_id(
        &args
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    for seg in &result.segments {
        if args.rttm {
            println!("{}", rttm_line(&id, seg));
        } else {
            println!("{:9.2} {:9.2}  {}", seg.start_s, seg.end_s, seg.label);
        }
    }
    let audio_s = samples.len() as f64 / RATE as f64;
    eprintln!(
        "{audio_s:.1} s of audio, {} speakers, {} segments, diarized in {elapsed:.2} s \
         (speech mask: {})",
        result.num_speakers,
        result.segments.len(),
        if args.vad == "silero" {
            "Silero VAD".to_owned()
        } else {
            format!("energy, {} dBFS", args.speech_dbfs)
        }
    );
    Ok(ExitCode::SUCCESS)
}
