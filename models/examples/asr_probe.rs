//! Times Moonshine on one WAV: `cargo run --example asr_probe -- FILE.wav THREADS`.
use antiphon_models::asr::{DecodeRow, Moonshine};
use antiphon_models::store::ModelStore;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mut reader = hound::WavReader::open(&args[1])?;
    let audio: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| s.map(|v| v as f32 / 32768.0))
        .collect::<Result<_, _>>()?;
    let threads: usize = args[2].parse()?;
    let mut asr = Moonshine::load(&ModelStore::from_env()?, threads)?;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let (tokens, timing) = asr.transcribe(&[DecodeRow {
            audio: &audio,
            forced: &[],
        }])?;
        println!(
            "{:?} total {:?} {}",
            timing,
            t.elapsed(),
            asr.detokenize(&tokens[0])?
        );
    }
    Ok(())
}
