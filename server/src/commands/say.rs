//! `antiphon say "TEXT" -o out.wav [--voice NAME]`: speak text to a WAV file through the same
//! streaming engine the server uses.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use antiphon_audio::wav;
use antiphon_models::store::ModelStore;
use antiphon_models::tts::lexicon::Lexicon;
use antiphon_models::tts::load::spawn_engine_for_voice;
use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct SayArgs {
    /// The text to speak.
    text: String,
    /// WAV file to write (16-bit mono at the voice's native rate).
    #[arg(short, long)]
    output: PathBuf,
    /// Voice: `joe` (Piper, fastest) or a Kokoro voice such as `af_heart`, `am_adam`, `bf_emma`.
    #[arg(long, default_value = "joe")]
    voice: String,
    /// onnxruntime intra-op threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

pub fn run(args: SayArgs) -> anyhow::Result<ExitCode> {
    let store = ModelStore::from_env()?;
    let lexicon = Arc::new(Lexicon::load(&store)?);
    let engine = spawn_engine_for_voice(&store, lexicon, &args.voice, args.threads)
        .with_context(|| format!("cannot load the engine for voice {:?}", args.voice))?;
    let mut stream = engine.open_stream(&args.voice)?;
    let started = Instant::now();
    stream.push_text(&args.text)?;
    stream.finish()?;
    let chunks = stream.collect_reply(Duration::from_secs(120))?;
    let elapsed = started.elapsed();

    let samples: Vec<f32> = chunks
        .iter()
        .flat_map(|c| c.samples.iter().copied())
        .collect();
    wav::write_mono16(&args.output, &samples, engine.sample_rate())
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let seconds = samples.len() as f64 / engine.sample_rate() as f64;
    eprintln!(
        "wrote {} ({seconds:.2} s of audio at {} Hz, {} chunks, synthesized in {:.2} s)",
        args.output.display(),
        engine.sample_rate(),
        chunks.len(),
        elapsed.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
