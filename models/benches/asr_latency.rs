//! Final latency: real-time paced utterances through the engine (one session), measured from
//! the moment the endpoint's last audio was pushed to the moment the final arrived.
//! `cargo bench -p antiphon-models --bench asr_latency`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use antiphon_models::asr::{AsrEngine, AsrEngineConfig, AsrEvent, StreamingAsr};
use antiphon_models::store::ModelStore;

const REPS: usize = 3;
const FRAME: usize = 320;

fn clip(name: &str) -> Vec<f32> {
    let dir: PathBuf = ModelStore::from_env()
        .expect("store")
        .model_dir("librivox-clips");
    let path = std::fs::read_dir(&dir)
        .expect("librivox-clips in the store")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "wav") && p.to_string_lossy().contains(name))
        .expect("clip present");
    let mut r = hound::WavReader::open(path).expect("wav");
    r.samples::<i16>()
        .map(|s| f32::from(s.expect("sample")) / 32768.0)
        .collect()
}

fn main() {
    let threads: usize = std::env::var("ASR_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let config = AsrEngineConfig {
        slots: 1,
        threads,
        ..AsrEngineConfig::default()
    };
    let engine = AsrEngine::start(&ModelStore::from_env().expect("store"), config).expect("engine");
    println!("threads {threads}, silence_duration 500 ms, partial interval 400 ms");
    for name in ["0880", "0890", "0870"] {
        let mut audio = clip(name);
        let speech_secs = audio.len() as f64 / 16_000.0;
        audio.extend(std::iter::repeat_n(0.0, 16_000));
        let mut latencies = Vec::new();
        for _ in 0..REPS {
            let mut session = engine.open().expect("slot");
            let t0 = Instant::now();
            let mut stopped_ms = None;
            let mut final_at = None;
            let mut detail = String::new();
            let mut partials = 0;
            let mut handle = |e: AsrEvent, at: Instant| match e {
                AsrEvent::SpeechStopped { audio_end_ms, .. } => stopped_ms = Some(audio_end_ms),
                AsrEvent::Partial { .. } => partials += 1,
                AsrEvent::Final { stats, text, .. } if final_at.is_none() => {
                    final_at = Some(at);
                    detail = format!(
                        "reused {} tokens, {} decoder steps, engine-side {:.0} ms | {text}",
                        stats.reused_tokens,
                        stats.decoder_steps,
                        stats.latency.as_secs_f64() * 1000.0
                    );
                }
                _ => {}
            };
            for (i, frame) in audio.chunks(FRAME).enumerate() {
                session.push_audio(frame).expect("push");
                while let Some(e) = session.try_event() {
                    handle(e, Instant::now());
                }
                let due = Duration::from_micros(20_000 * (i as u64 + 1));
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            session.finish().expect("finish");
            while let Some(e) = session.next_event(Duration::from_secs(60)) {
                if e == AsrEvent::EndOfStream {
                    break;
                }
                handle(e, Instant::now());
            }
            let (Some(stop), Some(done)) = (stopped_ms, final_at) else {
                println!("{name}: no endpoint/final");
                continue;
            };
            // The endpoint's last frame was pushed at about t0 + audio_end.
            let endpoint_pushed = t0 + Duration::from_millis(stop);
            let latency = done.saturating_duration_since(endpoint_pushed);
            println!(
                "  {name} ({speech_secs:.1} s): final {:.0} ms after the endpoint audio, {partials} partials; {detail}",
                latency.as_secs_f64() * 1000.0
            );
            latencies.push(latency);
        }
        latencies.sort();
        if let Some(m) = latencies.get(latencies.len() / 2) {
            println!(
                "{name} ({speech_secs:.1} s utterance): median final latency {:.0} ms",
                m.as_secs_f64() * 1000.0
            );
        }
    }
}
