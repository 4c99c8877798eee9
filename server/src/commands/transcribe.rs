//! `antiphon transcribe FILE.wav [--json] [--realtime]`: streams a WAV file through the ASR
//! engine (VAD, endpointing, Moonshine) and prints partials and finals as they come.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use antiphon_audio::resample::resample_clip;
use antiphon_audio::wav::{self, MonoAudio};
use antiphon_models::asr::{AsrEngine, AsrEngineConfig, AsrEvent, StreamingAsr};
use antiphon_models::store::ModelStore;
use anyhow::Context;
use clap::Args;
use serde_json::json;

/// Exit code for input that is not a readable WAV file.
const BAD_INPUT: u8 = 2;
const TARGET_RATE: u32 = 16_000;
/// Frame size pushed to the recogniser: 20 ms, as a transport would.
const FRAME: usize = 320;

#[derive(Args)]
pub struct TranscribeArgs {
    /// WAV file (any sample rate and channel count; mixed to mono and resampled to 16 kHz).
    file: PathBuf,
    /// One JSON object per event, then a summary line.
    #[arg(long)]
    json: bool,
    /// Push audio at real speed instead of as fast as possible.
    #[arg(long)]
    realtime: bool,
    /// Silence that ends a turn, in milliseconds (100 or more).
    #[arg(long, default_value_t = 500)]
    silence_ms: u32,
    /// onnxruntime threads per model.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

pub fn run(args: TranscribeArgs) -> anyhow::Result<ExitCode> {
    let audio = match read_wav_mono(&args.file) {
        Ok(audio) => audio,
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitCode::from(BAD_INPUT));
        }
    };
    let audio = resample_to_16k(&audio.samples, audio.sample_rate)?;
    let mut config = AsrEngineConfig {
        slots: 1,
        threads: args.threads,
        ..AsrEngineConfig::default()
    };
    config.endpoint.silence_duration_ms = args.silence_ms;
    let store = ModelStore::from_env()?;
    let engine = AsrEngine::start(&store, config).context("starting the ASR engine")?;
    let mut session = engine.open()?;
    let mut printer = Printer {
        json: args.json,
        latencies: Vec::new(),
        out: std::io::stdout().lock(),
    };

    let started = Instant::now();
    let mut arrived = Vec::new();
    for (i, frame) in audio.chunks(FRAME).enumerate() {
        // A file is read faster than the recogniser works: wait for room rather than let the
        // inbox drop audio (a live call cannot wait; a file can).
        session.push_audio_waiting(frame, &mut arrived)?;
        arrived.extend(std::iter::from_fn(|| session.try_event()));
        for event in arrived.drain(..) {
            printer.event(&event)?;
        }
        if args.realtime {
            let due = Duration::from_secs_f64((i + 1) as f64 * FRAME as f64 / TARGET_RATE as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    session.finish()?;
    loop {
        match session.next_event(Duration::from_secs(60)) {
            Some(AsrEvent::EndOfStream) => break,
            Some(AsrEvent::Failed { message }) => anyhow::bail!("recogniser failed: {message}"),
            Some(event) => printer.event(&event)?,
            None => anyhow::bail!("recogniser gave no answer for 60 s"),
        }
    }
    let audio_secs = audio.len() as f64 / f64::from(TARGET_RATE);
    let rtf = started.elapsed().as_secs_f64() / audio_secs.max(1e-9);
    if session.dropped_samples() > 0 {
        eprintln!(
            "warning: the recogniser fell behind and dropped {} samples",
            session.dropped_samples()
        );
    }
    printer.summary(rtf)?;
    Ok(ExitCode::SUCCESS)
}

struct Printer<W: Write> {
    json: bool,
    latencies: Vec<f64>,
    out: W,
}

impl<W: Write> Printer<W> {
    fn event(&mut self, event: &AsrEvent) -> std::io::Result<()> {
        let secs = |ms: u64| ms as f64 / 1000.0;
        if let AsrEvent::Final { stats, .. } = event {
            self.latencies.push(stats.latency.as_secs_f64() * 1000.0);
        }
        if self.json {
            let value = match event {
                AsrEvent::SpeechStarted {
                    audio_start_ms,
                    speech_start_ms,
                } => json!({"type": "speech_started", "audio_start_ms": audio_start_ms,
                    "speech_start_ms": speech_start_ms}),
                AsrEvent::SpeechStopped {
                    audio_end_ms,
                    speech_end_ms,
                } => json!({"type": "speech_stopped", "audio_end_ms": audio_end_ms,
                    "speech_end_ms": speech_end_ms}),
                AsrEvent::Partial { segment, text } => {
                    json!({"type": "partial", "segment": segment, "text": text})
                }
                AsrEvent::Final {
                    segment,
                    text,
                    start_ms,
                    end_ms,
                    stats,
                } => json!({"type": "final", "segment": segment, "text": text,
                    "start": secs(*start_ms), "end": secs(*end_ms),
                    "latency_ms": stats.latency.as_secs_f64() * 1000.0,
                    "reused_tokens": stats.reused_tokens}),
                // Turn-taking hints: a transcript reader has no use for them.
                AsrEvent::Paused { .. }
                | AsrEvent::Resumed { .. }
                | AsrEvent::TurnJudged { .. }
                | AsrEvent::EndOfStream
                | AsrEvent::Failed { .. } => return Ok(()),
            };
            writeln!(self.out, "{value}")
        } else {
            match event {
                AsrEvent::SpeechStarted {
                    speech_start_ms, ..
                } => writeln!(self.out, "[{:7.2}s] (speech)", secs(*speech_start_ms)),
                AsrEvent::SpeechStopped { speech_end_ms, .. } => {
                    writeln!(self.out, "[{:7.2}s] (silence)", secs(*speech_end_ms))
                }
                AsrEvent::Partial { text, .. } => writeln!(self.out, "          ... {text}"),
                AsrEvent::Final {
                    text,
                    start_ms,
                    end_ms,
                    stats,
                    ..
                } => writeln!(
                    self.out,
                    "[{:7.2}s-{:.2}s] {text}   ({:.0} ms after endpoint)",
                    secs(*start_ms),
                    secs(*end_ms),
                    stats.latency.as_secs_f64() * 1000.0
                ),
                AsrEvent::Paused { .. }
                | AsrEvent::Resumed { .. }
                | AsrEvent::TurnJudged { .. }
                | AsrEvent::EndOfStream
                | AsrEvent::Failed { .. } => Ok(()),
            }
        }
    }

    fn summary(&mut self, rtf: f64) -> std::io::Result<()> {
        if self.json {
            let value = json!({"type": "summary", "rtf": rtf, "final_latency_ms": self.latencies});
            writeln!(self.out, "{value}")
        } else {
            let latencies: Vec<String> = self.latencies.iter().map(|l| format!("{l:.0}")).collect();
            writeln!(
                self.out,
                "real-time factor {rtf:.3}; final latency ms [{}]",
                latencies.join(", ")
            )
        }
    }
}

/// Reads a WAV file mixed to mono; anything that is not a WAV file with audio in it is an
/// error naming the file.
fn read_wav_mono(path: &Path) -> anyhow::Result<MonoAudio> {
    let audio = wav::read_mono(path)
        .with_context(|| format!("{} is not a readable WAV file", path.display()))?;
    if audio.samples.is_empty() {
        anyhow::bail!("{} holds no audio", path.display());
    }
    Ok(audio)
}

/// Resamples mono audio to the recogniser's 16 kHz.
fn resample_to_16k(samples: &[f32], rate: u32) -> anyhow::Result<Vec<f32>> {
    if rate == TARGET_RATE {
        return Ok(samples.to_vec());
    }
    resample_clip(samples, rate, TARGET_RATE)
        .with_context(|| format!("cannot resample {rate} Hz audio to {TARGET_RATE} Hz"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_wav_input_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notes.wav");
        std::fs::write(&path, b"not a wav file at all").expect("write");
        let err = read_wav_mono(&path).expect_err("must fail");
        assert!(err.to_string().contains("not a readable WAV file"), "{err}");
        let missing = dir.path().join("missing.wav");
        assert!(read_wav_mono(&missing).is_err());
        // The command itself exits 2 before touching the model store.
        let args = TranscribeArgs {
            file: path,
            json: false,
            realtime: false,
            silence_ms: 500,
            threads: 1,
        };
        assert_eq!(run(args).expect("handled"), ExitCode::from(BAD_INPUT));
    }

    #[test]
    fn stereo_is_mixed_and_8k_is_resampled_keeping_pitch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tone.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).expect("create");
        for n in 0..8_000 {
            let s = (2.0 * std::f32::consts::PI * 500.0 * n as f32 / 8_000.0).sin();
            w.write_sample((s * 16_000.0) as i16).expect("left");
            w.write_sample((s * 16_000.0) as i16).expect("right");
        }
        w.finalize().expect("finalize");
        let audio = read_wav_mono(&path).expect("readable");
        assert_eq!((audio.sample_rate, audio.samples.len()), (8_000, 8_000));
        let up = resample_to_16k(&audio.samples, audio.sample_rate).expect("resampled");
        assert!(up.len().abs_diff(16_000) < 200, "{} samples", up.len());
        // 500 Hz for one second: about 1000 zero crossings at any rate.
        let crossings = up
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        assert!(crossings.abs_diff(1000) < 30, "{crossings} crossings");
    }
}
